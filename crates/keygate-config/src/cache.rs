//! `[cache]`: the answer cache in front of the chain.

use keygate_core::CacheSettings;

use crate::section::Section;

/// Reads `[cache]`: `Some(None)` when it is disabled, `None` on a problem.
pub(crate) fn read(mut s: Section<'_>) -> Option<Option<CacheSettings>> {
    let d = CacheSettings::default();
    let enabled: bool = s.field("enabled", true);
    let settings = CacheSettings {
        capacity: s.field("capacity", d.capacity),
        negative_capacity: s.field("negative_capacity", d.negative_capacity),
        ttl: s.duration("ttl", d.ttl),
        negative_ttl: s.duration("negative_ttl", d.negative_ttl),
        stale_ttl: s.duration("stale_ttl", d.stale_ttl),
        refresh_ahead: s.field("refresh_ahead", d.refresh_ahead),
        ..d
    };
    if settings.capacity == 0 {
        s.problem(
            "capacity",
            "must be at least 1 (set enabled = false to turn the cache off)",
        );
    }
    if settings.negative_capacity == 0 {
        s.problem("negative_capacity", "must be at least 1");
    }
    if settings.ttl.is_zero() {
        s.problem("ttl", "must be more than 0");
    }
    if !(0.0..1.0).contains(&settings.refresh_ahead) {
        s.problem(
            "refresh_ahead",
            "must be at least 0 and less than 1 (0 disables)",
        );
    }
    if !s.finish() {
        return None;
    }
    Some(enabled.then_some(settings))
}

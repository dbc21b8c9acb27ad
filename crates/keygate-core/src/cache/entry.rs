//! What the cache holds: its settings, and one entry with its deadlines.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::AgentRecord;

/// How the cache behaves; see the `[cache]` section of the config.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheSettings {
    /// Most entries kept (found and not-found answers together).
    pub capacity: u64,
    /// How long a found answer is served without asking the backends.
    pub ttl: Duration,
    /// How long a not-found answer is served without asking the backends.
    pub negative_ttl: Duration,
    /// How long past its expiry an entry may still be served while the
    /// backends fail with an outage.
    pub stale_ttl: Duration,
    /// After this fraction of an entry's lifetime, a hit starts a background
    /// refresh (the hit itself is answered at once). `0` disables it; values
    /// of 1 or more never refresh ahead.
    pub refresh_ahead: f64,
    /// Each entry's lifetime is drawn uniformly from
    /// `[ttl * (1 - jitter), ttl]`, so entries loaded together do not all
    /// expire together. `0` disables it; clamped to `[0, 1]`.
    pub jitter: f64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            ttl: Duration::from_secs(5 * 60),
            negative_ttl: Duration::from_secs(30),
            stale_ttl: Duration::from_secs(24 * 60 * 60),
            refresh_ahead: 0.75,
            jitter: 0.1,
        }
    }
}

/// One cached answer and its deadlines.
pub(super) struct Entry {
    /// The answer: a record (code 0) or not-found (code 4).
    pub(super) answer: Option<AgentRecord>,
    /// After this, a hit also starts a background refresh.
    pub(super) refresh_at: Option<Instant>,
    /// Until this, the entry is served without asking the backends.
    pub(super) expires_at: Instant,
    /// Until this, the entry may be served when the backends are down.
    pub(super) stale_until: Instant,
}

impl Entry {
    /// Builds an entry for an answer loaded now, with a jittered lifetime.
    pub(super) fn new(s: &CacheSettings, answer: Option<AgentRecord>) -> Self {
        let ttl = if answer.is_some() {
            s.ttl
        } else {
            s.negative_ttl
        };
        let jitter = if s.jitter.is_finite() {
            s.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let lifetime = if jitter > 0.0 {
            ttl.mul_f64(1.0 - rand::rng().random_range(0.0..=jitter))
        } else {
            ttl
        };
        let now = Instant::now();
        let refresh_at = (s.refresh_ahead > 0.0 && s.refresh_ahead < 1.0)
            .then(|| now + lifetime.mul_f64(s.refresh_ahead));
        let expires_at = now + lifetime;
        Entry {
            answer,
            refresh_at,
            expires_at,
            stale_until: expires_at + s.stale_ttl,
        }
    }
}

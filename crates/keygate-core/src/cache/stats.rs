//! The cache's counters, for `keygate cache stats` and the metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters since the cache was built, for `keygate cache stats` (also its
/// wire form on the control socket).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CacheStats {
    /// Entries held (found and not-found, fresh or stale; an entry past
    /// `stale_ttl` until the next sweep drops it).
    pub entries: u64,
    /// Requests answered from a fresh found entry.
    pub hits: u64,
    /// Requests answered from a fresh not-found entry.
    pub negative_hits: u64,
    /// Requests that had no fresh entry and waited for a backend lookup
    /// (their own, or one already in flight).
    pub misses: u64,
    /// Requests answered from an expired entry because the backends failed
    /// with an outage.
    pub stale_served: u64,
    /// Misses that joined a lookup already in flight instead of starting one.
    pub coalesced_waits: u64,
    /// Background refreshes started by refresh-ahead.
    pub refreshes: u64,
}

/// The live counters behind [`CacheStats`].
#[derive(Default)]
pub(super) struct Counters {
    pub(super) hits: AtomicU64,
    pub(super) negative_hits: AtomicU64,
    pub(super) misses: AtomicU64,
    pub(super) stale_served: AtomicU64,
    pub(super) coalesced_waits: AtomicU64,
    pub(super) refreshes: AtomicU64,
}

impl Counters {
    /// The counters so far, with `entries` from the store.
    pub(super) fn snapshot(&self, entries: u64) -> CacheStats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            entries,
            hits: get(&self.hits),
            negative_hits: get(&self.negative_hits),
            misses: get(&self.misses),
            stale_served: get(&self.stale_served),
            coalesced_waits: get(&self.coalesced_waits),
            refreshes: get(&self.refreshes),
        }
    }
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

//! Where the cache keeps its entries: a sharded map behind read-write
//! locks, bounded by capacity and by each entry's `stale_until`.
//!
//! It replaced moka (0.12), which cost more than it saved in front of an
//! in-memory backend: a moka hit records the read for its eviction policy
//! (an atomic store on the entry, a message on a channel, housekeeping run
//! inline now and then) and keeps per-entry bookkeeping that came to about
//! 480 bytes an entry. Here a hit is one read lock on one of 64 shards, one
//! SipHash of the query and a reference count; an entry costs its map slot
//! and one small allocation.
//!
//! Freshness is decided by the layer against the deadlines in each entry;
//! the store only bounds memory:
//! - an entry past `stale_until` is never served and is dropped by the
//!   next sweep of its shard (at most every [`SWEEP_EVERY`] inserts into
//!   it, and on [`Store::run_pending_tasks`]);
//! - a shard holding its share of `capacity` drops, before an insert, the
//!   entry that expires first among the first [`EVICTION_SAMPLE`] it holds
//!   (hash order, so a sample of unrelated queries). That is not LRU:
//!   `capacity` is a memory bound, sized to hold every agent, and an entry
//!   loaded earlier expires earlier.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tokio::time::Instant;

use super::entry::Entry;
use crate::Query;

/// Most shards (a power of two). A small cache has fewer, so that each
/// holds at least [`MIN_SHARD_CAPACITY`] entries and the bound stays exact.
const SHARDS: usize = 64;

/// Fewest entries a shard is sized for, when there is more than one shard.
const MIN_SHARD_CAPACITY: usize = 64;

/// How many entries an eviction compares.
const EVICTION_SAMPLE: usize = 8;

/// Inserts into a shard between two sweeps of its expired entries.
const SWEEP_EVERY: u32 = 1024;

/// The entries, shared by a layer and the layers a reload builds from it.
pub(super) struct Store {
    shards: Box<[Shard]>,
    /// Most entries one shard holds.
    shard_capacity: usize,
}

#[derive(Default)]
struct Shard {
    map: RwLock<Map>,
}

#[derive(Default)]
struct Map {
    entries: HashMap<Query, Arc<Entry>>,
    inserts_since_sweep: u32,
}

impl Store {
    /// An empty store for at most `capacity` entries (each shard holds its
    /// share, rounded down: at most one entry fewer per shard; at least one).
    pub(super) fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        let wanted = (capacity / MIN_SHARD_CAPACITY).clamp(1, SHARDS);
        // The largest power of two not above `wanted`.
        let shards = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        Self {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            shard_capacity: (capacity / shards).max(1),
        }
    }

    fn shard(&self, query: &Query) -> &Shard {
        // Which shard only spreads the locking; the map inside each shard
        // hashes with SipHash and random keys, so a chosen query cannot
        // slow it down.
        let mix = match query {
            Query::Id(id) => id.as_str().bytes().fold(0u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
            }),
            Query::Ip(IpAddr::V4(v4)) => u64::from(u32::from(*v4)),
            Query::Ip(IpAddr::V6(v6)) => {
                let bits = u128::from(*v6);
                (bits as u64) ^ ((bits >> 64) as u64)
            }
        };
        let index = (mix.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) as usize;
        &self.shards[index & (self.shards.len() - 1)]
    }

    /// The entry for `query`, fresh or not.
    pub(super) fn get(&self, query: &Query) -> Option<Arc<Entry>> {
        self.shard(query).read().entries.get(query).cloned()
    }

    /// Stores `entry` for `query`, replacing any entry it had.
    pub(super) fn insert(&self, query: &Query, entry: Arc<Entry>) {
        let mut map = self.shard(query).write();
        map.inserts_since_sweep += 1;
        if map.inserts_since_sweep >= SWEEP_EVERY {
            map.sweep(Instant::now());
        }
        if map.entries.len() >= self.shard_capacity && !map.entries.contains_key(query) {
            map.evict_one();
        }
        map.entries.insert(query.clone(), entry);
    }

    /// Drops the entry for `query`; says whether there was one.
    pub(super) fn remove(&self, query: &Query) -> bool {
        self.shard(query).write().entries.remove(query).is_some()
    }

    /// Drops every entry.
    pub(super) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut map = shard.write();
            map.entries = HashMap::new();
            map.inserts_since_sweep = 0;
        }
    }

    /// Entries held, fresh or stale (exact).
    pub(super) fn len(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.read().entries.len() as u64)
            .sum()
    }

    /// Drops every entry past its `stale_until` now.
    pub(super) fn run_pending_tasks(&self) {
        let now = Instant::now();
        for shard in self.shards.iter() {
            shard.write().sweep(now);
        }
    }
}

impl Shard {
    fn read(&self) -> RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Map {
    fn sweep(&mut self, now: Instant) {
        self.entries.retain(|_, e| now < e.stale_until);
        self.inserts_since_sweep = 0;
    }

    /// Drops the entry that expires first among a sample.
    fn evict_one(&mut self) {
        let victim = self
            .entries
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|(_, e)| e.expires_at)
            .map(|(q, _)| q.clone());
        if let Some(q) = victim {
            self.entries.remove(&q);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::CacheSettings;
    use crate::testing::q;

    fn entry(ttl_secs: u64) -> Arc<Entry> {
        let settings = CacheSettings {
            ttl: Duration::from_secs(ttl_secs),
            stale_ttl: Duration::from_secs(10),
            jitter: 0.0,
            refresh_ahead: 0.0,
            ..CacheSettings::default()
        };
        let record = crate::AgentRecord::parse("001", "a", "any", "k").unwrap();
        Arc::new(Entry::new(&settings, Some(record)))
    }

    /// Capacity holds whatever the queries are: ids and addresses spread
    /// over the shards, no shard grows past its share, and a full shard
    /// drops the entry that expires first among those it compares.
    #[tokio::test(start_paused = true)]
    async fn capacity_bounds_every_shard() {
        for (capacity, shards) in [(1, 1), (5, 1), (127, 1), (128, 2), (1000, 8), (100_000, 64)] {
            let s = Store::new(capacity);
            assert_eq!(s.shards.len(), shards, "{capacity}");
            assert!(s.shards.len() * s.shard_capacity <= capacity as usize);
        }
        let store = Store::new(1000);
        for i in 0..5000u32 {
            let query = if i % 2 == 0 {
                q(&format!("id:{:05}", i + 1))
            } else {
                q(&format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            };
            store.insert(&query, entry(300));
            assert!(
                store.get(&query).is_some(),
                "the entry just inserted is there"
            );
        }
        assert!(store.len() <= 1000, "{}", store.len());
        assert!(store.len() >= 900, "{}", store.len());
        assert!(
            store.shards.iter().all(|s| s.read().entries.len() >= 100),
            "the queries spread over every shard"
        );
    }

    /// A full shard drops the entry that expires first among its sample.
    #[tokio::test(start_paused = true)]
    async fn eviction_drops_the_entry_expiring_first() {
        let mut map = Map::default();
        map.entries.insert(q("id:001"), entry(300));
        map.entries.insert(q("id:002"), entry(5));
        map.entries.insert(q("id:003"), entry(60));
        map.evict_one();
        assert!(!map.entries.contains_key(&q("id:002")));
        assert_eq!(map.entries.len(), 2);
    }

    /// Entries past `stale_until` are swept, the others stay.
    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept() {
        let store = Store::new(1000);
        store.insert(&q("id:001"), entry(5));
        store.insert(&q("id:002"), entry(60));
        tokio::time::advance(Duration::from_secs(16)).await;
        store.run_pending_tasks();
        assert!(store.get(&q("id:001")).is_none());
        assert!(store.get(&q("id:002")).is_some());
        assert_eq!(store.len(), 1);
        assert!(store.remove(&q("id:002")));
        assert!(!store.remove(&q("id:002")));
        store.insert(&q("id:003"), entry(60));
        store.clear();
        assert_eq!(store.len(), 0);
    }
}

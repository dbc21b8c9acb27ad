//! Where the cache keeps its entries: two sharded maps behind read-write
//! locks, one for found answers and one for not-found answers, each bounded
//! by its own capacity and by each entry's `stale_until`.
//!
//! It replaced moka (0.12), which cost more than it saved in front of an
//! in-memory backend: a moka hit records the read for its eviction policy
//! (an atomic store on the entry, a message on a channel, housekeeping run
//! inline now and then) and keeps per-entry bookkeeping that came to about
//! 480 bytes an entry. Here a hit is one SipHash of the query (with keys
//! drawn for each store, so a client cannot aim at one shard: the same hash
//! picks the shard and the bucket), one read lock on one shard and a
//! reference count; an entry costs its map slot and one small allocation.
//! quick_cache (0.7), whose S3-FIFO resists scans, was measured against it
//! for the same job (docs/dev/benchmarks-history.md, "The cache store
//! against quick_cache"): a hit costs the same (867 instructions against
//! 880), but a separate budget for not-found answers is a guarantee (an
//! enumeration of unknown ids cannot evict a found answer, whatever the
//! order of requests), where S3-FIFO protects only entries hit again before
//! the scan reaches them: 200 agents asked once while 20,000 unknown ids
//! went by, 0 kept by quick_cache, 200 here.
//!
//! Freshness is decided by the layer against the deadlines in each entry;
//! the store only bounds memory, and keeps the generation that flushes and
//! reloads raise:
//! - an entry past `stale_until` is never served and is dropped by the
//!   next sweep of its shard (at most every [`SWEEP_EVERY`] inserts into
//!   it, and on [`Store::run_pending_tasks`]);
//! - a shard holding its share of its map's capacity drops, before an
//!   insert, the entry that expires first among the first
//!   [`EVICTION_SAMPLE`] it holds (hash order, so a sample of unrelated
//!   queries). That is not LRU: `capacity` is a memory bound, sized to hold
//!   every agent, and an entry loaded earlier expires earlier. Found and
//!   not-found answers never compete for the same room.
//! - an entry looked up in an older generation than the store's is not
//!   stored: a lookup that started before a flush does not bring back what
//!   the flush dropped.

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use tokio::time::Instant;

use super::entry::Entry;
use crate::Query;

/// Most shards a map has (a power of two). A small map has fewer, so that
/// each holds at least [`MIN_SHARD_CAPACITY`] entries and the bound stays
/// exact.
const SHARDS: usize = 64;

/// Fewest entries a shard is sized for, when there is more than one shard.
const MIN_SHARD_CAPACITY: usize = 64;

/// How many entries an eviction compares.
const EVICTION_SAMPLE: usize = 8;

/// Inserts into a shard between two sweeps of its expired entries.
const SWEEP_EVERY: u32 = 1024;

/// The entries, shared by a layer and the layers a reload builds from it.
pub(super) struct Store {
    /// SipHash-1-3 with random keys: picks the shard (bits 32 and up) and
    /// the bucket (hashbrown: the low bits and the top 7).
    keys: RandomState,
    /// Found answers.
    found: Map,
    /// Not-found answers, in a budget of their own.
    not_found: Map,
    /// Raised by every flush and reload; see [`Entry::origin`].
    generation: AtomicU64,
}

/// One bounded sharded map.
struct Map {
    shards: Box<[Shard]>,
    /// Most entries one shard holds.
    shard_capacity: usize,
}

#[derive(Default)]
struct Shard {
    table: RwLock<Table>,
}

#[derive(Default)]
struct Table {
    slots: HashTable<Slot>,
    inserts_since_sweep: u32,
}

/// One entry with its query and the query's hash (for rehashing).
struct Slot {
    hash: u64,
    query: Query,
    entry: Arc<Entry>,
}

impl Store {
    /// An empty store for at most `capacity` found and `negative_capacity`
    /// not-found answers (each shard holds its share, rounded down: at most
    /// one entry fewer per shard; at least one).
    pub(super) fn new(capacity: u64, negative_capacity: u64) -> Self {
        Self {
            keys: RandomState::new(),
            found: Map::new(capacity),
            not_found: Map::new(negative_capacity),
            generation: AtomicU64::new(0),
        }
    }

    fn hash(&self, query: &Query) -> u64 {
        self.keys.hash_one(query)
    }

    /// The current generation: a lookup notes it when it starts.
    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Raises the generation: lookups in flight will not be stored.
    fn next_generation(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
    }

    /// The entry for `query`, fresh or not.
    pub(super) fn get(&self, query: &Query) -> Option<Arc<Entry>> {
        let hash = self.hash(query);
        self.found
            .get(hash, query)
            .or_else(|| self.not_found.get(hash, query))
    }

    /// Stores `entry` for `query`, replacing any entry it had, unless it
    /// was looked up before the last flush or reload; says whether it did.
    pub(super) fn insert(&self, query: &Query, entry: Arc<Entry>) -> bool {
        let hash = self.hash(query);
        let (map, other) = if entry.answer.is_some() {
            (&self.found, &self.not_found)
        } else {
            (&self.not_found, &self.found)
        };
        let stored = map.insert(hash, query, entry, &self.generation);
        if stored {
            other.remove(hash, query);
        }
        stored
    }

    /// Drops the entry for `query` (a backend contradicted it); says
    /// whether there was one.
    pub(super) fn remove(&self, query: &Query) -> bool {
        let hash = self.hash(query);
        let found = self.found.remove(hash, query);
        self.not_found.remove(hash, query) || found
    }

    /// Drops the entry for `query`, and keeps the lookups in flight from
    /// storing theirs; says whether there was one.
    pub(super) fn flush(&self, query: &Query) -> bool {
        self.next_generation();
        self.remove(query)
    }

    /// Drops every entry, and keeps the lookups in flight from storing
    /// theirs.
    pub(super) fn clear(&self) {
        self.next_generation();
        for shard in self.shards() {
            let mut table = shard.write();
            table.slots = HashTable::new();
            table.inserts_since_sweep = 0;
        }
    }

    /// Keeps the entries `keep` says yes to (it may replace one), and keeps
    /// the lookups in flight from storing theirs.
    pub(super) fn retain(&self, mut keep: impl FnMut(&mut Arc<Entry>) -> bool) {
        self.next_generation();
        for shard in self.shards() {
            shard.write().slots.retain(|slot| keep(&mut slot.entry));
        }
    }

    /// Entries held, found and not-found, fresh or stale (exact).
    pub(super) fn len(&self) -> u64 {
        self.shards().map(|s| s.read().slots.len() as u64).sum()
    }

    /// Drops every entry past its `stale_until` now.
    pub(super) fn run_pending_tasks(&self) {
        let now = Instant::now();
        for shard in self.shards() {
            shard.write().sweep(now);
        }
    }

    fn shards(&self) -> impl Iterator<Item = &Shard> {
        self.found.shards.iter().chain(self.not_found.shards.iter())
    }
}

impl Map {
    fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        let wanted = (capacity / MIN_SHARD_CAPACITY).clamp(1, SHARDS);
        // The largest power of two not above `wanted`.
        let shards = 1usize << (usize::BITS - 1 - wanted.leading_zeros());
        Self {
            shards: (0..shards).map(|_| Shard::default()).collect(),
            shard_capacity: (capacity / shards).max(1),
        }
    }

    fn shard(&self, hash: u64) -> &Shard {
        // Bits hashbrown does not use inside a table of fewer than 2^32
        // buckets: every shard's table still gets well-spread hashes.
        &self.shards[(hash >> 32) as usize & (self.shards.len() - 1)]
    }

    fn get(&self, hash: u64, query: &Query) -> Option<Arc<Entry>> {
        let table = self.shard(hash).read();
        table
            .slots
            .find(hash, |s| s.query == *query)
            .map(|s| Arc::clone(&s.entry))
    }

    fn insert(&self, hash: u64, query: &Query, entry: Arc<Entry>, generation: &AtomicU64) -> bool {
        let mut table = self.shard(hash).write();
        // Under the shard's lock: a flush raises the generation before it
        // takes the lock, so either it sees this entry or this sees it.
        if entry.origin.generation != generation.load(Ordering::SeqCst) {
            return false;
        }
        table.inserts_since_sweep += 1;
        if table.inserts_since_sweep >= SWEEP_EVERY {
            table.sweep(Instant::now());
        }
        match table.slots.find_mut(hash, |s| s.query == *query) {
            Some(slot) => slot.entry = entry,
            None => {
                if table.slots.len() >= self.shard_capacity {
                    table.evict_one();
                }
                let slot = Slot {
                    hash,
                    query: query.clone(),
                    entry,
                };
                table.slots.insert_unique(hash, slot, |s| s.hash);
            }
        }
        true
    }

    fn remove(&self, hash: u64, query: &Query) -> bool {
        let mut table = self.shard(hash).write();
        match table.slots.find_entry(hash, |s| s.query == *query) {
            Ok(occupied) => {
                occupied.remove();
                true
            }
            Err(_) => false,
        }
    }
}

impl Shard {
    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Table {
    fn sweep(&mut self, now: Instant) {
        self.slots.retain(|s| now < s.entry.stale_until);
        self.inserts_since_sweep = 0;
    }

    /// Drops the entry that expires first among a sample.
    fn evict_one(&mut self) {
        let victim = self
            .slots
            .iter()
            .take(EVICTION_SAMPLE)
            .min_by_key(|s| s.entry.expires_at)
            .map(|s| (s.hash, s.query.clone()));
        if let Some((hash, query)) = victim {
            if let Ok(occupied) = self.slots.find_entry(hash, |s| s.query == query) {
                occupied.remove();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::cache::entry::Origin;
    use crate::cache::CacheSettings;
    use crate::testing::q;

    fn settings(ttl_secs: u64) -> CacheSettings {
        CacheSettings {
            ttl: Duration::from_secs(ttl_secs),
            negative_ttl: Duration::from_secs(ttl_secs),
            stale_ttl: Duration::from_secs(10),
            jitter: 0.0,
            refresh_ahead: 0.0,
            ..CacheSettings::default()
        }
    }

    fn entry(ttl_secs: u64) -> Arc<Entry> {
        let record = crate::AgentRecord::parse("001", "a", "any", "k").unwrap();
        Arc::new(Entry::new(
            &settings(ttl_secs),
            Some(record),
            Origin::default(),
        ))
    }

    fn not_found(ttl_secs: u64) -> Arc<Entry> {
        Arc::new(Entry::new(&settings(ttl_secs), None, Origin::default()))
    }

    fn sizes(map: &Map) -> Vec<usize> {
        map.shards.iter().map(|s| s.read().slots.len()).collect()
    }

    /// Capacity holds whatever the queries are: ids and addresses spread
    /// over the shards, no shard grows past its share, and a full shard
    /// drops the entry that expires first among those it compares.
    #[tokio::test(start_paused = true)]
    async fn capacity_bounds_every_shard() {
        for (capacity, shards) in [(1, 1), (5, 1), (127, 1), (128, 2), (1000, 8), (100_000, 64)] {
            let m = Map::new(capacity);
            assert_eq!(m.shards.len(), shards, "{capacity}");
            assert!(m.shards.len() * m.shard_capacity <= capacity as usize);
        }
        let store = Store::new(1000, 1000);
        for i in 0..5000u32 {
            let query = if i % 2 == 0 {
                q(&format!("id:{:05}", i + 1))
            } else {
                q(&format!("ip:10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
            };
            assert!(store.insert(&query, entry(300)));
            assert!(
                store.get(&query).is_some(),
                "the entry just inserted is there"
            );
        }
        assert!(store.len() <= 1000, "{}", store.len());
        assert!(store.len() >= 900, "{}", store.len());
        assert!(
            sizes(&store.found).iter().all(|&n| n >= 100),
            "the queries spread over every shard"
        );
        assert_eq!(sizes(&store.not_found), [0; 8]);
    }

    /// Found and not-found answers have their own room: filling one never
    /// drops an entry of the other, and an answer that changes kind moves.
    #[tokio::test(start_paused = true)]
    async fn found_and_not_found_answers_never_compete() {
        let store = Store::new(100, 10);
        for i in 1..=100 {
            assert!(store.insert(&q(&format!("id:{i:03}")), entry(300)));
        }
        for i in 1000..11_000 {
            assert!(store.insert(&q(&format!("id:{i}")), not_found(1)));
        }
        assert_eq!(sizes(&store.found).iter().sum::<usize>(), 100);
        assert_eq!(sizes(&store.not_found).iter().sum::<usize>(), 10);
        assert!(store.insert(&q("id:001"), not_found(30)));
        assert!(store.get(&q("id:001")).unwrap().answer.is_none());
        assert_eq!(store.len(), 99 + 10);
        assert!(store.insert(&q("id:001"), entry(30)));
        assert!(store.get(&q("id:001")).unwrap().answer.is_some());
        assert_eq!(store.len(), 100 + 9);
    }

    /// Which shard a query lands in depends on a key drawn for each store
    /// (issue 24, point 15): a client cannot aim its queries at one shard.
    /// Two stores put 1,000 ids in the same shards about 1 in 64 times.
    #[test]
    fn the_shard_of_a_query_is_keyed() {
        let (a, b) = (Store::new(100_000, 1), Store::new(100_000, 1));
        let index = |s: &Store, query: &Query| {
            let shard = s.found.shard(s.hash(query));
            s.found
                .shards
                .iter()
                .position(|x| std::ptr::eq(x, shard))
                .unwrap()
        };
        let same = (1..=1000)
            .map(|i| q(&format!("id:{i:03}")))
            .filter(|query| index(&a, query) == index(&b, query))
            .count();
        assert!(same < 100, "{same} of 1000 ids in the same shard of both");
    }

    /// A full shard drops the entry that expires first among its sample.
    #[tokio::test(start_paused = true)]
    async fn eviction_drops_the_entry_expiring_first() {
        let store = Store::new(3, 1);
        store.insert(&q("id:001"), entry(300));
        store.insert(&q("id:002"), entry(5));
        store.insert(&q("id:003"), entry(60));
        store.insert(&q("id:004"), entry(60));
        assert!(store.get(&q("id:002")).is_none());
        assert_eq!(store.len(), 3);
    }

    /// An entry looked up before a flush, a clear or a retain is not
    /// stored after it; one looked up since is.
    #[tokio::test(start_paused = true)]
    async fn an_entry_of_an_older_generation_is_not_stored() {
        let store = Store::new(1000, 1000);
        let at = |generation| {
            let record = crate::AgentRecord::parse("001", "a", "any", "k").unwrap();
            let origin = Origin {
                generation,
                ..Origin::default()
            };
            Arc::new(Entry::new(&settings(60), Some(record), origin))
        };
        assert!(store.insert(&q("id:001"), at(0)));
        assert!(!store.flush(&q("id:002")));
        assert!(!store.insert(&q("id:001"), at(0)));
        store.clear();
        store.retain(|_| true);
        assert_eq!(store.generation(), 3);
        assert!(!store.insert(&q("id:001"), at(2)));
        assert!(store.get(&q("id:001")).is_none());
        assert!(store.insert(&q("id:001"), at(3)));
    }

    /// Entries past `stale_until` are swept, the others stay.
    #[tokio::test(start_paused = true)]
    async fn expired_entries_are_swept() {
        let store = Store::new(1000, 1000);
        store.insert(&q("id:001"), entry(5));
        store.insert(&q("id:002"), entry(60));
        store.insert(&q("id:003"), not_found(5));
        tokio::time::advance(Duration::from_secs(6)).await;
        store.run_pending_tasks();
        assert!(store.get(&q("id:003")).is_none(), "not-found: no stale_ttl");
        tokio::time::advance(Duration::from_secs(10)).await;
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

//! An answer cache around the backend stack: positive and negative entries,
//! jittered expiry, refresh-ahead, stale answers while the backends are
//! down, and single flight.
//!
//! Wazuh has no rate limit: an unknown agent asks again with every message,
//! and after a manager rebuild thousands of agents ask at once. The cache
//! absorbs the repeats (not-found answers are cached too), coalesces
//! identical concurrent misses into one backend lookup, and keeps answering
//! known agents through an outage, like Dovecot's auth cache.
//!
//! Freshness is decided here, against [`tokio::time::Instant`] deadlines kept
//! in each entry, not by moka's own clock: that keeps the behaviour testable
//! with paused time. moka only bounds memory (capacity, and removal once an
//! entry is past `stale_ttl`).
//!
//! Entries hold an [`AgentRecord`] whose key is wiped when the record is
//! dropped; the cache keeps exactly one copy per entry (behind an `Arc`), so
//! an entry that is evicted, expired or flushed is wiped once the last
//! request still reading it has finished.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use futures_util::future::{BoxFuture, FutureExt, Shared};
use rand::Rng;
use tokio::time::Instant;

use crate::{AgentRecord, BackendError, KeyBackend, Query};

/// What a lookup answers.
type Answer = Result<Option<AgentRecord>, BackendError>;

/// A lookup in flight, awaited by every request for the same query.
type Flight = Shared<BoxFuture<'static, Answer>>;

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

/// Counters since the cache was built, for `keygate cache stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    /// Entries held (found and not-found, fresh or stale). moka counts
    /// lazily, so this may lag behind recent inserts by a little.
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

/// One cached answer and its deadlines.
struct Entry {
    /// The answer: a record (code 0) or not-found (code 4).
    answer: Option<AgentRecord>,
    /// After this, a hit also starts a background refresh.
    refresh_at: Option<Instant>,
    /// Until this, the entry is served without asking the backends.
    expires_at: Instant,
    /// Until this, the entry may be served when the backends are down.
    stale_until: Instant,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    negative_hits: AtomicU64,
    misses: AtomicU64,
    stale_served: AtomicU64,
    coalesced_waits: AtomicU64,
    refreshes: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Tells moka when to drop an entry for good: once it is past `stale_ttl`.
/// Whether an entry is fresh is decided by [`Entry::expires_at`] instead.
struct StaleBound;

impl StaleBound {
    fn remaining(entry: &Entry) -> Duration {
        entry.stale_until.saturating_duration_since(Instant::now())
    }
}

impl moka::Expiry<Query, Arc<Entry>> for StaleBound {
    fn expire_after_create(
        &self,
        _key: &Query,
        value: &Arc<Entry>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(Self::remaining(value))
    }

    fn expire_after_update(
        &self,
        _key: &Query,
        value: &Arc<Entry>,
        _updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        Some(Self::remaining(value))
    }
}

/// What the spawned lookups share with the layer.
struct State {
    inner: Arc<dyn KeyBackend>,
    settings: CacheSettings,
    entries: moka::future::Cache<Query, Arc<Entry>>,
    in_flight: Mutex<HashMap<Query, Flight>>,
    counters: Arc<Counters>,
}

impl State {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Query, Flight>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Builds an entry for an answer loaded now, with a jittered lifetime.
    fn entry(&self, answer: Option<AgentRecord>) -> Entry {
        let s = &self.settings;
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

    /// Joins the lookup in flight for `query`, or starts one. The lookup
    /// runs in its own task, so it finishes (and fills the cache) even if
    /// every request waiting for it gives up. Returns the flight and whether
    /// it was already running.
    fn flight(self: &Arc<Self>, query: &Query) -> (Flight, bool) {
        let mut in_flight = self.in_flight();
        if let Some(flight) = in_flight.get(query) {
            return (flight.clone(), true);
        }
        let landing = Landing {
            state: Arc::clone(self),
            key: query.clone(),
        };
        // The lock is held until the flight is in the map, so the task
        // cannot land (and remove it) before it is there.
        let task = tokio::spawn(async move {
            let Landing { state, key } = &landing;
            let answer = state.inner.lookup(key).await;
            state.store(key, &answer).await;
            drop(landing);
            answer
        });
        let flight = async move {
            task.await.unwrap_or_else(|e| {
                Err(BackendError::Internal(format!(
                    "cache lookup task failed: {e}"
                )))
            })
        }
        .boxed()
        .shared();
        in_flight.insert(query.clone(), flight.clone());
        (flight, false)
    }

    /// Records what the backends answered.
    async fn store(&self, query: &Query, answer: &Answer) {
        match answer {
            Ok(found) => {
                let entry = Arc::new(self.entry(found.clone()));
                self.entries.insert(query.clone(), entry).await;
            }
            // Keep the entry: it may be served stale through the outage.
            Err(e) if e.is_outage() => {}
            // The backends answered, and differently: the entry is wrong now.
            Err(_) => self.entries.invalidate(query).await,
        }
    }
}

/// Removes a finished lookup from the in-flight map, also when the lookup
/// panicked or its task was cancelled, so that a key never stays stuck on a
/// dead flight.
struct Landing {
    state: Arc<State>,
    key: Query,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.state.in_flight().remove(&self.key);
    }
}

/// The cache layer, itself a [`KeyBackend`]. Only answers 0 (found) and 4
/// (not found) are cached; errors never are.
pub struct CacheLayer {
    state: Arc<State>,
}

impl CacheLayer {
    /// Wraps `inner` (usually the whole chain).
    pub fn new(inner: Arc<dyn KeyBackend>, settings: CacheSettings) -> Self {
        let entries = moka::future::Cache::builder()
            .max_capacity(settings.capacity)
            .expire_after(StaleBound)
            .build();
        Self {
            state: Arc::new(State {
                inner,
                settings,
                entries,
                in_flight: Mutex::new(HashMap::new()),
                counters: Arc::default(),
            }),
        }
    }

    /// The same entries and counters in front of another backend stack:
    /// what a reload that kept the backend list and the cache settings
    /// does. Lookups in flight finish on the old stack (and still fill the
    /// shared entries); new ones go to `inner`.
    pub fn with_inner(&self, inner: Arc<dyn KeyBackend>) -> Self {
        Self {
            state: Arc::new(State {
                inner,
                settings: self.state.settings.clone(),
                entries: self.state.entries.clone(),
                in_flight: Mutex::new(HashMap::new()),
                counters: Arc::clone(&self.state.counters),
            }),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &CacheSettings {
        &self.state.settings
    }

    /// Drops every entry (each key is wiped once no request still reads it).
    pub async fn flush_all(&self) {
        let keys: Vec<Arc<Query>> = self.state.entries.iter().map(|(k, _)| k).collect();
        for key in keys {
            self.state.entries.invalidate(&*key).await;
        }
        self.state.entries.invalidate_all();
        self.state.entries.run_pending_tasks().await;
    }

    /// Drops the entry for one query; says whether there was one.
    pub async fn flush(&self, query: &Query) -> bool {
        let removed = self.state.entries.remove(query).await.is_some();
        self.state.entries.run_pending_tasks().await;
        removed
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        let c = &self.state.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStats {
            entries: self.state.entries.entry_count(),
            hits: get(&c.hits),
            negative_hits: get(&c.negative_hits),
            misses: get(&c.misses),
            stale_served: get(&c.stale_served),
            coalesced_waits: get(&c.coalesced_waits),
            refreshes: get(&c.refreshes),
        }
    }

    /// Runs moka's pending housekeeping (evictions, removals), so that
    /// [`CacheStats::entries`] is exact. For tests and the stats command.
    pub async fn run_pending_tasks(&self) {
        self.state.entries.run_pending_tasks().await;
    }

    #[cfg(test)]
    async fn entry(&self, query: &Query) -> Option<Arc<Entry>> {
        self.state.entries.get(query).await
    }
}

#[async_trait]
impl KeyBackend for CacheLayer {
    fn name(&self) -> &str {
        self.state.inner.name()
    }

    async fn lookup(&self, query: &Query) -> Answer {
        let state = &self.state;
        let now = Instant::now();
        let cached = state.entries.get(query).await;
        if let Some(entry) = &cached {
            if now < entry.expires_at {
                bump(if entry.answer.is_some() {
                    &state.counters.hits
                } else {
                    &state.counters.negative_hits
                });
                if entry.refresh_at.is_some_and(|at| now >= at) {
                    let (_, running) = state.flight(query);
                    if !running {
                        bump(&state.counters.refreshes);
                        tracing::debug!(%query, "Refreshing a cache entry ahead of its expiry.");
                    }
                }
                return Ok(entry.answer.clone());
            }
        }
        bump(&state.counters.misses);
        let (flight, running) = state.flight(query);
        if running {
            bump(&state.counters.coalesced_waits);
        }
        match flight.await {
            Err(error) if error.is_outage() => match cached {
                Some(entry) if Instant::now() < entry.stale_until => {
                    bump(&state.counters.stale_served);
                    tracing::debug!(%query, %error, "Backends down; serving a stale cache entry.");
                    Ok(entry.answer.clone())
                }
                _ => Err(error),
            },
            answer => answer,
        }
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.state.inner.health().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fake;
    use crate::{ErrorCode, Request};

    fn q(s: &str) -> Query {
        Request::parse(s.as_bytes()).unwrap()
    }

    /// Settings without jitter or refresh-ahead, so deadlines are exact.
    fn exact() -> CacheSettings {
        CacheSettings {
            capacity: 1000,
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            stale_ttl: Duration::from_secs(3600),
            refresh_ahead: 0.0,
            jitter: 0.0,
        }
    }

    fn layer(fake: &Fake, settings: CacheSettings) -> CacheLayer {
        CacheLayer::new(Arc::new(fake.clone()), settings)
    }

    async fn advance(secs: u64) {
        tokio::time::advance(Duration::from_secs(secs)).await;
    }

    /// Lets spawned lookups run to completion (time is paused, so this
    /// does not move the clock past any deadline that matters).
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = CacheSettings::default();
        assert_eq!(s.capacity, 100_000);
        assert_eq!(s.ttl, Duration::from_secs(300));
        assert_eq!(s.negative_ttl, Duration::from_secs(30));
        assert_eq!(s.stale_ttl, Duration::from_secs(86_400));
        assert_eq!(s.refresh_ahead, 0.75);
        assert_eq!(s.jitter, 0.1);
    }

    /// A found answer is served from the cache until `ttl`, then asked again.
    #[tokio::test(start_paused = true)]
    async fn found_answer_is_cached_for_ttl() {
        let fake = Fake::with("db", "001", "a");
        let cache = layer(&fake, exact());
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert_eq!(fake.calls(), 1);
        advance(299).await;
        let r = cache.lookup(&q("id:001")).await.unwrap().unwrap();
        assert_eq!(r.name.as_str(), "a");
        assert_eq!(fake.calls(), 1);
        advance(1).await;
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert_eq!(fake.calls(), 2);
        let s = cache.stats();
        assert_eq!((s.hits, s.misses, s.negative_hits), (1, 2, 0));
    }

    /// A not-found answer is cached for `negative_ttl`, not `ttl`.
    #[tokio::test(start_paused = true)]
    async fn not_found_answer_is_cached_for_negative_ttl() {
        let fake = Fake::empty("db");
        let cache = layer(&fake, exact());
        assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
        advance(29).await;
        assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
        assert_eq!(fake.calls(), 1);
        advance(1).await;
        assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
        assert_eq!(fake.calls(), 2);
        let s = cache.stats();
        assert_eq!((s.hits, s.negative_hits, s.misses), (0, 1, 2));
    }

    /// `id:001` and `ip:10.0.0.1` are separate entries even for one agent.
    #[tokio::test(start_paused = true)]
    async fn id_and_ip_queries_are_separate_entries() {
        let record = AgentRecord::parse("001", "a", "10.0.0.1", "key-001").unwrap();
        let fake = Fake::empty("db").and(record);
        let cache = layer(&fake, exact());
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert!(cache.lookup(&q("ip:10.0.0.1")).await.unwrap().is_some());
        assert_eq!(fake.calls(), 2);
        assert!(cache.flush(&q("id:001")).await);
        assert!(!cache.flush(&q("id:001")).await);
        assert!(cache.lookup(&q("ip:10.0.0.1")).await.unwrap().is_some());
        assert_eq!(fake.calls(), 2, "the ip entry survived flushing the id one");
    }

    /// Outages are never cached: the next request asks the backend again.
    #[tokio::test(start_paused = true)]
    async fn errors_are_not_cached() {
        let fake = Fake::with("db", "001", "a");
        fake.set_down(true);
        let cache = layer(&fake, exact());
        let e = cache.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert_eq!(fake.calls(), 1);
        fake.set_down(false);
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert_eq!(fake.calls(), 2);
        cache.run_pending_tasks().await;
        assert_eq!(cache.stats().entries, 1);
    }

    /// A bad record (5) is not cached, and it drops the entry it contradicts.
    #[tokio::test(start_paused = true)]
    async fn invalid_record_is_not_cached_and_invalidates_the_entry() {
        let fake = Fake::with("db", "001", "a");
        let cache = layer(&fake, exact());
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        advance(300).await;
        fake.fail_with(Some(BackendError::Ambiguous));
        let e = cache.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRecord);
        assert!(cache.entry(&q("id:001")).await.is_none());
        assert_eq!(cache.stats().stale_served, 0);
        // Not cached either: with the backend fixed, it is asked again.
        fake.fail_with(None);
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert_eq!(fake.calls(), 3);
    }

    /// Past `ttl` and within `stale_ttl`, an outage serves the old answer
    /// (and counts it); past `stale_ttl` the outage is answered as such.
    #[tokio::test(start_paused = true)]
    async fn expired_entry_is_served_stale_during_an_outage_until_stale_ttl() {
        let fake = Fake::with("db", "001", "a");
        let cache = layer(&fake, exact());
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        fake.set_down(true);
        advance(300).await;
        let r = cache.lookup(&q("id:001")).await.unwrap().unwrap();
        assert_eq!(r.key.expose(), "key-001");
        assert_eq!(cache.stats().stale_served, 1);
        assert_eq!(
            fake.calls(),
            2,
            "the backend was asked before serving stale"
        );
        advance(3599).await;
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert_eq!(cache.stats().stale_served, 2);
        advance(1).await;
        let e = cache.lookup(&q("id:001")).await.unwrap_err();
        assert!(e.is_outage());
        assert_eq!(cache.stats().stale_served, 2);
    }

    /// A not-found answer is served stale too: an outage must not turn a
    /// known-unknown agent into a flood of 2s.
    #[tokio::test(start_paused = true)]
    async fn negative_entry_is_served_stale_during_an_outage() {
        let fake = Fake::empty("db");
        let cache = layer(&fake, exact());
        assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
        fake.set_down(true);
        advance(31).await;
        assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
        assert_eq!(cache.stats().stale_served, 1);
    }

    /// An entry is not served stale for a non-outage error.
    #[tokio::test(start_paused = true)]
    async fn internal_error_is_returned_not_served_stale() {
        let fake = Fake::with("db", "001", "a");
        let cache = layer(&fake, exact());
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        advance(301).await;
        fake.fail_with(Some(BackendError::Internal("bad query".into())));
        let e = cache.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Internal);
        assert_eq!(cache.stats().stale_served, 0);
    }

    /// Past `refresh_ahead * ttl`, a hit is answered at once from the cache
    /// and exactly one background lookup refreshes the entry, however many
    /// hits arrive while it runs.
    #[tokio::test(start_paused = true)]
    async fn refresh_ahead_serves_at_once_and_refreshes_once_in_the_background() {
        let fake = Fake::with("db", "001", "a");
        let cache = layer(
            &fake,
            CacheSettings {
                refresh_ahead: 0.5,
                ..exact()
            },
        );
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert_eq!(fake.calls(), 1);
        advance(149).await;
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        settle().await;
        assert_eq!(fake.calls(), 1, "no refresh before the threshold");
        advance(1).await;
        // The backend is slow now: hits must not wait for it.
        fake.set_delay(Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..20 {
            assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "hits did not wait");
        settle().await;
        assert_eq!(fake.calls(), 2, "exactly one background refresh");
        assert_eq!(cache.stats().refreshes, 1);
        advance(10).await;
        settle().await;
        // The refreshed entry lives a full ttl from its reload (t=160s).
        let entry = cache.entry(&q("id:001")).await.unwrap();
        assert_eq!(
            entry.expires_at - Instant::now(),
            Duration::from_secs(300),
            "the entry was replaced by the refresh"
        );
        assert_eq!(cache.stats().hits, 21);
        assert_eq!(cache.stats().misses, 1);
    }

    /// Entries loaded at the same moment get different lifetimes, each
    /// within `[ttl * (1 - jitter), ttl]`.
    #[tokio::test(start_paused = true)]
    async fn jitter_spreads_expiry_within_bounds() {
        let mut fake = Fake::empty("db");
        for i in 1..=50 {
            let id = format!("{i:03}");
            fake = fake.and(AgentRecord::parse(&id, &format!("a{i}"), "any", "k").unwrap());
        }
        let cache = layer(
            &fake,
            CacheSettings {
                jitter: 0.2,
                ..exact()
            },
        );
        let loaded = Instant::now();
        let mut lifetimes = Vec::new();
        for i in 1..=50 {
            let query = q(&format!("id:{i:03}"));
            assert!(cache.lookup(&query).await.unwrap().is_some());
            lifetimes.push(cache.entry(&query).await.unwrap().expires_at - loaded);
        }
        for l in &lifetimes {
            assert!(*l >= Duration::from_secs(240), "{l:?}");
            assert!(*l <= Duration::from_secs(300), "{l:?}");
        }
        lifetimes.sort();
        lifetimes.dedup();
        assert!(lifetimes.len() > 40, "lifetimes collide: {lifetimes:?}");
        // They really expire at different times: halfway through the
        // jitter window some entries are expired and some are not.
        advance(270).await;
        let before = fake.calls();
        for i in 1..=50 {
            cache.lookup(&q(&format!("id:{i:03}"))).await.unwrap();
        }
        let reloaded = fake.calls() - before;
        assert!((1..50).contains(&reloaded), "{reloaded} of 50 reloaded");
    }

    /// 100 concurrent identical misses cause exactly one backend lookup.
    #[tokio::test(start_paused = true)]
    async fn concurrent_identical_misses_make_one_backend_call() {
        let fake = Fake::with("db", "001", "a").delayed(Duration::from_millis(500));
        let cache = Arc::new(layer(&fake, exact()));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.lookup(&q("id:001")).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().unwrap().is_some());
        }
        assert_eq!(fake.calls(), 1);
        let s = cache.stats();
        assert_eq!((s.misses, s.coalesced_waits), (100, 99));
    }

    /// Coalesced misses share an outage too, rather than each asking.
    #[tokio::test(start_paused = true)]
    async fn concurrent_misses_during_an_outage_make_one_backend_call() {
        let fake = Fake::down("db").delayed(Duration::from_millis(500));
        let cache = Arc::new(layer(&fake, exact()));
        let tasks: Vec<_> = (0..100)
            .map(|_| {
                let cache = Arc::clone(&cache);
                tokio::spawn(async move { cache.lookup(&q("id:001")).await })
            })
            .collect();
        for t in tasks {
            assert!(t.await.unwrap().unwrap_err().is_outage());
        }
        assert_eq!(fake.calls(), 1);
    }

    /// A lookup whose requester gave up still fills the cache.
    #[tokio::test(start_paused = true)]
    async fn abandoned_lookup_still_fills_the_cache() {
        let fake = Fake::with("db", "001", "a").delayed(Duration::from_secs(5));
        let cache = layer(&fake, exact());
        let r = tokio::time::timeout(Duration::from_secs(1), cache.lookup(&q("id:001"))).await;
        assert!(r.is_err());
        advance(5).await;
        settle().await;
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert_eq!(fake.calls(), 1);
    }

    /// A lookup that panics fails that request with 6 and does not leave
    /// the query stuck: the next request asks the backend again.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_lookup_does_not_wedge_its_query() {
        struct PanicsOnce(std::sync::atomic::AtomicUsize, Fake);
        #[async_trait]
        impl KeyBackend for PanicsOnce {
            fn name(&self) -> &str {
                "panics"
            }
            async fn lookup(&self, query: &Query) -> Answer {
                if self.0.fetch_add(1, Ordering::SeqCst) == 0 {
                    panic!("injected panic");
                }
                self.1.lookup(query).await
            }
            async fn health(&self) -> Result<(), BackendError> {
                Ok(())
            }
        }
        let inner = PanicsOnce(
            std::sync::atomic::AtomicUsize::new(0),
            Fake::with("db", "001", "a"),
        );
        let cache = CacheLayer::new(Arc::new(inner), exact());
        let e = cache.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Internal);
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
    }

    /// After a reload that keeps the backends, entries and counters carry
    /// over and new misses go to the new stack.
    #[tokio::test(start_paused = true)]
    async fn with_inner_keeps_entries_and_counters() {
        let old = Fake::with("old", "001", "a");
        let new = Fake::with("new", "002", "b");
        let cache = layer(&old, exact());
        cache.lookup(&q("id:001")).await.unwrap();
        let cache = cache.with_inner(Arc::new(new.clone()));
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert!(cache.lookup(&q("id:002")).await.unwrap().is_some());
        assert_eq!((old.calls(), new.calls()), (1, 1));
        assert_eq!(cache.stats().hits, 1);
        assert_eq!(cache.stats().misses, 2);
    }

    /// The whole stack (cache, chain, breaker, timeout) through an outage:
    /// once the breaker is open, cached agents are answered stale and
    /// uncached ones get 2, both at once; after recovery, fresh answers.
    #[tokio::test(start_paused = true)]
    async fn stack_answers_at_once_through_an_outage() {
        use crate::{Breaker, BreakerSettings, BreakerState, Chain, ChainPolicy, TimeoutLayer};
        let db = Fake::with("db", "001", "a");
        let timeout = TimeoutLayer::new(db.clone(), Duration::from_secs(2));
        let breaker = Arc::new(Breaker::new(Arc::new(timeout), BreakerSettings::default()));
        let chain = Chain::new(
            "chain",
            vec![(
                breaker.clone() as Arc<dyn KeyBackend>,
                ChainPolicy::default(),
            )],
        );
        let cache = CacheLayer::new(Arc::new(chain), exact());
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        advance(300).await;
        // The database hangs (and fails its health check): the first
        // lookups wait for the timeout.
        db.set_delay(Duration::from_secs(3600));
        db.set_down(true);
        for id in ["id:002", "id:003", "id:004"] {
            assert!(cache.lookup(&q(id)).await.unwrap_err().is_outage());
        }
        assert_eq!(breaker.state(), BreakerState::Tripped);
        let start = Instant::now();
        let r = cache.lookup(&q("id:001")).await.unwrap().unwrap();
        assert_eq!(r.name.as_str(), "a");
        let e = cache.lookup(&q("id:005")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(e.to_string().contains("circuit open"), "{e}");
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(cache.stats().stale_served, 1);
        // The database comes back; the probe notices; answers are fresh.
        advance(1).await;
        settle().await;
        assert_eq!(db.health_calls(), 1);
        assert_ne!(breaker.state(), BreakerState::Up);
        db.set_delay(Duration::ZERO);
        db.set_down(false);
        advance(2).await;
        settle().await;
        assert_eq!(db.health_calls(), 2);
        assert_eq!(breaker.state(), BreakerState::Up);
        let before = db.calls();
        assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
        assert_eq!(db.calls(), before + 1);
    }

    /// Flushed and evicted entries are dropped for good (and so their keys
    /// wiped): no copy of the record is left anywhere in the layer.
    #[tokio::test(start_paused = true)]
    async fn flushed_and_evicted_entries_leave_no_copy_behind() {
        let fake = Fake::with("db", "001", "a")
            .and(AgentRecord::parse("002", "b", "any", "key-002").unwrap());
        let cache = layer(&fake, exact());
        cache.lookup(&q("id:001")).await.unwrap();
        cache.lookup(&q("id:002")).await.unwrap();
        let one = Arc::downgrade(&cache.entry(&q("id:001")).await.unwrap());
        let two = Arc::downgrade(&cache.entry(&q("id:002")).await.unwrap());
        assert!(cache.flush(&q("id:001")).await);
        assert!(one.upgrade().is_none(), "flushed entry still referenced");
        assert!(two.upgrade().is_some());
        cache.flush_all().await;
        assert!(two.upgrade().is_none(), "flushed entry still referenced");
        assert_eq!(cache.stats().entries, 0);
        assert_eq!(fake.calls(), 2);

        // Capacity evictions drop entries too.
        let mut many = Fake::empty("db");
        for i in 1..=20 {
            many = many.and(AgentRecord::parse(&format!("{i:03}"), "x", "any", "k").unwrap());
        }
        let small = layer(
            &many,
            CacheSettings {
                capacity: 5,
                ..exact()
            },
        );
        let mut weak = Vec::new();
        for i in 1..=20 {
            let query = q(&format!("id:{i:03}"));
            small.lookup(&query).await.unwrap();
            if let Some(e) = small.entry(&query).await {
                weak.push(Arc::downgrade(&e));
            }
        }
        // moka evicts during housekeeping; one round admits, the next evicts.
        small.run_pending_tasks().await;
        small.run_pending_tasks().await;
        assert!(small.stats().entries <= 5);
        let alive = weak.iter().filter(|w| w.upgrade().is_some()).count();
        assert!(alive <= 5, "{alive} entries alive after eviction");
    }
}

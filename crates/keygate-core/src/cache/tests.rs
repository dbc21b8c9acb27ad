//! The cache layer's tests, all on paused time so deadlines are exact.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::*;
use crate::testing::{q, settle, Fake};
use crate::{AgentRecord, ErrorCode};

/// Settings without jitter or refresh-ahead, so deadlines are exact.
fn exact() -> CacheSettings {
    CacheSettings {
        capacity: 1000,
        negative_capacity: 1000,
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

/// A backend holding agents `001` to `n`, named `a1`...
fn agents(n: u32) -> Fake {
    (1..=n).fold(Fake::empty("db"), |fake, i| {
        fake.and(AgentRecord::parse(&format!("{i:03}"), &format!("a{i}"), "any", "k").unwrap())
    })
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[test]
fn defaults_match_the_documented_values() {
    let s = CacheSettings::default();
    assert_eq!(s.capacity, 100_000);
    assert_eq!(s.negative_capacity, 10_000);
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

/// A not-found answer is not served stale: it is kept for `negative_ttl`
/// only, so an outage past it answers 2 (unknown ids do not hold room for
/// `stale_ttl`); within it, the cached not-found is a hit.
#[tokio::test(start_paused = true)]
async fn negative_entry_is_not_served_stale_during_an_outage() {
    let fake = Fake::empty("db");
    let cache = layer(&fake, exact());
    assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
    fake.set_down(true);
    advance(29).await;
    assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
    advance(2).await;
    assert!(cache.lookup(&q("id:404")).await.unwrap_err().is_outage());
    assert_eq!(cache.stats().stale_served, 0);
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

/// A refused login (6) is served stale like an outage (the store's data
/// did not change, keygate lost access to it) and keeps the entry, so the
/// next request is served stale too; with no entry it is answered 6. A bad
/// record (5) next to it in a chain is never hidden behind a stale answer.
#[tokio::test(start_paused = true)]
async fn refused_login_is_served_stale_but_never_a_bad_record() {
    let fake = Fake::with("db", "001", "a");
    let cache = layer(&fake, exact());
    assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
    advance(301).await;
    let refused = BackendError::LoginRefused("access denied for the user".into());
    fake.fail_with(Some(refused.clone()));
    for served in 1..=2 {
        let answer = cache.lookup(&q("id:001")).await.unwrap();
        assert_eq!(answer.unwrap().name.as_str(), "a");
        assert_eq!(cache.stats().stale_served, served);
    }
    let e = cache.lookup(&q("id:404")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal);
    assert!(e.is_login_refused());
    fake.fail_with(Some(BackendError::Chain(vec![
        ("db".into(), refused),
        ("other".into(), BackendError::Ambiguous),
    ])));
    let e = cache.lookup(&q("id:001")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRecord);
    assert_eq!(cache.stats().stale_served, 2);
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
    let fake = agents(50);
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

/// After a reload that keeps every backend, entries and counters carry
/// over and new misses go to the new stack.
#[tokio::test(start_paused = true)]
async fn a_reload_keeping_everything_keeps_entries_and_counters() {
    let old = Fake::with("old", "001", "a");
    let new = Fake::with("new", "002", "b");
    let cache = layer(&old, exact());
    cache.lookup(&q("id:001")).await.unwrap();
    let kept = Kept {
        backends: Vec::new(),
        everything: true,
    };
    let cache = cache.reloaded(Arc::new(new.clone()), &kept);
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
    let fake =
        Fake::with("db", "001", "a").and(AgentRecord::parse("002", "b", "any", "key-002").unwrap());
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
        let e = small
            .entry(&query)
            .await
            .unwrap_or_else(|| panic!("{query} is cached once looked up"));
        weak.push(Arc::downgrade(&e));
    }
    small.run_pending_tasks().await;
    let held = small.stats().entries;
    assert_eq!(held, 5, "a full cache holds its capacity");
    // 15 entries were evicted to make room: none of them is referenced.
    let alive = weak.iter().filter(|w| w.upgrade().is_some()).count();
    assert_eq!(alive as u64, held, "evicted entries still referenced");
}

/// What answered, for the audit trail: the backend on a miss (also for a
/// request that joined a lookup in flight), `cache` on a hit, `stale`
/// during an outage, nothing for an outage without an entry.
#[tokio::test(start_paused = true)]
async fn each_answer_names_what_answered_it() {
    use crate::audit::{attributed, Source};
    use crate::{Chain, ChainPolicy};
    let db = Fake::with("db", "001", "a").delayed(Duration::from_millis(10));
    let chain = Chain::new(
        "chain",
        vec![(
            Arc::new(db.clone()) as Arc<dyn KeyBackend>,
            ChainPolicy::default(),
        )],
    );
    let cache = Arc::new(CacheLayer::new(Arc::new(chain), exact()));
    let ask = |query: &'static str| {
        let cache = Arc::clone(&cache);
        tokio::spawn(async move { attributed(cache.lookup(&q(query))).await.1 })
    };
    let (first, joined) = (ask("id:001"), ask("id:001"));
    let db_name = Some(Source::Backend("db".into()));
    assert_eq!(first.await.unwrap(), db_name);
    assert_eq!(joined.await.unwrap(), db_name);
    assert_eq!(cache.stats().coalesced_waits, 1);
    assert_eq!(ask("id:001").await.unwrap(), Some(Source::Cache));
    db.set_down(true);
    advance(300).await;
    assert_eq!(ask("id:001").await.unwrap(), Some(Source::Stale));
    assert_eq!(ask("id:002").await.unwrap(), None);
}

/// An enumeration of random ids (issue 24, point 7) does not empty the
/// cache of real agents: capacity 1,000, 200 agents cached, 20,000 random
/// `id:` requests that all answer not-found, a hundred a second; then, with
/// the backend stopped, every one of the 200 is still answered from the
/// cache. (Before the negative budget this test found 63 of 200 dropped
/// and 63 answered 2; the issue measured 148 and 56 on the daemon.)
#[tokio::test(start_paused = true)]
async fn an_enumeration_of_unknown_ids_does_not_evict_known_agents() {
    use rand::{Rng, SeedableRng};
    let fake = agents(200);
    let cache = layer(
        &fake,
        CacheSettings {
            capacity: 1000,
            ..CacheSettings::default()
        },
    );
    for i in 1..=200 {
        assert!(cache
            .lookup(&q(&format!("id:{i:03}")))
            .await
            .unwrap()
            .is_some());
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(24);
    for _ in 0..20_000 {
        let id = rng.random_range(1_000..100_000_000u32);
        assert!(cache
            .lookup(&q(&format!("id:{id}")))
            .await
            .unwrap()
            .is_none());
        tokio::time::advance(Duration::from_millis(10)).await;
    }
    let mut dropped = 0;
    for i in 1..=200 {
        if cache.entry(&q(&format!("id:{i:03}"))).await.is_none() {
            dropped += 1;
        }
    }
    fake.set_down(true);
    let mut failed = 0;
    for i in 1..=200 {
        match cache.lookup(&q(&format!("id:{i:03}"))).await {
            Ok(Some(r)) => assert_eq!(r.id.as_str(), format!("{i:03}")),
            Ok(None) => panic!("id:{i:03} answered not-found"),
            Err(_) => failed += 1,
        }
    }
    assert_eq!(
        (dropped, failed),
        (0, 0),
        "known agents dropped out of the cache, and answered 2 with the backend stopped"
    );
}

/// A backend whose answer for 001 carries the key it holds when the lookup
/// starts, then takes `delay` to answer: a lookup that read the old data.
struct Rotating {
    key: std::sync::Mutex<&'static str>,
    delay: Duration,
    calls: std::sync::atomic::AtomicUsize,
}

#[async_trait]
impl KeyBackend for Rotating {
    fn name(&self) -> &str {
        "rotating"
    }
    async fn lookup(&self, _: &Query) -> Answer {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let key = *self.key.lock().unwrap();
        tokio::time::sleep(self.delay).await;
        Ok(Some(AgentRecord::parse("001", "a", "any", key).unwrap()))
    }
    async fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// `cache flush` while a lookup is in flight (issue 24, point 9): the
/// lookup started before the flush does not store its old answer after
/// it, and a request that arrives after the flush does not join it but
/// asks the backend again.
#[tokio::test(start_paused = true)]
async fn a_lookup_started_before_a_flush_does_not_store_its_answer_after_it() {
    for flush_one in [false, true] {
        let backend = Arc::new(Rotating {
            key: std::sync::Mutex::new("old-key"),
            delay: Duration::from_secs(5),
            calls: Default::default(),
        });
        let cache = Arc::new(CacheLayer::new(backend.clone(), exact()));
        let before = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.lookup(&q("id:001")).await })
        };
        advance(1).await;
        settle().await;
        // The key is rotated in the store, and the operator flushes.
        *backend.key.lock().unwrap() = "new-key";
        if flush_one {
            cache.flush(&q("id:001")).await;
        } else {
            cache.flush_all().await;
        }
        let after = {
            let cache = Arc::clone(&cache);
            tokio::spawn(async move { cache.lookup(&q("id:001")).await })
        };
        advance(5).await;
        settle().await;
        let old = before.await.unwrap().unwrap().unwrap();
        assert_eq!(old.key.expose(), "old-key", "the request before the flush");
        let new = after.await.unwrap().unwrap().unwrap();
        assert_eq!(new.key.expose(), "new-key", "the request after the flush");
        let cached = cache.lookup(&q("id:001")).await.unwrap().unwrap();
        assert_eq!(cached.key.expose(), "new-key", "flush_one: {flush_one}");
        assert_eq!(backend.calls.load(Ordering::SeqCst), 2);
    }
}

/// Durations far beyond any sensible config (issue 24, point 15) neither
/// overflow an `Instant` nor turn answers into 6: the entry lives "forever".
#[tokio::test(start_paused = true)]
async fn huge_durations_do_not_overflow() {
    let fake = Fake::with("db", "001", "a");
    let cache = layer(
        &fake,
        CacheSettings {
            ttl: Duration::MAX,
            negative_ttl: Duration::MAX,
            stale_ttl: Duration::MAX,
            refresh_ahead: 0.5,
            jitter: 0.1,
            ..exact()
        },
    );
    assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
    assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
    advance(86_400 * 365).await;
    assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
    assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
    assert_eq!(fake.calls(), 2);
}

/// A not-found entry holds its place for `negative_ttl` only (issue 24,
/// point 15): past it, it is gone from the cache, not kept for
/// `stale_ttl` more.
#[tokio::test(start_paused = true)]
async fn not_found_entries_go_at_negative_ttl() {
    let fake = Fake::empty("db");
    let cache = layer(&fake, exact());
    assert!(cache.lookup(&q("id:404")).await.unwrap().is_none());
    cache.run_pending_tasks().await;
    assert_eq!(cache.stats().entries, 1);
    advance(30).await;
    cache.run_pending_tasks().await;
    assert_eq!(cache.stats().entries, 0);
}

fn chain(links: &[&Fake]) -> Arc<dyn KeyBackend> {
    use crate::{Chain, ChainPolicy};
    let links = links
        .iter()
        .map(|f| {
            (
                Arc::new((*f).clone()) as Arc<dyn KeyBackend>,
                ChainPolicy::default(),
            )
        })
        .collect();
    Arc::new(Chain::new("chain", links))
}

/// A reload keeps the found answers of the backends `kept` names (under
/// their new names), and drops the others' and every not-found answer
/// when not everything is kept (issue 24, point 8).
#[tokio::test(start_paused = true)]
async fn a_reload_keeps_only_the_answers_of_unchanged_backends() {
    let (a, b) = (Fake::with("a", "001", "x"), Fake::with("b", "002", "y"));
    let cache = CacheLayer::new(chain(&[&a, &b]), exact());
    for query in ["id:001", "id:002", "id:404"] {
        cache.lookup(&q(query)).await.unwrap();
    }
    let renamed = Fake::with("a2", "001", "x");
    let kept = Kept {
        backends: vec![("a".into(), "a2".into())],
        everything: false,
    };
    let cache = cache.reloaded(chain(&[&renamed, &b]), &kept);
    let one = cache.entry(&q("id:001")).await.unwrap();
    assert_eq!(one.origin.backend.as_deref(), Some("a2"));
    assert!(cache.entry(&q("id:002")).await.is_none());
    assert!(cache.entry(&q("id:404")).await.is_none());
    // Kept again under the new name at the next reload.
    let kept = Kept {
        backends: vec![("a2".into(), "a2".into())],
        everything: false,
    };
    let cache = cache.reloaded(chain(&[&renamed]), &kept);
    assert!(cache.entry(&q("id:001")).await.is_some());
    assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
    assert_eq!(renamed.calls(), 0, "answered from the kept entry");
}

/// The layer a reload replaced stores nothing any more: neither a lookup
/// in flight during the reload nor one a request starts on it afterwards
/// (it took the old stack before the swap) brings an answer of the old
/// backends into the entries the new layer serves.
#[tokio::test(start_paused = true)]
async fn the_layer_a_reload_replaced_stores_nothing() {
    let old = Fake::with("keys", "001", "old").delayed(Duration::from_secs(5));
    let new = Fake::with("keys", "001", "new");
    let cache = Arc::new(CacheLayer::new(chain(&[&old]), exact()));
    let in_flight = {
        let cache = Arc::clone(&cache);
        tokio::spawn(async move { cache.lookup(&q("id:001")).await })
    };
    advance(1).await;
    let replaced = cache.reloaded(chain(&[&new]), &Kept::default());
    let late = {
        let cache = Arc::clone(&cache);
        tokio::spawn(async move { cache.lookup(&q("id:002")).await })
    };
    advance(5).await;
    settle().await;
    assert_eq!(
        in_flight.await.unwrap().unwrap().unwrap().name.as_str(),
        "old"
    );
    assert!(late.await.unwrap().unwrap().is_none());
    assert!(replaced.entry(&q("id:001")).await.is_none());
    assert!(replaced.entry(&q("id:002")).await.is_none());
    let r = replaced.lookup(&q("id:001")).await.unwrap().unwrap();
    assert_eq!(r.name.as_str(), "new");
}

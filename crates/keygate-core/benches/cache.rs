//! The cache's hit path against the lookup it saves, for an in-memory
//! backend: `cargo bench -p keygate-core --bench cache`.
//!
//! - `backend`: the bare in-memory lookup (a hash map, a record clone).
//! - `stack`: what the daemon runs with the cache off:
//!   `Chain[Breaker(Latency(Timeout(backend)))]`.
//! - `cache_hit`: the daemon's default, `Cache(stack)`, every entry fresh.
//! - `quick_cache_hit`: the same hit path over quick_cache (0.7, S3-FIFO,
//!   SipHash with random keys as ours), the crate the store was weighed
//!   against: the entry, the freshness check and the record clone as ours.
//!
//! A cache hit must not cost more than `stack`. Each lookup runs to
//! completion on a current-thread runtime, as a request does on its task.
//!
//! Before the timings, `scan` prints how many of 200 cached agents each
//! store keeps through an enumeration of 20,000 unknown ids (capacity
//! 1,000), with the agents asked once or twice before it, and with every
//! agent asked again every 100 unknown ids during it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::hash::RandomState;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{criterion_group, Criterion};
use keygate_core::audit::{answered_by, Source};
use keygate_core::{
    AgentRecord, BackendError, Breaker, BreakerSettings, CacheLayer, CacheSettings, Chain,
    ChainPolicy, KeyBackend, LatencyLayer, Query, Request, TimeoutLayer,
};

const KEY: &str = "ac57f6a5e1d9b0c2e5a1d6f7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50c71";
const AGENTS: u32 = 10_000;

/// An in-memory backend like the file backend: one map, a record clone.
struct Memory(HashMap<String, AgentRecord>);

#[async_trait]
impl KeyBackend for Memory {
    fn name(&self) -> &str {
        "keys"
    }
    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        Ok(match query {
            Query::Id(id) => self.0.get(id.as_str()).cloned(),
            Query::Ip(_) => None,
        })
    }
    async fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

fn memory() -> Arc<dyn KeyBackend> {
    let map = (1..=AGENTS)
        .map(|i| {
            let id = format!("{i:05}");
            let r = AgentRecord::parse(
                &id,
                &format!("agent-{id}"),
                &format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255),
                KEY,
            )
            .unwrap();
            (id, r)
        })
        .collect();
    Arc::new(Memory(map))
}

/// The daemon's per-backend layers and chain, as keygate-config builds them.
fn stack(backend: Arc<dyn KeyBackend>) -> Arc<dyn KeyBackend> {
    let timed: Arc<dyn KeyBackend> = Arc::new(TimeoutLayer::new(backend, Duration::from_secs(5)));
    let latency = Arc::new(LatencyLayer::new(timed));
    let breaker = Arc::new(Breaker::new(latency, BreakerSettings::default()));
    Arc::new(Chain::new(
        "chain",
        vec![(breaker as Arc<dyn KeyBackend>, ChainPolicy::default())],
    ))
}

fn queries() -> Vec<Query> {
    (1..=AGENTS)
        .map(|i| Request::parse(format!("id:{i:05}").as_bytes()).unwrap())
        .collect()
}

/// One cached answer in [`Quick`]: what the hit path of ours reads.
struct QuickEntry {
    answer: Option<AgentRecord>,
    expires_at: tokio::time::Instant,
}

type QuickMap =
    quick_cache::sync::Cache<Query, Arc<QuickEntry>, quick_cache::UnitWeighter, RandomState>;

/// Our layer's hit path over quick_cache: a fresh entry is answered with a
/// clone of its record, counted and attributed as ours does; a miss asks
/// `inner` and stores the answer.
struct Quick {
    map: QuickMap,
    inner: Arc<dyn KeyBackend>,
    ttl: Duration,
    hits: AtomicU64,
}

impl Quick {
    fn new(inner: Arc<dyn KeyBackend>, capacity: u64) -> Self {
        let map = QuickMap::with(
            capacity as usize,
            capacity,
            quick_cache::UnitWeighter,
            RandomState::new(),
            Default::default(),
        );
        Self {
            map,
            inner,
            ttl: Duration::from_secs(300),
            hits: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl KeyBackend for Quick {
    fn name(&self) -> &str {
        "quick"
    }
    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let now = tokio::time::Instant::now();
        if let Some(entry) = self.map.get(query) {
            if now < entry.expires_at {
                self.hits.fetch_add(1, Ordering::Relaxed);
                answered_by(Source::Cache);
                return Ok(entry.answer.clone());
            }
        }
        let answer = self.inner.lookup(query).await?;
        let entry = QuickEntry {
            answer: answer.clone(),
            expires_at: now + self.ttl,
        };
        self.map.insert(query.clone(), Arc::new(entry));
        Ok(answer)
    }
    async fn health(&self) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The ways to look an agent up, built on `rt`.
struct Setups {
    backend: Arc<dyn KeyBackend>,
    cache_off: Arc<dyn KeyBackend>,
    cache_on: CacheLayer,
    quick: Quick,
}

fn setups(rt: &tokio::runtime::Runtime) -> Setups {
    let qs = queries();
    let backend = memory();
    let cache_off = rt.block_on(async { stack(backend.clone()) });
    let (cache_on, quick) = rt.block_on(async {
        let settings = CacheSettings {
            capacity: u64::from(AGENTS) * 2,
            ..CacheSettings::default()
        };
        let cache = CacheLayer::new(stack(backend.clone()), settings);
        let quick = Quick::new(stack(backend.clone()), u64::from(AGENTS) * 2);
        for q in &qs {
            cache.lookup(q).await.unwrap().unwrap();
            quick.lookup(q).await.unwrap().unwrap();
        }
        cache.run_pending_tasks().await;
        (cache, quick)
    });
    Setups {
        backend,
        cache_off,
        cache_on,
        quick,
    }
}

/// How many of 200 agents each store still holds after 20,000 unknown ids
/// (capacity 1,000): `asked` times each before the scan (or, with `asked`
/// 0, once each half-way through it), and (`during`) all 200 again after
/// every 100 unknown ids. Prints one line per case.
fn scan() {
    let rt = runtime();
    rt.block_on(async {
        println!("scan: 200 agents, 20,000 unknown ids, capacity 1,000: agents still cached");
        for (asked, during) in [(1, false), (2, false), (1, true), (0, false)] {
            let backend = memory();
            let ours = CacheLayer::new(
                backend.clone(),
                CacheSettings {
                    capacity: 1000,
                    ..CacheSettings::default()
                },
            );
            let quick = Quick::new(backend.clone(), 1000);
            let agents: Vec<Query> = queries().into_iter().take(200).collect();
            for _ in 0..asked {
                for q in &agents {
                    ours.lookup(q).await.unwrap().unwrap();
                    quick.lookup(q).await.unwrap().unwrap();
                }
            }
            for i in 0..20_000u32 {
                let q = Request::parse(format!("id:{}", 50_000_000 + i * 7).as_bytes()).unwrap();
                ours.lookup(&q).await.unwrap();
                quick.lookup(&q).await.unwrap();
                if (during && i % 100 == 99) || (asked == 0 && i == 10_000) {
                    for q in &agents {
                        ours.lookup(q).await.unwrap().unwrap();
                        quick.lookup(q).await.unwrap().unwrap();
                    }
                }
            }
            let before = ours.stats().misses;
            for q in &agents {
                ours.lookup(q).await.unwrap().unwrap();
            }
            let ours_kept = 200 - (ours.stats().misses - before);
            let quick_kept = agents
                .iter()
                .filter(|q| quick.map.peek(*q).is_some())
                .count();
            let when = match (asked, during) {
                (0, _) => "once, half-way through the scan".to_owned(),
                (n, false) => format!("{n}x before"),
                (n, true) => format!("{n}x before, and every 100 unknown ids"),
            };
            println!("  asked {when}: ours {ours_kept}, quick_cache {quick_kept}");
        }
    });
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn lookups(c: &mut Criterion) {
    let rt = runtime();
    let qs = queries();
    let s = setups(&rt);
    let mut g = c.benchmark_group("lookup");
    let mut run = |name: &str, b: &dyn KeyBackend| {
        let mut i = 0;
        g.bench_function(name, |bench| {
            bench.iter(|| {
                i = (i + 7919) % qs.len();
                rt.block_on(b.lookup(black_box(&qs[i]))).unwrap().unwrap()
            })
        });
    };
    run("backend", &*s.backend);
    run("stack", &*s.cache_off);
    run("cache_hit", &s.cache_on);
    run("quick_cache_hit", &s.quick);
    g.finish();
    assert_eq!(s.cache_on.stats().misses, u64::from(AGENTS));
}

/// `KEYGATE_CALLGRIND=backend|stack|cache_hit|quick_cache_hit:N` runs N lookups of one kind
/// and exits, for `valgrind --tool=callgrind` (instruction counts hold
/// under load where times do not): the difference between N and 0 lookups,
/// divided by N, is the instructions per lookup.
fn callgrind(spec: &str) {
    let (name, n) = spec.split_once(':').unwrap();
    let n: usize = n.parse().unwrap();
    let rt = runtime();
    let qs = queries();
    let s = setups(&rt);
    let b: &dyn KeyBackend = match name {
        "backend" => &*s.backend,
        "stack" => &*s.cache_off,
        "cache_hit" => &s.cache_on,
        "quick_cache_hit" => &s.quick,
        other => panic!("unknown {other}"),
    };
    rt.block_on(async {
        for i in 0..n {
            black_box(b.lookup(&qs[(i * 7919) % qs.len()]).await.unwrap().unwrap());
        }
    });
}

criterion_group!(benches, lookups);

fn main() {
    if let Ok(spec) = std::env::var("KEYGATE_CALLGRIND") {
        callgrind(&spec);
        return;
    }
    scan();
    benches();
    Criterion::default().configure_from_args().final_summary();
}

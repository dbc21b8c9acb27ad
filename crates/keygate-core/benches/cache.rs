//! The cache's hit path against the lookup it saves, for an in-memory
//! backend: `cargo bench -p keygate-core --bench cache`.
//!
//! - `backend`: the bare in-memory lookup (a hash map, a record clone).
//! - `stack`: what the daemon runs with the cache off:
//!   `Chain[Breaker(Latency(Timeout(backend)))]`.
//! - `cache_hit`: the daemon's default, `Cache(stack)`, every entry fresh.
//!
//! A cache hit must not cost more than `stack`. Each lookup runs to
//! completion on a current-thread runtime, as a request does on its task.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use criterion::{criterion_group, Criterion};
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

/// The three ways to look an agent up, built on `rt`.
fn setups(rt: &tokio::runtime::Runtime) -> (Arc<dyn KeyBackend>, Arc<dyn KeyBackend>, CacheLayer) {
    let qs = queries();
    let backend = memory();
    let cache_off = rt.block_on(async { stack(backend.clone()) });
    let cache_on = rt.block_on(async {
        let settings = CacheSettings {
            capacity: u64::from(AGENTS) * 2,
            ..CacheSettings::default()
        };
        let cache = CacheLayer::new(stack(backend.clone()), settings);
        for q in &qs {
            cache.lookup(q).await.unwrap().unwrap();
        }
        cache.run_pending_tasks().await;
        cache
    });
    (backend, cache_off, cache_on)
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
    let (backend, cache_off, cache_on) = setups(&rt);
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
    run("backend", &*backend);
    run("stack", &*cache_off);
    run("cache_hit", &cache_on);
    g.finish();
    assert_eq!(cache_on.stats().misses, u64::from(AGENTS));
}

/// `KEYGATE_CALLGRIND=backend|stack|cache_hit:N` runs N lookups of one kind
/// and exits, for `valgrind --tool=callgrind` (instruction counts hold
/// under load where times do not): the difference between N and 0 lookups,
/// divided by N, is the instructions per lookup.
fn callgrind(spec: &str) {
    let (name, n) = spec.split_once(':').unwrap();
    let n: usize = n.parse().unwrap();
    let rt = runtime();
    let qs = queries();
    let (backend, cache_off, cache_on) = setups(&rt);
    let b: &dyn KeyBackend = match name {
        "backend" => &*backend,
        "stack" => &*cache_off,
        "cache_hit" => &cache_on,
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
    benches();
    Criterion::default().configure_from_args().final_summary();
}

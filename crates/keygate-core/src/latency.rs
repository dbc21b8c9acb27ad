//! Latency statistics of one backend: a layer that times every lookup it
//! passes on and keeps a window of the most recent ones, for `keygate
//! backends` (p50/p99) and the metrics (each lookup's outcome and latency,
//! [`crate::metrics::backend_lookup`]).
//!
//! Put it inside the backend's [`crate::Breaker`] (so lookups the breaker
//! skips are not timed) and outside its [`crate::TimeoutLayer`] (so a
//! timed-out lookup counts with the time it cost).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use crate::backend::ListStream;
use crate::{AgentRecord, BackendError, KeyBackend, Query};

/// How many recent lookup latencies the percentiles are computed from.
pub const LATENCY_WINDOW: usize = 1024;

/// Percentiles of the recent lookups.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LatencyStats {
    /// How many lookups the window holds.
    pub samples: usize,
    /// Median latency; `None` before the first lookup.
    pub p50: Option<Duration>,
    /// 99th percentile latency.
    pub p99: Option<Duration>,
}

/// The layer, itself a [`KeyBackend`].
pub struct LatencyLayer {
    inner: Arc<dyn KeyBackend>,
    /// The backend's name as the metrics label it: shared, so a lookup
    /// clones a reference count instead of copying the name twice.
    label: Arc<str>,
    window: Mutex<VecDeque<Duration>>,
}

impl LatencyLayer {
    /// Times the lookups of `inner`.
    pub fn new(inner: Arc<dyn KeyBackend>) -> Self {
        Self {
            label: inner.name().into(),
            inner,
            window: Mutex::new(VecDeque::with_capacity(LATENCY_WINDOW)),
        }
    }

    fn window(&self) -> MutexGuard<'_, VecDeque<Duration>> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// p50 and p99 of the last [`LATENCY_WINDOW`] lookups.
    pub fn stats(&self) -> LatencyStats {
        let mut sorted: Vec<Duration> = self.window().iter().copied().collect();
        sorted.sort_unstable();
        LatencyStats {
            samples: sorted.len(),
            p50: percentile(&sorted, 50),
            p99: percentile(&sorted, 99),
        }
    }
}

/// The `pct`th percentile of sorted durations (nearest rank).
fn percentile(sorted: &[Duration], pct: usize) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted.get(rank - 1).copied()
}

#[async_trait]
impl KeyBackend for LatencyLayer {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let start = Instant::now();
        let result = self.inner.lookup(query).await;
        let elapsed = start.elapsed();
        crate::metrics::backend_lookup(&self.label, &result, elapsed);
        let mut window = self.window();
        if window.len() == LATENCY_WINDOW {
            window.pop_front();
        }
        window.push_back(elapsed);
        result
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.inner.health().await
    }

    fn current_host(&self) -> Option<String> {
        self.inner.current_host()
    }

    fn data_version(&self) -> u64 {
        self.inner.data_version()
    }

    fn list(&self) -> ListStream<'_> {
        self.inner.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fake;
    use crate::Request;

    fn q(s: &str) -> Query {
        Request::parse(s.as_bytes()).unwrap()
    }

    /// p50 and p99 come from the latencies of the lookups passed on,
    /// errors included.
    #[tokio::test(start_paused = true)]
    async fn reports_latency_percentiles() {
        let fake = Fake::with("db", "001", "a");
        let l = LatencyLayer::new(Arc::new(fake.clone()));
        assert_eq!(l.stats(), LatencyStats::default());
        for ms in 1..=100 {
            fake.set_delay(Duration::from_millis(ms));
            l.lookup(&q("id:001")).await.unwrap();
        }
        let s = l.stats();
        assert_eq!(s.p50, Some(Duration::from_millis(50)));
        assert_eq!(s.p99, Some(Duration::from_millis(99)));
        assert_eq!(s.samples, 100);
        fake.set_down(true);
        l.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(l.stats().samples, 101);
        assert_eq!(l.name(), "db");
    }

    /// Only the last LATENCY_WINDOW lookups count.
    #[tokio::test(start_paused = true)]
    async fn the_window_keeps_the_most_recent_lookups() {
        let fake = Fake::with("db", "001", "a").delayed(Duration::from_secs(1));
        let l = LatencyLayer::new(Arc::new(fake.clone()));
        for _ in 0..LATENCY_WINDOW {
            l.lookup(&q("id:001")).await.unwrap();
        }
        fake.set_delay(Duration::from_millis(1));
        for _ in 0..LATENCY_WINDOW {
            l.lookup(&q("id:001")).await.unwrap();
        }
        let s = l.stats();
        assert_eq!(s.samples, LATENCY_WINDOW);
        assert_eq!(s.p99, Some(Duration::from_millis(1)));
    }
}

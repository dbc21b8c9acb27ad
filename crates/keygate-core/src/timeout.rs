//! A per-backend deadline around every lookup and health check.

use std::time::Duration;

use async_trait::async_trait;

use crate::{AgentRecord, BackendError, KeyBackend, Query};

/// Fails a lookup with [`BackendError::Timeout`] when the wrapped backend
/// takes longer than its `timeout`; the chain then moves on.
pub struct TimeoutLayer<B> {
    inner: B,
    timeout: Duration,
}

impl<B: KeyBackend> TimeoutLayer<B> {
    /// Wraps `inner` with a deadline of `timeout` per call.
    pub fn new(inner: B, timeout: Duration) -> Self {
        Self { inner, timeout }
    }
}

#[async_trait]
impl<B: KeyBackend> KeyBackend for TimeoutLayer<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        tokio::time::timeout(self.timeout, self.inner.lookup(query))
            .await
            .unwrap_or(Err(BackendError::Timeout(self.timeout)))
    }

    async fn health(&self) -> Result<(), BackendError> {
        tokio::time::timeout(self.timeout, self.inner.health())
            .await
            .unwrap_or(Err(BackendError::Timeout(self.timeout)))
    }

    fn current_host(&self) -> Option<String> {
        self.inner.current_host()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fake;
    use crate::Request;

    #[tokio::test(start_paused = true)]
    async fn slow_backend_times_out_at_its_own_deadline() {
        let slow = Fake::with("slow", "001", "a").delayed(Duration::from_secs(5));
        let t = TimeoutLayer::new(slow, Duration::from_secs(2));
        let start = tokio::time::Instant::now();
        let e = t
            .lookup(&Request::parse(b"id:001").unwrap())
            .await
            .unwrap_err();
        assert!(matches!(e, BackendError::Timeout(d) if d == Duration::from_secs(2)));
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(e.to_string(), "timed out after 2s");
    }

    #[tokio::test(start_paused = true)]
    async fn fast_backend_answers_through_the_layer() {
        let fast = Fake::with("fast", "001", "a").delayed(Duration::from_millis(10));
        let t = TimeoutLayer::new(fast, Duration::from_secs(2));
        assert!(t
            .lookup(&Request::parse(b"id:001").unwrap())
            .await
            .unwrap()
            .is_some());
    }
}

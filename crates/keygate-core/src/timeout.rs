//! A per-backend deadline around every lookup and health check, and
//! [`within`], the deadline every layer uses.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;
use std::time::Duration;

use async_trait::async_trait;

use crate::backend::ListStream;
use crate::{AgentRecord, BackendError, KeyBackend, Query};

/// Runs `fut` with a deadline of `limit`, like [`tokio::time::timeout`],
/// but starts the timer only if `fut` has to wait: a future that is ready
/// on its first poll (an answer from memory, a request already in the
/// socket) never reads the clock, takes no runtime handle and touches no
/// timer. The deadline counts from that first wait; the first poll does
/// not block (a future that hogged the thread in it could not have been
/// interrupted by tokio's timer either).
pub async fn within<F: Future>(
    limit: Duration,
    fut: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    let mut fut = pin!(fut);
    match std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
        Poll::Ready(output) => Ok(output),
        Poll::Pending => tokio::time::timeout(limit, fut).await,
    }
}

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
        within(self.timeout, self.inner.lookup(query))
            .await
            .unwrap_or(Err(BackendError::Timeout(self.timeout)))
    }

    async fn health(&self) -> Result<(), BackendError> {
        within(self.timeout, self.inner.health())
            .await
            .unwrap_or(Err(BackendError::Timeout(self.timeout)))
    }

    fn current_host(&self) -> Option<String> {
        self.inner.current_host()
    }

    fn data_version(&self) -> u64 {
        self.inner.data_version()
    }

    /// A listing is not one lookup: it runs without the lookup deadline.
    fn list(&self) -> ListStream<'_> {
        self.inner.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Fake;
    use crate::Request;

    /// A future ready at once is answered without a timer: here there is
    /// no runtime at all, where `tokio::time::timeout` would panic making
    /// its `Sleep`.
    #[test]
    fn a_ready_future_needs_no_timer() {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut ready = pin!(within(Duration::from_secs(1), async { 7 }));
        assert!(matches!(ready.as_mut().poll(&mut cx), Poll::Ready(Ok(7))));
    }

    /// A future that waits still gets its deadline.
    #[tokio::test(start_paused = true)]
    async fn a_waiting_future_times_out() {
        let waits = within(Duration::from_secs(2), std::future::pending::<()>());
        assert!(waits.await.is_err());
        let quick = within(
            Duration::from_secs(2),
            tokio::time::sleep(Duration::from_secs(1)),
        );
        assert!(quick.await.is_ok());
    }

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

    /// A listing passes through the layer whole, however long it takes: the
    /// per-lookup deadline does not cut it.
    #[tokio::test(start_paused = true)]
    async fn listing_is_forwarded_without_the_lookup_deadline() {
        use futures_util::StreamExt;
        let inner = Fake::with("f", "001", "a").delayed(Duration::from_secs(5));
        let t = TimeoutLayer::new(inner, Duration::from_millis(1));
        let listed: Vec<_> = t.list().collect().await;
        assert_eq!(listed.len(), 1);
        assert!(matches!(&listed[0], Ok(crate::Listed::Record(r)) if r.id.as_str() == "001"));
    }

    /// A backend that does not implement listing says so, by name.
    #[tokio::test]
    async fn default_listing_is_an_internal_error_naming_the_backend() {
        use futures_util::StreamExt;
        struct NoList;
        #[async_trait]
        impl KeyBackend for NoList {
            fn name(&self) -> &str {
                "nolist"
            }
            async fn lookup(&self, _: &Query) -> Result<Option<AgentRecord>, BackendError> {
                Ok(None)
            }
            async fn health(&self) -> Result<(), BackendError> {
                Ok(())
            }
        }
        let listed: Vec<_> = NoList.list().collect().await;
        assert_eq!(listed.len(), 1);
        let e = listed.into_iter().next().unwrap().unwrap_err();
        assert_eq!(e.code(), crate::ErrorCode::Internal);
        assert!(e.to_string().contains("'nolist' cannot list"), "{e}");
    }
}

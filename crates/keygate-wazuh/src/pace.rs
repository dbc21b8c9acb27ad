//! The pace of API calls: one every `60 s / max_requests_per_minute`,
//! evenly, for every call but authentication (Wazuh's API does not count
//! logins either). The API's limit (`access.max_request_per_minute`, 300 by
//! default) is shared by every user, the dashboard included; spacing calls
//! evenly rather than in bursts keeps any minute of ours under our share.
//!
//! A `tokio::time::Interval` with [`MissedTickBehavior::Delay`] is the
//! whole mechanism: a call waits for the next tick, and a late tick pushes
//! the following ones back instead of bunching them up. `governor`'s GCRA
//! with a burst of 1 would space calls the same way, but its clock does not
//! follow tokio's (paused) time, so the pace could not be tested without
//! waiting for real minutes; the interval is already in tokio.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::{Interval, MissedTickBehavior};

/// Spaces calls `period` apart.
pub(crate) struct Pace {
    period: Duration,
    /// Created at the first call, inside the runtime.
    interval: Mutex<Option<Interval>>,
}

impl Pace {
    pub(crate) fn new(period: Duration) -> Self {
        Self {
            period: period.max(Duration::from_micros(1)),
            interval: Mutex::new(None),
        }
    }

    /// Waits for this call's turn.
    pub(crate) async fn wait(&self) {
        let mut interval = self.interval.lock().await;
        let interval = interval.get_or_insert_with(|| {
            let mut i = tokio::time::interval(self.period);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        interval.tick().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls are spaced evenly: 10 calls at 100 a minute take 9 periods
    /// (the first goes at once), whatever the number of callers.
    #[tokio::test(start_paused = true)]
    async fn calls_are_spaced_evenly() {
        let pace = std::sync::Arc::new(Pace::new(Duration::from_millis(600)));
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let pace = pace.clone();
            tasks.push(tokio::spawn(async move {
                pace.wait().await;
                tokio::time::Instant::now()
            }));
        }
        let mut times = Vec::new();
        for t in tasks {
            times.push(t.await.unwrap() - start);
        }
        times.sort();
        for (n, t) in times.iter().enumerate() {
            assert_eq!(*t, Duration::from_millis(600) * n as u32, "{times:?}");
        }
    }

    /// After a pause, calls resume at the pace: no burst to catch up.
    #[tokio::test(start_paused = true)]
    async fn a_late_call_does_not_let_a_burst_through() {
        let pace = Pace::new(Duration::from_millis(600));
        pace.wait().await;
        tokio::time::sleep(Duration::from_secs(10)).await;
        let resumed = tokio::time::Instant::now();
        pace.wait().await;
        pace.wait().await;
        pace.wait().await;
        assert_eq!(resumed.elapsed(), Duration::from_millis(1200));
    }
}

//! Going back to the first host: while a backend with several hosts serves
//! from a later one, it probes the first host and returns to it only after
//! `failback_after` of continuous health (never on the first good probe,
//! and never not at all, as nslcd does). The SQL, Redis and LDAP backends
//! share this loop; each supplies its own probe.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often the first host is probed: a fifth of `failback_after`,
/// between 100 ms and 10 s.
pub fn probe_interval(failback_after: Duration) -> Duration {
    (failback_after / 5).clamp(Duration::from_millis(100), Duration::from_secs(10))
}

/// Probes every [`probe_interval`] until `probe` has answered `Some(true)`
/// without a break for `failback_after`, then returns `true`. A
/// `Some(false)` restarts the count; `None` (the backend is gone, or no
/// longer needs its first host back) ends the wait with `false`.
pub async fn steady_health<P, F>(failback_after: Duration, mut probe: P) -> bool
where
    P: FnMut() -> F,
    F: Future<Output = Option<bool>>,
{
    let interval = probe_interval(failback_after);
    let mut healthy_since: Option<Instant> = None;
    loop {
        tokio::time::sleep(interval).await;
        let Some(ok) = probe().await else {
            return false;
        };
        let now = Instant::now();
        healthy_since = if ok {
            healthy_since.or(Some(now))
        } else {
            None
        };
        if healthy_since.is_some_and(|since| now.duration_since(since) >= failback_after) {
            return true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// The first host is down until t = 10 s, up from then on but for one
    /// failed probe at t = 12 s; with failback_after = 5 s (probes every
    /// 1 s) the backend returns to it at t = 18 s: 5 s after the last
    /// failure's recovery (13 s), not at the first good probe (10 s).
    #[tokio::test(start_paused = true)]
    async fn failback_waits_for_failback_after_of_unbroken_health() {
        let start = Instant::now();
        let probes = Arc::new(AtomicUsize::new(0));
        let counter = probes.clone();
        let back = steady_health(Duration::from_secs(5), move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let t = start.elapsed().as_secs();
            async move { Some(t >= 10 && t != 12) }
        })
        .await;
        assert!(back);
        assert_eq!(start.elapsed(), Duration::from_secs(18));
        assert_eq!(probes.load(Ordering::SeqCst), 18, "one probe a second");
    }

    /// A host that never stays up long enough is never returned to.
    #[tokio::test(start_paused = true)]
    async fn flapping_host_is_not_returned_to() {
        let start = Instant::now();
        let waited = tokio::time::timeout(
            Duration::from_secs(600),
            steady_health(Duration::from_secs(5), move || {
                let t = start.elapsed().as_secs();
                async move { Some(!t.is_multiple_of(4)) }
            }),
        )
        .await;
        assert!(waited.is_err(), "returned to a host that fails every 4 s");
    }

    /// The probe ends the wait when the backend no longer needs it.
    #[tokio::test(start_paused = true)]
    async fn ends_when_the_probe_says_so() {
        let start = Instant::now();
        let back = steady_health(Duration::from_secs(300), move || {
            let t = start.elapsed();
            async move { (t < Duration::from_secs(30)).then_some(true) }
        })
        .await;
        assert!(!back);
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[test]
    fn probe_interval_is_a_fifth_within_bounds() {
        assert_eq!(
            probe_interval(Duration::from_secs(300)),
            Duration::from_secs(10)
        );
        assert_eq!(
            probe_interval(Duration::from_secs(5)),
            Duration::from_secs(1)
        );
        assert_eq!(
            probe_interval(Duration::from_millis(100)),
            Duration::from_millis(100)
        );
    }
}

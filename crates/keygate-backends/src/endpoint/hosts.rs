//! Failing over between hosts and going back to the first one.
//!
//! [`Hosts`] is the host list of every network backend (SQL servers, Redis,
//! LDAP): requests go to the active host, a failed host is skipped, and
//! while a later host serves, [`steady_health`] probes the first one and
//! returns to it only after `failback_after` of continuous health (never on
//! the first good probe, and never not at all, as nslcd does).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keygate_core::BackendError;
use tokio::time::Instant;

/// One host of a multi-host backend.
pub trait Host: Send + Sync + 'static {
    /// Whether the host answers now; bounded by the implementation.
    fn probe(&self) -> impl Future<Output = bool> + Send;
    /// The host for `keygate backends`: its URL through
    /// [`redact_url`](super::redact_url). Never in a log line.
    fn label(&self) -> &str;
}

/// A backend's hosts (`url`, or `urls` tried in order).
///
/// Requests go to the active host. When it fails with an outage, or the
/// lookup is cancelled by the backend's deadline while waiting on it, the
/// next host becomes active: that request fails (2) or, when the failure
/// was quick (a refused connection), is retried on the next host at once.
/// While a host other than the first is active, one background probe
/// checks the first host; after `failback_after` of continuous health the
/// first host is active again.
pub struct Hosts<H> {
    inner: Arc<Inner<H>>,
}

struct Inner<H> {
    backend: String,
    hosts: Vec<H>,
    active: AtomicUsize,
    probing: AtomicBool,
    failback_after: Duration,
}

impl<H: Host> Hosts<H> {
    /// The hosts of `backend`, asked in this order.
    pub fn new(backend: &str, hosts: Vec<H>, failback_after: Duration) -> Self {
        Self {
            inner: Arc::new(Inner {
                backend: backend.to_owned(),
                hosts,
                active: AtomicUsize::new(0),
                probing: AtomicBool::new(false),
                failback_after,
            }),
        }
    }

    /// The index (from 0, in config order) of the host asked first.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::Acquire) % self.inner.hosts.len().max(1)
    }

    /// `host 2 of 2: <redacted URL>`, the host in use, for `keygate
    /// backends`.
    pub fn current(&self) -> Option<String> {
        let i = self.active();
        let host = self.inner.hosts.get(i)?;
        Some(format!(
            "host {} of {}: {}",
            i + 1,
            self.inner.hosts.len(),
            host.label()
        ))
    }

    /// How many hosts there are.
    pub fn count(&self) -> usize {
        self.inner.hosts.len()
    }

    /// Host `index` (from 0, in config order).
    pub fn get(&self, index: usize) -> Option<&H> {
        self.inner.hosts.get(index)
    }

    /// The backend's name, for logs.
    pub fn backend(&self) -> &str {
        &self.inner.backend
    }

    /// Marks host `index` failed, as a request that failed on it does: the
    /// next host becomes active (if `index` still was).
    pub fn failed(&self, index: usize) {
        Inner::failed(&self.inner, index);
    }

    /// Runs `f` on the active host, moving on to the following hosts while
    /// it fails with an outage; returns the first answer (found, not found
    /// or a bad record) or the last outage.
    pub async fn run<'h, T, F, Fut>(&'h self, f: F) -> Result<T, BackendError>
    where
        F: Fn(&'h H) -> Fut,
        Fut: Future<Output = Result<T, BackendError>>,
    {
        let n = self.inner.hosts.len();
        let first = self.active();
        let mut last = None;
        for k in 0..n {
            let i = (first + k) % n;
            let mut attempt = Attempt {
                hosts: &self.inner,
                index: i,
                done: false,
            };
            match f(&self.inner.hosts[i]).await {
                Err(e) if e.is_outage() => {
                    drop(attempt); // marks host i failed
                    last = Some(e);
                }
                other => {
                    attempt.done = true;
                    return other;
                }
            }
        }
        Err(last.unwrap_or_else(|| BackendError::Internal("no hosts configured".into())))
    }
}

/// One try on one host; dropped without `done` (failed or cancelled), it
/// moves the backend on to the next host.
struct Attempt<'a, H: Host> {
    hosts: &'a Arc<Inner<H>>,
    index: usize,
    done: bool,
}

impl<H: Host> Drop for Attempt<'_, H> {
    fn drop(&mut self) {
        if !self.done {
            Inner::failed(self.hosts, self.index);
        }
    }
}

impl<H: Host> Inner<H> {
    fn failed(this: &Arc<Self>, index: usize) {
        let n = this.hosts.len();
        if n < 2 {
            return;
        }
        let next = (index + 1) % n;
        if this
            .active
            .compare_exchange(index, next, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // By name and index only: a URL may carry a password.
            tracing::warn!(
                backend = %this.backend,
                failed_host = index + 1,
                active_host = next + 1,
                hosts = n,
                "Host failed; moving on to the next one."
            );
            if next != 0 {
                Self::start_probe(this);
            }
        }
    }

    /// Starts the background probe of the first host, unless one runs.
    fn start_probe(this: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if this.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(this);
        let after = this.failback_after;
        runtime.spawn(async move {
            let back = steady_health(after, || {
                let weak = weak.clone();
                async move {
                    let this = weak.upgrade()?;
                    if this.active.load(Ordering::Acquire) == 0 {
                        return None;
                    }
                    Some(this.hosts[0].probe().await)
                }
            })
            .await;
            let Some(this) = weak.upgrade() else { return };
            if back {
                this.active.store(0, Ordering::Release);
                tracing::info!(
                    backend = %this.backend,
                    active_host = 1,
                    hosts = this.hosts.len(),
                    "First host healthy again; moving back to it."
                );
            }
            this.probing.store(false, Ordering::Release);
        });
    }
}

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

//! A circuit breaker around one backend: after a run of outages the backend
//! is skipped at once instead of being waited for, and a single background
//! probe brings it back when it answers again.
//!
//! Without it, every request during a database outage would wait for that
//! backend's timeout before the chain moves on or the cache serves a stale
//! answer. While the breaker is open, lookups fail immediately with
//! [`BackendError::Unavailable`] (code 2, so the chain goes on and the cache
//! may answer stale), and one task calls the backend's `health()` with
//! exponential backoff and jitter until it succeeds. Requests never wait for
//! that probe.
//!
//! Only outages count. A bad record (5) or an internal error (6) is an
//! answer: the backend is reachable, so it neither counts toward tripping
//! nor closes the breaker; a successful lookup resets the count.
//!
//! Put the breaker outside the backend's [`crate::TimeoutLayer`], so that
//! timeouts count as outages and the probe's health check is bounded too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use rand::Rng;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{AgentRecord, BackendError, KeyBackend, Query};

/// Each probe delay is drawn from `[interval * (1 - PROBE_JITTER), interval]`,
/// so that several keygate instances do not probe a recovering server in
/// lockstep.
const PROBE_JITTER: f64 = 0.2;

/// When to trip and how to probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive outages after which the backend is skipped.
    pub failures_to_trip: u32,
    /// Delay before the first probe; it doubles after each failed probe.
    pub initial_retry_interval: Duration,
    /// Longest delay between two probes.
    pub max_retry_interval: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failures_to_trip: 3,
            initial_retry_interval: Duration::from_secs(1),
            max_retry_interval: Duration::from_secs(60),
        }
    }
}

/// Whether the backend is in the chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Lookups go to the backend.
    Up,
    /// The backend is skipped; a probe is scheduled.
    Tripped,
    /// The backend is skipped; a probe's health check is running.
    Probing,
}

impl BreakerState {
    /// `up`, `tripped` or `probing`, as `keygate backends` prints it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Tripped => "tripped",
            Self::Probing => "probing",
        }
    }
}

impl std::fmt::Display for BreakerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One backend's line in `keygate backends`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// The backend's name.
    pub name: String,
    /// Whether it is in the chain.
    pub state: BreakerState,
    /// Outages in a row so far.
    pub consecutive_failures: u32,
    /// The last error the backend (or its probe) answered, if any.
    pub last_error: Option<String>,
    /// Lookups asked of this backend, skipped ones included.
    pub lookups: u64,
    /// Lookups answered at once because the breaker was open.
    pub skipped: u64,
}

/// What the lookups and the probe task share.
struct Status {
    state: BreakerState,
    consecutive_failures: u32,
    last_error: Option<String>,
}

struct Shared {
    name: String,
    status: Mutex<Status>,
    lookups: AtomicU64,
    skipped: AtomicU64,
}

impl Shared {
    fn status(&self) -> MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The breaker, itself a [`KeyBackend`].
pub struct Breaker {
    inner: Arc<dyn KeyBackend>,
    settings: BreakerSettings,
    shared: Arc<Shared>,
    probe: Mutex<Option<JoinHandle<()>>>,
}

impl Breaker {
    /// Wraps `inner`. A `failures_to_trip` of 0 is read as 1.
    pub fn new(inner: Arc<dyn KeyBackend>, settings: BreakerSettings) -> Self {
        let shared = Arc::new(Shared {
            name: inner.name().to_owned(),
            status: Mutex::new(Status {
                state: BreakerState::Up,
                consecutive_failures: 0,
                last_error: None,
            }),
            lookups: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        });
        Self {
            inner,
            settings,
            shared,
            probe: Mutex::new(None),
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.shared.status().state
    }

    /// The state and counters, for `keygate backends` (latency and the
    /// host in use come from the layers inside, see
    /// [`crate::LatencyLayer`]).
    pub fn snapshot(&self) -> BreakerSnapshot {
        let (state, consecutive_failures, last_error) = {
            let s = self.shared.status();
            (s.state, s.consecutive_failures, s.last_error.clone())
        };
        BreakerSnapshot {
            name: self.shared.name.clone(),
            state,
            consecutive_failures,
            last_error,
            lookups: self.shared.lookups.load(Ordering::Relaxed),
            skipped: self.shared.skipped.load(Ordering::Relaxed),
        }
    }

    /// Opens the breaker and starts the probe (called with the status lock
    /// held, so only one caller ever does it per trip).
    fn trip(&self, status: &mut Status) {
        status.state = BreakerState::Tripped;
        tracing::warn!(
            backend = %self.shared.name,
            failures = status.consecutive_failures,
            last_error = status.last_error.as_deref().unwrap_or(""),
            "Backend tripped; skipping it until a probe succeeds."
        );
        let task = tokio::spawn(probe(
            Instant::now(),
            Arc::downgrade(&self.shared),
            Arc::clone(&self.inner),
            self.settings.clone(),
        ));
        let mut slot = self.probe.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
    }
}

impl Drop for Breaker {
    fn drop(&mut self) {
        let slot = self.probe.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(task) = slot.take() {
            task.abort();
        }
    }
}

/// Retries `inner.health()` until it succeeds, then closes the breaker.
/// Stops early if the breaker is dropped (e.g. replaced by a reload).
/// The first probe is timed from `tripped_at`; each next one from the end
/// of the previous one.
async fn probe(
    tripped_at: Instant,
    shared: Weak<Shared>,
    inner: Arc<dyn KeyBackend>,
    settings: BreakerSettings,
) {
    let max = settings.max_retry_interval.max(Duration::from_millis(1));
    let mut interval = settings
        .initial_retry_interval
        .clamp(Duration::from_millis(1), max);
    let mut last = tripped_at;
    loop {
        let delay = interval.mul_f64(1.0 - rand::rng().random_range(0.0..=PROBE_JITTER));
        tokio::time::sleep_until(last + delay).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.status().state = BreakerState::Probing;
        let result = inner.health().await;
        let mut status = shared.status();
        match result {
            Ok(()) => {
                status.state = BreakerState::Up;
                status.consecutive_failures = 0;
                tracing::info!(backend = %shared.name, "Backend answers again; back in the chain.");
                return;
            }
            Err(error) => {
                status.state = BreakerState::Tripped;
                status.last_error = Some(error.to_string());
                tracing::debug!(backend = %shared.name, %error, next_in = ?interval.saturating_mul(2).min(max), "Probe failed.");
            }
        }
        drop(status);
        last = Instant::now();
        interval = interval.saturating_mul(2).min(max);
    }
}

#[async_trait]
impl KeyBackend for Breaker {
    fn name(&self) -> &str {
        &self.shared.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        self.shared.lookups.fetch_add(1, Ordering::Relaxed);
        {
            let status = self.shared.status();
            if status.state != BreakerState::Up {
                self.shared.skipped.fetch_add(1, Ordering::Relaxed);
                return Err(BackendError::Unavailable(format!(
                    "skipped: circuit open after {} consecutive failures; last error: {}",
                    status.consecutive_failures,
                    status.last_error.as_deref().unwrap_or("none"),
                )));
            }
        }
        let result = self.inner.lookup(query).await;
        let mut status = self.shared.status();
        match &result {
            // A lookup that started before the trip does not close the
            // breaker (the probe does); keep the count its message shows.
            Ok(_) if status.state == BreakerState::Up => status.consecutive_failures = 0,
            Ok(_) => {}
            Err(error) => {
                status.last_error = Some(error.to_string());
                if error.is_outage() {
                    status.consecutive_failures = status.consecutive_failures.saturating_add(1);
                    if status.state == BreakerState::Up
                        && status.consecutive_failures >= self.settings.failures_to_trip.max(1)
                    {
                        self.trip(&mut status);
                    }
                }
            }
        }
        result
    }

    /// Asks the backend itself, open or not: `keygate check` wants the truth.
    async fn health(&self) -> Result<(), BackendError> {
        self.inner.health().await
    }

    fn current_host(&self) -> Option<String> {
        self.inner.current_host()
    }

    fn data_version(&self) -> u64 {
        self.inner.data_version()
    }

    /// Listing is an operator's command, not traffic: it is not counted and
    /// is attempted whatever the breaker's state.
    fn list(&self) -> crate::ListStream<'_> {
        self.inner.list()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{q, settle, Fake};
    use crate::ErrorCode;

    fn breaker(fake: &Fake) -> Breaker {
        Breaker::new(Arc::new(fake.clone()), BreakerSettings::default())
    }

    /// Moves the clock in steps of at most 100 ms, letting the probe run
    /// at each step as it would in real time.
    async fn advance_ms(ms: u64) {
        let mut left = ms;
        while left > 0 {
            let step = left.min(100);
            tokio::time::advance(Duration::from_millis(step)).await;
            settle().await;
            left -= step;
        }
    }

    #[test]
    fn defaults_match_the_documented_values() {
        let s = BreakerSettings::default();
        assert_eq!(s.failures_to_trip, 3);
        assert_eq!(s.initial_retry_interval, Duration::from_secs(1));
        assert_eq!(s.max_retry_interval, Duration::from_secs(60));
    }

    /// The breaker trips after exactly `failures_to_trip` outages in a row,
    /// then answers 2 at once without calling the backend.
    #[tokio::test(start_paused = true)]
    async fn trips_after_exactly_n_consecutive_outages() {
        let fake = Fake::down("db");
        let b = breaker(&fake);
        for _ in 0..2 {
            b.lookup(&q("id:001")).await.unwrap_err();
            assert_eq!(b.state(), BreakerState::Up);
        }
        b.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Tripped);
        assert_eq!(fake.calls(), 3);
        let e = b.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(fake.calls(), 3, "a tripped backend is not called");
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert_eq!(
            e.to_string(),
            "unavailable: skipped: circuit open after 3 consecutive failures; \
             last error: unavailable: injected outage"
        );
        let s = b.snapshot();
        assert_eq!((s.lookups, s.skipped, s.consecutive_failures), (4, 1, 3));
        assert_eq!(s.state, BreakerState::Tripped);
        assert_eq!(
            s.last_error.as_deref(),
            Some("unavailable: injected outage")
        );
    }

    /// A success in between resets the count: 2 outages, a success, 2
    /// outages do not trip.
    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_failure_count() {
        let fake = Fake::with("db", "001", "a");
        let b = breaker(&fake);
        fake.set_down(true);
        b.lookup(&q("id:001")).await.unwrap_err();
        b.lookup(&q("id:001")).await.unwrap_err();
        fake.set_down(false);
        b.lookup(&q("id:001")).await.unwrap();
        fake.set_down(true);
        b.lookup(&q("id:001")).await.unwrap_err();
        b.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Up);
        b.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(b.state(), BreakerState::Tripped);
    }

    /// Bad records (5), internal errors and refused logins (6) are answers,
    /// not outages: any number of them never trips the breaker.
    #[tokio::test(start_paused = true)]
    async fn bad_records_do_not_trip() {
        let fake = Fake::with("db", "001", "a");
        fake.fail_with(Some(BackendError::Ambiguous));
        let b = breaker(&fake);
        for _ in 0..10 {
            let e = b.lookup(&q("id:001")).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidRecord);
        }
        fake.fail_with(Some(BackendError::Internal("bad query".into())));
        for _ in 0..10 {
            b.lookup(&q("id:001")).await.unwrap_err();
        }
        // A refused login is a configuration problem, not an outage.
        fake.fail_with(Some(BackendError::LoginRefused("access denied".into())));
        for _ in 0..10 {
            let e = b.lookup(&q("id:001")).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::Internal);
        }
        assert_eq!(b.state(), BreakerState::Up);
        assert_eq!(fake.calls(), 30);
        assert_eq!(b.snapshot().consecutive_failures, 0);
    }

    /// Timeouts are outages and trip the breaker; once tripped, a request
    /// is answered at once instead of waiting for the slow backend.
    #[tokio::test(start_paused = true)]
    async fn requests_do_not_wait_while_tripped() {
        let slow = Fake::with("db", "001", "a").delayed(Duration::from_secs(10));
        let inner = crate::TimeoutLayer::new(slow.clone(), Duration::from_secs(2));
        let b = Breaker::new(Arc::new(inner), BreakerSettings::default());
        let start = Instant::now();
        for _ in 0..3 {
            assert!(matches!(
                b.lookup(&q("id:001")).await,
                Err(BackendError::Timeout(_))
            ));
        }
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        assert_eq!(b.state(), BreakerState::Tripped);
        let start = Instant::now();
        for _ in 0..100 {
            assert!(b.lookup(&q("id:001")).await.unwrap_err().is_outage());
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(slow.calls(), 3);
    }

    /// While tripped, one probe calls `health()` with exponential backoff
    /// (1s, 2s, 4s, then the 8s cap), each delay drawn from 80% to 100% of
    /// its interval.
    #[tokio::test(start_paused = true)]
    async fn probe_backs_off_exponentially_up_to_the_cap() {
        let fake = Fake::down("db");
        let b = Breaker::new(
            Arc::new(fake.clone()),
            BreakerSettings {
                max_retry_interval: Duration::from_secs(8),
                ..Default::default()
            },
        );
        for _ in 0..3 {
            b.lookup(&q("id:001")).await.unwrap_err();
        }
        // Note when each probe happens, to the nearest 10 ms, over 60 s.
        let mut probes_ms = Vec::new();
        for t in (10..=60_000).step_by(10) {
            tokio::time::advance(Duration::from_millis(10)).await;
            settle().await;
            if fake.health_calls() > probes_ms.len() {
                probes_ms.push(t);
            }
            assert!(fake.health_calls() <= probes_ms.len(), "two probes at once");
        }
        let gaps: Vec<u64> = std::iter::once(probes_ms[0])
            .chain(probes_ms.windows(2).map(|w| w[1] - w[0]))
            .collect();
        let intervals = [1000, 2000, 4000, 8000, 8000, 8000, 8000];
        assert!(gaps.len() >= intervals.len(), "{probes_ms:?}");
        for (i, gap) in gaps.iter().enumerate() {
            let interval = intervals.get(i).copied().unwrap_or(8000);
            assert!(
                (interval * 8 / 10 - 10..=interval + 10).contains(gap),
                "probe {i} came {gap} ms after the previous one: {probes_ms:?}"
            );
        }
        assert_eq!(fake.calls(), 3, "the probe uses health, not lookups");
        assert_eq!(b.state(), BreakerState::Tripped);
    }

    /// When a probe succeeds the breaker closes by itself and lookups reach
    /// the backend again; no probe runs after that.
    #[tokio::test(start_paused = true)]
    async fn recovers_by_itself_when_the_probe_succeeds() {
        let fake = Fake::with("db", "001", "a");
        fake.set_down(true);
        let b = breaker(&fake);
        for _ in 0..3 {
            b.lookup(&q("id:001")).await.unwrap_err();
        }
        advance_ms(1000).await;
        assert_eq!(fake.health_calls(), 1);
        assert_eq!(b.state(), BreakerState::Tripped);
        fake.set_down(false);
        assert!(b.lookup(&q("id:001")).await.is_err(), "still skipped");
        advance_ms(2000).await;
        assert_eq!(fake.health_calls(), 2);
        assert_eq!(b.state(), BreakerState::Up);
        assert!(b.lookup(&q("id:001")).await.unwrap().is_some());
        assert_eq!(fake.calls(), 4);
        advance_ms(600_000).await;
        assert_eq!(fake.health_calls(), 2, "the probe stopped");
        let s = b.snapshot();
        assert_eq!(s.consecutive_failures, 0);
        // It can trip again, with a new probe.
        fake.set_down(true);
        for _ in 0..3 {
            b.lookup(&q("id:001")).await.unwrap_err();
        }
        assert_eq!(b.state(), BreakerState::Tripped);
        advance_ms(1000).await;
        assert_eq!(fake.health_calls(), 3);
    }

    /// The state is `probing` while the health check runs.
    #[tokio::test(start_paused = true)]
    async fn state_is_probing_while_the_health_check_runs() {
        let fake = Fake::down("db");
        let inner = crate::TimeoutLayer::new(
            SlowHealth(fake.clone(), Duration::from_secs(5)),
            Duration::from_secs(2),
        );
        let b = Breaker::new(Arc::new(inner), BreakerSettings::default());
        for _ in 0..3 {
            b.lookup(&q("id:001")).await.unwrap_err();
        }
        advance_ms(1000).await;
        assert_eq!(b.state(), BreakerState::Probing);
        advance_ms(2000).await;
        assert_eq!(b.state(), BreakerState::Tripped);
        assert_eq!(
            b.snapshot().last_error.as_deref(),
            Some("timed out after 2s")
        );
    }

    /// Dropping the breaker (as a reload does) stops its probe.
    #[tokio::test(start_paused = true)]
    async fn dropping_the_breaker_stops_the_probe() {
        let fake = Fake::down("db");
        let b = breaker(&fake);
        for _ in 0..3 {
            b.lookup(&q("id:001")).await.unwrap_err();
        }
        drop(b);
        advance_ms(600_000).await;
        assert_eq!(fake.health_calls(), 0);
    }

    /// The snapshot names the backend and its state.
    #[tokio::test(start_paused = true)]
    async fn snapshot_names_the_backend_and_its_state() {
        let fake = Fake::with("db", "001", "a");
        let b = breaker(&fake);
        b.lookup(&q("id:001")).await.unwrap();
        let s = b.snapshot();
        assert_eq!(s.lookups, 1);
        assert_eq!(s.name, "db");
        assert_eq!(s.state.to_string(), "up");
    }

    /// A backend whose health check takes `.1` before answering.
    struct SlowHealth(Fake, Duration);

    #[async_trait]
    impl KeyBackend for SlowHealth {
        fn name(&self) -> &str {
            self.0.name()
        }
        async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
            self.0.lookup(query).await
        }
        async fn health(&self) -> Result<(), BackendError> {
            tokio::time::sleep(self.1).await;
            self.0.health().await
        }
    }
}

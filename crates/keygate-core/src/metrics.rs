//! Every metric keygate exports: the one list of names, and the calls that
//! record them through the [`metrics`] facade. Without an installed
//! recorder (exec mode, `[metrics]` absent) each call costs next to
//! nothing. The binary installs the Prometheus recorder and serves it.
//!
//! Events are counted where they happen (a request answered, a backend
//! asked); state that already has counters of its own (the cache's
//! [`CacheStats`], each breaker's state) is copied in by [`cache_stats`]
//! and [`backend_state`] when the metrics are read.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::audit::Frontend;
use crate::{AgentRecord, BackendError, BreakerState, CacheStats};

/// Requests answered, by `type` (id, ip, none), `frontend`, `code`.
pub const REQUESTS: &str = "keygate_requests_total";
/// Seconds from a request's arrival to its reply, by `type`.
pub const REQUEST_DURATION: &str = "keygate_request_duration_seconds";
/// Lookups asked of each backend, by `backend` and `outcome`.
pub const BACKEND_LOOKUPS: &str = "keygate_backend_lookups_total";
/// Seconds each backend took to answer a lookup, by `backend`.
pub const BACKEND_DURATION: &str = "keygate_backend_lookup_duration_seconds";
/// 1 for each backend's current breaker state, 0 for the others.
pub const BACKEND_STATE: &str = "keygate_backend_state";
/// Requests answered from a fresh found entry.
pub const CACHE_HITS: &str = "keygate_cache_hits_total";
/// Requests that found no fresh entry.
pub const CACHE_MISSES: &str = "keygate_cache_misses_total";
/// Requests answered from a fresh not-found entry.
pub const CACHE_NEGATIVE_HITS: &str = "keygate_cache_negative_hits_total";
/// Requests answered from an expired entry during an outage.
pub const CACHE_STALE_SERVED: &str = "keygate_cache_stale_served_total";
/// Misses that joined a lookup already in flight.
pub const CACHE_COALESCED_WAITS: &str = "keygate_cache_coalesced_waits_total";
/// Background refreshes started by refresh-ahead.
pub const CACHE_REFRESHES: &str = "keygate_cache_refreshes_total";
/// Entries held by the cache.
pub const CACHE_ENTRIES: &str = "keygate_cache_entries";
/// Connections to the Wazuh socket open now.
pub const CONNECTIONS_OPEN: &str = "keygate_connections_open";
/// Connections closed at once because `max_connections` were open.
pub const CONNECTIONS_REFUSED: &str = "keygate_connections_refused_total";
/// Config reloads, by `result` (ok, failed).
pub const CONFIG_RELOADS: &str = "keygate_config_reloads_total";
/// Audit events that could not be written (with `audit_failure =
/// "refuse"`, each one an answer refused).
pub const AUDIT_WRITE_FAILURES: &str = "keygate_audit_write_failures_total";
/// Always 1, with the running `version` as a label.
pub const BUILD_INFO: &str = "keygate_build_info";

/// Histogram buckets, in seconds, for both latency histograms: from well
/// under a millisecond (a cache hit) to Wazuh's 60 s client timeout.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

const CODES: [&str; 7] = ["0", "1", "2", "3", "4", "5", "6"];

/// Whether a recorder is installed ([`describe`] says so). Without one the
/// per-request series are skipped: each would still build its labelled key
/// (an allocation) for the no-op recorder to drop: 1,850 instructions a
/// request.
static RECORDING: AtomicBool = AtomicBool::new(false);

fn recording() -> bool {
    RECORDING.load(Ordering::Relaxed)
}

/// Gives every series its help text and sets the build info; called once,
/// after installing a recorder (until then the per-request series are not
/// recorded).
pub fn describe() {
    RECORDING.store(true, Ordering::Relaxed);
    describe_counter!(
        REQUESTS,
        "Requests answered, by type, front end and reply code."
    );
    describe_histogram!(
        REQUEST_DURATION,
        ::metrics::Unit::Seconds,
        "Time from a request's arrival to its reply."
    );
    describe_counter!(
        BACKEND_LOOKUPS,
        "Lookups asked of each backend, by outcome."
    );
    describe_histogram!(
        BACKEND_DURATION,
        ::metrics::Unit::Seconds,
        "Time each backend took to answer a lookup (skipped ones excluded)."
    );
    describe_gauge!(
        BACKEND_STATE,
        "1 for each backend's current state (up, tripped, probing)."
    );
    describe_counter!(CACHE_HITS, "Requests answered from a fresh found entry.");
    describe_counter!(CACHE_MISSES, "Requests that found no fresh cache entry.");
    describe_counter!(
        CACHE_NEGATIVE_HITS,
        "Requests answered from a fresh not-found entry."
    );
    describe_counter!(
        CACHE_STALE_SERVED,
        "Requests answered from an expired entry during an outage."
    );
    describe_counter!(
        CACHE_COALESCED_WAITS,
        "Misses that joined a lookup already in flight."
    );
    describe_counter!(
        CACHE_REFRESHES,
        "Background refreshes started by refresh-ahead."
    );
    describe_gauge!(CACHE_ENTRIES, "Entries held by the cache.");
    describe_gauge!(
        CONNECTIONS_OPEN,
        "Connections to the Wazuh socket open now."
    );
    describe_counter!(
        CONNECTIONS_REFUSED,
        "Connections closed at once because max_connections were open."
    );
    describe_counter!(CONFIG_RELOADS, "Config reloads, by result.");
    describe_counter!(
        AUDIT_WRITE_FAILURES,
        "Audit events that could not be written (refused answers with audit_failure = refuse)."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
}

/// Counts one answered request and its latency.
pub fn request_answered(kind: &'static str, frontend: Frontend, code: u8, latency: Duration) {
    if !recording() {
        return;
    }
    let code = CODES.get(usize::from(code)).copied().unwrap_or("6");
    counter!(REQUESTS, "type" => kind, "frontend" => frontend.as_str(), "code" => code)
        .increment(1);
    histogram!(REQUEST_DURATION, "type" => kind).record(latency.as_secs_f64());
}

/// Counts `events` audit events that could not be written.
pub fn audit_write_failed(events: u64) {
    counter!(AUDIT_WRITE_FAILURES).increment(events);
}

/// The `outcome` label of a backend's answer.
pub fn outcome(result: &Result<Option<AgentRecord>, BackendError>) -> &'static str {
    match result {
        Ok(Some(_)) => "found",
        Ok(None) => "not_found",
        Err(BackendError::Timeout(_)) => "timeout",
        Err(BackendError::InvalidRecord(_) | BackendError::Ambiguous) => "invalid",
        Err(_) => "error",
    }
}

/// Counts one lookup that reached `backend`, and how long it took.
pub fn backend_lookup(
    backend: &Arc<str>,
    result: &Result<Option<AgentRecord>, BackendError>,
    elapsed: Duration,
) {
    if !recording() {
        return;
    }
    counter!(BACKEND_LOOKUPS, "backend" => Arc::clone(backend), "outcome" => outcome(result))
        .increment(1);
    histogram!(BACKEND_DURATION, "backend" => Arc::clone(backend)).record(elapsed.as_secs_f64());
}

/// Copies a breaker's state and its count of skipped lookups.
pub fn backend_state(backend: &str, state: BreakerState, skipped: u64) {
    for s in [
        BreakerState::Up,
        BreakerState::Tripped,
        BreakerState::Probing,
    ] {
        let value = if s == state { 1.0 } else { 0.0 };
        gauge!(BACKEND_STATE, "backend" => backend.to_owned(), "state" => s.as_str()).set(value);
    }
    counter!(BACKEND_LOOKUPS, "backend" => backend.to_owned(), "outcome" => "skipped")
        .absolute(skipped);
}

/// Copies the cache's counters.
pub fn cache_stats(s: &CacheStats) {
    counter!(CACHE_HITS).absolute(s.hits);
    counter!(CACHE_MISSES).absolute(s.misses);
    counter!(CACHE_NEGATIVE_HITS).absolute(s.negative_hits);
    counter!(CACHE_STALE_SERVED).absolute(s.stale_served);
    counter!(CACHE_COALESCED_WAITS).absolute(s.coalesced_waits);
    counter!(CACHE_REFRESHES).absolute(s.refreshes);
    #[allow(clippy::cast_precision_loss)]
    gauge!(CACHE_ENTRIES).set(s.entries as f64);
}

/// Copies the Wazuh socket's connection counters.
pub fn connections(open: u64, refused_at_limit: u64) {
    #[allow(clippy::cast_precision_loss)]
    gauge!(CONNECTIONS_OPEN).set(open as f64);
    counter!(CONNECTIONS_REFUSED).absolute(refused_at_limit);
}

/// Counts a config reload.
pub fn config_reload(ok: bool) {
    counter!(CONFIG_RELOADS, "result" => if ok { "ok" } else { "failed" }).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RecordError;
    use ::metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
    use std::sync::atomic::AtomicUsize;

    /// Counts the series registered with it.
    #[derive(Default)]
    struct Registrations(AtomicUsize);

    impl ::metrics::Recorder for Registrations {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            self.0.fetch_add(1, Ordering::Relaxed);
            Counter::noop()
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            self.0.fetch_add(1, Ordering::Relaxed);
            Gauge::noop()
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            self.0.fetch_add(1, Ordering::Relaxed);
            Histogram::noop()
        }
    }

    /// The per-request series are recorded only once `describe` has said
    /// a recorder is installed; before, not even their keys are built.
    #[test]
    fn per_request_series_wait_for_describe() {
        let recorder = Registrations::default();
        let per_request = || {
            request_answered("id", Frontend::Socket, 0, Duration::from_micros(5));
            backend_lookup(&Arc::from("keys"), &Ok(None), Duration::from_micros(3));
        };
        ::metrics::with_local_recorder(&recorder, per_request);
        assert_eq!(recorder.0.load(Ordering::Relaxed), 0);
        ::metrics::with_local_recorder(&recorder, || {
            describe();
            per_request();
        });
        // Two counters and two histograms, plus the build info gauge.
        assert_eq!(recorder.0.load(Ordering::Relaxed), 5);
    }

    /// Each kind of backend answer gets its documented outcome label.
    #[test]
    fn outcomes_are_labelled_as_documented() {
        let record = AgentRecord::parse("001", "a", "any", "k").unwrap();
        let cases: Vec<(Result<Option<AgentRecord>, BackendError>, &str)> = vec![
            (Ok(Some(record)), "found"),
            (Ok(None), "not_found"),
            (
                Err(BackendError::Timeout(Duration::from_secs(1))),
                "timeout",
            ),
            (Err(BackendError::Ambiguous), "invalid"),
            (
                Err(BackendError::InvalidRecord(RecordError::Missing(
                    crate::record::Field::Key,
                ))),
                "invalid",
            ),
            (Err(BackendError::Unavailable("down".into())), "error"),
            (Err(BackendError::Internal("bug".into())), "error"),
        ];
        for (result, want) in cases {
            assert_eq!(outcome(&result), want, "{result:?}");
        }
    }
}

//! Every metric keygate exports: the one list of names, and the calls that
//! record them through the [`metrics`] facade. Without an installed
//! recorder (exec mode, `[metrics]` absent) each call costs next to
//! nothing. The binary installs the Prometheus recorder and serves it.
//!
//! Events are counted where they happen (a request answered, a backend
//! asked); state that already has counters of its own (the cache's
//! [`CacheStats`], each breaker's state, the socket's connection counts) is
//! copied in by [`cache_stats`], [`backend_state`] and [`connections`] when
//! the metrics are read: each of those reads counters kept as things
//! happen, never walks a structure on the serving path.
//!
//! Every labelled series whose label values are known exists at 0 from
//! the start ([`describe`], and [`backend_state`] for each backend), so
//! that a rule or a dashboard never sees a series appear from nothing.

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
/// Connections closed by the Wazuh socket before their request was
/// answered, by `reason` ([`REFUSED_REASONS`]).
pub const CONNECTIONS_REFUSED: &str = "keygate_connections_refused_total";
/// The `reason` label of [`CONNECTIONS_REFUSED`]: `limit` (closed at once,
/// `max_connections` open and none idle), `evicted_idle` (an idle connection
/// closed to admit a new one), `not_allowed` (a peer refused at accept by
/// `allowed_uids`/`allowed_gids`).
pub const REFUSED_REASONS: [&str; 3] = ["limit", "evicted_idle", "not_allowed"];
/// Requests whose answering panicked (a bug), each answered 6.
pub const REQUEST_PANICS: &str = "keygate_request_panics_total";
/// Audit events that could not be written.
pub const AUDIT_WRITE_FAILURES: &str = "keygate_audit_write_failures_total";
/// Config reloads, by `result` (ok, failed).
pub const CONFIG_RELOADS: &str = "keygate_config_reloads_total";
/// Records refused because the Wazuh version served cannot take them, by
/// `reason` (`ipv6`: an IPv6 ip before Wazuh 4.4).
pub const WAZUH_REFUSED: &str = "keygate_wazuh_refused_total";
/// Agents served and then looked for in the manager's client.keys, by
/// `result`: `confirmed` (there with the key served) or `not_inserted`
/// (not there within `[wazuh] insert_confirm_within`).
pub const WAZUH_INSERTS: &str = "keygate_wazuh_inserts_total";
/// Always 1, with the running `version` as a label.
pub const BUILD_INFO: &str = "keygate_build_info";

/// Histogram buckets, in seconds, for both latency histograms: from well
/// under a millisecond (a cache hit) to Wazuh's 60 s client timeout.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0,
];

const CODES: [&str; 7] = ["0", "1", "2", "3", "4", "5", "6"];
/// The `type` label of the request series.
const TYPES: [&str; 3] = ["id", "ip", "none"];
/// The `outcome` label of [`BACKEND_LOOKUPS`].
pub const OUTCOMES: [&str; 6] = [
    "found",
    "not_found",
    "invalid",
    "error",
    "timeout",
    "skipped",
];

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
        "Connections closed before their request was answered, by reason (limit, evicted_idle, not_allowed)."
    );
    describe_counter!(
        REQUEST_PANICS,
        "Requests whose answering panicked (a bug), each answered 6."
    );
    describe_counter!(
        AUDIT_WRITE_FAILURES,
        "Audit events that could not be written."
    );
    describe_counter!(CONFIG_RELOADS, "Config reloads, by result.");
    describe_counter!(
        WAZUH_REFUSED,
        "Records refused because the Wazuh version served cannot take them, by reason."
    );
    describe_counter!(
        WAZUH_INSERTS,
        "Served agents found in client.keys (confirmed) or not (not_inserted), by result."
    );
    describe_gauge!(BUILD_INFO, "Always 1; the version is a label.");
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    for kind in TYPES {
        for frontend in [Frontend::Socket, Frontend::Exec] {
            for code in CODES {
                counter!(REQUESTS, "type" => kind, "frontend" => frontend.as_str(), "code" => code)
                    .increment(0);
            }
        }
        // Registered: rendered with no samples until the first one.
        let _ = histogram!(REQUEST_DURATION, "type" => kind);
    }
    for result in ["ok", "failed"] {
        counter!(CONFIG_RELOADS, "result" => result).increment(0);
    }
    for reason in REFUSED_REASONS {
        counter!(CONNECTIONS_REFUSED, "reason" => reason).increment(0);
    }
    counter!(WAZUH_REFUSED, "reason" => "ipv6").increment(0);
    for result in ["confirmed", "not_inserted"] {
        counter!(WAZUH_INSERTS, "result" => result).increment(0);
    }
    for series in [
        REQUEST_PANICS,
        AUDIT_WRITE_FAILURES,
        CACHE_HITS,
        CACHE_MISSES,
        CACHE_NEGATIVE_HITS,
        CACHE_STALE_SERVED,
        CACHE_COALESCED_WAITS,
        CACHE_REFRESHES,
    ] {
        counter!(series).increment(0);
    }
    gauge!(CACHE_ENTRIES).set(0.0);
    gauge!(CONNECTIONS_OPEN).set(0.0);
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

/// Copies a breaker's state and its count of skipped lookups; the
/// backend's other outcome series and its latency histogram exist from
/// then on, at 0 until they happen.
pub fn backend_state(backend: &str, state: BreakerState, skipped: u64) {
    for s in [
        BreakerState::Up,
        BreakerState::Tripped,
        BreakerState::Probing,
    ] {
        let value = if s == state { 1.0 } else { 0.0 };
        gauge!(BACKEND_STATE, "backend" => backend.to_owned(), "state" => s.as_str()).set(value);
    }
    for outcome in OUTCOMES {
        let lookups =
            counter!(BACKEND_LOOKUPS, "backend" => backend.to_owned(), "outcome" => outcome);
        if outcome == "skipped" {
            lookups.absolute(skipped);
        } else {
            lookups.increment(0);
        }
    }
    let _ = histogram!(BACKEND_DURATION, "backend" => backend.to_owned());
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

/// The Wazuh socket's connection counters, as kept by its accept loop.
#[derive(Clone, Copy, Debug, Default)]
pub struct Connections {
    /// Open now.
    pub open: u64,
    /// Closed at once: `max_connections` open, none idle.
    pub refused_at_limit: u64,
    /// Idle ones closed to admit a new one.
    pub evicted_idle: u64,
    /// Peers refused at accept.
    pub refused_peers: u64,
    /// Requests whose answering panicked.
    pub panics: u64,
}

/// Copies the Wazuh socket's connection counters.
pub fn connections(c: &Connections) {
    #[allow(clippy::cast_precision_loss)]
    gauge!(CONNECTIONS_OPEN).set(c.open as f64);
    for (reason, n) in
        REFUSED_REASONS
            .into_iter()
            .zip([c.refused_at_limit, c.evicted_idle, c.refused_peers])
    {
        counter!(CONNECTIONS_REFUSED, "reason" => reason).absolute(n);
    }
    counter!(REQUEST_PANICS).absolute(c.panics);
}

/// Counts a record refused because the Wazuh version served cannot take it.
pub fn wazuh_refused(reason: &'static str) {
    if !recording() {
        return;
    }
    counter!(WAZUH_REFUSED, "reason" => reason).increment(1);
}

/// Counts a served agent found in client.keys (`confirmed`) or not.
pub fn wazuh_insert(confirmed: bool) {
    if !recording() {
        return;
    }
    let result = if confirmed {
        "confirmed"
    } else {
        "not_inserted"
    };
    counter!(WAZUH_INSERTS, "result" => result).increment(1);
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
        ::metrics::with_local_recorder(&recorder, describe);
        let at_start = recorder.0.load(Ordering::Relaxed);
        ::metrics::with_local_recorder(&recorder, per_request);
        // Two counters and two histograms.
        assert_eq!(recorder.0.load(Ordering::Relaxed), at_start + 4);
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

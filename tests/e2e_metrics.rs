//! The real daemon's Prometheus endpoint: every labelled series at 0 from
//! the start, the `process_*` series, the documented series list, the
//! shipped alert rules and dashboard naming only exported series, idle
//! scrape connections that never keep a scrape out, and scrapes that never
//! sweep the cache.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpStream;
use std::time::Duration;

use keygate_testkit::daemon::Daemon;
use keygate_testkit::scrape::{names, scrape, value};
use keygate_testkit::{free_port, repo_root};

/// A daemon with one file backend (`keys`: agent 001) and `[metrics]` on
/// a free port, plus `extra` sections; the port.
fn metered(extra: &str) -> (Daemon, u16, tempfile::TempDir) {
    let store = tempfile::tempdir().unwrap();
    let keys = store.path().join("client.keys");
    std::fs::write(&keys, "001 web-01 10.0.0.1 k1\n").unwrap();
    let port = free_port();
    let d = Daemon::start_with(
        "",
        &format!(
            "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"{}\"\n\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n{extra}\n",
            keys.display()
        ),
    );
    (d, port, store)
}

/// Before any request, every labelled series whose labels are known is
/// there at 0 (an error, a timeout, a refused connection, a failed reload,
/// a panic, a lost audit event), so rules and dashboards never wait for a
/// first occurrence; and the `process_*` series are exported.
#[test]
fn every_labelled_series_exists_at_zero_from_the_start() {
    let (_d, port, _store) = metered("");
    let m = scrape(port);
    let zero = [
        r#"keygate_requests_total{type="id",frontend="socket",code="2"}"#,
        r#"keygate_requests_total{type="id",frontend="socket",code="6"}"#,
        r#"keygate_requests_total{type="ip",frontend="exec",code="5"}"#,
        r#"keygate_requests_total{type="none",frontend="socket",code="1"}"#,
        r#"keygate_request_duration_seconds_count{type="ip"}"#,
        r#"keygate_backend_lookups_total{backend="keys",outcome="timeout"}"#,
        r#"keygate_backend_lookups_total{backend="keys",outcome="error"}"#,
        r#"keygate_backend_lookups_total{backend="keys",outcome="invalid"}"#,
        r#"keygate_backend_lookups_total{backend="keys",outcome="found"}"#,
        r#"keygate_backend_lookup_duration_seconds_count{backend="keys"}"#,
        r#"keygate_connections_refused_total{reason="limit"}"#,
        r#"keygate_connections_refused_total{reason="evicted_idle"}"#,
        r#"keygate_connections_refused_total{reason="not_allowed"}"#,
        r#"keygate_config_reloads_total{result="ok"}"#,
        r#"keygate_config_reloads_total{result="failed"}"#,
        "keygate_request_panics_total",
        "keygate_audit_write_failures_total",
        "keygate_cache_stale_served_total",
        r#"keygate_wazuh_refused_total{reason="ipv6"}"#,
        r#"keygate_wazuh_inserts_total{result="confirmed"}"#,
        r#"keygate_wazuh_inserts_total{result="not_inserted"}"#,
    ];
    for series in zero {
        assert_eq!(value(&m, series), Some(0.0), "{series} in:\n{m}");
    }
    // The gauge of open connections exists from the start too; the harness's
    // own readiness probe may still be open at the first scrape, so it is
    // read until that one has gone (bounded).
    let mut open = value(&m, "keygate_connections_open");
    for _ in 0..50 {
        if open == Some(0.0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        open = value(&scrape(port), "keygate_connections_open");
    }
    assert_eq!(open, Some(0.0), "keygate_connections_open");
    for series in [
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_threads",
        "process_start_time_seconds",
    ] {
        let v = value(&m, series).unwrap_or_else(|| panic!("no {series} in:\n{m}"));
        assert!(v > 0.0, "{series} = {v}");
    }
    assert!(value(&m, "process_cpu_seconds_total").is_some(), "{m}");
}

/// The series `docs/observability.md`'s table lists, with every name a
/// histogram exports.
fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo_root().join("docs/observability.md")).unwrap();
    let section = doc.split("## Metrics").nth(1).unwrap();
    let section = section.split("\n## ").next().unwrap();
    let mut names = BTreeSet::new();
    for row in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        if cells[2] == "histogram" {
            for suffix in ["_bucket", "_sum", "_count"] {
                names.insert(format!("{name}{suffix}"));
            }
        } else {
            names.insert(name);
        }
    }
    names
}

/// Every series the daemon exports is in `docs/observability.md`'s table,
/// and every series the table lists is exported.
#[test]
fn the_documented_series_are_the_exported_ones() {
    let (_d, port, _store) = metered("[cache]\n");
    let exported = names(&scrape(port));
    let documented = documented();
    let undocumented: Vec<_> = exported.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&exported).collect();
    assert!(
        undocumented.is_empty(),
        "exported, not documented: {undocumented:?}"
    );
    assert!(missing.is_empty(), "documented, not exported: {missing:?}");
}

/// The series names in a PromQL expression: `keygate_*` and `process_*`
/// (ours) and any other bare name, quoted label values left out.
fn series_in(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut unquoted = String::new();
    for (i, part) in expr.split('"').enumerate() {
        if i % 2 == 0 {
            unquoted.push_str(part);
            unquoted.push(' ');
        }
    }
    for word in unquoted.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':')) {
        if word.starts_with("keygate_") || word.starts_with("process_") || word == "up" {
            names.insert(word.to_owned());
        }
    }
    names
}

/// Checks that every series `exprs` name is exported (or is `up`, which
/// Prometheus makes itself); returns how many distinct ones they name.
fn check_named_series_exported(what: &str, exprs: &[String], exported: &BTreeSet<String>) -> usize {
    let mut named = BTreeSet::new();
    for expr in exprs {
        let here = series_in(expr);
        assert!(!here.is_empty(), "{what}: no series in {expr:?}");
        named.extend(here);
    }
    for name in &named {
        assert!(
            name == "up" || exported.contains(name),
            "{what} names {name}, which the daemon does not export"
        );
    }
    named.len()
}

/// The shipped alert rules (`packaging/prometheus/keygate.rules.yml`)
/// parse as a Prometheus rule file, and every series they name is exported
/// by a running daemon; so do the queries of the shipped Grafana dashboard
/// (`packaging/grafana/keygate.json`), its variables included.
#[test]
fn shipped_rules_and_dashboard_name_only_exported_series() {
    let (_d, port, _store) = metered("[cache]\n");
    let exported = names(&scrape(port));

    let rules: serde_yaml_ng::Value = serde_yaml_ng::from_str(
        &std::fs::read_to_string(repo_root().join("packaging/prometheus/keygate.rules.yml"))
            .unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_sequence().unwrap() {
        assert!(group["name"].as_str().is_some());
        for rule in group["rules"].as_sequence().unwrap() {
            let alert = rule["alert"].as_str().unwrap().to_owned();
            assert!(alerts.insert(alert.clone()), "{alert} twice");
            assert!(rule["annotations"]["summary"].as_str().is_some(), "{alert}");
            exprs.push(rule["expr"].as_str().unwrap().to_owned());
        }
    }
    for wanted in [
        "KeygateBackendDown",
        "KeygateServingStale",
        "KeygateErrorRatio",
        "KeygateAuditWriteFailures",
        "KeygateConnectionsRefused",
        "KeygateIdleConnectionFlood",
        "KeygateReloadFailed",
    ] {
        assert!(alerts.contains(wanted), "no {wanted} rule");
    }
    check_named_series_exported("keygate.rules.yml", &exprs, &exported);

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("packaging/grafana/keygate.json")).unwrap(),
    )
    .unwrap();
    let mut queries = Vec::new();
    let mut ids = BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel id twice");
        for target in panel["targets"].as_array().into_iter().flatten() {
            queries.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            queries.push(var["definition"].as_str().unwrap().to_owned());
        }
    }
    let named = check_named_series_exported("keygate.json", &queries, &exported);
    // Requests, latency, cache, backends, audit, connections, reloads,
    // process: a dashboard of all of it, not of a corner.
    for needed in [
        "keygate_requests_total",
        "keygate_request_duration_seconds_bucket",
        "keygate_cache_hits_total",
        "keygate_backend_lookups_total",
        "keygate_backend_state",
        "keygate_audit_write_failures_total",
        "keygate_connections_refused_total",
        "keygate_config_reloads_total",
        "process_resident_memory_bytes",
    ] {
        assert!(
            queries.iter().any(|q| series_in(q).contains(needed)),
            "the dashboard does not show {needed}"
        );
    }
    assert!(named >= 20, "{named} series on the dashboard");
}

/// Idle TCP connections to the metrics endpoint never keep a scrape out:
/// with twice as many idle connections open as it serves at once, a scrape
/// is answered (before, the ninth connection waited 30 s for one of the
/// idle ones to time out); and a connection that sends nothing is closed
/// after a short read timeout (2 s, not 30).
#[test]
fn idle_scrape_connections_never_keep_a_scrape_out() {
    let (_d, port, _store) = metered("");
    let idle: Vec<TcpStream> = (0..16)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    for _ in 0..3 {
        assert!(scrape(port).contains("keygate_build_info"));
    }
    drop(idle);
    // Closed after 2 s; a connection's whole life is bounded at 10 s.
    let mut lone = TcpStream::connect(("127.0.0.1", port)).unwrap();
    lone.set_read_timeout(Some(Duration::from_secs(7))).unwrap();
    let mut buf = [0u8; 64];
    let n = lone
        .read(&mut buf)
        .expect("an idle metrics connection was held open for 7 s");
    assert_eq!(n, 0, "an idle connection got an answer");
}

/// A scrape reads counters and never sweeps or walks the cache: twenty
/// entries past their `stale_ttl` (nothing inserted since, so nothing swept
/// them) are still counted after two scrapes. (Before, each scrape swept
/// every shard under its write lock, on the serving path: this read 0.)
#[test]
fn a_scrape_never_sweeps_the_cache() {
    let (d, port, _store) = metered(
        "[cache]\nttl = \"50ms\"\nnegative_ttl = \"50ms\"\nstale_ttl = \"50ms\"\nrefresh_ahead = 0.0\n",
    );
    assert_eq!(d.request("id:001")["error"], 0);
    for id in 2..=20 {
        assert_eq!(d.request(&format!("id:{id:03}"))["error"], 4);
    }
    assert_eq!(value(&scrape(port), "keygate_cache_entries"), Some(20.0));
    // Well past ttl + stale_ttl: every entry is expired for good.
    std::thread::sleep(Duration::from_millis(500));
    scrape(port);
    assert_eq!(value(&scrape(port), "keygate_cache_entries"), Some(20.0));
}

//! Resilience against a real MariaDB that the test owns and stops mid-run:
//! cached agents are served stale while it is down, uncached ones get 2
//! within request_timeout, the same daemon answers again after the restart;
//! flush and reload on the live daemon.
#![cfg(feature = "mysql")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{bin, Daemon};
use keygate_testkit::sql::{load_fixtures, run_sql, with_database, Kind, PrivateMariadb};

fn backend(url: &str) -> String {
    format!(
        r#"[[backend]]
name = "inventory"
type = "mysql"
url = "{url}"
timeout = "1s"
connect_timeout = "1s"
max_retry_interval = "1s"
query_by_id = "SELECT id,name,ip,agent_key FROM agent WHERE id = ?"
query_by_ip = "SELECT id,name,ip,agent_key FROM agent WHERE ip = ?"
"#
    )
}

fn stats(d: &Daemon) -> String {
    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .args(["cache", "stats"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap()
}

fn stat(d: &Daemon, name: &str) -> u64 {
    let s = stats(d);
    s.lines()
        .find_map(|l| l.strip_prefix(name).map(|v| v.trim().parse().unwrap()))
        .unwrap_or_else(|| panic!("{name} in {s}"))
}

#[test]
fn outage_serves_stale_answers_2_for_the_rest_and_recovers() {
    let mut db = PrivateMariadb::start();
    run_sql(Kind::Mysql, &db.url(), "CREATE DATABASE wazuh");
    let url = with_database(&db.url(), "wazuh");
    load_fixtures(Kind::Mysql, &url);

    let d = Daemon::start_with(
        "request_timeout = \"3s\"",
        &format!("[cache]\nttl = \"1s\"\nnegative_ttl = \"1s\"\nstale_ttl = \"1h\"\nrefresh_ahead = 0.0\n\n{}", backend(&url)),
    );
    let pid = d.pid();
    assert_eq!(d.request("id:001")["data"]["name"], "agent-00001");
    assert_eq!(d.request("ip:10.0.0.2")["data"]["id"], "002");
    assert_eq!(d.request("id:99999")["error"], 4);
    std::thread::sleep(Duration::from_millis(1300)); // every entry is now past its ttl

    db.stop();
    // Cached agents: served stale, at once, and counted.
    let started = Instant::now();
    assert_eq!(d.request("id:001")["data"]["name"], "agent-00001");
    assert_eq!(d.request("ip:10.0.0.2")["data"]["id"], "002");
    // A not-found answer went at its negative_ttl: never served stale.
    assert_eq!(d.request("id:99999")["error"], 2);
    assert!(stat(&d, "stale_served") >= 2, "{}", stats(&d));
    // An agent never seen: 2, within request_timeout.
    let v = d.request("id:003");
    assert_eq!(v["error"], 2, "{v}");
    assert!(v["message"].as_str().unwrap().contains("inventory"), "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "{:?}",
        started.elapsed()
    );
    for _ in 0..3 {
        let t = Instant::now();
        assert_eq!(d.request("id:004")["error"], 2);
        assert!(
            t.elapsed() < Duration::from_millis(3500),
            "{:?}",
            t.elapsed()
        );
    }
    let backends = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .arg("backends")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&backends.stdout);
    assert!(
        text.contains("tripped") || text.contains("probing"),
        "{text}"
    );

    // Back up: the same process answers by itself (breaker probe, lazy pool).
    db.start_again();
    let started = Instant::now();
    loop {
        if d.request("id:003")["error"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no recovery:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(d.pid(), pid);

    // Flush one entry, then all, on the live daemon.
    assert!(stat(&d, "entries") >= 3);
    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .args(["cache", "flush", "id:001"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("flushed id:001"),
        "{out:?}"
    );
    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .args(["cache", "flush"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(stat(&d, "entries"), 0);

    // Reload: valid (same backends: entries kept), then invalid (refused).
    assert_eq!(d.request("id:005")["error"], 0);
    let text = std::fs::read_to_string(d.config()).unwrap();
    std::fs::write(
        d.config(),
        text.replace("request_timeout = \"3s\"", "request_timeout = \"4s\""),
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .arg("reload")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(stat(&d, "entries"), 1);
    std::fs::write(
        d.config(),
        text.replace("connect_timeout = \"1s\"", "connect_timeout = \"soon\""),
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .arg("reload")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("backend[0].connect_timeout"),
        "{out:?}"
    );
    assert_eq!(d.request("id:005")["error"], 0);
}

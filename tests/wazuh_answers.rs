//! Answers Wazuh's own code accepts, end to end through the real binary:
//! an IPv6 record (IPv4-mapped included) refused for `version = "3.13"`
//! and served for `"4.14"`, by the daemon and by the one-shot; and the
//! daemon's watch on the manager's client.keys (a conflict warned and
//! audited before answering, an agent Wazuh did not take reported after,
//! one it took confirmed).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{exec, Daemon};

const KEY: &str = "ac57f6a5e1d9b0c2e5a1d6f7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50c71";

/// The store: an IPv4 agent, an IPv6 one, an IPv4-mapped one.
fn store(dir: &Path) -> String {
    let path = dir.join("agents.keys");
    std::fs::write(
        &path,
        format!("001 web-01 10.0.0.1 {KEY}\n006 v6-host 2001:db8::6 {KEY}\n007 mapped ::ffff:192.168.7.7 {KEY}\n"),
    )
    .unwrap();
    format!(
        "[[backend]]\nname = \"agents\"\ntype = \"file\"\npath = \"{}\"\n",
        path.display()
    )
}

/// Waits until the daemon's log contains `text`; fails after 20 s.
fn wait_for_log(d: &Daemon, text: &str) -> String {
    let started = Instant::now();
    loop {
        let log = d.log();
        if log.contains(text) {
            return log;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{text:?} never logged:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `version = "3.13"`: the IPv6 records answer 5 with the reason (socket
/// and one-shot alike), logged once per agent; `"4.14"`: served.
#[test]
fn an_ipv6_record_is_refused_for_3_13_and_served_for_4_14() {
    let data = tempfile::tempdir().unwrap();
    let reason = "Wazuh 3.13 cannot take an IPv6 address; its authd would exit";
    for (version, refused) in [("3.13", true), ("4.14", false)] {
        let backends = format!("[wazuh]\nversion = \"{version}\"\n\n{}", store(data.path()));
        let d = Daemon::start(&backends);
        for id in ["006", "007", "006"] {
            let v = d.request(&format!("id:{id}"));
            if refused {
                assert_eq!(v["error"], 5, "{version} {id}: {v}");
                assert!(v["message"].as_str().unwrap().contains(reason), "{v}");
                assert!(v.get("data").is_none(), "{v}");
            } else {
                assert_eq!(v["error"], 0, "{version} {id}: {v}");
                assert_eq!(v["data"]["id"], id);
            }
        }
        assert_eq!(d.request("id:001")["error"], 0);
        assert_eq!(
            d.request("ip:2001:db8::6")["error"],
            if refused { 5 } else { 0 }
        );
        let log = d.log();
        let logged = log
            .lines()
            .filter(|l| l.contains("Record refused") && l.contains("006"))
            .count();
        assert_eq!(logged, usize::from(refused), "once per agent:\n{log}");

        // The one-shot looking up by itself (no daemon on its socket).
        let config = data.path().join(format!("oneshot-{version}.toml"));
        std::fs::write(
            &config,
            format!(
                "[server]\nsocket = \"{}\"\n\n{backends}",
                data.path().join("nobody.sock").display()
            ),
        )
        .unwrap();
        let out = exec(&config, &["id", "007"]).json();
        if refused {
            assert_eq!(out["error"], 5, "{out}");
            assert!(out["message"].as_str().unwrap().contains(reason), "{out}");
        } else {
            assert_eq!(out["error"], 0, "{out}");
        }
    }
}

/// A daemon watching `client_keys` with `insert_confirm_within`.
fn watching(manager: &Path, within: &str, data: &Path) -> Daemon {
    Daemon::start(&format!(
        "[wazuh]\nversion = \"4.14\"\nclient_keys = \"{}\"\ninsert_confirm_within = \"{within}\"\n\n{}",
        manager.display(),
        store(data)
    ))
}

/// Another agent holds the served agent's name in the manager's
/// client.keys: the answer goes out, a warning names the other agent and
/// Wazuh's reason, the audit event carries it, and since Wazuh did not
/// take the agent, that is reported once the deadline has passed.
#[test]
fn a_conflicting_agent_is_warned_audited_and_reported_not_inserted() {
    let data = tempfile::tempdir().unwrap();
    let manager = data.path().join("client.keys");
    std::fs::write(&manager, "012 web-01 10.0.0.12 k12\n").unwrap();
    let d = watching(&manager, "1s", data.path());
    let v = d.request("id:001");
    assert_eq!(v["error"], 0, "{v}");
    let conflict = "Duplicate name: agent 012 holds 'web-01'; Wazuh refuses it unless <force> allows replacing";
    let log = wait_for_log(&d, "Wazuh did not take the agent keygate served.");
    let warning = log
        .lines()
        .find(|l| l.contains("Answered, but Wazuh will probably refuse this agent."))
        .unwrap_or_else(|| panic!("no conflict warning:\n{log}"));
    assert!(warning.contains(conflict), "{warning}");
    let audit = log
        .lines()
        .find(|l| l.contains("Key request answered.") && l.contains("id:001"))
        .unwrap_or_else(|| panic!("no audit event:\n{log}"));
    assert!(audit.contains("conflict"), "{audit}");
    assert!(audit.contains("Duplicate name: agent 012 holds"), "{audit}");
    let reported = log
        .lines()
        .find(|l| l.contains("Wazuh did not take the agent keygate served."))
        .unwrap();
    assert!(reported.contains("001"), "{reported}");
    assert!(reported.contains(conflict), "{reported}");
}

/// The agent appears in client.keys with the key served: confirmed, and
/// no warning.
#[test]
fn an_agent_wazuh_writes_is_confirmed() {
    let data = tempfile::tempdir().unwrap();
    let manager = data.path().join("client.keys");
    std::fs::write(&manager, "012 db-01 10.0.0.12 k12\n").unwrap();
    let d = watching(&manager, "10m", data.path());
    assert_eq!(d.request("id:001")["error"], 0);
    std::fs::write(
        &manager,
        format!("012 db-01 10.0.0.12 k12\n001 web-01 10.0.0.1 {KEY}\n"),
    )
    .unwrap();
    let log = wait_for_log(&d, "Wazuh took the agent keygate served.");
    assert!(!log.contains("probably refuse"), "{log}");
    assert!(!log.contains("did not take"), "{log}");
}

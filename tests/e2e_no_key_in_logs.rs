//! No key in any log: the daemon at `trace`, audit on, answering through
//! every kind of backend (file, Redis, LDAP, MySQL, PostgreSQL, each its
//! real server), and then every log it wrote, and what `keygate check`,
//! `backends` and `cache stats` print, is searched for every key it handed
//! out and every password it used.
#![cfg(all(
    feature = "mysql",
    feature = "postgres",
    feature = "redis",
    feature = "ldap"
))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{bin, exec, wazuh_request};
use keygate_testkit::redis::{RedisServer, REDIS_PASSWORD};
use keygate_testkit::repo_root;
use keygate_testkit::slapd::{Slapd, LDAP_BIND_DN, LDAP_PASSWORD};
use keygate_testkit::sql::TestDb;

/// What every daemon is asked: found, not found, bad records, by id and ip.
const LOOKUPS: &[&str] = &[
    "id:001",
    "id:002",
    "id:010",
    "id:042",
    "ip:10.0.0.1",
    "ip:10.0.0.2",
    "id:099",
    "id:099999",
    "id:20001",
    "id:20002",
    "ip:10.9.0.5",
    "id:001",
];

fn backend(name: &str, kind: &str, body: &str) -> String {
    format!("[[backend]]\nname = \"{name}\"\ntype = \"{kind}\"\ntimeout = \"2s\"\n{body}\n")
}

/// Runs one daemon at trace over `backend_toml`, asks every lookup through
/// the socket and once through the exec one-shot; returns the keys it
/// handed out and everything it logged.
fn run(backend_toml: &str) -> (Vec<String>, String) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("k.sock");
    let config = dir.path().join("k.toml");
    std::fs::copy(
        repo_root().join("config/demo/client.keys"),
        dir.path().join("client.keys"),
    )
    .unwrap();
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket = \"{}\"\n[log]\nlevel = \"trace\"\nfile = \"{d}/keygate.log\"\naudit_file = \"{d}/audit.log\"\n\n{backend_toml}",
            socket.display(),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut child = std::process::Command::new(bin())
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .env_remove("KEYGATE_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let start = Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "keygate exited");
        assert!(start.elapsed() < Duration::from_secs(20), "no socket");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut keys = Vec::new();
    let mut found = 0;
    for req in LOOKUPS {
        let reply: serde_json::Value =
            serde_json::from_slice(&wazuh_request(&socket, req.as_bytes())).unwrap();
        if let Some(key) = reply["data"]["key"].as_str() {
            keys.push(key.to_owned());
            found += 1;
        }
    }
    let out = exec(&config, &["id", "001"]);
    if let Some(key) = out.json()["data"]["key"].as_str() {
        keys.push(key.to_owned());
    }
    assert!(found >= 2, "{backend_toml}: too few agents found");
    // Every request has its audit event (the writer is a background thread).
    let audit = dir.path().join("audit.log");
    let start = Instant::now();
    while read(&audit).lines().count() < LOOKUPS.len() + 1 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "audit events missing:\n{}",
            read(&audit)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // What the admin commands print is searched too.
    let mut printed = String::new();
    for args in [
        &["check"][..],
        &["backends"],
        &["backends", "--json"],
        &["cache", "stats"],
    ] {
        let out = std::process::Command::new(bin())
            .arg("--config")
            .arg(&config)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(printed.contains("BACKEND"), "{printed}");
    let _ = child.kill();
    let _ = child.wait();
    let mut logs = String::new();
    for name in ["keygate.log", "audit.log", "stderr.log"] {
        logs.push_str(&read(&dir.path().join(name)));
    }
    logs.push_str(&printed);
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "not at trace"
    );
    (keys, logs)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The file, Redis, LDAP, MySQL and PostgreSQL backends at trace level:
/// no key any of them handed out, and none of their passwords, appears in
/// any log line.
#[test]
fn no_key_or_password_in_any_log_at_trace_level() {
    let redis = RedisServer::start();
    let slapd = Slapd::start();
    let my = TestDb::mysql();
    let pg = TestDb::postgres();
    let backends = [
        backend("keys", "file", "path = \"client.keys\""),
        backend(
            "redis",
            "redis",
            &format!(
                "url = \"{}\"\npassword_file = \"{}\"",
                redis.url(),
                redis.password_file().display()
            ),
        ),
        backend(
            "ldap",
            "ldap",
            &format!(
                "urls = [\"{}\"]\nbind_dn = \"{LDAP_BIND_DN}\"\npassword_file = \"{}\"\n\
                 base_dn = \"ou=agents,dc=example,dc=org\"\nscope = \"sub\"\n\
                 filter_by_id = \"(&(objectClass=device)(serialNumber={{id}}))\"\n\
                 filter_by_ip = \"(&(objectClass=ipHost)(ipHostNumber={{ip}}))\"\n\
                 [backend.attributes]\nid = \"serialNumber\"\nname = \"cn\"\nip = \"ipHostNumber\"\nkey = \"description\"",
                slapd.url(),
                slapd.password_file().display()
            ),
        ),
        backend(
            "mysql",
            "mysql",
            &format!(
                "url = \"{}\"\nquery_by_id = \"SELECT id,name,ip,`agent_key` FROM agent WHERE id = ?\"\n\
                 query_by_ip = \"SELECT id,name,ip,`agent_key` FROM agent WHERE ip = ?\"",
                my.url()
            ),
        ),
        backend(
            "postgres",
            "postgres",
            &format!(
                "url = \"{}\"\nquery_by_id = \"SELECT id,name,ip,agent_key FROM agent WHERE id = $1\"\n\
                 query_by_ip = \"SELECT id,name,ip,agent_key FROM agent WHERE ip = $1\"",
                pg.url()
            ),
        ),
    ];
    let mut keys = Vec::new();
    let mut logs = Vec::new();
    for b in &backends {
        let (k, l) = run(b);
        keys.extend(k);
        logs.push((b.lines().nth(1).unwrap().to_owned(), l));
    }
    keys.sort();
    keys.dedup();
    assert!(keys.len() >= 4, "{keys:?}");
    for (name, log) in &logs {
        for key in &keys {
            assert!(!log.contains(key.as_str()), "{name}: a key is in the log");
        }
        for secret in [REDIS_PASSWORD, LDAP_PASSWORD] {
            assert!(!log.contains(secret), "{name}: a password is in the log");
        }
    }
}

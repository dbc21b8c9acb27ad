//! No key in any log: the daemon at `trace`, audit on, answering through
//! every kind of backend (file, Redis, LDAP, MySQL, PostgreSQL, each its
//! real server, each SQL server with a password it checks), and then every
//! log it wrote, and what `keygate check`, `backends` and `cache stats`
//! print, is searched for every key it handed out, every key of the records
//! it refused (every key its stores hold for the agents it was asked
//! about), and every password it used.
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
use keygate_testkit::sql::{self, Kind, PrivatePostgres, TestDb, PRIVATE_PG_PASSWORD};

/// The password of the MySQL user the test creates (in the backend's URL).
const MYSQL_PASSWORD: &str = "Kg-mysql-Secret-4711";

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

/// What one daemon did: the keys it handed out, how many records it
/// refused (code 5), and everything it logged or printed.
struct Run {
    keys: Vec<String>,
    refused: usize,
    logs: String,
}

/// Runs one daemon at trace over `backend_toml`, asks every lookup through
/// the socket and once through the exec one-shot.
fn run(backend_toml: &str) -> Run {
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
    let (mut found, mut refused) = (0, 0);
    for req in LOOKUPS {
        let reply: serde_json::Value =
            serde_json::from_slice(&wazuh_request(&socket, req.as_bytes())).unwrap();
        if let Some(key) = reply["data"]["key"].as_str() {
            keys.push(key.to_owned());
            found += 1;
        } else if reply["error"] == 5 {
            refused += 1;
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
    Run {
        keys,
        refused,
        logs,
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The word after `marker` in every line of `text` that starts with
/// `line_start`: the keys of the Redis fixture (`HSET ... key K`) and of
/// the LDIF (`description: K`).
fn keys_after(text: &str, line_start: &str, marker: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with(line_start))
        .filter_map(|l| l.split(marker).nth(1))
        .map(|rest| rest.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// Every key the stores hold for the agents the daemons are asked about:
/// the refused records' as well as the found ones'. The flat-file stores
/// are read whole; the SQL tables for every row a lookup can reach.
fn store_keys(sql_stores: &[(Kind, &str)]) -> Vec<String> {
    let fixture = |path: &str| std::fs::read_to_string(repo_root().join(path)).unwrap();
    let mut keys: Vec<String> = fixture("config/demo/client.keys")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(' ').nth(3).unwrap().to_owned())
        .collect();
    keys.extend(keys_after(
        &fixture("docker/redis/agents.redis"),
        "HSET ",
        " key ",
    ));
    keys.extend(keys_after(
        &fixture("docker/ldap/agents.ldif"),
        "description: ",
        ": ",
    ));
    let list = |kind: &str| {
        LOOKUPS
            .iter()
            .filter_map(|l| l.strip_prefix(kind))
            .map(|v| format!("'{v}'"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let sql = format!(
        "SELECT agent_key FROM agent WHERE id IN ({}) OR ip IN ({})",
        list("id:"),
        list("ip:")
    );
    for (kind, url) in sql_stores {
        keys.extend(sql::query_texts(*kind, url, &sql).into_iter().flatten());
    }
    keys
}

/// The file, Redis, LDAP, MySQL and PostgreSQL backends at trace level:
/// no key any of them handed out or refused to, and none of their
/// passwords, appears in any log line or command output.
#[test]
fn no_key_or_password_in_any_log_at_trace_level() {
    let redis = RedisServer::start();
    let slapd = Slapd::start();
    // MariaDB checks this user's password; the private PostgreSQL server
    // checks its own (scram-sha-256). Neither works without it.
    let mut my = TestDb::mysql();
    let my_url = sql::with_password(&my.mysql_reader(MYSQL_PASSWORD), MYSQL_PASSWORD);
    let pg = PrivatePostgres::start();
    sql::load_fixtures(Kind::Postgres, &pg.url());
    let dir = tempfile::tempdir().unwrap();
    let pg_password = dir.path().join("pg.pass");
    std::fs::write(&pg_password, format!("{PRIVATE_PG_PASSWORD}\n")).unwrap();
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
                "url = \"{my_url}\"\nquery_by_id = \"SELECT id,name,ip,`agent_key` FROM agent WHERE id = ?\"\n\
                 query_by_ip = \"SELECT id,name,ip,`agent_key` FROM agent WHERE ip = ?\""
            ),
        ),
        backend(
            "postgres",
            "postgres",
            &format!(
                "url = \"{}\"\npassword_file = \"{}\"\n\
                 query_by_id = \"SELECT id,name,ip,agent_key FROM agent WHERE id = $1\"\n\
                 query_by_ip = \"SELECT id,name,ip,agent_key FROM agent WHERE ip = $1\"",
                pg.url_without_password(),
                pg_password.display()
            ),
        ),
    ];
    let mut handed_out = Vec::new();
    let mut logs = Vec::new();
    for b in &backends {
        let run = run(b);
        let name = b.lines().nth(1).unwrap().to_owned();
        // The demo client.keys holds no bad record; every other store does,
        // and the lookups reach some.
        assert!(
            run.refused > 0 || name.contains("keys"),
            "{name}: no record was refused"
        );
        handed_out.extend(run.keys);
        logs.push((name, run.logs));
    }
    let mut keys = store_keys(&[(Kind::Mysql, my.url()), (Kind::Postgres, &pg.url())]);
    for key in &handed_out {
        assert!(
            keys.contains(key),
            "a key handed out is not in the fixtures"
        );
    }
    assert!(
        keys.iter().any(|k| k == "a key with spaces"),
        "{}",
        keys.len()
    );
    keys.sort();
    keys.dedup();
    assert!(handed_out.len() >= 4 && keys.len() > 20, "{}", keys.len());
    for (name, log) in &logs {
        for key in &keys {
            assert!(!log.contains(key.as_str()), "{name}: a key is in the log");
        }
        for secret in [
            REDIS_PASSWORD,
            LDAP_PASSWORD,
            MYSQL_PASSWORD,
            PRIVATE_PG_PASSWORD,
        ] {
            assert!(!log.contains(secret), "{name}: a password is in the log");
        }
    }
}

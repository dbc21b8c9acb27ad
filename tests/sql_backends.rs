//! The MySQL/MariaDB and PostgreSQL backends end to end: the real binary,
//! driven as Wazuh drives it, against real servers (each test with its own
//! database, loaded from `docker/initdb/`, or its own private server).
#![cfg(all(feature = "mysql", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{self, bin, Daemon};
use keygate_testkit::sql::{self, Kind, PrivateMariadb, PrivatePostgres, TestDb};

fn mysql_backend(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"[[backend]]
name = "{name}"
type = "mysql"
url = "{url}"
timeout = "1s"
connect_timeout = "1s"
max_retry_interval = "1s"
query_by_id = "SELECT id,name,ip,`agent_key` FROM agent WHERE id = ?"
query_by_ip = "SELECT id,name,ip,`agent_key` FROM agent WHERE ip = ?"
{extra}
"#
    )
}

fn postgres_backend(name: &str, url: &str, extra: &str) -> String {
    format!(
        r#"[[backend]]
name = "{name}"
type = "postgres"
url = "{url}"
timeout = "1s"
connect_timeout = "1s"
max_retry_interval = "1s"
query_by_id = "SELECT id,name,ip,agent_key FROM agent WHERE id = $1"
query_by_ip = "SELECT id,name,ip,agent_key FROM agent WHERE ip = $1"
{extra}
"#
    )
}

/// Starts a daemon with the cache off: these tests watch the backends.
fn daemon(backends: &str) -> Daemon {
    Daemon::start(&format!("[cache]\nenabled = false\n\n{backends}"))
}

/// Waits until `id:042` answers 0 (up to 20 s) and returns how long it took.
fn wait_for_answer(d: &Daemon) -> Duration {
    let started = Instant::now();
    loop {
        let v = d.request("id:042");
        if v["error"] == 0 {
            assert_eq!(v["data"]["name"], "agent-00042");
            return started.elapsed();
        }
        assert_eq!(v["error"], 2, "{v}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no answer 20 s after the server came back: {v}\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Both backends in one chain serve the documented table; bad rows answer
/// 5, unknown agents 4; `keygate check` reports both reachable.
#[test]
fn mysql_then_postgres_chain_answers_through_the_socket() {
    let my = TestDb::mysql();
    let pg = TestDb::postgres();
    // PostgreSQL also gets the integer-id table, to be found after MySQL
    // has said "not found".
    let backends = mysql_backend("inventory", my.url(), "")
        + &format!(
            r#"[[backend]]
name = "pg-int"
type = "postgres"
url = "{}"
query_by_id = "SELECT * FROM agent_int WHERE id = $1::int"
query_by_ip = "SELECT * FROM agent_int WHERE ip = $1"
"#,
            pg.url()
        );
    let d = daemon(&backends);
    let v = d.request("id:001");
    assert_eq!(v["error"], 0, "{v}");
    assert_eq!(v["data"]["name"], "agent-00001");
    assert_eq!(v["data"]["ip"], "10.0.0.1");
    assert_eq!(v["data"]["key"].as_str().unwrap().len(), 64);
    assert_eq!(d.request("ip:10.0.39.16")["data"]["id"], "10000");
    assert_eq!(d.request("id:007")["data"]["id"], "007");
    assert_eq!(d.request("ip:10.8.0.7")["data"]["name"], "int-seven");
    for bad in [
        "id:20001",
        "id:20002",
        "id:20003",
        "id:20004",
        "ip:10.9.0.5",
    ] {
        assert_eq!(d.request(bad)["error"], 5, "{bad}");
    }
    assert_eq!(d.request("id:099999")["error"], 4);

    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("inventory") && text.contains("pg-int"),
        "{text}"
    );
}

/// Fifty Wazuh-style clients at once, against a MySQL and then a PostgreSQL
/// backend: every one gets its own agent, none an error.
#[test]
fn burst_of_50_clients_has_no_errors() {
    let my = TestDb::mysql();
    let pg = TestDb::postgres();
    for backend in [
        mysql_backend("my", my.url(), ""),
        postgres_backend("pg", pg.url(), ""),
    ] {
        let d = daemon(&backend);
        let socket = d.socket().to_owned();
        let threads: Vec<_> = (1..=50u32)
            .map(|i| {
                let socket = socket.clone();
                std::thread::spawn(move || {
                    let n = i * 197;
                    let req = format!("id:{n:03}");
                    let v: serde_json::Value =
                        serde_json::from_slice(&daemon::wazuh_request(&socket, req.as_bytes()))
                            .unwrap();
                    assert_eq!(v["error"], 0, "{req}: {v}");
                    assert_eq!(v["data"]["name"], format!("agent-{n:05}"), "{req}");
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
    }
}

/// A wrong password is a refused login: it answers 6 (a configuration
/// problem, not 2, an outage) and appears nowhere: not in the reply, the
/// daemon's debug log, nor `keygate check`'s output; the log says why.
#[test]
fn wrong_password_is_6_and_never_shown() {
    let my = TestDb::mysql();
    let secret = "Wr0ng-Secret-e2e-51a7";
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mysql.pass");
    std::fs::write(&pw, format!("{secret}\n")).unwrap();
    let url = sql::with_password(my.url(), "Url-Secret-e2e-0b9");
    let d = daemon(&mysql_backend(
        "inventory",
        &url,
        &format!("password_file = \"{}\"", pw.display()),
    ));
    let raw = String::from_utf8(d.request_raw(b"id:001")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(v["error"], 6, "{raw}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .starts_with("login refused: "),
        "{raw}"
    );
    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .arg("check")
        .output()
        .unwrap();
    let check = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{check}");
    let log = d.log();
    assert!(
        log.contains("Access denied") && check.contains("Access denied"),
        "log:\n{log}\ncheck:\n{check}"
    );
    assert!(
        log.contains("Backend refused keygate's login"),
        "log:\n{log}"
    );
    for text in [&raw, &log, &check, &d.stderr()] {
        assert!(!text.contains(secret), "{text}");
        assert!(!text.contains("Url-Secret-e2e-0b9"), "{text}");
    }
}

/// A login refused after a reload (the password file now wrong, for a
/// user of its own made by the test): an agent the cache knows is answered
/// from its stale entry (0), one it does not know gets 6; the breaker never
/// trips (it is not an outage) and the log says the login was refused.
#[test]
fn refused_login_is_answered_from_the_stale_cache_and_logged() {
    let mut my = TestDb::mysql();
    let reader = my.mysql_reader("Right-Pass-e2e-3a1");
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mysql.pass");
    std::fs::write(&pw, "Right-Pass-e2e-3a1\n").unwrap();
    let d = Daemon::start(&format!(
        "[cache]\nttl = \"1s\"\nrefresh_ahead = 0.0\n\n{}",
        mysql_backend(
            "inventory",
            &reader,
            &format!("password_file = \"{}\"", pw.display())
        )
    ));
    assert_eq!(d.request("id:001")["data"]["name"], "agent-00001");
    std::fs::write(&pw, "Wrong-Pass-e2e-3a1\n").unwrap();
    let keygate = |args: &[&str]| {
        let out = Command::new(bin())
            .arg("--config")
            .arg(d.config())
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    keygate(&["reload"]);
    // Past the entry's ttl: every request asks the backend again.
    std::thread::sleep(Duration::from_millis(1200));
    for _ in 0..5 {
        let v = d.request("id:001");
        assert_eq!(v["data"]["name"], "agent-00001", "{v}");
    }
    let v = d.request("id:002");
    assert_eq!(v["error"], 6, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("login refused"),
        "{v}"
    );
    let stats: serde_json::Value =
        serde_json::from_str(&keygate(&["cache", "stats", "--json"])).unwrap();
    assert_eq!(stats["stale_served"], 5, "{stats}");
    let backends: serde_json::Value =
        serde_json::from_str(&keygate(&["backends", "--json"])).unwrap();
    assert_eq!(backends[0]["state"], "up", "{backends}");
    let log = d.log();
    for says in [
        "Backend refused keygate's login",
        "Serving a stale cache entry while a backend refuses keygate's login.",
    ] {
        assert!(log.contains(says), "{says:?} not in:\n{log}");
    }
    assert!(!log.contains("Pass-e2e-3a1"), "{log}");
}

/// A MariaDB server stopped and started again mid-test: the same daemon
/// answers 2 quickly (well under Wazuh's 60 s) while it is down and answers
/// again by itself once it is back.
#[test]
fn mariadb_restart_is_2_while_down_then_answers_again() {
    let mut server = PrivateMariadb::start();
    let db = TestDb::create(Kind::Mysql, &server.url());
    let d = daemon(&mysql_backend("inventory", db.url(), ""));
    let pid = d.pid();
    assert_eq!(d.request("id:042")["data"]["name"], "agent-00042");
    server.stop();
    for req in ["id:042", "ip:10.0.0.42"] {
        let started = Instant::now();
        assert_eq!(d.request(req)["error"], 2, "{req}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    server.start_again();
    wait_for_answer(&d);
    assert_eq!(d.pid(), pid);
    drop(db);
}

/// The same for PostgreSQL.
#[test]
fn postgres_restart_is_2_while_down_then_answers_again() {
    let mut server = PrivatePostgres::start();
    let db = TestDb::create(Kind::Postgres, &server.url());
    let d = daemon(&postgres_backend("inventory", db.url(), ""));
    let pid = d.pid();
    assert_eq!(d.request("id:042")["data"]["name"], "agent-00042");
    server.stop();
    for req in ["id:042", "ip:10.0.0.42"] {
        let started = Instant::now();
        assert_eq!(d.request(req)["error"], 2, "{req}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    server.start_again();
    wait_for_answer(&d);
    assert_eq!(d.pid(), pid);
    drop(db);
}

/// keygate starts while its database is down and serves once it comes up,
/// without a restart (pools connect lazily).
#[test]
fn starts_with_the_database_down_and_recovers_without_a_restart() {
    let mut server = PrivateMariadb::start();
    let db = TestDb::create(Kind::Mysql, &server.url());
    server.stop();
    let d = daemon(&mysql_backend("inventory", db.url(), ""));
    assert_eq!(d.request("id:042")["error"], 2);
    server.start_again();
    wait_for_answer(&d);
    drop(db);
}

/// `urls`: with the first MariaDB down, the same daemon answers from the
/// second; once the first is back (and healthy for `failback_after`) it
/// answers from the first again.
#[test]
fn urls_fail_over_to_the_second_host_and_back() {
    let mut first = PrivateMariadb::start();
    let second = PrivateMariadb::start();
    let db1 = TestDb::create(Kind::Mysql, &first.url());
    let db2 = TestDb::create(Kind::Mysql, &second.url());
    sql::run_sql(
        Kind::Mysql,
        db2.url(),
        "UPDATE agent SET name = 'on-second' WHERE id = '042'",
    );
    let backend = mysql_backend("inventory", "unused", "")
        .replace(
            "url = \"unused\"",
            &format!(
                "urls = [\"{}\", \"{}\"]\nfailback_after = \"1s\"",
                db1.url(),
                db2.url()
            ),
        )
        .replace("connect_timeout = \"1s\"", "connect_timeout = \"400ms\"");
    let d = daemon(&backend);
    let name = |d: &Daemon| d.request("id:042")["data"]["name"].clone();
    assert_eq!(name(&d), "agent-00042");
    first.stop();
    let started = Instant::now();
    while name(&d) != "on-second" {
        assert!(started.elapsed() < Duration::from_secs(10), "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    // `keygate backends` shows which host is in use, without a password.
    let backends = || {
        let out = Command::new(bin())
            .arg("--config")
            .arg(d.config())
            .arg("backends")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let text = backends();
    assert!(text.contains("host 2 of 2"), "{text}");
    first.start_again();
    let started = Instant::now();
    while name(&d) != "agent-00042" {
        assert!(started.elapsed() < Duration::from_secs(15), "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = backends();
    assert!(text.contains("host 1 of 2"), "{text}");
    drop((db1, db2));
}

/// A password in a URL's query string is never shown: not by `keygate
/// backends` (which shows the host index and the redacted host), not by
/// `keygate check`, not in the daemon's log (failover lines name the
/// backend and the host index only). The daemon warns that the config,
/// readable by others, holds an inline password.
#[test]
fn a_password_in_a_url_is_never_shown_anywhere() {
    let db = TestDb::postgres();
    let secret_url = "postgres://kg@127.0.0.1:1/wazuh?password=hunter2";
    let two_hosts = postgres_backend("inventory", "unused", "").replace(
        "url = \"unused\"",
        &format!("urls = [\"{secret_url}\", \"{}\"]", db.url()),
    );
    let one_host = postgres_backend("spare", secret_url, "");
    let d = daemon(&format!("{two_hosts}\n{one_host}"));
    assert_eq!(d.request("id:042")["data"]["name"], "agent-00042");
    let run = |command: &str| {
        let out = Command::new(bin())
            .arg("--config")
            .arg(d.config())
            .arg(command)
            .output()
            .unwrap();
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let backends = run("backends");
    assert!(
        backends.contains("host 2 of 2: postgres://127.0.0.1:"),
        "{backends}"
    );
    assert!(
        backends.contains("host 1 of 1: postgres://127.0.0.1:1/wazuh?password=***"),
        "{backends}"
    );
    let check = run("check");
    let log = d.log();
    assert!(log.contains("Host failed; moving on"), "{log}");
    assert!(log.contains("holds a password in a URL"), "{log}");
    for text in [&backends, &check, &log, &d.stderr()] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("kg@"), "{text}");
    }
    drop(db);
}

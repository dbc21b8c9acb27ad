//! Injection corpus through every backend (issue 10, "Proof"): classic
//! injection strings are sent to a running keygate (socket mode) whose chain
//! holds file, SQLite, MySQL, PostgreSQL, Redis and LDAP backends, and what
//! reached each server is read AT THE SERVER: MariaDB's general query log,
//! PostgreSQL's statement log (`log_statement = 'all'`), slapd's stats log
//! and Redis `MONITOR`, all on private instances.
//!
//! Every corpus request is refused (code 1 or 3) before any backend, and
//! no server log holds any corpus string; a valid probe for an unknown agent
//! (which goes through every backend) does appear in every log, so the logs
//! are shown to record what keygate sends.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use keygate_testkit::daemon::Daemon;
use keygate_testkit::redis::{RedisServer, REDIS_PASSWORD};
use keygate_testkit::slapd::{LDAP_BIND_DN, LDAP_PASSWORD};
use keygate_testkit::sql::{run_sql, with_database, Kind, PrivateMariadb, PrivatePostgres};
use keygate_testkit::{free_port, repo_root};

/// The corpus: SQL, LDAP filter, Redis protocol, format string, JSON, NUL
/// and long UTF-8 payloads.
fn corpus() -> Vec<Vec<u8>> {
    vec![
        b"' OR 1=1 --".to_vec(),
        b"*)(uid=*".to_vec(),
        b"\r\nFLUSHALL".to_vec(),
        b"%s".to_vec(),
        b"{".to_vec(),
        b"\0".to_vec(),
        "\u{00e9}\u{4e2d}\u{1f600}".repeat(8).into_bytes(),
        "\u{00e9}".repeat(100).into_bytes(),
    ]
}

/// Each payload as a whole request, as an id or ip value, and appended to
/// a valid value.
fn requests() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for p in corpus() {
        out.push(p.clone());
        for prefix in [&b"id:"[..], b"ip:", b"id:001", b"ip:10.0.0.1", b"ip:::1"] {
            let mut r = prefix.to_vec();
            r.extend(&p);
            out.push(r);
        }
    }
    out
}

/// Strings that must never appear in a server's log: the payloads' own
/// distinctive parts.
const MARKERS: &[&str] = &[
    "OR 1=1",
    "uid=*",
    "FLUSHALL",
    "%s",
    "\u{00e9}",
    "\u{4e2d}",
    "\u{1f600}",
    "\0",
];

/// A private slapd like the harness's, started with debug level `stats`
/// (256) so every operation, filter included, is logged to its stderr.
struct StatsSlapd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl StatsSlapd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = repo_root();
        let conf = std::fs::read_to_string(root.join("docker/ldap/slapd.conf.in"))
            .unwrap()
            .replace("@DIR@", dir.path().to_str().unwrap());
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let out = Command::new("/usr/sbin/slapadd")
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(root.join("docker/ldap/agents.ldif"))
            .output()
            .expect("slapadd is not installed (bash tests/setup.sh)");
        assert!(out.status.success(), "slapadd: {out:?}");
        let port = free_port();
        let child = Command::new("/usr/sbin/slapd")
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(format!("ldap://127.0.0.1:{port}/"))
            .args(["-d", "256"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stats.log")).unwrap())
            .spawn()
            .expect("slapd is not installed (bash tests/setup.sh)");
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(started.elapsed().as_secs() < 15, "slapd did not listen");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        Self { child, dir, port }
    }

    fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(self.dir.path().join("stats.log")).unwrap())
            .into_owned()
    }

    fn password_file(&self) -> std::path::PathBuf {
        let p = self.dir.path().join("ldap.pass");
        std::fs::write(&p, format!("{}\n", LDAP_PASSWORD)).unwrap();
        p
    }
}

impl Drop for StatsSlapd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `MONITOR` connection to a private Redis: everything it receives.
fn monitor(redis: &RedisServer) -> Arc<Mutex<Vec<u8>>> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", redis.port())).unwrap();
    s.write_all(format!("AUTH {REDIS_PASSWORD}\r\nMONITOR\r\n").as_bytes())
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    // Wait until MONITOR is on (its +OK after AUTH's +OK).
    let started = std::time::Instant::now();
    while String::from_utf8_lossy(&seen.lock().unwrap())
        .matches("+OK")
        .count()
        < 2
    {
        assert!(started.elapsed().as_secs() < 10, "MONITOR did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    seen
}

/// The PostgreSQL server's log file, read through SQL with `psql` (the
/// harness's log sits beside the data directory).
fn postgres_log(url: &str) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args([
            "-Atc",
            "SELECT pg_read_file(current_setting('data_directory') || '/../postgres.log')",
        ])
        .output()
        .expect("psql is not installed");
    assert!(out.status.success(), "psql: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_clean(server: &str, log: &str) {
    assert!(
        log.contains("99999") && log.contains("10.99.99.99"),
        "{server}: the probe is not in the log, so it proves nothing:\n{log}"
    );
    for m in MARKERS {
        assert!(!log.contains(m), "{server}: the log holds {m:?}:\n{log}");
    }
}

/// Every corpus request is refused before any backend, and nothing of the
/// corpus reaches MariaDB, PostgreSQL, slapd or Redis (read at each server),
/// while a valid probe shows up at every one of them.
#[test]
fn injection_corpus_reaches_no_backend_server() {
    let dir = tempfile::tempdir().unwrap();
    // MariaDB: a private server with its general query log in a file.
    let maria = PrivateMariadb::start();
    run_sql(Kind::Mysql, &maria.url(), "CREATE DATABASE kg");
    let my_url = with_database(&maria.url(), "kg");
    run_sql(
        Kind::Mysql,
        &my_url,
        "CREATE TABLE agent (id VARCHAR(8), name VARCHAR(128), ip VARCHAR(19), agent_key VARCHAR(128))",
    );
    let general_log = dir.path().join("general.log");
    // The private datadir has no system tables; the general log wants its
    // table to exist even when it writes to a file.
    run_sql(
        Kind::Mysql,
        &maria.url(),
        "CREATE DATABASE IF NOT EXISTS mysql; \
         CREATE TABLE IF NOT EXISTS mysql.general_log (\
           event_time TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6), \
           user_host MEDIUMTEXT NOT NULL, thread_id BIGINT(21) UNSIGNED NOT NULL, \
           server_id INT(10) UNSIGNED NOT NULL, command_type VARCHAR(64) NOT NULL, \
           argument MEDIUMTEXT NOT NULL) ENGINE=CSV CHARACTER SET utf8mb3",
    );
    run_sql(
        Kind::Mysql,
        &maria.url(),
        &format!(
            "SET GLOBAL general_log_file = '{}'; SET GLOBAL general_log = ON",
            general_log.display()
        ),
    );
    // PostgreSQL: a private cluster logging every statement.
    let pg = PrivatePostgres::start();
    run_sql(
        Kind::Postgres,
        &pg.url(),
        "CREATE TABLE agent (id TEXT, name TEXT, ip TEXT, agent_key TEXT)",
    );
    run_sql(
        Kind::Postgres,
        &pg.url(),
        "ALTER SYSTEM SET log_statement = 'all'",
    );
    run_sql(Kind::Postgres, &pg.url(), "SELECT pg_reload_conf()");
    let slapd = StatsSlapd::start();
    let redis = RedisServer::start();
    let seen_by_redis = monitor(&redis);
    // SQLite: a file database with the same table.
    let db = dir.path().join("agents.db");
    let status = Command::new("sqlite3")
        .arg(&db)
        .arg("CREATE TABLE agent (id TEXT, name TEXT, ip TEXT, agent_key TEXT);")
        .status()
        .expect("sqlite3 is not installed");
    assert!(status.success());

    let backends = format!(
        r#"[[backend]]
name = "file"
type = "file"
path = "{keys}"

[[backend]]
name = "sqlite"
type = "sqlite"
path = "{db}"
query_by_id = "SELECT id, name, ip, agent_key FROM agent WHERE id = ?"
query_by_ip = "SELECT id, name, ip, agent_key FROM agent WHERE ip = ?"

[[backend]]
name = "mysql"
type = "mysql"
url = "{my_url}"
query_by_id = "SELECT id, name, ip, agent_key FROM agent WHERE id = ?"
query_by_ip = "SELECT id, name, ip, agent_key FROM agent WHERE ip = ?"

[[backend]]
name = "postgres"
type = "postgres"
url = "{pg_url}"
query_by_id = "SELECT id, name, ip, agent_key FROM agent WHERE id = $1"
query_by_ip = "SELECT id, name, ip, agent_key FROM agent WHERE ip = $1"

[[backend]]
name = "redis"
type = "redis"
url = "{redis_url}"
password_file = "{redis_pass}"

[[backend]]
name = "ldap"
type = "ldap"
urls = ["ldap://127.0.0.1:{ldap_port}"]
bind_dn = "{LDAP_BIND_DN}"
password_file = "{ldap_pass}"
base_dn = "ou=agents,dc=example,dc=org"
scope = "sub"
filter_by_id = "(&(objectClass=device)(serialNumber={{id}}))"
filter_by_ip = "(&(objectClass=ipHost)(ipHostNumber={{ip}}))"
[backend.attributes]
id = "serialNumber"
name = "cn"
ip = "ipHostNumber"
key = "description"
"#,
        keys = repo_root().join("config/demo/client.keys").display(),
        db = db.display(),
        pg_url = pg.url(),
        redis_url = redis.url(),
        redis_pass = redis.password_file().display(),
        ldap_port = slapd.port,
        ldap_pass = slapd.password_file().display(),
    );
    let d = Daemon::start(&format!("[cache]\nenabled = false\n\n{backends}"));

    for raw in requests() {
        let reply = d.request_raw(&raw);
        let v: serde_json::Value = serde_json::from_slice(&reply)
            .unwrap_or_else(|e| panic!("{raw:?}: reply is not JSON ({e}): {reply:?}"));
        let code = v["error"].as_u64().unwrap();
        assert!(code == 1 || code == 3, "{raw:?} answered {v}");
        assert!(!reply.contains(&b'\n'), "{raw:?}: {reply:?}");
    }
    // The probes: unknown agents, asked of every backend in turn.
    for probe in ["id:99999", "ip:10.99.99.99"] {
        let v = d.request(probe);
        assert_eq!(v["error"], 4, "{probe}: {v}\n{}", d.log());
    }
    // MONITOR and the logs are written asynchronously: give them a moment.
    std::thread::sleep(std::time::Duration::from_millis(500));

    let maria_log = std::fs::read_to_string(&general_log).unwrap();
    assert_clean("MariaDB general log", &maria_log);
    assert_clean("PostgreSQL statement log", &postgres_log(&pg.url()));
    assert_clean("slapd stats log", &slapd.log());
    let redis_seen = String::from_utf8_lossy(&seen_by_redis.lock().unwrap()).into_owned();
    assert_clean("Redis MONITOR", &redis_seen);
}

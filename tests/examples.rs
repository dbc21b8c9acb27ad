//! Every example config in `config/examples/` answers lookups correctly
//! against its kind of server holding the data its header comment
//! describes (the `# Data` block, read from the example itself).
//!
//! Only what differs from site to site is replaced, through `KEYGATE_`
//! environment overrides as an operator would: server URLs, password and
//! CA files, TLS mode, file paths, the socket (so no running daemon is
//! asked) and the log file. Queries, key patterns, field names, filters,
//! attributes, formats and the chain are the example's own. Each lookup
//! goes through `keygate check` (every backend probed) and exec mode.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::Command;

use keygate_testkit::redis::RedisServer;
use keygate_testkit::slapd::Slapd;
use keygate_testkit::sql::{self, Kind, TestDb};
use keygate_testkit::{daemon::bin, repo_root};
use keygate_wazuh_standin::inventory::Inventory;

const KEY_001: &str = "0b9d9f06cc8cf44765a12c0aa01a6e2217130979f4dfeda24e22b0af7e8d237e";
const KEY_010: &str = "abbac1bcd1f31ca84918948f5e33b85c26133b5062e03933b554cdffbf9d9c14";

fn example(name: &str) -> PathBuf {
    repo_root().join("config/examples").join(name)
}

/// The example's `# Data` block: the comment lines indented under it,
/// without the `#   ` prefix.
fn data_block(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(example(name)).unwrap();
    let mut lines = text.lines().skip_while(|l| !l.starts_with("# Data"));
    assert!(lines.next().is_some(), "{name} has no '# Data' comment");
    lines
        .skip_while(|l| !l.starts_with("#   "))
        .take_while(|l| l.starts_with("#   "))
        .map(|l| l["#   ".len()..].to_owned())
        .collect()
}

/// Lines of one file in a data block that lists several files (`name:`
/// then its lines indented by two spaces).
fn data_file(block: &[String], file: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for line in block {
        if let Some(content) = line.strip_prefix("  ") {
            if inside {
                out.push_str(content);
                out.push('\n');
            }
        } else {
            inside = line == &format!("{file}:");
        }
    }
    assert!(!out.is_empty(), "no {file}: in the data block");
    out
}

/// One example run with its site details replaced.
struct Run {
    name: &'static str,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Run {
    fn new(name: &'static str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![
            (
                "KEYGATE_SERVER__SOCKET".to_owned(),
                dir.path().join("absent.sock").display().to_string(),
            ),
            (
                "KEYGATE_LOG__FILE".to_owned(),
                dir.path().join("keygate.log").display().to_string(),
            ),
        ];
        Self { name, dir, env }
    }

    fn set(&mut self, var: &str, value: impl std::fmt::Display) -> &mut Self {
        self.env.push((var.to_owned(), value.to_string()));
        self
    }

    /// A file in the temp dir.
    fn file(&self, name: &str, content: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p
    }

    fn keygate(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(bin());
        cmd.arg("--config").arg(example(self.name)).args(args);
        cmd.env_remove("KEYGATE_CONFIG");
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }

    /// `keygate check` passes, then each `(request, name, ip, key)` is
    /// answered with exactly that record.
    fn expect(&self, answers: &[(&str, &str, &str, &str, &str)]) {
        let check = self.keygate(&["check"]);
        let text = String::from_utf8_lossy(&check.stdout);
        assert!(
            check.status.success(),
            "{}: keygate check:\n{text}{}",
            self.name,
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(text.contains("valid,"), "{text}");
        for (request, id, name, ip, key) in answers {
            let (kind, value) = request.split_once(':').unwrap();
            let out = self.keygate(&[kind, value]);
            let reply: serde_json::Value = serde_json::from_slice(&out.stdout)
                .unwrap_or_else(|e| panic!("{}: {e}: {:?}", self.name, out));
            assert_eq!(
                reply,
                serde_json::json!({"error": 0, "data": {"id": id, "name": name, "ip": ip, "key": key}}),
                "{}: {request}",
                self.name
            );
        }
    }
}

/// Every example in `config/examples/` has a `#[test]` here that runs it
/// (`Run::new` with its file name) and checks its answers (`expect`). The
/// tests are read from this file's own source, so a new example without a
/// test fails, and so does a test left behind by an example that is gone.
#[test]
fn every_example_has_a_test() {
    let mut examples: Vec<String> = std::fs::read_dir(repo_root().join("config/examples"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    examples.sort();
    // Written in two pieces so that this test's own text does not match.
    let (run, expect) = (concat!("Run::new", "(\""), concat!(".expect", "(&["));
    let mut tested: Vec<String> = Vec::new();
    for test in include_str!("examples.rs").split("\n#[test]\n").skip(1) {
        // The test function: up to its closing brace in the first column.
        let body = test.split("\n}\n").next().unwrap();
        if !body.contains(expect) {
            continue;
        }
        for after in body.split(run).skip(1) {
            tested.push(after.split('"').next().unwrap().to_owned());
        }
    }
    tested.sort();
    tested.dedup();
    assert!(tested.len() >= 8, "{tested:?}");
    assert_eq!(
        examples, tested,
        "config/examples/ and the tests in this file"
    );
}

/// file.toml: a CSV export, then a client.keys (CIDR agent by address).
#[test]
fn file_example_answers() {
    let block = data_block("file.toml");
    let mut run = Run::new("file.toml");
    let csv = run.file("agents.csv", &data_file(&block, "agents.csv"));
    let keys = run.file("client.keys", &data_file(&block, "client.keys"));
    run.set("KEYGATE_BACKEND__0__PATH", csv.display())
        .set("KEYGATE_BACKEND__1__PATH", keys.display());
    run.expect(&[
        ("id:001", "001", "web-01", "10.0.0.1", KEY_001),
        ("ip:10.1.0.7", "010", "branch-net", "10.1.0.0/24", KEY_010),
    ]);
}

/// sqlite.toml: the database its comment creates.
#[test]
fn sqlite_example_answers() {
    let mut run = Run::new("sqlite.toml");
    let db = run.dir.path().join("agents.db");
    let statements = data_block("sqlite.toml").join("\n");
    let url = format!("sqlite://{}?mode=rwc", db.display());
    sql::block_on(move || async move {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::raw_sql(&statements).execute(&mut c).await.unwrap();
        c.close().await.unwrap();
    });
    let keys = run.file("client.keys", "");
    run.set("KEYGATE_BACKEND__INVENTORY__PATH", db.display())
        .set("KEYGATE_BACKEND__1__PATH", keys.display());
    run.expect(&[
        ("id:001", "001", "web-01", "10.0.0.1", KEY_001),
        ("ip:10.0.0.1", "001", "web-01", "10.0.0.1", KEY_001),
    ]);
}

/// mysql.toml: a fresh database on the shared server with the example's
/// table, read by a user of its own with a password (the example's
/// `password_file`), over both of the example's hosts.
#[test]
fn mysql_example_answers() {
    let mut db = TestDb::mysql();
    let password = "example-password";
    let mut setup = vec!["DROP TABLE agent".to_owned()];
    setup.extend(
        data_block("mysql.toml")
            .iter()
            .map(|l| l.trim_end_matches(';').to_owned()),
    );
    sql::run_sql(Kind::Mysql, db.url(), &setup.join(";\n"));
    let url = db.mysql_reader(password);
    let mut run = Run::new("mysql.toml");
    let pass = run.file("mysql.pass", &format!("{password}\n"));
    let keys = run.file("client.keys", "");
    run.set(
        "KEYGATE_BACKEND__INVENTORY__URLS",
        format!("[\"{url}\", \"{url}\"]"),
    )
    .set("KEYGATE_BACKEND__INVENTORY__PASSWORD_FILE", pass.display())
    // The shared test server has no certificate.
    .set("KEYGATE_BACKEND__INVENTORY__TLS", "prefer")
    .set(
        "KEYGATE_BACKEND__INVENTORY__CA_FILE",
        "/etc/ssl/certs/ca-certificates.crt",
    )
    .set("KEYGATE_BACKEND__1__PATH", keys.display());
    run.expect(&[
        ("id:001", "001", "web-01", "10.0.0.1", KEY_001),
        ("ip:10.0.0.1", "001", "web-01", "10.0.0.1", KEY_001),
    ]);
}

/// postgres.toml: a fresh database on the shared server (trust
/// authentication, so any password is accepted) with the example's table.
#[test]
fn postgres_example_answers() {
    let db = TestDb::postgres();
    sql::run_sql(
        Kind::Postgres,
        db.url(),
        &data_block("postgres.toml").join("\n"),
    );
    let mut run = Run::new("postgres.toml");
    let pass = run.file("pg.pass", "unused-with-trust\n");
    run.set("KEYGATE_BACKEND__CMDB__URL", db.url())
        .set("KEYGATE_BACKEND__CMDB__PASSWORD_FILE", pass.display())
        // The shared test server has no certificate.
        .set("KEYGATE_BACKEND__CMDB__TLS", "prefer");
    run.expect(&[
        ("id:001", "001", "web-01", "10.0.0.1", KEY_001),
        ("ip:10.1.0.7", "010", "branch-net", "10.1.0.0/24", KEY_010),
    ]);
}

/// redis.toml: a private redis-server holding the example's hashes (the
/// fixture's entries for the same keys are deleted first, so the renamed
/// field is what answers).
#[test]
fn redis_example_answers() {
    let server = RedisServer::start();
    let mut run = Run::new("redis.toml");
    let mut commands = vec![
        "DEL wazuh:agent:001".to_owned(),
        "DEL wazuh:agent-ip:10.0.0.1".to_owned(),
    ];
    commands.extend(data_block("redis.toml"));
    let file = run.file("data.redis", &(commands.join("\n") + "\n"));
    server.load(&file);
    let keys = run.file("client.keys", "");
    run.set("KEYGATE_BACKEND__CACHE-TIER__URL", server.url())
        .set(
            "KEYGATE_BACKEND__CACHE-TIER__PASSWORD_FILE",
            server.password_file().display(),
        )
        .set("KEYGATE_BACKEND__1__PATH", keys.display());
    run.expect(&[
        ("id:001", "001", "web-01", "10.0.0.1", KEY_001),
        ("ip:10.0.0.1", "001", "web-01", "10.0.0.1", KEY_001),
    ]);
}

/// ldap.toml: a private slapd with TLS (the example's ldaps:// URL first,
/// its CA file) holding the fixture, which contains the example's entry.
#[test]
fn ldap_example_answers() {
    let block = data_block("ldap.toml").join("\n");
    let ldif = std::fs::read_to_string(repo_root().join("docker/ldap/agents.ldif")).unwrap();
    assert!(
        ldif.contains(&block),
        "the entry ldap.toml describes is not in docker/ldap/agents.ldif:\n{block}"
    );
    let slapd = Slapd::start_with_tls();
    let mut run = Run::new("ldap.toml");
    run.set(
        "KEYGATE_BACKEND__DIRECTORY__URLS",
        format!("[\"{}\", \"{}\"]", slapd.ldaps_url(), slapd.url()),
    )
    .set(
        "KEYGATE_BACKEND__DIRECTORY__CA_FILE",
        slapd.ca_file().display(),
    )
    .set(
        "KEYGATE_BACKEND__DIRECTORY__PASSWORD_FILE",
        slapd.password_file().display(),
    );
    run.expect(&[
        ("id:001", "001", "web-01", "10.0.0.1", KEY_001),
        ("ip:10.0.0.1", "001", "web-01", "10.0.0.1", KEY_001),
    ]);
}

/// exec.toml: the benchmark's port of the documented MySQL script as the
/// command (run by python3), reading the example's table in a fresh
/// database; only the command path and the script's database settings
/// are replaced.
#[test]
fn exec_example_answers() {
    let connector = Command::new("python3")
        .args(["-c", "import mysql.connector"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        connector,
        "python3 with mysql-connector-python is needed: run `bash tests/setup.sh`"
    );
    let db = TestDb::mysql();
    let mut setup = vec!["DROP TABLE agent".to_owned()];
    setup.extend(
        data_block("exec.toml")
            .iter()
            .map(|l| l.trim_end_matches(';').to_owned()),
    );
    sql::run_sql(Kind::Mysql, db.url(), &setup.join(";\n"));
    let script = repo_root().join("crates/keygate-bench/seed/seed_script.py");
    let mut run = Run::new("exec.toml");
    run.set(
        "KEYGATE_BACKEND__LEGACY__COMMAND",
        format!("[\"python3\", \"{}\"]", script.display()),
    )
    .set(
        "KEYGATE_BACKEND__LEGACY__ENV",
        format!(
            "{{SEED_DB_HOST=\"127.0.0.1\", SEED_DB_USER=\"root\", SEED_DB_NAME=\"{}\"}}",
            db.name()
        ),
    );
    run.expect(&[
        ("id:001", "001", "web-01", "10.0.0.1", KEY_001),
        ("ip:10.0.0.1", "001", "web-01", "10.0.0.1", KEY_001),
    ]);
}

/// The value of `key = "..."` in an example.
fn example_value(name: &str, key: &str) -> String {
    let text = std::fs::read_to_string(example(name)).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{key} = \"")))
        .unwrap_or_else(|| panic!("{name} has no {key}"));
    line.split('"').nth(1).unwrap().to_owned()
}

/// http.toml: its agents served by a local HTTPS inventory with its own
/// CA; only the host, the token and the CA file are the test's.
#[test]
fn http_example_answers() {
    let block = data_block("http.toml");
    let agents: Vec<Vec<&str>> = block.iter().map(|l| l.split(' ').collect()).collect();
    let agents: Vec<(&str, &str, &str, &str)> =
        agents.iter().map(|a| (a[0], a[1], a[2], a[3])).collect();
    let inventory = Inventory::cmdb(&agents);
    let mut run = Run::new("http.toml");
    let ca = run.dir.path().join("ca.pem");
    inventory.write_ca(&ca);
    let token = run.file("cmdb.token", "example-token\n");
    for key in ["url_by_id", "url_by_ip", "url_all"] {
        let template = example_value("http.toml", key);
        run.set(
            &format!("KEYGATE_BACKEND__CMDB__{}", key.to_uppercase()),
            template.replace("https://cmdb.example.org", &inventory.url()),
        );
    }
    run.set("KEYGATE_BACKEND__CMDB__CA_FILE", ca.display())
        .set("KEYGATE_BACKEND__CMDB__TOKEN_FILE", token.display());
    run.expect(&[
        ("id:001", "001", "web-01", "10.0.0.1", KEY_001),
        ("ip:10.0.0.2", "002", "db-01", "10.0.0.2", KEY_010),
    ]);
    let seen = inventory.seen();
    assert!(seen.len() >= 3, "{seen:?}");
    assert!(seen
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Bearer example-token")));
}

//! The MySQL/MariaDB and PostgreSQL backends against real servers: the
//! shared ones (`KEYGATE_TEST_MYSQL_URL`, `KEYGATE_TEST_POSTGRES_URL`, each
//! test in a database of its own loaded from `docker/initdb/`) and private
//! ones a test may stop and start. A missing server fails loudly
//! (`bash tests/setup.sh` starts the shared ones).
#![cfg(all(feature = "mysql", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_backends::mysql::MysqlConfig;
use keygate_backends::postgres::PostgresConfig;
use keygate_backends::sql::server::{Dialect, ServerConfig, TlsMode};
use keygate_backends::BackendSpec;
use keygate_core::{AgentRecord, BackendError, ErrorCode, KeyBackend};
use keygate_testkit::q;
use keygate_testkit::sql::{self, Kind, PrivateMariadb, PrivatePostgres, TestDb};

const WAZUH_BY_ID: &str = "SELECT id,name,ip,agent_key FROM agent WHERE id = ?";
const WAZUH_BY_IP: &str = "SELECT id,name,ip,agent_key FROM agent WHERE ip = ?";

/// A MySQL or PostgreSQL config for one host with the given queries.
fn server<D: Dialect>(url: &str, by_id: &str, by_ip: &str) -> ServerConfig<D> {
    let mut config = ServerConfig::new(url, by_id, by_ip);
    config.hosts.connect_timeout = Some(Duration::from_secs(1));
    config
}

fn mysql(url: &str, by_id: &str, by_ip: &str) -> MysqlConfig {
    server(url, by_id, by_ip)
}

fn mysql_table(url: &str, table: &str) -> MysqlConfig {
    mysql(
        url,
        &format!("SELECT * FROM {table} WHERE id = ?"),
        &format!("SELECT * FROM {table} WHERE ip = ?"),
    )
}

fn postgres(url: &str, by_id: &str, by_ip: &str) -> PostgresConfig {
    server(url, by_id, by_ip)
}

fn pg_wazuh(url: &str) -> PostgresConfig {
    postgres(
        url,
        "SELECT id,name,ip,agent_key FROM agent WHERE id = $1",
        "SELECT id,name,ip,agent_key FROM agent WHERE ip = $1",
    )
}

async fn build(spec: &impl BackendSpec) -> Arc<dyn KeyBackend> {
    spec.build("db").await.unwrap()
}

async fn find(b: &Arc<dyn KeyBackend>, req: &str) -> Result<Option<AgentRecord>, BackendError> {
    b.lookup(&q(req)).await
}

async fn found(b: &Arc<dyn KeyBackend>, req: &str) -> AgentRecord {
    find(b, req)
        .await
        .unwrap_or_else(|e| panic!("{req}: {e}"))
        .unwrap_or_else(|| panic!("{req}: not found"))
}

async fn code(b: &Arc<dyn KeyBackend>, req: &str) -> ErrorCode {
    match find(b, req).await {
        Err(e) => e.code(),
        Ok(r) => panic!("{req}: expected an error, got {r:?}"),
    }
}

/// hex SHA-256 of `key-<n>`: the key the fixtures give good agent n.
fn fixture_key(kind: Kind, url: &str, n: u32) -> String {
    use sqlx::Connection;
    let (url, sql) = match kind {
        Kind::Mysql => (url.to_owned(), format!("SELECT SHA2('key-{n}', 256)")),
        Kind::Postgres => (
            url.to_owned(),
            format!("SELECT encode(sha256('key-{n}'), 'hex')"),
        ),
    };
    sql::block_on(move || async move {
        match kind {
            Kind::Mysql => {
                let mut c = sqlx::MySqlConnection::connect(&url).await.unwrap();
                sqlx::query_scalar::<_, String>(&sql)
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
            Kind::Postgres => {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query_scalar::<_, String>(&sql)
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            }
        }
    })
}

/// Checks the documented table's good agents, by id and by ip, and a miss.
async fn check_documented_table(kind: Kind, db: &TestDb, b: &Arc<dyn KeyBackend>) {
    let r = found(b, "id:001").await;
    assert_eq!(
        (r.id.as_str(), r.name.as_str(), r.ip.as_str()),
        ("001", "agent-00001", "10.0.0.1")
    );
    assert_eq!(r.key.expose(), fixture_key(kind, db.url(), 1));
    let r = found(b, "ip:10.0.39.16").await;
    assert_eq!((r.id.as_str(), r.name.as_str()), ("10000", "agent-10000"));
    assert_eq!(r.key.expose(), fixture_key(kind, db.url(), 10000));
    assert_eq!(found(b, "id:512").await.ip.as_str(), "10.0.2.0");
    assert!(find(b, "id:099999").await.unwrap().is_none());
    assert!(find(b, "ip:192.0.2.1").await.unwrap().is_none());
    b.health().await.unwrap();
}

/// Every bad row of the fixture answers 5, by id and by ip.
async fn check_bad_rows(b: &Arc<dyn KeyBackend>) {
    for req in [
        "id:20001",    // name with a space
        "ip:10.9.0.1", //
        "id:20002",    // key with a space
        "ip:10.9.0.2", //
        "id:20003",    // invalid ip
        "id:20004",    // NULL key
        "ip:10.9.0.4", //
        "ip:10.9.0.5", // two rows with that ip
        "id:20007",    // two rows with that id
    ] {
        assert_eq!(code(b, req).await, ErrorCode::InvalidRecord, "{req}");
    }
}

/// Fifty lookups at once through one pool of 4 connections: no errors, and
/// each answer is the agent that was asked for.
async fn check_burst(b: &Arc<dyn KeyBackend>) {
    let tasks: Vec<_> = (1..=50u32)
        .map(|i| {
            let b = b.clone();
            let n = i * 199;
            tokio::spawn(async move {
                let req = if i % 2 == 0 {
                    format!("id:{n:03}")
                } else {
                    format!("ip:10.0.{}.{}", n / 256, n % 256)
                };
                let r = b
                    .lookup(&q(&req))
                    .await
                    .unwrap_or_else(|e| panic!("{req}: {e}"))
                    .unwrap_or_else(|| panic!("{req}: not found"));
                assert_eq!(r.name.as_str(), format!("agent-{n:05}"), "{req}");
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

// ---------------------------------------------------------------- MySQL --

/// The table and queries from Wazuh's documentation work verbatim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_documented_table_answers_by_id_and_ip() {
    let db = TestDb::mysql();
    let b = build(&mysql(db.url(), WAZUH_BY_ID, WAZUH_BY_IP)).await;
    check_documented_table(Kind::Mysql, &db, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_every_bad_row_answers_5() {
    let db = TestDb::mysql();
    check_bad_rows(&build(&mysql(db.url(), WAZUH_BY_ID, WAZUH_BY_IP)).await).await;
}

/// INT ids are zero-padded; BIGINT UNSIGNED ids and VARBINARY/BLOB text
/// columns are read; a negative id and a non-UTF-8 key answer 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_typed_columns() {
    let db = TestDb::mysql();
    let ints = build(&mysql_table(db.url(), "agent_int")).await;
    assert_eq!(found(&ints, "id:007").await.id.as_str(), "007");
    assert_eq!(found(&ints, "ip:10.8.0.7").await.id.as_str(), "007");
    assert_eq!(found(&ints, "id:12345").await.name.as_str(), "int-big");
    assert_eq!(code(&ints, "ip:10.8.0.3").await, ErrorCode::InvalidRecord);
    let bin = build(&mysql_table(db.url(), "agent_bin")).await;
    let r = found(&bin, "id:008").await;
    assert_eq!(
        (r.id.as_str(), r.name.as_str(), r.ip.as_str()),
        ("008", "bin-eight", "10.8.1.8")
    );
    assert_eq!(r.key.expose().len(), 64);
    assert_eq!(code(&bin, "id:009").await, ErrorCode::InvalidRecord);
    bin.health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_burst_of_50_concurrent_lookups_has_no_errors() {
    let db = TestDb::mysql();
    check_burst(&build(&mysql(db.url(), WAZUH_BY_ID, WAZUH_BY_IP)).await).await;
}

/// A wrong password (in the URL or in password_file) is a refused login: 6
/// (a configuration problem, not an outage: no breaker, served stale),
/// whose message says access was denied and never shows the password;
/// `health` (what `keygate check` runs) says the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_wrong_password_is_a_refused_login_6_and_the_message_hides_it() {
    let db = TestDb::mysql();
    let secret = "Wr0ng-Secret-9f3b";
    let in_url = mysql(
        &sql::with_password(db.url(), secret),
        WAZUH_BY_ID,
        WAZUH_BY_IP,
    );
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("mysql.pass");
    std::fs::write(&pw, format!("{secret}\n")).unwrap();
    let mut in_file = mysql(db.url(), WAZUH_BY_ID, WAZUH_BY_IP);
    in_file.hosts.password_file = Some(pw);
    for spec in [in_url, in_file] {
        let b = build(&spec).await;
        let e = find(&b, "id:001").await.unwrap_err();
        let h = b.health().await.unwrap_err();
        for error in [&e, &h] {
            assert_eq!(error.code(), ErrorCode::Internal, "{error}");
            assert!(error.is_login_refused() && error.serves_stale(), "{error}");
        }
        for text in [
            e.to_string(),
            h.to_string(),
            format!("{e:?}"),
            format!("{b:?}", b = spec),
        ] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(e.to_string().starts_with("login refused: "), "{e}");
        assert!(e.to_string().contains("Access denied"), "{e}");
    }
}

/// A user of its own with a password (made by the test): the right
/// password answers; a wrong one, and a query on a table the user may not
/// read (MariaDB's 1142), are refused logins: 6, not outages, served stale
/// by the cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_reader_with_a_wrong_password_or_no_grant_is_a_refused_login() {
    let mut db = TestDb::mysql();
    let other = TestDb::mysql();
    let reader = db.mysql_reader("Right-Pass-6d2e");
    let right = build(&mysql(
        &sql::with_password(&reader, "Right-Pass-6d2e"),
        WAZUH_BY_ID,
        WAZUH_BY_IP,
    ))
    .await;
    assert_eq!(found(&right, "id:001").await.name.as_str(), "agent-00001");
    let wrong = build(&mysql(
        &sql::with_password(&reader, "Wrong-Pass-6d2e"),
        WAZUH_BY_ID,
        WAZUH_BY_IP,
    ))
    .await;
    let not_granted = build(&mysql(
        &sql::with_password(&reader, "Right-Pass-6d2e"),
        &format!(
            "SELECT id,name,ip,agent_key FROM {}.agent WHERE id = ?",
            other.name()
        ),
        WAZUH_BY_IP,
    ))
    .await;
    for (b, says) in [(&wrong, "Access denied"), (&not_granted, "denied")] {
        let e = find(b, "id:001").await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Internal, "{e}");
        assert!(e.is_login_refused() && !e.is_outage(), "{e}");
        assert!(e.to_string().contains(says), "{e}");
        assert!(!e.to_string().contains("Pass-6d2e"), "{e}");
    }
}

/// `tls = "require"` against a server without TLS fails with 2 and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_tls_require_without_server_tls_is_2_with_a_clear_message() {
    let db = TestDb::mysql();
    let mut spec = mysql(db.url(), WAZUH_BY_ID, WAZUH_BY_IP);
    spec.tls = TlsMode::Require;
    let b = build(&spec).await;
    let e = find(&b, "id:001").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");
}

/// `health` (what `keygate check` runs) prepares both queries and names the
/// one that is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_health_reports_the_wrong_query() {
    let db = TestDb::mysql();
    let few = build(&mysql(
        db.url(),
        WAZUH_BY_ID,
        "SELECT id, name FROM agent WHERE ip = ?",
    ))
    .await;
    let e = few.health().await.unwrap_err().to_string();
    assert!(e.contains("query_by_ip") && e.contains("4"), "{e}");
    let missing = build(&mysql(
        db.url(),
        "SELECT id,name,ip,agent_key FROM no_such_table WHERE id = ?",
        WAZUH_BY_IP,
    ))
    .await;
    let e = missing.health().await.unwrap_err().to_string();
    assert!(
        e.contains("query_by_id fails when run") && e.contains("no_such_table"),
        "{e}"
    );
}

/// keygate's backend survives its server: answers, 2 quickly while the
/// server is down, answers again once it is back (same pool, no restart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_server_restart_is_2_while_down_then_answers_again() {
    let mut server = PrivateMariadb::start();
    let db = TestDb::create(Kind::Mysql, &server.url());
    let b = build(&mysql(db.url(), WAZUH_BY_ID, WAZUH_BY_IP)).await;
    assert_eq!(found(&b, "id:042").await.name.as_str(), "agent-00042");
    server.stop();
    for req in ["id:042", "ip:10.0.0.42"] {
        let started = Instant::now();
        assert_eq!(code(&b, req).await, ErrorCode::Unavailable, "{req}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    server.start_again();
    assert_eq!(found(&b, "id:042").await.name.as_str(), "agent-00042");
    drop(db);
}

/// `urls`: when the first host goes down the backend answers from the
/// second (in the same lookup, once the first has failed), stays there,
/// and goes back to the first once it has been healthy for
/// `failback_after`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_urls_fail_over_in_order_and_fail_back() {
    let mut first = PrivateMariadb::start();
    let second = PrivateMariadb::start();
    let db1 = TestDb::create(Kind::Mysql, &first.url());
    let db2 = TestDb::create(Kind::Mysql, &second.url());
    sql::run_sql(
        Kind::Mysql,
        db2.url(),
        "UPDATE agent SET name = 'on-second' WHERE id = '042'",
    );
    let mut spec = mysql(db1.url(), WAZUH_BY_ID, WAZUH_BY_IP);
    spec.hosts.url = None;
    spec.hosts.urls = vec![db1.url().to_owned(), db2.url().to_owned()];
    spec.hosts.connect_timeout = Some(Duration::from_millis(500));
    spec.hosts.failback_after = Duration::from_secs(1);
    let b = build(&spec).await;
    assert_eq!(found(&b, "id:042").await.name.as_str(), "agent-00042");

    first.stop();
    assert_eq!(found(&b, "id:042").await.name.as_str(), "on-second");
    let started = Instant::now();
    assert_eq!(found(&b, "id:042").await.name.as_str(), "on-second");
    assert!(
        started.elapsed() < Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    b.health().await.unwrap();

    first.start_again();
    let back = Instant::now();
    loop {
        if found(&b, "id:042").await.name.as_str() == "agent-00042" {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(15),
            "never failed back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back.elapsed() >= Duration::from_millis(900),
        "{:?}",
        back.elapsed()
    );
    drop((db1, db2));
}

// ----------------------------------------------------------- PostgreSQL --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_documented_table_answers_by_id_and_ip() {
    let db = TestDb::postgres();
    let b = build(&pg_wazuh(db.url())).await;
    check_documented_table(Kind::Postgres, &db, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_every_bad_row_answers_5() {
    let db = TestDb::postgres();
    check_bad_rows(&build(&pg_wazuh(db.url())).await).await;
}

/// Integer ids are zero-padded; inet/cidr hosts lose /32 and /128, networks
/// keep their prefix and answer for any address inside them; char(n)
/// padding is dropped; a negative id answers 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_typed_columns() {
    let db = TestDb::postgres();
    let ints = build(&postgres(
        db.url(),
        "SELECT * FROM agent_int WHERE id = $1::int",
        "SELECT * FROM agent_int WHERE ip = $1",
    ))
    .await;
    assert_eq!(found(&ints, "id:007").await.id.as_str(), "007");
    assert_eq!(found(&ints, "ip:10.8.0.7").await.id.as_str(), "007");
    assert_eq!(code(&ints, "ip:10.8.0.3").await, ErrorCode::InvalidRecord);
    ints.health().await.unwrap();

    let inet = build(&postgres(
        db.url(),
        "SELECT id, name, ip, agent_key FROM agent_inet WHERE id = $1",
        "SELECT id, name, ip, agent_key FROM agent_inet WHERE ip >>= $1::inet",
    ))
    .await;
    let r = found(&inet, "ip:10.50.0.1").await;
    assert_eq!((r.id.as_str(), r.ip.as_str()), ("501", "10.50.0.1"));
    assert_eq!(
        found(&inet, "ip:2001:db8::50").await.ip.as_str(),
        "2001:db8::50"
    );
    let r = found(&inet, "ip:10.60.0.77").await;
    assert_eq!((r.id.as_str(), r.ip.as_str()), ("503", "10.60.0.0/24"));
    assert_eq!(found(&inet, "id:503").await.ip.as_str(), "10.60.0.0/24");
    assert!(find(&inet, "ip:10.61.0.1").await.unwrap().is_none());
    inet.health().await.unwrap();

    let cidr = build(&postgres(
        db.url(),
        "SELECT * FROM agent_cidr WHERE id = $1::bigint",
        "SELECT * FROM agent_cidr WHERE ip >>= $1::inet",
    ))
    .await;
    assert_eq!(found(&cidr, "id:602").await.ip.as_str(), "10.71.0.1");
    assert_eq!(
        found(&cidr, "ip:10.70.3.4").await.ip.as_str(),
        "10.70.0.0/16"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_burst_of_50_concurrent_lookups_has_no_errors() {
    let db = TestDb::postgres();
    check_burst(&build(&pg_wazuh(db.url())).await).await;
}

/// A wrong password (URL or password_file) against a server that checks
/// passwords is a refused login (6, not an outage), says "password
/// authentication failed", never shows it; the right one in password_file
/// overrides the URL's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_wrong_password_is_a_refused_login_6_and_the_message_hides_it() {
    let server = PrivatePostgres::start();
    let secret = "Wr0ng-Secret-7c1d";
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pg.pass");
    std::fs::write(&pw, format!("{secret}\n")).unwrap();
    let in_url = pg_wazuh(&sql::with_password(&server.url(), secret));
    let mut in_file = pg_wazuh(&server.url_without_password());
    in_file.hosts.password_file = Some(pw.clone());
    for spec in [in_url, in_file] {
        let b = build(&spec).await;
        let e = find(&b, "id:001").await.unwrap_err();
        let h = b.health().await.unwrap_err();
        for error in [&e, &h] {
            assert_eq!(error.code(), ErrorCode::Internal, "{error}");
            assert!(error.is_login_refused() && error.serves_stale(), "{error}");
        }
        for text in [
            e.to_string(),
            h.to_string(),
            format!("{e:?}"),
            format!("{spec:?}"),
        ] {
            assert!(!text.contains(secret), "{text}");
        }
        assert!(
            e.to_string().contains("password authentication failed"),
            "{e}"
        );
    }
    // The password file wins over a (wrong) password in the URL.
    std::fs::write(&pw, format!("{}\n", sql::PRIVATE_PG_PASSWORD)).unwrap();
    let mut right = pg_wazuh(&sql::with_password(&server.url(), secret));
    right.hosts.password_file = Some(pw);
    let b = build(&right).await;
    // No agent table on this server: it connects, then the query fails.
    let e = b.health().await.unwrap_err().to_string();
    assert!(e.contains("query_by_id fails when run"), "{e}");
}

/// A PostgreSQL role of its own (made by the test) without `SELECT` on
/// the agent table: the server answers 42501, a refused access to the
/// agents, 6 and not an outage, for a lookup and for `health` alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_role_without_select_is_a_refused_login() {
    /// Drops the role, also when the test fails.
    struct Role(String, String);
    impl Drop for Role {
        fn drop(&mut self) {
            let sql = format!("DROP ROLE IF EXISTS {}", self.0);
            sql::run_sql(Kind::Postgres, &self.1, &sql);
        }
    }
    let db = TestDb::postgres();
    let role = Role(
        format!("kg_noselect_{}", std::process::id()),
        sql::postgres_url(),
    );
    sql::run_sql(
        Kind::Postgres,
        &role.1,
        &format!("CREATE ROLE {} LOGIN", role.0),
    );
    let b = build(&pg_wazuh(&sql::with_user(db.url(), &role.0))).await;
    let e = find(&b, "id:001").await.unwrap_err();
    let h = b.health().await.unwrap_err();
    for error in [&e, &h] {
        assert_eq!(error.code(), ErrorCode::Internal, "{error}");
        assert!(error.is_login_refused() && !error.is_outage(), "{error}");
        assert!(error.to_string().contains("permission denied"), "{error}");
    }
    assert!(h.to_string().contains("query_by_id"), "{h}");
    drop(b);
    drop(db);
}

/// `tls = "require"` against a server without TLS, and `verify-full`
/// against one whose certificate is not trusted, both fail with 2 and a
/// message that names TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_tls_failures_are_2_with_a_clear_message() {
    let server = PrivatePostgres::start(); // ssl = off
    let mut spec = pg_wazuh(&server.url());
    spec.tls = TlsMode::Require;
    let b = build(&spec).await;
    let e = find(&b, "id:001").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(e.to_string().contains("TLS"), "{e}");

    // The shared server: TLS on with Debian's self-signed certificate.
    let db = TestDb::postgres();
    let mut spec = pg_wazuh(db.url());
    spec.tls = TlsMode::VerifyFull;
    let b = build(&spec).await;
    match find(&b, "id:001").await {
        Err(e) => {
            assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
            assert!(e.to_string().contains("TLS"), "{e}");
        }
        Ok(_) => panic!("verify-full accepted an untrusted certificate"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_health_reports_the_wrong_query() {
    let db = TestDb::postgres();
    let two = build(&postgres(
        db.url(),
        "SELECT id,name,ip,agent_key FROM agent WHERE id = $1",
        "SELECT id,name,ip,agent_key FROM agent WHERE ip = $1 OR name = $2",
    ))
    .await;
    let e = two.health().await.unwrap_err().to_string();
    assert!(
        e.contains("query_by_ip") && e.contains("2 bind parameters"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_server_restart_is_2_while_down_then_answers_again() {
    let mut server = PrivatePostgres::start();
    let db = TestDb::create(Kind::Postgres, &server.url());
    let b = build(&pg_wazuh(db.url())).await;
    assert_eq!(found(&b, "id:042").await.name.as_str(), "agent-00042");
    server.stop();
    for req in ["id:042", "ip:10.0.0.42"] {
        let started = Instant::now();
        assert_eq!(code(&b, req).await, ErrorCode::Unavailable, "{req}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    server.start_again();
    assert_eq!(found(&b, "id:042").await.name.as_str(), "agent-00042");
    drop(db);
}

// ------------------------------------------------- shared by both servers --

/// `url` with its host and port replaced by 127.0.0.1:1, where nothing
/// listens: every connection is refused at once.
fn refused(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (userinfo, rest) = rest.rsplit_once('@').map_or(("", rest), |(u, r)| (u, r));
    let path = &rest[rest.find('/').unwrap()..];
    let at = if userinfo.is_empty() { "" } else { "@" };
    format!("{scheme}://{userinfo}{at}127.0.0.1:1{path}")
}

/// The first request to a backend whose first host refuses connections,
/// through the 2 s lookup deadline keygate puts around every backend.
async fn first_request_with_a_refused_first_host<D: Dialect>(
    mut spec: ServerConfig<D>,
) -> Result<Option<AgentRecord>, BackendError> {
    let url = spec.hosts.url.take().unwrap();
    spec.hosts.urls = vec![refused(&url), url];
    spec.hosts.connect_timeout = None; // the default, 3 s: more than the deadline
    let inner = spec.build("db").await.unwrap();
    let b = keygate_core::TimeoutLayer::new(inner, Duration::from_secs(2));
    let answer = b.lookup(&q("id:042")).await;
    assert_eq!(
        b.current_host().unwrap().split(':').next(),
        Some("host 2 of 2"),
        "the refusing host is no longer the active one"
    );
    answer
}

/// A refused connection is the fastest failure there is: with
/// `urls = [<port 1>, <server>]` the FIRST request is answered by the
/// second host, not 2 after the lookup deadline (sqlx alone retries a
/// refused connection until its acquire timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_refused_first_host_is_skipped_within_the_first_request() {
    let db = TestDb::mysql();
    let r = first_request_with_a_refused_first_host(mysql(db.url(), WAZUH_BY_ID, WAZUH_BY_IP))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.name.as_str(), "agent-00042");
}

/// The same for PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_refused_first_host_is_skipped_within_the_first_request() {
    let db = TestDb::postgres();
    let r = first_request_with_a_refused_first_host(pg_wazuh(db.url()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.name.as_str(), "agent-00042");
}

/// A query that prepares but fails on every lookup (PostgreSQL compares an
/// integer column with the text parameter: `WHERE id = $1` on `agent_int`)
/// is reported by the health check (`keygate check`), not shown ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_health_reports_a_query_that_fails_on_every_lookup() {
    let db = TestDb::postgres();
    let b = build(&postgres(
        db.url(),
        "SELECT * FROM agent_int WHERE id = $1",
        "SELECT * FROM agent_int WHERE ip = $1",
    ))
    .await;
    assert_eq!(
        code(&b, "id:007").await,
        ErrorCode::Unavailable,
        "fails on lookups"
    );
    let e = b.health().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    let text = e.to_string();
    assert!(
        text.contains("query_by_id fails when run") && text.contains("operator does not exist"),
        "{text}"
    );
    // The same query with the cast is healthy.
    let cast = build(&postgres(
        db.url(),
        "SELECT * FROM agent_int WHERE id = $1::int",
        "SELECT * FROM agent_int WHERE ip = $1",
    ))
    .await;
    cast.health().await.unwrap();
}

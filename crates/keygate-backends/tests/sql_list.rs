//! Listing every agent (`query_all`) of the MySQL/MariaDB and PostgreSQL
//! backends against the shared servers, each test in a database of its own
//! loaded from `docker/initdb/` (10,000 good agents and the bad rows
//! 20001..20007). A missing server fails loudly (`bash tests/setup.sh`).
#![cfg(all(feature = "mysql", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use keygate_backends::mysql::MysqlConfig;
use keygate_backends::postgres::PostgresConfig;
use keygate_backends::sql::server::{Dialect, ServerConfig};
use keygate_backends::{BackendSpec, Problems};
use keygate_core::{KeyBackend, Listed};
use keygate_testkit::sql::{self, Kind, TestDb};

fn server<D: Dialect>(url: &str, by_id: &str, by_ip: &str, all: Option<&str>) -> ServerConfig<D> {
    let mut config = ServerConfig::new(url, by_id, by_ip);
    config.hosts.connect_timeout = Some(Duration::from_secs(1));
    config.query_all = all.map(str::to_owned);
    config
}

fn mysql(url: &str, table: &str) -> MysqlConfig {
    server(
        url,
        &format!("SELECT id,name,ip,agent_key FROM {table} WHERE id = ?"),
        &format!("SELECT id,name,ip,agent_key FROM {table} WHERE ip = ?"),
        Some(&format!("SELECT id,name,ip,agent_key FROM {table}")),
    )
}

fn postgres(url: &str, table: &str) -> PostgresConfig {
    server(
        url,
        &format!("SELECT id,name,ip,agent_key FROM {table} WHERE id = $1"),
        &format!("SELECT id,name,ip,agent_key FROM {table} WHERE ip = $1"),
        Some(&format!("SELECT id,name,ip,agent_key FROM {table}")),
    )
}

/// Lists `b` completely: the number of records per id, and each invalid
/// entry as `at: reason`.
async fn list(b: &Arc<dyn KeyBackend>) -> (BTreeMap<String, usize>, Vec<String>) {
    let (mut ids, mut bad) = (BTreeMap::new(), Vec::new());
    let mut stream = b.list();
    while let Some(entry) = stream.next().await {
        match entry.unwrap() {
            Listed::Record(r) => *ids.entry(r.id.as_str().to_owned()).or_insert(0) += 1,
            Listed::Invalid { at, reason } => bad.push(format!("{at}: {reason}")),
        }
    }
    bad.sort_by_key(|s| s.split_once("(id ").map(|(_, id)| id.to_owned()));
    (ids, bad)
}

/// The fixture's `agent` table: 10,000 good agents plus 20005, 20006 and
/// 20007 twice (each valid on its own: duplicates are for `export` and
/// `sync` to report) are listed; the four bad rows are reported with their
/// id and reason, never their key.
async fn check_fixture_listing(b: Arc<dyn KeyBackend>) {
    let (ids, bad) = list(&b).await;
    assert_eq!(ids.values().sum::<usize>(), 10_004);
    assert_eq!(ids["001"], 1);
    assert_eq!(ids["10000"], 1);
    assert_eq!(ids["20007"], 2);
    assert!(!ids.contains_key("20001"));
    let reasons: Vec<&str> = bad.iter().map(|s| s.split_once(": ").unwrap().1).collect();
    assert_eq!(
        reasons,
        [
            "field 'name' is invalid: only letters, digits, '-', '_' and '.' are allowed",
            "field 'key' is invalid: only printable ASCII without whitespace is allowed",
            "field 'ip' is invalid: not an IP address, address/prefix or 'any'",
            "field 'key' is missing or NULL",
        ],
        "{bad:?}"
    );
    for (entry, id) in bad.iter().zip(["20001", "20002", "20003", "20004"]) {
        assert!(
            entry.starts_with("row ") && entry.contains(&format!("(id {id}):")),
            "{entry}"
        );
        assert!(!entry.contains("a key with spaces"), "{entry}");
    }
}

/// Without `query_all` the listing fails at once, naming the missing key.
async fn check_missing_query_all(b: Arc<dyn KeyBackend>) {
    let e = b.list().try_next().await.unwrap_err();
    assert_eq!(e.code(), keygate_core::ErrorCode::Internal);
    assert!(
        e.to_string()
            .contains("backend 'db' cannot list its agents: query_all is not set"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lists_valid_rows_and_reports_bad_ones() {
    let db = TestDb::mysql();
    check_fixture_listing(mysql(db.url(), "agent").build("db").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lists_valid_rows_and_reports_bad_ones() {
    let db = TestDb::postgres();
    check_fixture_listing(postgres(db.url(), "agent").build("db").await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_and_postgres_without_query_all_cannot_list() {
    let db = TestDb::mysql();
    let mut c = mysql(db.url(), "agent");
    c.query_all = None;
    check_missing_query_all(c.build("db").await.unwrap()).await;
    let db = TestDb::postgres();
    let mut c = postgres(db.url(), "agent");
    c.query_all = None;
    check_missing_query_all(c.build("db").await.unwrap()).await;
}

/// Integer ids are zero-padded as in lookups; a negative id is reported
/// without an id (it is not a valid one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_integer_ids_list_like_lookups() {
    let db = TestDb::postgres();
    let (ids, bad) = list(&postgres(db.url(), "agent_int").build("db").await.unwrap()).await;
    assert_eq!(ids.keys().collect::<Vec<_>>(), ["007", "12345"]);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].ends_with("(no valid id): field 'id' is invalid: must not be negative"),
        "{bad:?}"
    );
}

/// `query_all` is checked at load: it takes no bind parameter.
#[test]
fn query_all_with_a_parameter_is_refused_with_its_key() {
    let mut list = Vec::new();
    let mut c = mysql("mysql://kg@db/wazuh", "agent");
    c.query_all = Some("SELECT id,name,ip,agent_key FROM agent WHERE id > ?".into());
    c.validate(&mut Problems::new("backend[0]", &mut list));
    let mut p = postgres("postgres://kg@db/wazuh", "agent");
    p.query_all = Some(" ".into());
    p.validate(&mut Problems::new("backend[1]", &mut list));
    let text: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(
        text,
        [
            "backend[0].query_all: must have no bind parameter, found 1",
            "backend[1].query_all: must not be empty",
        ]
    );
}

/// 100,000 agents in MariaDB are streamed from the server and counted one
/// by one, never collected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_lists_100000_agents_as_a_stream() {
    let db = TestDb::mysql();
    let digits = "(SELECT 0 AS d UNION ALL SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 3 \
                  UNION ALL SELECT 4 UNION ALL SELECT 5 UNION ALL SELECT 6 UNION ALL SELECT 7 \
                  UNION ALL SELECT 8 UNION ALL SELECT 9)";
    sql::run_sql(
        Kind::Mysql,
        db.url(),
        &format!(
            "CREATE TABLE big (id VARCHAR(8), name VARCHAR(128), ip VARCHAR(19), agent_key VARCHAR(128));
             INSERT INTO big
             SELECT LPAD(n, 6, '0'), CONCAT('agent-', n), 'any', LPAD(n, 64, '0') FROM (
                SELECT a.d + 10*b.d + 100*c.d + 1000*e.d + 10000*f.d + 1 AS n
                FROM {digits} a CROSS JOIN {digits} b CROSS JOIN {digits} c
                CROSS JOIN {digits} e CROSS JOIN {digits} f) seq;"
        ),
    );
    let b = mysql(db.url(), "big").build("db").await.unwrap();
    let (mut records, mut invalid) = (0u32, 0u32);
    let mut stream = b.list();
    while let Some(entry) = stream.next().await {
        match entry.unwrap() {
            Listed::Record(_) => records += 1,
            Listed::Invalid { .. } => invalid += 1,
        }
    }
    assert_eq!((records, invalid), (100_000, 0));
}

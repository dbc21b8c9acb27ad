//! How the MySQL/MariaDB and PostgreSQL backends use their connections,
//! against private servers the tests own: a lookup is one statement
//! execution on a kept connection (no ping around it, no new prepare),
//! connections left idle across a server restart are replaced within the
//! lookup that finds them dead, and Unix-socket URLs work.
#![cfg(all(feature = "mysql", feature = "postgres"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use keygate_backends::mysql::MysqlConfig;
use keygate_backends::postgres::PostgresConfig;
use keygate_backends::BackendSpec;
use keygate_core::{AgentRecord, KeyBackend};
use keygate_testkit::q;
use keygate_testkit::sql::{with_database, Kind, PrivateMariadb, PrivatePostgres, TestDb};
use sqlx::{Connection, Row};

const MYSQL_BY_ID: &str = "SELECT id,name,ip,agent_key FROM agent WHERE id = ?";
const MYSQL_BY_IP: &str = "SELECT id,name,ip,agent_key FROM agent WHERE ip = ?";
const PG_BY_ID: &str = "SELECT id,name,ip,agent_key FROM agent WHERE id = $1";
const PG_BY_IP: &str = "SELECT id,name,ip,agent_key FROM agent WHERE ip = $1";

async fn mysql(url: &str) -> Arc<dyn KeyBackend> {
    let mut c = MysqlConfig::new(url, MYSQL_BY_ID, MYSQL_BY_IP);
    c.hosts.connect_timeout = Some(Duration::from_secs(2));
    c.build("db").await.unwrap()
}

async fn postgres(url: &str) -> Arc<dyn KeyBackend> {
    let mut c = PostgresConfig::new(url, PG_BY_ID, PG_BY_IP);
    c.hosts.connect_timeout = Some(Duration::from_secs(2));
    c.build("db").await.unwrap()
}

async fn found(b: &Arc<dyn KeyBackend>, req: &str) -> AgentRecord {
    b.lookup(&q(req))
        .await
        .unwrap_or_else(|e| panic!("{req}: {e}"))
        .unwrap_or_else(|| panic!("{req}: not found"))
}

/// The server's global command counters (only this test uses the server).
async fn counters(admin: &mut sqlx::MySqlConnection) -> HashMap<String, u64> {
    // raw_sql: the text protocol, so reading adds no prepare or execute.
    sqlx::raw_sql("SHOW GLOBAL STATUS LIKE 'Com_%'")
        .fetch_all(admin)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            let value: String = row.get(1);
            (row.get::<String, _>(0), value.parse().unwrap_or(0))
        })
        .collect()
}

/// Twenty lookups on a warm backend cost the server twenty statement
/// executions and nothing else: no ping before or after each (sqlx's own
/// pool sent two per lookup, `Com_admin_commands`), no new prepare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_a_lookup_is_one_execution_with_no_ping_and_no_prepare() {
    let server = PrivateMariadb::start();
    let db = TestDb::create(Kind::Mysql, &server.url());
    let b = mysql(db.url()).await;
    assert_eq!(found(&b, "id:042").await.name.as_str(), "agent-00042");
    let mut admin = sqlx::MySqlConnection::connect(&server.url()).await.unwrap();
    // Anything the first lookup left running (a release) is done by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = counters(&mut admin).await;
    for n in 1..=20u32 {
        let r = found(&b, &format!("id:{n:03}")).await;
        assert_eq!(r.name.as_str(), format!("agent-{n:05}"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = counters(&mut admin).await;
    let delta = |k: &str| after[k] - before[k];
    assert_eq!(delta("Com_stmt_execute"), 20, "one execution per lookup");
    assert_eq!(delta("Com_stmt_prepare"), 0, "the statement is reused");
    assert_eq!(delta("Com_admin_commands"), 0, "no ping");
    drop(db);
}

/// Connections left idle across a restart (four, from a burst) are found
/// dead when next used and replaced within that lookup: every lookup after
/// the restart answers, none is an outage.
async fn idle_connections_survive_a_restart(b: &Arc<dyn KeyBackend>, restart: impl FnOnce()) {
    let burst: Vec<_> = (1..=4u32)
        .map(|n| {
            let b = b.clone();
            tokio::spawn(async move { found(&b, &format!("id:{n:03}")).await })
        })
        .collect();
    for t in burst {
        t.await.unwrap();
    }
    restart();
    for n in 1..=8u32 {
        let r = found(b, &format!("id:{n:03}")).await;
        assert_eq!(r.name.as_str(), format!("agent-{n:05}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_idle_connections_across_a_restart_are_replaced_within_the_lookup() {
    let mut server = PrivateMariadb::start();
    let db = TestDb::create(Kind::Mysql, &server.url());
    let b = mysql(db.url()).await;
    idle_connections_survive_a_restart(&b, || {
        server.stop();
        server.start_again();
    })
    .await;
    drop(db);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_idle_connections_across_a_restart_are_replaced_within_the_lookup() {
    let mut server = PrivatePostgres::start();
    let db = TestDb::create(Kind::Postgres, &server.url());
    let b = postgres(db.url()).await;
    idle_connections_survive_a_restart(&b, || {
        server.stop();
        server.start_again();
    })
    .await;
    drop(db);
}

/// `mysql://user@localhost/db?socket=PATH` (README): lookups and the
/// health check over the server's Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mysql_unix_socket_url_answers() {
    let server = PrivateMariadb::start();
    let db = TestDb::create(Kind::Mysql, &server.url());
    let url = with_database(&server.socket_url(), db.name());
    assert!(url.contains("?socket=/"), "{url}");
    let b = mysql(&url).await;
    assert_eq!(found(&b, "id:042").await.name.as_str(), "agent-00042");
    assert_eq!(found(&b, "ip:10.0.0.42").await.id.as_str(), "042");
    b.health().await.unwrap();
    drop(db);
}

/// `postgres://user@localhost/db?host=DIR` (README): lookups and the
/// health check over the server's Unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_unix_socket_url_answers() {
    let server = PrivatePostgres::start();
    let db = TestDb::create(Kind::Postgres, &server.url());
    let url = with_database(&server.socket_url(), db.name());
    assert!(url.contains("?host=/"), "{url}");
    let b = postgres(&url).await;
    assert_eq!(found(&b, "id:042").await.name.as_str(), "agent-00042");
    assert_eq!(found(&b, "ip:10.0.0.42").await.id.as_str(), "042");
    b.health().await.unwrap();
    drop(db);
}

//! `type = "sqlite"`: an SQLite database read through a small pool (sqlx).
//!
//! The database is opened read-only and lazily: a missing file is an outage
//! (2) at lookup time, not a start-up failure. Values are only ever bound.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keygate_core::{AgentRecord, BackendError, KeyBackend, ListStream, Query};
use serde::Deserialize;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteRow};
use sqlx::{Row, Sqlite, TypeInfo, ValueRef};

use crate::sql::{self, Cell, Placeholders, Queries, SqlConnection};
use crate::{BackendSpec, BuildError, Problems};

/// `[[backend]] type = "sqlite"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteConfig {
    /// The database file, opened read-only. Relative paths are resolved
    /// against the config file's directory.
    pub path: PathBuf,
    /// Query for `id:` requests: one bind parameter (`?`), returning the
    /// columns id, name, ip, key in that order.
    pub query_by_id: String,
    /// Query for `ip:` requests, like `query_by_id`.
    pub query_by_ip: String,
    /// Query that lists every agent (`keygate list`, `export`, `verify`,
    /// `sync`): no bind parameter, the same four columns. Optional;
    /// without it the backend cannot list.
    #[serde(default)]
    pub query_all: Option<String>,
    /// Most connections kept open (default 4).
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
}

fn default_pool_size() -> u32 {
    4
}

impl SqliteConfig {
    /// The queries.
    pub fn queries(&self) -> Queries<'_> {
        Queries {
            query_by_id: &self.query_by_id,
            query_by_ip: &self.query_by_ip,
            query_all: self.query_all.as_deref(),
        }
    }
}

/// How long a connection (opening the file) and each health check step
/// may take.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

#[async_trait]
impl BackendSpec for SqliteConfig {
    const TYPE: &'static str = "sqlite";

    fn resolve_paths(&mut self, base: &Path) {
        crate::resolve(base, &mut self.path);
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        if self.path.as_os_str().is_empty() {
            problems.push("path", "must not be empty");
        }
        self.queries().validate(problems, Placeholders::Question);
        if !(1..=64).contains(&self.pool_size) {
            problems.push("pool_size", "must be between 1 and 64");
        }
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BuildError> {
        let options = SqliteConnectOptions::new()
            .filename(&self.path)
            .read_only(true)
            .create_if_missing(false);
        let pool = SqlitePoolOptions::new()
            .max_connections(self.pool_size)
            .min_connections(0)
            .acquire_timeout(OPEN_TIMEOUT)
            .connect_lazy_with(options);
        Ok(Arc::new(SqliteBackend {
            name: name.to_owned(),
            config: self.clone(),
            pool,
        }))
    }
}

/// The SQLite backend.
pub struct SqliteBackend {
    name: String,
    config: SqliteConfig,
    pool: SqlitePool,
}

fn decode(row: &SqliteRow) -> Result<[Cell; 4], BackendError> {
    sql::require_columns(row.len())?;
    let cell = |i: usize| -> Result<Cell, BackendError> {
        let raw = row.try_get_raw(i).map_err(|e| sql::describe_error(&e))?;
        if raw.is_null() {
            return Ok(Cell::Null);
        }
        let ty = raw.type_info().name().to_owned();
        Ok(match ty.as_str() {
            "INTEGER" => Cell::Int(
                row.try_get::<i64, _>(i)
                    .map_err(|e| sql::describe_error(&e))?,
            ),
            // Read as bytes: SQLite lets a TEXT value hold any bytes, and
            // bytes that are not UTF-8 are a bad record (5), not a failure.
            "TEXT" | "BLOB" => sql::utf8_cell(
                row.try_get::<Vec<u8>, _>(i)
                    .map_err(|e| sql::describe_error(&e))?,
            ),
            _ => Cell::Other(ty),
        })
    };
    Ok([cell(0)?, cell(1)?, cell(2)?, cell(3)?])
}

sql::sql_connection!(sqlx::SqliteConnection, decode);

impl SqliteBackend {
    async fn connection(&self) -> Result<PoolConnection<Sqlite>, BackendError> {
        self.pool
            .acquire()
            .await
            .map_err(|e| sql::describe_error(&e))
    }
}

#[async_trait]
impl KeyBackend for SqliteBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let sql = self.config.queries().for_query(query);
        self.connection()
            .await?
            .fetch_record(sql, query.value())
            .await
    }

    /// Opens a connection, prepares both queries and runs them once.
    async fn health(&self) -> Result<(), BackendError> {
        let mut conn = self.connection().await?;
        sql::check_queries(&mut *conn, self.config.queries(), OPEN_TIMEOUT).await
    }

    /// Streams `query_all`, row by row.
    fn list(&self) -> ListStream<'_> {
        match self.config.queries().all(&self.name) {
            Ok(sql) => sqlx::SqliteConnection::list(&self.pool, sql),
            Err(e) => crate::listing::failed(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::ErrorCode;
    use keygate_testkit::q;
    use sqlx::Connection;

    async fn fixture(dir: &Path) -> PathBuf {
        let path = dir.join("agents.db");
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut c = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        for stmt in [
            "CREATE TABLE agent (id VARCHAR(8), name VARCHAR(128), ip VARCHAR(19), agent_key VARCHAR(128))",
            "INSERT INTO agent VALUES ('001','web-01','10.0.0.1','k001'),('002','has space','10.0.0.2','k002'),\
             ('003','nullkey','10.0.0.3',NULL),('004','dup-a','10.0.0.9','k004'),('005','dup-b','10.0.0.9','k005'),\
             ('006','badip','10.0.0.300','k006')",
            "CREATE TABLE typed (id INTEGER, name TEXT, ip TEXT, k TEXT)",
            "INSERT INTO typed VALUES (7,'seven','10.0.7.7','k7')",
        ] {
            sqlx::query(stmt).execute(&mut c).await.unwrap();
        }
        path
    }

    fn config(path: &Path, table: &str) -> SqliteConfig {
        SqliteConfig {
            path: path.to_owned(),
            query_by_id: format!("SELECT * FROM {table} WHERE id = ?"),
            query_by_ip: format!("SELECT * FROM {table} WHERE ip = ?"),
            query_all: Some(format!("SELECT * FROM {table}")),
            pool_size: 2,
        }
    }

    #[tokio::test]
    async fn looks_up_by_id_and_ip_with_bound_values() {
        let dir = tempfile::tempdir().unwrap();
        let b = config(&fixture(dir.path()).await, "agent")
            .build("db")
            .await
            .unwrap();
        assert_eq!(
            b.lookup(&q("id:001")).await.unwrap().unwrap().name.as_str(),
            "web-01"
        );
        assert_eq!(
            b.lookup(&q("ip:10.0.0.1"))
                .await
                .unwrap()
                .unwrap()
                .id
                .as_str(),
            "001"
        );
        assert!(b.lookup(&q("id:099")).await.unwrap().is_none());
        assert!(b.health().await.is_ok());
    }

    #[tokio::test]
    async fn bad_null_and_duplicate_rows_answer_5() {
        let dir = tempfile::tempdir().unwrap();
        let b = config(&fixture(dir.path()).await, "agent")
            .build("db")
            .await
            .unwrap();
        for req in ["id:002", "id:003", "ip:10.0.0.9", "id:006"] {
            assert_eq!(
                b.lookup(&q(req)).await.unwrap_err().code(),
                ErrorCode::InvalidRecord,
                "{req}"
            );
        }
    }

    #[tokio::test]
    async fn integer_ids_are_zero_padded() {
        let dir = tempfile::tempdir().unwrap();
        let b = config(&fixture(dir.path()).await, "typed")
            .build("db")
            .await
            .unwrap();
        assert_eq!(
            b.lookup(&q("id:007")).await.unwrap().unwrap().id.as_str(),
            "007"
        );
        assert_eq!(
            b.lookup(&q("ip:10.0.7.7"))
                .await
                .unwrap()
                .unwrap()
                .id
                .as_str(),
            "007"
        );
    }

    #[tokio::test]
    async fn missing_database_is_an_outage_not_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        let b = config(&dir.path().join("nope.db"), "agent")
            .build("db")
            .await
            .unwrap();
        assert_eq!(
            b.lookup(&q("id:001")).await.unwrap_err().code(),
            ErrorCode::Unavailable
        );
        assert!(b.health().await.is_err());
    }

    #[tokio::test]
    async fn health_reports_a_query_with_too_few_columns() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&fixture(dir.path()).await, "agent");
        c.query_by_ip = "SELECT id, name FROM agent WHERE ip = ?".into();
        let e = c
            .build("db")
            .await
            .unwrap()
            .health()
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("query_by_ip") && e.contains("4"), "{e}");
    }

    /// Listing emits the valid rows and reports each bad one with its row,
    /// id and reason (never the key); a missing `query_all` is an error
    /// naming the key.
    #[tokio::test]
    async fn list_emits_valid_rows_and_reports_bad_ones() {
        use futures_util::TryStreamExt;
        use keygate_core::Listed;
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&fixture(dir.path()).await, "agent");
        c.query_all = Some("SELECT * FROM agent ORDER BY id".into());
        let b = c.build("db").await.unwrap();
        let listed: Vec<Listed> = b.list().try_collect().await.unwrap();
        let (mut ids, mut bad) = (Vec::new(), Vec::new());
        for entry in listed {
            match entry {
                Listed::Record(r) => ids.push(r.id.as_str().to_owned()),
                Listed::Invalid { at, reason } => bad.push(format!("{at}: {reason}")),
            }
        }
        assert_eq!(ids, ["001", "004", "005"]);
        assert_eq!(
            bad,
            [
                "row 2 (id 002): field 'name' is invalid: only letters, digits, '-', '_' and '.' are allowed",
                "row 3 (id 003): field 'key' is missing or NULL",
                "row 6 (id 006): field 'ip' is invalid: not an IP address, address/prefix or 'any'",
            ]
        );
        for text in &bad {
            assert!(!text.contains("k00"), "a key in {text}");
        }

        c.query_all = None;
        let b = c.build("db").await.unwrap();
        let e = b.list().try_next().await.unwrap_err().to_string();
        assert_eq!(
            e,
            "internal error: backend 'db' cannot list its agents: query_all is not set \
             (a query without bind parameters returning id, name, ip, key of every agent)"
        );
    }

    /// The health check prepares `query_all` (without running it) and
    /// names it when it does not have four columns.
    #[tokio::test]
    async fn health_prepares_query_all() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&fixture(dir.path()).await, "agent");
        assert!(c.build("db").await.unwrap().health().await.is_ok());
        c.query_all = Some("SELECT id, name FROM agent".into());
        let e = c.build("db").await.unwrap().health().await.unwrap_err();
        assert!(e.to_string().contains("query_all"), "{e}");
    }

    /// 100,000 agents are listed one by one and counted, never collected:
    /// the stream hands out rows as SQLite reads them.
    #[tokio::test]
    async fn lists_100000_agents_as_a_stream() {
        use futures_util::StreamExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.db");
        let opts = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true);
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.unwrap();
        sqlx::query(
            "CREATE TABLE agent AS WITH RECURSIVE n(i) AS \
             (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100000) \
             SELECT printf('%03d', i) AS id, 'agent-' || i AS name, 'any' AS ip, \
             printf('%064d', i) AS agent_key FROM n",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        conn.close().await.unwrap();
        let b = config(&path, "agent").build("db").await.unwrap();
        let (mut records, mut invalid) = (0u32, 0u32);
        let mut stream = b.list();
        while let Some(entry) = stream.next().await {
            match entry.unwrap() {
                keygate_core::Listed::Record(_) => records += 1,
                keygate_core::Listed::Invalid { .. } => invalid += 1,
            }
        }
        assert_eq!((records, invalid), (100_000, 0));
    }

    #[test]
    fn validation_reports_every_problem_with_its_key() {
        let c = SqliteConfig {
            path: PathBuf::new(),
            query_by_id: "SELECT 1".into(),
            query_by_ip: "SELECT ? , ?".into(),
            query_all: Some("SELECT * FROM agent WHERE id = ?".into()),
            pool_size: 0,
        };
        let mut list = Vec::new();
        c.validate(&mut Problems::new("backend[1]", &mut list));
        let paths: Vec<&str> = list.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "backend[1].path",
                "backend[1].query_by_id",
                "backend[1].query_by_ip",
                "backend[1].query_all",
                "backend[1].pool_size"
            ]
        );
    }
}

//! `type = "mysql"`: a MySQL or MariaDB table read through a small, lazy
//! connection pool (sqlx).
//!
//! The pool connects on first use and reconnects by itself: keygate starts
//! while the server is down and answers again once it is back, without a
//! restart. Every wait is bounded (`connect_timeout` for a connection, the
//! backend's `timeout` around each lookup). With `urls`, each host has its
//! own pool and [`failback::Hosts`] fails over in order and back to the first.
//! Values are only ever bound to the query's one `?`; passwords and URLs
//! never reach a message or a log.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use keygate_core::{AgentRecord, BackendError, KeyBackend, Query};
use sqlx::mysql::{MySqlConnectOptions, MySqlPoolOptions, MySqlRow, MySqlSslMode};
use sqlx::{ConnectOptions, Row, TypeInfo, ValueRef};

use crate::sql::{self, Cell, Placeholders, TlsMode};
use crate::{failback, BackendSpec, Problems};

/// MySQL or MariaDB: the URL schemes and the placeholder style.
#[derive(Clone, Copy, Debug)]
pub struct MySqlDialect;

impl sql::Dialect for MySqlDialect {
    const CONFIG_NAME: &'static str = "MysqlConfig";
    const SCHEMES: &'static [&'static str] = &["mysql", "mariadb"];
    const PLACEHOLDERS: Placeholders = Placeholders::Question;
}

/// `[[backend]] type = "mysql"` (MySQL or MariaDB); its keys are
/// [`sql::ServerConfig`]'s.
pub type MysqlConfig = sql::ServerConfig<MySqlDialect>;

impl MysqlConfig {
    /// The driver's connection options: URL, then password file, TLS.
    fn connect_options(&self, url: &str) -> Result<MySqlConnectOptions, BackendError> {
        // sqlx only knows the mysql scheme; mariadb:// means the same.
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => format!("mysql://{rest}"),
            None => url.to_owned(),
        };
        let mut options = MySqlConnectOptions::from_str(&url)
            .map_err(|_| BackendError::Internal("url is not a valid mysql:// URL".into()))?;
        if let Some(path) = &self.password_file {
            options = options.password(&crate::secret::read_password_file(path)?);
        }
        options = options.ssl_mode(match self.tls {
            TlsMode::Disable => MySqlSslMode::Disabled,
            TlsMode::Prefer => MySqlSslMode::Preferred,
            TlsMode::Require => MySqlSslMode::Required,
            TlsMode::VerifyFull => MySqlSslMode::VerifyIdentity,
        });
        if let Some(ca) = &self.ca_file {
            options = options.ssl_ca(ca);
        }
        // Statement logs would only repeat the configured SQL at info level.
        Ok(options.disable_statement_logging())
    }
}

#[async_trait]
impl BackendSpec for MysqlConfig {
    const TYPE: &'static str = "mysql";

    fn resolve_paths(&mut self, base: &Path) {
        self.resolve_file_paths(base);
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        let probe = Self {
            password_file: None,
            ..self.clone()
        };
        self.settings()
            .validate(problems, |url| probe.connect_options(url).is_ok());
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BackendError> {
        let mut hosts = Vec::new();
        for url in self.settings().hosts() {
            let pool = MySqlPoolOptions::new()
                .max_connections(self.pool_size)
                .min_connections(0)
                .acquire_timeout(self.connect_timeout)
                .connect_lazy_with(self.connect_options(url)?);
            hosts.push(sql::SqlHost::new(pool, url, self.connect_timeout));
        }
        Ok(Arc::new(MysqlBackend {
            name: name.to_owned(),
            config: self.clone(),
            hosts: failback::Hosts::new(name, "database", hosts, self.failback_after),
        }))
    }
}

/// The MySQL/MariaDB backend.
pub struct MysqlBackend {
    name: String,
    config: MysqlConfig,
    hosts: failback::Hosts<sql::SqlHost<sqlx::MySql>>,
}

impl fmt::Debug for MysqlBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MysqlBackend")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("active_host", &self.hosts.active())
            .finish_non_exhaustive()
    }
}

/// Decodes the first four columns: integers of any width and sign, text
/// types, and binary string types holding UTF-8 (`VARBINARY`, `BLOB`).
fn decode(row: &MySqlRow) -> Result<[Cell; 4], BackendError> {
    sql::require_columns(row.len())?;
    let cell = |i: usize| -> Result<Cell, BackendError> {
        let raw = row.try_get_raw(i).map_err(|e| sql::describe_error(&e))?;
        if raw.is_null() {
            return Ok(Cell::Null);
        }
        let ty = raw.type_info().name().to_owned();
        let get_err = |e: sqlx::Error| sql::describe_error(&e);
        Ok(match ty.as_str() {
            "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" | "BOOLEAN" => {
                Cell::Int(row.try_get::<i64, _>(i).map_err(get_err)?)
            }
            "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
            | "BIGINT UNSIGNED" => {
                let n = row.try_get::<u64, _>(i).map_err(get_err)?;
                // Too large for an id anyway; as text it fails validation.
                i64::try_from(n).map_or_else(|_| Cell::Text(n.to_string()), Cell::Int)
            }
            "CHAR" | "VARCHAR" | "TINYTEXT" | "TEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM"
            | "BINARY" | "VARBINARY" | "TINYBLOB" | "BLOB" | "MEDIUMBLOB" | "LONGBLOB" => {
                sql::utf8_cell(row.try_get::<Vec<u8>, _>(i).map_err(get_err)?)
            }
            _ => Cell::Other(ty),
        })
    };
    Ok([cell(0)?, cell(1)?, cell(2)?, cell(3)?])
}

#[async_trait]
impl KeyBackend for MysqlBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let sql = match query {
            Query::Id(_) => &self.config.query_by_id,
            Query::Ip(_) => &self.config.query_by_ip,
        };
        self.hosts
            .run(|host| sql::fetch_one_record(&host.pool, sql, query.value(), decode))
            .await
    }

    /// Checks the active host (or, failing over, the next one that
    /// answers): connects and prepares both queries.
    async fn health(&self) -> Result<(), BackendError> {
        self.hosts.run(|host| self.check_host(&host.pool)).await
    }

    fn current_host(&self) -> Option<String> {
        self.hosts.current()
    }
}

impl MysqlBackend {
    /// Connects to one host and prepares both queries: each must take one
    /// parameter and return at least four columns.
    async fn check_host(&self, pool: &sqlx::Pool<sqlx::MySql>) -> Result<(), BackendError> {
        use sqlx::Either;
        use sqlx::Executor;
        let limit = self.config.connect_timeout;
        let mut conn = pool.acquire().await.map_err(|e| sql::describe_error(&e))?;
        for (key, q) in [
            ("query_by_id", &self.config.query_by_id),
            ("query_by_ip", &self.config.query_by_ip),
        ] {
            let described = tokio::time::timeout(limit, conn.describe(q))
                .await
                .map_err(|_| BackendError::Timeout(limit))?
                .map_err(|e| sql::prepare_error(key, &e))?;
            let parameters = match described.parameters() {
                Some(Either::Left(types)) => Some(types.len()),
                Some(Either::Right(n)) => Some(n),
                None => None,
            };
            sql::check_described(key, parameters, described.columns().len())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::path::PathBuf;
    use std::time::Duration;

    fn config(url: &str) -> MysqlConfig {
        MysqlConfig {
            url: Some(url.into()),
            urls: Vec::new(),
            failback_after: Duration::from_secs(300),
            password_file: None,
            connect_timeout: Duration::from_secs(3),
            pool_size: 4,
            tls: TlsMode::Prefer,
            ca_file: None,
            query_by_id: "SELECT id,name,ip,`agent_key` FROM agent WHERE id = ?".into(),
            query_by_ip: "SELECT id,name,ip,`agent_key` FROM agent WHERE ip = ?".into(),
            dialect: std::marker::PhantomData,
        }
    }

    fn problems(c: &MysqlConfig) -> Vec<crate::Problem> {
        let mut list = Vec::new();
        c.validate(&mut Problems::new("backend[0]", &mut list));
        list
    }

    #[test]
    fn the_documented_config_is_valid() {
        assert_eq!(
            problems(&config("mysql://keygate@db1.example:3306/wazuh")),
            []
        );
        assert_eq!(problems(&config("mariadb://keygate@db1/wazuh")), []);
    }

    #[test]
    fn validation_reports_every_problem_without_the_password() {
        let mut c = config("postgres://kg:hunter2@db/wazuh");
        c.query_by_id = "SELECT id,name,ip,k FROM agent WHERE id = $1".into();
        c.query_by_ip = "SELECT id,name,ip,k FROM agent WHERE ip = ? OR ip = ?".into();
        c.pool_size = 0;
        c.connect_timeout = Duration::ZERO;
        c.tls = TlsMode::Disable;
        c.ca_file = Some(PathBuf::from("/ca.pem"));
        let list = problems(&c);
        let paths: Vec<&str> = list.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "backend[0].url",
                "backend[0].connect_timeout",
                "backend[0].pool_size",
                "backend[0].ca_file",
                "backend[0].query_by_id",
                "backend[0].query_by_ip",
            ]
        );
        for p in &list {
            assert!(!p.message.contains("hunter2"), "{p}");
        }
    }

    #[test]
    fn urls_replace_url_and_take_the_documented_defaults() {
        let c: MysqlConfig = serde_json::from_str(
            r#"{"urls": ["mysql://kg@db1/wazuh", "mariadb://kg@db2/wazuh"],
                "query_by_id": "SELECT id,name,ip,agent_key FROM agent WHERE id = ?",
                "query_by_ip": "SELECT id,name,ip,agent_key FROM agent WHERE ip = ?"}"#,
        )
        .unwrap();
        assert_eq!(problems(&c), []);
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert_eq!(c.pool_size, 4);
        assert_eq!(c.tls, TlsMode::Prefer);
        assert_eq!(c.failback_after, Duration::from_secs(300));

        let mut both = c.clone();
        both.url = Some("mysql://kg@db1/wazuh".into());
        let mut neither = c.clone();
        neither.urls.clear();
        let mut bad = c;
        bad.urls[1] = "redis://kg:hunter2@db2".into();
        let first = |c: &MysqlConfig| {
            problems(c)
                .into_iter()
                .map(|p| (p.path, p.message.contains("hunter2")))
                .collect::<Vec<_>>()
        };
        assert_eq!(first(&both), [("backend[0].urls".to_owned(), false)]);
        assert_eq!(first(&neither), [("backend[0].url".to_owned(), false)]);
        assert_eq!(first(&bad), [("backend[0].urls[1]".to_owned(), false)]);
    }

    #[test]
    fn debug_output_hides_the_password() {
        let text = format!("{:?}", config("mysql://kg:hunter2@db/wazuh"));
        assert!(
            !text.contains("hunter2") && text.contains("kg:***@db"),
            "{text}"
        );
    }

    #[test]
    fn tls_modes_parse_from_their_config_names() {
        #[derive(Deserialize)]
        struct T {
            tls: TlsMode,
        }
        let modes: Vec<TlsMode> = ["disable", "prefer", "require", "verify-full"]
            .iter()
            .map(|m| {
                serde_json::from_str::<T>(&format!(r#"{{"tls":"{m}"}}"#))
                    .unwrap()
                    .tls
            })
            .collect();
        assert_eq!(
            modes,
            [
                TlsMode::Disable,
                TlsMode::Prefer,
                TlsMode::Require,
                TlsMode::VerifyFull
            ]
        );
    }

    #[tokio::test]
    async fn build_succeeds_with_no_server_and_lookups_fail_as_outages() {
        let mut c = config("mysql://kg@127.0.0.1:1/wazuh");
        c.connect_timeout = Duration::from_millis(300);
        let b = c.build("db").await.unwrap();
        let q = keygate_core::Request::parse(b"id:001").unwrap();
        let started = std::time::Instant::now();
        let e = b.lookup(&q).await.unwrap_err();
        assert_eq!(e.code(), keygate_core::ErrorCode::Unavailable, "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_unreadable_password_file_fails_the_build() {
        let mut c = config("mysql://kg@127.0.0.1:1/wazuh");
        c.password_file = Some(PathBuf::from("/nonexistent/keygate.pass"));
        let e = c.build("db").await.err().unwrap().to_string();
        assert!(e.contains("password_file"), "{e}");
    }
}

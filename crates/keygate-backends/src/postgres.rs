//! `type = "postgres"`: a PostgreSQL table read through a small, lazy
//! connection pool (sqlx).
//!
//! The pool connects on first use and reconnects by itself: keygate starts
//! while the server is down and answers again once it is back, without a
//! restart. Every wait is bounded (`connect_timeout` for a connection, the
//! backend's `timeout` around each lookup). With `urls`, each host has its
//! own pool and [`failback::Hosts`] fails over in order and back to the first.
//! The request value is bound to `$1` as text; queries on typed columns
//! cast it (`$1::inet`, `$1::int`).
//! `inet`/`cidr` columns are read with sqlx's `ipnet` support, the same
//! `IpNet` type keygate's records use: a host is written without `/32` or
//! `/128`, a network keeps its prefix.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use keygate_core::{AgentAddress, AgentRecord, BackendError, KeyBackend, Query};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow, PgSslMode};
use sqlx::{ConnectOptions, Row, TypeInfo, ValueRef};

use crate::sql::{self, Cell, Placeholders, TlsMode};
use crate::{failback, BackendSpec, Problems};

/// PostgreSQL: the URL schemes and the placeholder style.
#[derive(Clone, Copy, Debug)]
pub struct PostgresDialect;

impl sql::Dialect for PostgresDialect {
    const CONFIG_NAME: &'static str = "PostgresConfig";
    const SCHEMES: &'static [&'static str] = &["postgres", "postgresql"];
    const PLACEHOLDERS: Placeholders = Placeholders::Dollar;
}

/// `[[backend]] type = "postgres"` (PostgreSQL); its keys are
/// [`sql::ServerConfig`]'s.
pub type PostgresConfig = sql::ServerConfig<PostgresDialect>;

impl PostgresConfig {
    /// The driver's connection options: URL, then password file, TLS.
    fn connect_options(&self, url: &str) -> Result<PgConnectOptions, BackendError> {
        let mut options = PgConnectOptions::from_str(url)
            .map_err(|_| BackendError::Internal("url is not a valid postgres:// URL".into()))?;
        if let Some(path) = &self.password_file {
            options = options.password(&crate::secret::read_password_file(path)?);
        }
        options = options.ssl_mode(match self.tls {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Prefer => PgSslMode::Prefer,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        });
        if let Some(ca) = &self.ca_file {
            options = options.ssl_root_cert(ca);
        }
        // Statement logs would only repeat the configured SQL at info level.
        Ok(options
            .application_name("keygate")
            .disable_statement_logging())
    }
}

#[async_trait]
impl BackendSpec for PostgresConfig {
    const TYPE: &'static str = "postgres";

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
            let pool = PgPoolOptions::new()
                .max_connections(self.pool_size)
                .min_connections(0)
                .acquire_timeout(self.connect_timeout)
                .connect_lazy_with(self.connect_options(url)?);
            hosts.push(sql::SqlHost::new(pool, url, self.connect_timeout));
        }
        Ok(Arc::new(PostgresBackend {
            name: name.to_owned(),
            config: self.clone(),
            hosts: failback::Hosts::new(name, "database", hosts, self.failback_after),
        }))
    }
}

/// The PostgreSQL backend.
pub struct PostgresBackend {
    name: String,
    config: PostgresConfig,
    hosts: failback::Hosts<sql::SqlHost<sqlx::Postgres>>,
}

impl fmt::Debug for PostgresBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresBackend")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("active_host", &self.hosts.active())
            .finish_non_exhaustive()
    }
}

/// Decodes the first four columns: integers, text types (`char(n)`
/// padding dropped), UTF-8 `bytea`, and `inet`/`cidr`.
fn decode(row: &PgRow) -> Result<[Cell; 4], BackendError> {
    sql::require_columns(row.len())?;
    let cell = |i: usize| -> Result<Cell, BackendError> {
        let raw = row.try_get_raw(i).map_err(|e| sql::describe_error(&e))?;
        if raw.is_null() {
            return Ok(Cell::Null);
        }
        let ty = raw.type_info().name().to_owned();
        let get_err = |e: sqlx::Error| sql::describe_error(&e);
        Ok(match ty.as_str() {
            "INT2" => Cell::Int(row.try_get::<i16, _>(i).map_err(get_err)?.into()),
            "INT4" => Cell::Int(row.try_get::<i32, _>(i).map_err(get_err)?.into()),
            "INT8" => Cell::Int(row.try_get::<i64, _>(i).map_err(get_err)?),
            "TEXT" | "VARCHAR" | "NAME" => Cell::Text(row.try_get(i).map_err(get_err)?),
            // char(n) pads with spaces that PostgreSQL itself ignores.
            "CHAR" => Cell::Text(
                row.try_get::<String, _>(i)
                    .map_err(get_err)?
                    .trim_end_matches(' ')
                    .to_owned(),
            ),
            "BYTEA" => sql::utf8_cell(row.try_get::<Vec<u8>, _>(i).map_err(get_err)?),
            "INET" | "CIDR" => {
                let net = row.try_get::<ipnet::IpNet, _>(i).map_err(get_err)?;
                Cell::Text(AgentAddress::network(net).as_str().to_owned())
            }
            _ => Cell::Other(ty),
        })
    };
    Ok([cell(0)?, cell(1)?, cell(2)?, cell(3)?])
}

#[async_trait]
impl KeyBackend for PostgresBackend {
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

impl PostgresBackend {
    /// Connects to one host and prepares both queries: each must take one
    /// parameter and return at least four columns.
    async fn check_host(&self, pool: &sqlx::Pool<sqlx::Postgres>) -> Result<(), BackendError> {
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
    use std::time::Duration;

    fn config(url: &str) -> PostgresConfig {
        PostgresConfig {
            url: Some(url.into()),
            urls: Vec::new(),
            failback_after: Duration::from_secs(300),
            password_file: None,
            connect_timeout: Duration::from_secs(3),
            pool_size: 4,
            tls: TlsMode::Prefer,
            ca_file: None,
            query_by_id: "SELECT id,name,ip,agent_key FROM agent WHERE id = $1".into(),
            query_by_ip: "SELECT id,name,ip,agent_key FROM agent WHERE ip = $1::inet".into(),
            dialect: std::marker::PhantomData,
        }
    }

    fn problems(c: &PostgresConfig) -> Vec<crate::Problem> {
        let mut list = Vec::new();
        c.validate(&mut Problems::new("backend[2]", &mut list));
        list
    }

    #[test]
    fn postgres_and_postgresql_urls_are_valid() {
        assert_eq!(problems(&config("postgres://keygate@db1/wazuh")), []);
        assert_eq!(
            problems(&config("postgresql://keygate:pw@db1:5433/wazuh")),
            []
        );
    }

    #[test]
    fn validation_reports_every_problem_without_the_password() {
        let mut c = config("mysql://kg:hunter2@db/wazuh");
        c.query_by_id = "SELECT id,name,ip,k FROM agent WHERE id = ?".into();
        c.query_by_ip = "   ".into();
        c.pool_size = 65;
        let list = problems(&c);
        let paths: Vec<&str> = list.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "backend[2].url",
                "backend[2].pool_size",
                "backend[2].query_by_id",
                "backend[2].query_by_ip",
            ]
        );
        for p in &list {
            assert!(!p.message.contains("hunter2"), "{p}");
        }
    }

    #[test]
    fn debug_output_hides_the_password() {
        let text = format!("{:?}", config("postgres://kg:hunter2@db/wazuh"));
        assert!(
            !text.contains("hunter2") && text.contains("kg:***@db"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn build_succeeds_with_no_server_and_lookups_fail_as_outages() {
        let mut c = config("postgres://kg@127.0.0.1:1/wazuh");
        c.connect_timeout = Duration::from_millis(300);
        let b = c.build("db").await.unwrap();
        let q = keygate_core::Request::parse(b"ip:10.0.0.1").unwrap();
        let started = std::time::Instant::now();
        let e = b.lookup(&q).await.unwrap_err();
        assert_eq!(e.code(), keygate_core::ErrorCode::Unavailable, "{e}");
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(b.health().await.is_err());
    }
}

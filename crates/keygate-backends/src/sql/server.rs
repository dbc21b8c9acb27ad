//! The one backend for database servers (MySQL/MariaDB, PostgreSQL), generic
//! over a [`Dialect`]: the driver's connect options and row decoding are the
//! dialect's; the config, the pools, failover, lookups and the health check
//! are written here once.
//!
//! Each host has a small lazy pool ([`super::pool`]): it connects on first
//! use and reconnects by itself, so keygate starts while the server is down
//! and answers again once it is back, without a restart; a lookup is one
//! round trip on a connection that keeps its prepared statements. Every
//! wait is bounded (`connect_timeout` for a connection, the backend's
//! `timeout` around each lookup). Values are only ever bound to the query's one parameter;
//! passwords and URLs never reach a message or a log.

use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use keygate_core::{AgentRecord, BackendError, KeyBackend, ListStream, Query};
use serde::Deserialize;
use sqlx::pool::PoolOptions;
use sqlx::{ConnectOptions, Connection};

use super::pool::ConnPool;
use super::{check_queries, describe_error, Placeholders, Queries, SqlConnection};
use crate::endpoint::{redact_url, Host, HostList, Hosts};
use crate::error::{BuildError, FileError};
use crate::{BackendSpec, Problems};

/// The default `connect_timeout` of the database servers.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a listing's connection stays open after the listing.
const LIST_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How a connection to a database server uses TLS (`tls = ...`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsMode {
    /// Plain text only.
    Disable,
    /// TLS if the server offers it, plain text otherwise (the default).
    #[default]
    Prefer,
    /// TLS or no connection; the certificate is not verified.
    Require,
    /// TLS with the certificate verified against `ca_file` (or the system
    /// roots) and the host name checked.
    VerifyFull,
}

/// What the connection settings of one host are made of.
#[derive(Debug)]
pub struct Connect<'a> {
    /// The host's URL.
    pub url: &'a str,
    /// The password from `password_file`/`_env`/`_credential`, if any.
    pub password: Option<&'a str>,
    /// `tls`.
    pub tls: TlsMode,
    /// The content of `ca_file`, if set.
    pub ca_pem: Option<&'a [u8]>,
}

/// The connection type of a dialect's driver.
pub type ConnectionOf<D> = <<D as Dialect>::Db as sqlx::Database>::Connection;
/// The connect options of a dialect's driver.
pub type OptionsOf<D> = <ConnectionOf<D> as Connection>::Options;

/// What differs between the database servers: the driver, its URL schemes,
/// its placeholder style, its connect options, its row decoding (through
/// [`SqlConnection`], implemented for the driver's connection).
pub trait Dialect: Send + Sync + 'static {
    /// The sqlx driver.
    type Db: sqlx::Database<Connection: SqlConnection>;
    /// The `type` value (`mysql`, `postgres`).
    const TYPE: &'static str;
    /// The config's name in `Debug` output.
    const CONFIG_NAME: &'static str;
    /// The URL schemes accepted (`mysql`, `postgres`, ...).
    const SCHEMES: &'static [&'static str];
    /// The database's own bind placeholder.
    const PLACEHOLDERS: Placeholders;

    /// The driver's connection options for one host; `None` when the
    /// driver does not accept the URL (the driver's message is not kept: it
    /// may quote the URL).
    fn connect_options(connect: Connect<'_>) -> Option<OptionsOf<Self>>;
}

crate::endpoint::network_config! {
    /// `[[backend]] type = "mysql"` or `"postgres"`: the keys both database
    /// server backends have. `url`/`urls` are `mysql://` or `mariadb://`,
    /// `postgres://` or `postgresql://`
    /// `user[:password]@host[:port]/database`; `connect_timeout` (default
    /// `"3s"`) is the longest wait for a connection.
    pub struct ServerConfig<D: Dialect> via RawServerConfig("RawServerConfig<D>") {
        /// Query for `id:` requests: one bind parameter (`?` for MySQL,
        /// `$1` for PostgreSQL, where it is bound as text), returning the
        /// columns id, name, ip, key in that order, under any names.
        pub query_by_id: String,
        /// Query for `ip:` requests, like `query_by_id` (on PostgreSQL
        /// write `$1::inet` for an `inet` column).
        pub query_by_ip: String,
        /// Query that lists every agent (`keygate list`, `export`,
        /// `verify`, `sync`): no bind parameter, the same four columns.
        /// Optional; without it the backend cannot list.
        #[serde(default)]
        pub query_all: Option<String>,
        /// Most connections kept open per host (default 4).
        #[serde(default = "default_pool_size")]
        pub pool_size: u32,
        /// `disable`, `prefer` (default), `require` or `verify-full`
        /// (certificate checked against `ca_file` and the host name). For
        /// PostgreSQL it overrides any `sslmode` in `url`.
        #[serde(default)]
        pub tls: TlsMode,
        /// PEM file of the CA that signed the server's certificate, read
        /// when the backend is built. Relative paths are resolved against
        /// the config file's directory.
        #[serde(default)]
        pub ca_file: Option<PathBuf>,
        /// Which database; not a config key.
        #[serde(skip)]
        pub dialect: PhantomData<D>,
    }
}

fn default_pool_size() -> u32 {
    4
}

impl<D: Dialect> Clone for ServerConfig<D> {
    fn clone(&self) -> Self {
        Self {
            hosts: self.hosts.clone(),
            query_by_id: self.query_by_id.clone(),
            query_by_ip: self.query_by_ip.clone(),
            query_all: self.query_all.clone(),
            pool_size: self.pool_size,
            tls: self.tls,
            ca_file: self.ca_file.clone(),
            dialect: PhantomData,
        }
    }
}

/// Shows everything but the password.
impl<D: Dialect> fmt::Debug for ServerConfig<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(D::CONFIG_NAME)
            .field("hosts", &self.hosts)
            .field("query_by_id", &self.query_by_id)
            .field("query_by_ip", &self.query_by_ip)
            .field("query_all", &self.query_all)
            .field("pool_size", &self.pool_size)
            .field("tls", &self.tls)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl<D: Dialect> ServerConfig<D> {
    /// A config for one host with the given queries and every other key at
    /// its default.
    pub fn new(url: &str, query_by_id: &str, query_by_ip: &str) -> Self {
        Self {
            hosts: HostList::one(url),
            query_by_id: query_by_id.into(),
            query_by_ip: query_by_ip.into(),
            query_all: None,
            pool_size: default_pool_size(),
            tls: TlsMode::default(),
            ca_file: None,
            dialect: PhantomData,
        }
    }

    /// The queries.
    pub fn queries(&self) -> Queries<'_> {
        Queries {
            query_by_id: &self.query_by_id,
            query_by_ip: &self.query_by_ip,
            query_all: self.query_all.as_deref(),
        }
    }

    /// The longest wait for one connection.
    pub fn connect_timeout(&self) -> Duration {
        self.hosts.connect_timeout(DEFAULT_CONNECT_TIMEOUT)
    }
}

#[async_trait]
impl<D: Dialect> BackendSpec for ServerConfig<D> {
    const TYPE: &'static str = D::TYPE;

    fn resolve_paths(&mut self, base: &Path) {
        self.hosts.resolve_paths(base);
        if let Some(ca) = self.ca_file.as_mut() {
            crate::resolve(base, ca);
        }
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        self.hosts.validate(problems, D::SCHEMES, |url| {
            D::connect_options(Connect {
                url,
                password: None,
                tls: self.tls,
                ca_pem: None,
            })
            .is_some()
        });
        if !(1..=64).contains(&self.pool_size) {
            problems.push("pool_size", "must be between 1 and 64");
        }
        if let Some(ca) = &self.ca_file {
            if ca.as_os_str().is_empty() {
                problems.push("ca_file", "must not be empty");
            } else if self.tls == TlsMode::Disable {
                problems.push("ca_file", "is set but tls = \"disable\"");
            }
        }
        self.queries().validate(problems, D::PLACEHOLDERS);
    }

    fn has_inline_password(&self) -> bool {
        self.hosts.has_inline_password()
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BuildError> {
        let ca_pem = match &self.ca_file {
            Some(path) => {
                Some(std::fs::read(path).map_err(|e| FileError::new("ca_file", path, e))?)
            }
            None => None,
        };
        let connect_timeout = self.connect_timeout();
        let hosts = self.hosts.build(name, |key, url, password| {
            let options = D::connect_options(Connect {
                url,
                password,
                tls: self.tls,
                ca_pem: ca_pem.as_deref(),
            })
            .ok_or_else(|| BuildError::invalid(key, "is not a valid connection URL"))?;
            // Listing only (rare, long): sqlx's pool, which may ping.
            let list_pool = PoolOptions::<D::Db>::new()
                .max_connections(self.pool_size)
                .min_connections(0)
                .idle_timeout(LIST_IDLE_TIMEOUT)
                .acquire_timeout(connect_timeout)
                .connect_lazy_with(options.clone());
            Ok(SqlHost {
                pool: ConnPool::new(options, self.pool_size, connect_timeout),
                list_pool,
                label: redact_url(url),
            })
        })?;
        Ok(Arc::new(ServerBackend::<D> {
            name: name.to_owned(),
            config: self.clone(),
            hosts,
        }))
    }
}

/// A MySQL/MariaDB or PostgreSQL backend.
pub struct ServerBackend<D: Dialect> {
    name: String,
    config: ServerConfig<D>,
    hosts: Hosts<SqlHost<D::Db>>,
}

impl<D: Dialect> fmt::Debug for ServerBackend<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBackend")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("active_host", &self.hosts.active())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<D: Dialect> KeyBackend for ServerBackend<D> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let sql = self.config.queries().for_query(query);
        self.hosts
            .run(|host| async move {
                let mut conn = host.pool.acquire().await?;
                let mut result = conn.lookup_record(sql, query.value()).await;
                if matches!(&result, Err(failed) if failed.lost && conn.reused()) {
                    // Idle connections die with their server (a restart, a
                    // wait_timeout): once more, on a fresh one.
                    conn.reconnect().await?;
                    result = conn.lookup_record(sql, query.value()).await;
                }
                conn.settle(result)
            })
            .await
    }

    /// Checks the active host (or, failing over, the next one that
    /// answers): connects, prepares both queries and runs them once. The
    /// connection is kept only when the check passes.
    async fn health(&self) -> Result<(), BackendError> {
        self.hosts
            .run(|host| async move {
                let limit = host.pool.connect_timeout();
                let mut conn = host.pool.acquire().await?;
                let mut checked = check_queries(&mut *conn, self.config.queries(), limit).await;
                if checked.is_err() && conn.reused() {
                    conn.reconnect().await?;
                    checked = check_queries(&mut *conn, self.config.queries(), limit).await;
                }
                if checked.is_ok() {
                    conn.release();
                }
                checked
            })
            .await
    }

    fn current_host(&self) -> Option<String> {
        self.hosts.current()
    }

    /// Streams `query_all` from one host: the active one, or after an
    /// outage (connecting or midway) the next one, from the start
    /// ([`crate::listing::one_host`]).
    fn list(&self) -> ListStream<'_> {
        let sql = match self.config.queries().all(&self.name) {
            Ok(sql) => sql,
            Err(e) => return crate::listing::failed(e),
        };
        crate::listing::one_host(&self.hosts, move |host| {
            stream::once(async move { host.open_list_pool().await.map(|()| host) })
                .map_ok(move |host| ConnectionOf::<D>::list(&host.list_pool, sql))
                .try_flatten()
                .boxed()
        })
    }
}

/// One database host of a backend: its connections, and its URL redacted
/// for `keygate backends`.
pub struct SqlHost<DB: sqlx::Database> {
    /// Lookups and health checks.
    pool: ConnPool<DB::Connection>,
    /// Listing (`query_all`), on connections of its own.
    list_pool: sqlx::Pool<DB>,
    label: String,
}

impl<DB: sqlx::Database> SqlHost<DB> {
    /// Makes sure the listing pool has a connection. While it has none, one
    /// direct attempt comes first: sqlx's pool retries a refused connection
    /// until its timeout, and a refused connection must fail at once, so
    /// the next host lists instead.
    async fn open_list_pool(&self) -> Result<(), BackendError> {
        let limit = self.pool.connect_timeout();
        if self.list_pool.size() == 0 {
            let conn = tokio::time::timeout(limit, self.list_pool.connect_options().connect())
                .await
                .map_err(|_| BackendError::Timeout(limit))?
                .map_err(|e| describe_error(&e))?;
            // A clean goodbye; the pool opens its own connection next.
            let _ = conn.close().await;
        }
        let conn = self.list_pool.acquire().await;
        drop(conn.map_err(|e| describe_error(&e))?);
        Ok(())
    }
}

impl<DB: sqlx::Database> Host for SqlHost<DB> {
    /// Whether the host answers: a connection from the pool (a fresh one
    /// if the idle one is dead) that answers a ping.
    async fn probe(&self) -> bool {
        let limit = self.pool.connect_timeout();
        let probe = async {
            let mut conn = self.pool.acquire().await.ok()?;
            if conn.ping().await.is_err() {
                if !conn.reused() {
                    return None;
                }
                conn.reconnect().await.ok()?;
                conn.ping().await.ok()?;
            }
            conn.release();
            Some(())
        };
        matches!(tokio::time::timeout(limit, probe).await, Ok(Some(())))
    }

    fn label(&self) -> &str {
        &self.label
    }
}

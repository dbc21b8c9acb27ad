//! `type = "redis"`: agents kept in Redis (or Valkey) as one HASH per agent,
//! plus a STRING per address that names the agent's id.
//!
//! ```text
//! HSET wazuh:agent:001 id 001 name web-01 ip 10.0.0.1 key ac57...
//! SET  wazuh:agent-ip:10.0.0.1 001
//! ```
//!
//! An `id:` request reads the hash at `key_by_id`; an `ip:` request reads the
//! id at `key_by_ip`, then that id's hash. Key templates only take `{id}` and
//! `{ip}`, and the values put into them come from a parsed request (digits,
//! or an address in canonical form), so they cannot carry Redis syntax; they
//! are sent as arguments of the binary-safe protocol in any case, never as
//! command text.
//!
//! The connection is a [`ConnectionManager`]: one multiplexed connection that
//! pipelines concurrent requests and reconnects by itself after an outage.
//! It is created on first use, so keygate starts while Redis is down, and
//! every connect and every response is bounded by a timeout.
//!
//! With `urls`, each host has its own lazily created manager. Hosts are
//! asked in order: a host that fails with an outage is skipped (a quick
//! failure, such as a refused connection, is retried on the next host within
//! the same lookup), and while a later host is active one background task
//! probes the first host and moves traffic back to it after
//! `failback_after` of continuous health (the same rules as the SQL
//! backends).

mod list;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keygate_core::record::Field;
use keygate_core::{
    AgentId, AgentRecord, BackendError, KeyBackend, ListStream, Query, RecordError,
};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, RedisError};
use tokio::sync::OnceCell;

use crate::endpoint::{self, redact_url, FieldDefaults, FieldNames, Hosts};
use crate::{BackendSpec, BuildError, Problems};

/// The default `connect_timeout`: how long one connection attempt may take.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long Redis may take to answer one command.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

crate::endpoint::network_config! {
    /// `[[backend]] type = "redis"`: `url`/`urls` are
    /// `redis://[user:pass@]host[:port][/db]`, `rediss://...` (TLS, verified
    /// against the system's CA certificates) or
    /// `unix:///path/to/redis.sock[?db=N]`; `connect_timeout` defaults to
    /// `"2s"`; the password is sent with `AUTH`.
    #[derive(Clone, Debug)]
    pub struct RedisConfig via RawRedisConfig("RawRedisConfig") {
        /// Key of an agent's HASH, with `{id}` where the agent id goes
        /// (default `"wazuh:agent:{id}"`).
        #[serde(default = "default_key_by_id")]
        pub key_by_id: String,
        /// Key of the STRING that holds the id of the agent with an
        /// address, with `{ip}` where the address goes (default
        /// `"wazuh:agent-ip:{ip}"`).
        #[serde(default = "default_key_by_ip")]
        pub key_by_ip: String,
        /// `[backend.fields]`: names of the hash fields, when they are not
        /// `id`, `name`, `ip`, `key`.
        #[serde(default)]
        pub fields: RedisFields,
    }
}

/// The Redis hash fields' default names.
#[derive(Debug)]
pub struct RedisFieldDefaults;

impl FieldDefaults for RedisFieldDefaults {
    const ID: &'static str = "id";
    const NAME: &'static str = "name";
    const IP: &'static str = "ip";
    const KEY: &'static str = "key";
}

/// `[backend.fields]`: the hash field that holds each part of a record.
pub type RedisFields = FieldNames<RedisFieldDefaults>;

fn default_key_by_id() -> String {
    "wazuh:agent:{id}".into()
}
fn default_key_by_ip() -> String {
    "wazuh:agent-ip:{ip}".into()
}

/// The schemes keygate accepts in `url`.
const SCHEMES: &[&str] = &["redis", "rediss", "unix", "redis+unix"];

/// Checks a key template: `allowed` must appear, and no other `{...}`.
fn validate_template(problems: &mut Problems<'_>, key: &str, template: &str, allowed: &str) {
    if template.is_empty() {
        problems.push(key, "must not be empty");
        return;
    }
    let placeholder = format!("{{{allowed}}}");
    if !template.contains(&placeholder) {
        problems.push(key, format!("must contain {placeholder}"));
    }
    let rest = template.replace(&placeholder, "");
    if rest.contains('{') || rest.contains('}') {
        problems.push(
            key,
            format!("only {placeholder} may appear in braces (no other placeholders)"),
        );
    }
}

#[async_trait]
impl BackendSpec for RedisConfig {
    const TYPE: &'static str = "redis";

    fn resolve_paths(&mut self, base: &Path) {
        self.hosts.resolve_paths(base);
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        self.hosts
            .validate(problems, SCHEMES, |url| url.into_connection_info().is_ok());
        validate_template(problems, "key_by_id", &self.key_by_id, "id");
        validate_template(problems, "key_by_ip", &self.key_by_ip, "ip");
        self.fields
            .validate(problems, "fields", |f| !f.is_empty(), "must not be empty");
    }

    fn has_inline_password(&self) -> bool {
        self.hosts.has_inline_password()
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BuildError> {
        let connect_timeout = self.hosts.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        let hosts = self.hosts.build(name, |key, url, password| {
            let mut info = url
                .into_connection_info()
                .map_err(|_| BuildError::invalid(key, "is not a valid Redis URL"))?;
            if let Some(password) = password {
                let settings = info.redis_settings().clone().set_password(password);
                info = info.set_redis_settings(settings);
            }
            let client = redis::Client::open(info)
                .map_err(|_| BuildError::invalid(key, "is not a usable Redis URL"))?;
            Ok(Host {
                label: redact_url(url),
                client,
                connect_timeout,
                manager: OnceCell::new(),
            })
        })?;
        Ok(Arc::new(RedisBackend {
            name: name.to_owned(),
            config: self.clone(),
            hosts,
        }))
    }
}

/// The Redis backend.
pub struct RedisBackend {
    name: String,
    config: RedisConfig,
    hosts: Hosts<Host>,
}

/// One configured Redis host.
struct Host {
    /// The URL redacted, for `keygate backends`.
    label: String,
    client: redis::Client,
    connect_timeout: Duration,
    /// Set by the first lookup that reaches this host; from then on the
    /// manager reconnects by itself.
    manager: OnceCell<ConnectionManager>,
}

impl Host {
    async fn connection(&self) -> Result<ConnectionManager, BackendError> {
        self.manager
            .get_or_try_init(|| async {
                let config = manager_config(self.connect_timeout);
                ConnectionManager::new_with_config(self.client.clone(), config)
                    .await
                    .map_err(|e| describe(&e))
            })
            .await
            .cloned()
    }

    /// Connects (if not yet connected) and sends a `PING`.
    async fn ping(&self) -> Result<(), BackendError> {
        let mut conn = self.connection().await?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(|e| describe(&e))?;
        Ok(())
    }
}

impl endpoint::Host for Host {
    async fn probe(&self) -> bool {
        matches!(
            tokio::time::timeout(self.connect_timeout, self.ping()).await,
            Ok(Ok(()))
        )
    }

    fn label(&self) -> &str {
        &self.label
    }
}

fn manager_config(connect_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500))
}

/// Describes a Redis error by its kind only: never the URL or a password.
fn describe(e: &RedisError) -> BackendError {
    use redis::ErrorKind as K;
    if e.is_timeout() {
        return BackendError::Unavailable("Redis did not answer in time".into());
    }
    match e.kind() {
        K::Io => BackendError::Unavailable(if e.is_connection_refusal() {
            "cannot connect to Redis: connection refused".into()
        } else {
            "Redis connection failed (I/O error)".into()
        }),
        K::AuthenticationFailed => {
            BackendError::LoginRefused("Redis refused the configured credentials".into())
        }
        K::InvalidClientConfig => {
            BackendError::Internal("invalid Redis connection settings".into())
        }
        _ => match e.code() {
            Some("NOAUTH") | Some("WRONGPASS") => {
                BackendError::LoginRefused("Redis refused the configured credentials".into())
            }
            // An ACL user without the right to run the lookup.
            Some("NOPERM") => BackendError::LoginRefused(
                "Redis refused keygate's user the command or key (ACL NOPERM)".into(),
            ),
            Some(code) => BackendError::Unavailable(format!("Redis answered with error {code}")),
            None => BackendError::Unavailable(format!("Redis error ({})", e.category())),
        },
    }
}

fn wrong_type(e: &RedisError) -> bool {
    e.code() == Some("WRONGTYPE")
}

impl RedisBackend {
    /// Answers `query` from one host.
    async fn lookup_on(
        &self,
        host: &Host,
        query: &Query,
    ) -> Result<Option<AgentRecord>, BackendError> {
        let mut conn = host.connection().await?;
        match query {
            Query::Id(_) => self.hash(&mut conn, &query.value()).await,
            Query::Ip(_) => {
                let key = self.config.key_by_ip.replace("{ip}", &query.value());
                let id: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(&key)
                    .query_async(&mut conn)
                    .await
                    .map_err(|e| {
                        if wrong_type(&e) {
                            BackendError::InvalidRecord(RecordError::Malformed(
                                "the address key is not a string",
                            ))
                        } else {
                            describe(&e)
                        }
                    })?;
                let Some(id) = id else { return Ok(None) };
                // The stored id goes into a key: it must be a valid id first.
                let id = std::str::from_utf8(&id)
                    .map_err(|_| RecordError::Invalid {
                        field: Field::Id,
                        rule: "not UTF-8 text",
                    })
                    .and_then(AgentId::parse)?;
                match self.hash(&mut conn, id.as_str()).await? {
                    Some(record) => Ok(Some(record)),
                    None => Err(BackendError::InvalidRecord(RecordError::Malformed(
                        "the address key names an agent id that has no hash",
                    ))),
                }
            }
        }
    }
    /// Reads the agent hash for `id`; `None` when the key does not exist.
    async fn hash(
        &self,
        conn: &mut ConnectionManager,
        id: &str,
    ) -> Result<Option<AgentRecord>, BackendError> {
        let key = self.config.key_by_id.replace("{id}", id);
        let map: HashMap<Vec<u8>, Vec<u8>> = redis::cmd("HGETALL")
            .arg(&key)
            .query_async(conn)
            .await
            .map_err(|e| {
                if wrong_type(&e) {
                    BackendError::InvalidRecord(RecordError::Malformed(
                        "the agent key is not a hash",
                    ))
                } else {
                    describe(&e)
                }
            })?;
        if map.is_empty() {
            return Ok(None);
        }
        let get = |name: &str, field: Field| -> Result<Option<&str>, RecordError> {
            match map.get(name.as_bytes()) {
                None => Ok(None),
                Some(v) => std::str::from_utf8(v)
                    .map(Some)
                    .map_err(|_| RecordError::Invalid {
                        field,
                        rule: "not UTF-8 text",
                    }),
            }
        };
        let record = self.config.fields.record(get)?;
        Ok(Some(record))
    }
}

#[async_trait]
impl KeyBackend for RedisBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        self.hosts.run(|host| self.lookup_on(host, query)).await
    }

    /// Connects (if not yet connected) and sends a `PING`, to the active
    /// host and then the following ones.
    async fn health(&self) -> Result<(), BackendError> {
        self.hosts.run(Host::ping).await
    }

    fn current_host(&self) -> Option<String> {
        self.hosts.current()
    }

    /// `SCAN` over the `key_by_id` pattern ([`list`]).
    fn list(&self) -> ListStream<'_> {
        self.list_all()
    }
}

#[cfg(test)]
mod tests;

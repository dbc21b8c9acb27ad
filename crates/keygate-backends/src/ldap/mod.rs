//! `type = "ldap"`: agents kept as entries of an LDAP directory (ldap3).
//!
//! An `id:` or `ip:` request becomes one search under `base_dn` with
//! `filter_by_id` or `filter_by_ip`, the request's value escaped per
//! RFC 4515 ([`ldap3::ldap_escape`]) before it replaces `{id}` or `{ip}`.
//! The search asks for at most two entries: two mean the answer is
//! ambiguous (5), never "take the first". Each of the four attributes must
//! be present and single-valued (or all its values equal), else 5.
//!
//! [`config`] holds the keys, [`pool`] the hosts and the pool of bound
//! connections, [`list`] the paged search that lists every agent; failover between the servers and back is
//! [`Hosts`](crate::endpoint::Hosts)'s, as for every network backend.
//! Every network step (connect, StartTLS, bind, search) is bounded by a
//! timeout.

mod config;
mod list;
mod pool;

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keygate_core::record::Field;
use keygate_core::{AgentRecord, BackendError, KeyBackend, ListStream, Query, RecordError};
use ldap3::{LdapError, Scope, SearchEntry, SearchOptions};

pub use config::{render_filter, LdapAttributeDefaults, LdapAttributes, LdapConfig, LdapScope};

use crate::endpoint::{redact_url, Hosts};
use crate::{BackendSpec, BuildError, Problems};
use pool::{LdapHost, Pool};

/// The default `connect_timeout`: connecting to one URL (TCP); TLS or
/// StartTLS may take as long again.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one operation (bind, search) may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

#[async_trait]
impl BackendSpec for LdapConfig {
    const TYPE: &'static str = "ldap";

    fn resolve_paths(&mut self, base: &Path) {
        self.resolve_file_paths(base);
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        self.check(problems);
    }

    fn has_inline_password(&self) -> bool {
        self.hosts.has_inline_password()
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BuildError> {
        let tls = match &self.ca_file {
            Some(path) => Some(config::tls_config(path)?),
            None => None,
        };
        let connect_timeout = self.hosts.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        let mut index = 0;
        let hosts = self.hosts.build(name, |_, url, password| {
            index += 1;
            Ok(LdapHost {
                index: index - 1,
                url: url.to_owned(),
                label: redact_url(url),
                backend: name.to_owned(),
                starttls: self.starttls,
                tls: tls.clone(),
                connect_timeout,
                bind: match (&self.bind_dn, password) {
                    (Some(dn), Some(pw)) => {
                        Some((dn.clone(), zeroize::Zeroizing::new(pw.to_owned())))
                    }
                    _ => None,
                },
            })
        })?;
        Ok(Arc::new(LdapBackend {
            name: name.to_owned(),
            config: self.clone(),
            hosts,
            pool: Pool::new(self.pool_size),
        }))
    }
}

/// The LDAP backend.
pub struct LdapBackend {
    name: String,
    config: LdapConfig,
    hosts: Hosts<LdapHost>,
    pool: Pool,
}

impl fmt::Debug for LdapBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapBackend")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("active_host", &self.hosts.active())
            .finish_non_exhaustive()
    }
}

/// Describes an ldap3 error without the bind password (ldap3 never puts it
/// in an error) and says whether the connection must be replaced.
fn describe(e: &LdapError, what: &str) -> (BackendError, bool) {
    match e {
        // The connection would still be usable, but a server that stopped
        // answering (or a peer lost without a reset) is better replaced.
        LdapError::Timeout { .. } => (
            BackendError::Unavailable(format!("LDAP {what} timed out")),
            true,
        ),
        // tokio-rustls reports handshake failures (an untrusted
        // certificate) as InvalidData; its text names the TLS problem.
        LdapError::Io { source } if source.kind() == std::io::ErrorKind::InvalidData => (
            BackendError::Unavailable(format!("LDAP {what} failed: TLS error: {source}")),
            true,
        ),
        LdapError::Io { source } => (
            BackendError::Unavailable(format!("LDAP {what} failed: I/O error: {}", source.kind())),
            true,
        ),
        LdapError::Rustls { .. } => (
            BackendError::Unavailable(format!("LDAP {what} failed: TLS error: {e}")),
            true,
        ),
        LdapError::FilterParsing => (
            BackendError::Internal("the LDAP filter does not parse".into()),
            false,
        ),
        LdapError::LdapResult { result } => (result_error(result.rc, what), false),
        _ => (
            BackendError::Unavailable(format!("LDAP {what} failed: connection lost")),
            true,
        ),
    }
}

/// The meaning of an LDAP result code other than success.
fn result_error(rc: u32, what: &str) -> BackendError {
    match rc {
        // noSuchObject: base_dn does not exist, or (slapd hides what an
        // identity may not read) the bound identity may not see it.
        32 => BackendError::Internal(format!(
            "LDAP {what}: base_dn does not exist or is not readable by the bound identity (rc 32)"
        )),
        // inappropriateAuthentication, invalidCredentials, insufficientAccessRights
        48..=50 => BackendError::LoginRefused(format!(
            "LDAP {what} refused: wrong bind_dn or password, or no access (rc {rc})"
        )),
        // busy, unavailable, unwillingToPerform, timeLimitExceeded, adminLimitExceeded
        _ => BackendError::Unavailable(format!("LDAP {what} failed (rc {rc})")),
    }
}

/// The one value of a possibly multi-valued attribute: all values must be
/// equal.
pub fn single_value(values: &[String], field: Field) -> Result<&str, RecordError> {
    match values.split_first() {
        None => Err(RecordError::Missing(field)),
        Some((first, rest)) if rest.iter().all(|v| v == first) => Ok(first),
        Some(_) => Err(RecordError::Invalid {
            field,
            rule: "attribute has more than one different value",
        }),
    }
}

/// Builds a record from an entry's attributes (names compared without
/// regard to case, as LDAP does).
fn record_from_entry(
    entry: &SearchEntry,
    attrs: &LdapAttributes,
) -> Result<AgentRecord, RecordError> {
    attrs.record(|name, field| {
        if let Some((_, values)) = entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return single_value(values, field).map(Some);
        }
        if entry.bin_attrs.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            return Err(RecordError::Invalid {
                field,
                rule: "not UTF-8 text",
            });
        }
        Ok(None)
    })
}

impl LdapBackend {
    /// Runs one search on `host`, through the pool: at most two entries.
    async fn search_on(
        &self,
        host: &LdapHost,
        filter: &str,
    ) -> Result<Vec<SearchEntry>, BackendError> {
        let (i, mut ldap) = self.pool.handle(host).await?;
        let result = ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .with_timeout(OPERATION_TIMEOUT)
            .search(
                &self.config.base_dn,
                self.config.scope.into(),
                filter,
                self.config.attributes.all().to_vec(),
            )
            .await;
        let ldap3::SearchResult(entries, result) = match result {
            Ok(r) => r,
            Err(e) => {
                let (error, broken) = describe(&e, "search");
                if broken {
                    self.pool.discard(i).await;
                }
                return Err(error);
            }
        };
        let entries: Vec<SearchEntry> = entries
            .into_iter()
            .filter(|e| !e.is_ref() && !e.is_intermediate())
            .map(SearchEntry::construct)
            .collect();
        // 4 is sizeLimitExceeded: more than our limit of 2 matched.
        if entries.len() > 1 || result.rc == 4 {
            return Err(BackendError::Ambiguous);
        }
        if result.rc != 0 {
            return Err(result_error(result.rc, "search"));
        }
        Ok(entries)
    }

    /// Reads `base_dn` itself on `host`.
    async fn check_on(&self, host: &LdapHost) -> Result<(), BackendError> {
        let (i, mut ldap) = self.pool.handle(host).await?;
        let result = ldap
            .with_timeout(OPERATION_TIMEOUT)
            .search(
                &self.config.base_dn,
                Scope::Base,
                "(objectClass=*)",
                vec!["1.1"],
            )
            .await;
        match result {
            Ok(ldap3::SearchResult(_, r)) if r.rc == 0 => Ok(()),
            Ok(ldap3::SearchResult(_, r)) => Err(result_error(r.rc, "health check")),
            Err(e) => {
                let (error, broken) = describe(&e, "health check");
                if broken {
                    self.pool.discard(i).await;
                }
                Err(error)
            }
        }
    }
}

#[async_trait]
impl KeyBackend for LdapBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let filter = match query {
            Query::Id(_) => render_filter(&self.config.filter_by_id, "{id}", &query.value()),
            Query::Ip(_) => render_filter(&self.config.filter_by_ip, "{ip}", &query.value()),
        };
        let entries = self.hosts.run(|host| self.search_on(host, &filter)).await?;
        match entries.first() {
            None => Ok(None),
            Some(entry) => Ok(Some(record_from_entry(entry, &self.config.attributes)?)),
        }
    }

    /// Connects and binds (if not yet connected), then reads `base_dn`.
    async fn health(&self) -> Result<(), BackendError> {
        self.hosts.run(|host| self.check_on(host)).await
    }

    /// The server in use.
    fn current_host(&self) -> Option<String> {
        self.hosts.current()
    }

    /// A paged search with `filter_all` ([`list`]).
    fn list(&self) -> ListStream<'_> {
        self.list_all()
    }
}

#[cfg(test)]
mod tests;

//! `type = "ldap"`: agents kept as entries of an LDAP directory (ldap3).
//!
//! An `id:` or `ip:` request becomes one search under `base_dn` with
//! `filter_by_id` or `filter_by_ip`, the request's value escaped per
//! RFC 4515 ([`ldap3::ldap_escape`]) before it replaces `{id}` or `{ip}`.
//! The search asks for at most two entries: two mean the answer is
//! ambiguous (5), never "take the first". Each of the four attributes must
//! be present and single-valued (or all its values equal), else 5.
//!
//! Connections live in a small pool written here rather than taken from a
//! pool crate: an ldap3 handle is multiplexed (many operations in flight on
//! one connection, matched by message id), so a lookup only needs a clone
//! of a bound handle, not exclusive use of it, which is what generic pools
//! (deadpool, bb8) provide. The pool has `pool_size` slots used in turn;
//! a slot connects on first use, trying `urls` in order, binds, and is
//! emptied when its connection fails, so the next lookup through it
//! reconnects and rebinds (e.g. after a server restart). Every network step
//! (connect, StartTLS, bind, search) is bounded by a timeout.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use keygate_core::record::Field;
use keygate_core::{AgentRecord, BackendError, KeyBackend, Query, RecordError};
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings, LdapError, Scope, SearchEntry, SearchOptions};
use serde::Deserialize;
use tokio::sync::Mutex;
use tracing::debug;
use zeroize::Zeroizing;

use crate::{BackendSpec, Problems};

/// How long connecting to one URL (TCP, TLS or StartTLS) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one operation (bind, search) may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(2);

/// `[[backend]] type = "ldap"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LdapConfig {
    /// Servers, tried in order until one answers: `ldap://host[:port]`,
    /// `ldaps://host[:port]` (TLS) or `ldapi://<percent-encoded socket path>`.
    pub urls: Vec<String>,
    /// Upgrade `ldap://` connections with StartTLS (default false).
    #[serde(default)]
    pub starttls: bool,
    /// PEM file of the CA certificate(s) that sign the servers' certificates;
    /// without it the system's CA store is used. Certificates are always
    /// verified. Relative paths are resolved against the config file's
    /// directory.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// DN to bind as; without it keygate searches anonymously.
    #[serde(default)]
    pub bind_dn: Option<String>,
    /// A file whose first line is `bind_dn`'s password (required with
    /// `bind_dn`). Relative paths are resolved against the config file's
    /// directory.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Where searches start, e.g. `ou=agents,dc=example,dc=org`.
    pub base_dn: String,
    /// Search scope: `base`, `one` or `sub` (default).
    #[serde(default)]
    pub scope: LdapScope,
    /// Connections kept open (default 4). Each carries many concurrent
    /// searches.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Filter for `id:` requests, with `{id}` where the escaped id goes
    /// (default `(&(objectClass=device)(serialNumber={id}))`).
    #[serde(default = "default_filter_by_id")]
    pub filter_by_id: String,
    /// Filter for `ip:` requests, with `{ip}` where the escaped address goes
    /// (default `(&(objectClass=ipHost)(ipHostNumber={ip}))`).
    #[serde(default = "default_filter_by_ip")]
    pub filter_by_ip: String,
    /// Which attribute holds each part of a record.
    #[serde(default)]
    pub attributes: LdapAttributes,
    /// With several `urls`: how long the first server must stay reachable
    /// before connections move back to it from a later one (default `"5m"`).
    #[serde(default = "default_failback_after", with = "humantime_serde")]
    pub failback_after: Duration,
}

fn default_failback_after() -> Duration {
    Duration::from_secs(300)
}

/// Moving connections back to the first server once it has been healthy
/// for `failback_after` (so keygate does not stay on a fallback forever,
/// as nslcd does).
#[derive(Default)]
struct Failback {
    /// Bumped each time the first server has been healthy long enough;
    /// connections to a later server made before the bump reconnect.
    generation: AtomicU64,
    /// Whether the probe of the first server is running.
    probing: std::sync::atomic::AtomicBool,
}

/// One pooled connection: the handle, which URL it reached, and the
/// failback generation it was made in.
struct Conn {
    ldap: Ldap,
    url_index: usize,
    generation: u64,
}

/// `scope`: how deep below `base_dn` a search looks.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LdapScope {
    /// Only the `base_dn` entry itself.
    Base,
    /// The entries directly below `base_dn`.
    One,
    /// `base_dn` and everything below it.
    #[default]
    Sub,
}

impl From<LdapScope> for Scope {
    fn from(s: LdapScope) -> Self {
        match s {
            LdapScope::Base => Scope::Base,
            LdapScope::One => Scope::OneLevel,
            LdapScope::Sub => Scope::Subtree,
        }
    }
}

/// `[backend.attributes]`: the attribute that holds each part of a record.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LdapAttributes {
    /// Attribute holding the agent id (default `serialNumber`).
    #[serde(default = "default_attr_id")]
    pub id: String,
    /// Attribute holding the agent name (default `cn`).
    #[serde(default = "default_attr_name")]
    pub name: String,
    /// Attribute holding the agent address (default `ipHostNumber`).
    #[serde(default = "default_attr_ip")]
    pub ip: String,
    /// Attribute holding the agent key (default `description`).
    #[serde(default = "default_attr_key")]
    pub key: String,
}

impl Default for LdapAttributes {
    fn default() -> Self {
        Self {
            id: default_attr_id(),
            name: default_attr_name(),
            ip: default_attr_ip(),
            key: default_attr_key(),
        }
    }
}

fn default_pool_size() -> u32 {
    4
}
fn default_filter_by_id() -> String {
    "(&(objectClass=device)(serialNumber={id}))".into()
}
fn default_filter_by_ip() -> String {
    "(&(objectClass=ipHost)(ipHostNumber={ip}))".into()
}
fn default_attr_id() -> String {
    "serialNumber".into()
}
fn default_attr_name() -> String {
    "cn".into()
}
fn default_attr_ip() -> String {
    "ipHostNumber".into()
}
fn default_attr_key() -> String {
    "description".into()
}

/// Puts `value`, escaped per RFC 4515, where `placeholder` is in `template`.
pub fn render_filter(template: &str, placeholder: &str, value: &str) -> String {
    template.replace(placeholder, &ldap3::ldap_escape(value))
}

fn validate_filter(
    problems: &mut Problems<'_>,
    key: &str,
    template: &str,
    allowed: &str,
    sample: &str,
) {
    if template.trim().is_empty() {
        problems.push(key, "must not be empty");
        return;
    }
    let placeholder = format!("{{{allowed}}}");
    if !template.contains(&placeholder) {
        problems.push(key, format!("must contain {placeholder}"));
        return;
    }
    let rest = template.replace(&placeholder, "");
    if rest.contains('{') || rest.contains('}') {
        problems.push(
            key,
            format!("only {placeholder} may appear in braces (no other placeholders)"),
        );
        return;
    }
    if ldap3::parse_filter(render_filter(template, &placeholder, sample)).is_err() {
        problems.push(key, "is not a valid LDAP filter (RFC 4515)");
    }
}

/// Scheme of an LDAP URL, if it has a known one.
fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    ["ldap", "ldaps", "ldapi"]
        .into_iter()
        .find(|s| *s == scheme)
}

#[async_trait]
impl BackendSpec for LdapConfig {
    const TYPE: &'static str = "ldap";

    fn resolve_paths(&mut self, base: &Path) {
        for p in [self.ca_file.as_mut(), self.password_file.as_mut()]
            .into_iter()
            .flatten()
        {
            crate::resolve(base, p);
        }
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        if self.failback_after.is_zero() {
            problems.push("failback_after", "must be more than 0");
        }
        if self.urls.is_empty() {
            problems.push("urls", "must list at least one server");
        }
        for (i, url) in self.urls.iter().enumerate() {
            let key = format!("urls[{i}]");
            match scheme(url) {
                None => problems.push(&key, "must start with ldap://, ldaps:// or ldapi://"),
                Some(s) if self.starttls && s != "ldap" => {
                    problems.push(&key, "starttls applies to ldap:// URLs only")
                }
                Some(_) => {}
            }
            if url.contains('@') {
                problems.push(
                    &key,
                    "must not carry credentials (use bind_dn and password_file)",
                );
            }
        }
        match (&self.bind_dn, &self.password_file) {
            (Some(dn), _) if dn.trim().is_empty() => problems.push(
                "bind_dn",
                "must not be empty (leave it out to bind anonymously)",
            ),
            (Some(_), None) => problems.push("password_file", "is required with bind_dn"),
            (None, Some(_)) => problems.push("bind_dn", "is required with password_file"),
            _ => {}
        }
        if self.base_dn.trim().is_empty() {
            problems.push("base_dn", "must not be empty");
        }
        if !(1..=64).contains(&self.pool_size) {
            problems.push("pool_size", "must be between 1 and 64");
        }
        validate_filter(problems, "filter_by_id", &self.filter_by_id, "id", "001");
        validate_filter(
            problems,
            "filter_by_ip",
            &self.filter_by_ip,
            "ip",
            "10.0.0.1",
        );
        for (key, value) in [
            ("attributes.id", &self.attributes.id),
            ("attributes.name", &self.attributes.name),
            ("attributes.ip", &self.attributes.ip),
            ("attributes.key", &self.attributes.key),
        ] {
            if value.is_empty()
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b';')
            {
                problems.push(key, "must be an attribute name (letters, digits, '-')");
            }
        }
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, crate::BuildError> {
        let password = match &self.password_file {
            Some(p) => Some(crate::secret::read_password_file("password_file", p)?),
            None => None,
        };
        let tls = match &self.ca_file {
            Some(path) => Some(tls_config(path)?),
            None => None,
        };
        let slots = (0..self.pool_size.max(1))
            .map(|_| Mutex::new(None))
            .collect();
        Ok(Arc::new(LdapBackend {
            name: name.to_owned(),
            attrs: [
                self.attributes.id.clone(),
                self.attributes.name.clone(),
                self.attributes.ip.clone(),
                self.attributes.key.clone(),
            ],
            config: self.clone(),
            password,
            tls,
            slots,
            next: AtomicUsize::new(0),
            failback: Arc::new(Failback::default()),
            active_url: Arc::new(AtomicUsize::new(0)),
        }))
    }
}

/// A rustls client config that trusts only the CAs in `path` (ring provider).
fn tls_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, crate::BuildError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let problem =
        |what: &str| crate::BuildError::invalid("ca_file", format!("{} {what}", path.display()));
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path).map_err(|_| problem("cannot be read"))?;
    for cert in certs {
        let cert = cert.map_err(|_| problem("is not a PEM certificate file"))?;
        roots
            .add(cert)
            .map_err(|_| problem("holds a certificate that cannot be used"))?;
    }
    if roots.is_empty() {
        return Err(problem("holds no certificate"));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| problem("no usable TLS protocol version"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The LDAP backend.
pub struct LdapBackend {
    name: String,
    config: LdapConfig,
    /// Attribute names in id, name, ip, key order.
    attrs: [String; 4],
    password: Option<Zeroizing<String>>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The pool: each slot holds a bound handle once it has connected.
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
    failback: Arc<Failback>,
    /// The URL new connections try first: 0, or the server failed over to
    /// until the first one has been healthy for `failback_after`.
    active_url: Arc<AtomicUsize>,
}

impl fmt::Debug for LdapBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LdapBackend")
            .field("name", &self.name)
            .field("urls", &self.config.urls)
            .field("bind_dn", &self.config.bind_dn)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
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
        48..=50 => BackendError::Internal(format!(
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
fn record_from_entry(entry: &SearchEntry, attrs: &[String; 4]) -> Result<AgentRecord, RecordError> {
    let value = |name: &str, field: Field| -> Result<&str, RecordError> {
        if let Some((_, values)) = entry
            .attrs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            return single_value(values, field);
        }
        if entry.bin_attrs.keys().any(|k| k.eq_ignore_ascii_case(name)) {
            return Err(RecordError::Invalid {
                field,
                rule: "not UTF-8 text",
            });
        }
        Err(RecordError::Missing(field))
    };
    AgentRecord::parse(
        value(&attrs[0], Field::Id)?,
        value(&attrs[1], Field::Name)?,
        value(&attrs[2], Field::Ip)?,
        value(&attrs[3], Field::Key)?,
    )
}

impl LdapBackend {
    /// Connects and binds, trying the URLs in order from the active one
    /// (wrapping around); returns the handle and the URL's index. A server
    /// that answers after the active one failed becomes the active one.
    async fn connect(&self) -> Result<(Ldap, usize), BackendError> {
        let mut last = BackendError::Unavailable("no LDAP URL configured".into());
        let n = self.config.urls.len();
        let start = self.active_url.load(Ordering::Acquire) % n.max(1);
        for index in (0..n).map(|k| (start + k) % n) {
            let url = &self.config.urls[index];
            match self.connect_one(url).await {
                Ok(ldap) => {
                    if index != start {
                        self.active_url.store(index, Ordering::Release);
                        tracing::warn!(backend = %self.name, failed_host = start + 1, active_host = index + 1, "LDAP server failed; moving on to the next one.");
                    }
                    if index > 0 {
                        self.start_failback_probe();
                    }
                    return Ok((ldap, index));
                }
                Err(e) if e.is_outage() => {
                    debug!(backend = %self.name, url = %url, error = %e, "LDAP server unreachable; trying the next URL.");
                    last = e;
                }
                // A refused bind or bad settings will not improve on another server.
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    async fn connect_one(&self, url: &str) -> Result<Ldap, BackendError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(CONNECT_TIMEOUT)
            .set_starttls(self.config.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        // Covers StartTLS and the TLS handshake too, which conn_timeout
        // does not.
        let (conn, mut ldap) = match tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            LdapConnAsync::with_settings(settings, url),
        )
        .await
        {
            Err(_) => return Err(BackendError::Unavailable("LDAP connect timed out".into())),
            Ok(Err(e)) => return Err(describe(&e, "connect").0),
            Ok(Ok(pair)) => pair,
        };
        let name = self.name.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                debug!(backend = %name, error = %describe(&e, "connection").0, "LDAP connection ended.");
            }
        });
        if let (Some(dn), Some(password)) = (&self.config.bind_dn, &self.password) {
            let result = ldap
                .with_timeout(OPERATION_TIMEOUT)
                .simple_bind(dn, password.as_str())
                .await
                .map_err(|e| describe(&e, "bind").0)?;
            if result.rc != 0 {
                return Err(result_error(result.rc, "bind"));
            }
        }
        Ok(ldap)
    }

    /// A bound handle from the next slot, connecting that slot if needed
    /// (or reconnecting it, to move back to the first server).
    async fn handle(&self) -> Result<(usize, Ldap), BackendError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        let generation = self.failback.generation.load(Ordering::Acquire);
        if let Some(conn) = slot.as_mut() {
            let fail_back = conn.url_index > 0 && conn.generation < generation;
            if !conn.ldap.is_closed() && !fail_back {
                return Ok((i, conn.ldap.clone()));
            }
        }
        *slot = None;
        let (ldap, url_index) = self.connect().await?;
        *slot = Some(Conn {
            ldap: ldap.clone(),
            url_index,
            generation,
        });
        Ok((i, ldap))
    }

    /// While a connection uses a later server, probes the first one (a
    /// connect, bounded like every connect) every `failback_after / 5`
    /// (100 ms to 10 s); once it has answered for `failback_after` without
    /// a failure, connections move back to it. One probe at a time.
    fn start_failback_probe(&self) {
        if self.config.urls.len() < 2 || self.failback.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let failback = Arc::downgrade(&self.failback);
        let active_url = Arc::downgrade(&self.active_url);
        let (url, tls, starttls) = (
            self.config.urls[0].clone(),
            self.tls.clone(),
            self.config.starttls,
        );
        let (name, after) = (self.name.clone(), self.config.failback_after);
        tokio::spawn(async move {
            let back = crate::endpoint::steady_health(after, || {
                let (failback, url, tls) = (failback.clone(), url.clone(), tls.clone());
                let active_url = active_url.clone();
                async move {
                    // The backend is gone, or already back on the first
                    // server: stop probing.
                    failback.upgrade()?;
                    if active_url.upgrade()?.load(Ordering::Acquire) == 0 {
                        return None;
                    }
                    let mut settings = LdapConnSettings::new()
                        .set_conn_timeout(CONNECT_TIMEOUT)
                        .set_starttls(starttls);
                    if let Some(tls) = tls {
                        settings = settings.set_config(tls);
                    }
                    let connect = LdapConnAsync::with_settings(settings, &url);
                    Some(matches!(
                        tokio::time::timeout(CONNECT_TIMEOUT * 2, connect).await,
                        Ok(Ok(_))
                    ))
                }
            })
            .await;
            let Some(state) = failback.upgrade() else {
                return;
            };
            if back {
                if let Some(active) = active_url.upgrade() {
                    active.store(0, Ordering::Release);
                }
                state.generation.fetch_add(1, Ordering::AcqRel);
                tracing::info!(backend = %name, "First LDAP server healthy again; moving back to it.");
            }
            state.probing.store(false, Ordering::Release);
        });
    }

    async fn discard(&self, i: usize) {
        *self.slots[i].lock().await = None;
    }

    async fn search(&self, filter: &str) -> Result<Vec<SearchEntry>, BackendError> {
        let (i, mut ldap) = self.handle().await?;
        let result = ldap
            .with_search_options(SearchOptions::new().sizelimit(2))
            .with_timeout(OPERATION_TIMEOUT)
            .search(
                &self.config.base_dn,
                self.config.scope.into(),
                filter,
                self.attrs.to_vec(),
            )
            .await;
        let ldap3::SearchResult(entries, result) = match result {
            Ok(r) => r,
            Err(e) => {
                let (error, broken) = describe(&e, "search");
                if broken {
                    self.discard(i).await;
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
        let entries = self.search(&filter).await?;
        match entries.first() {
            None => Ok(None),
            Some(entry) => Ok(Some(record_from_entry(entry, &self.attrs)?)),
        }
    }

    /// Connects and binds (if not yet connected), then reads `base_dn`.
    async fn health(&self) -> Result<(), BackendError> {
        let (i, mut ldap) = self.handle().await?;
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
                    self.discard(i).await;
                }
                Err(error)
            }
        }
    }

    /// The server new connections go to.
    fn current_host(&self) -> Option<String> {
        let index = self.active_url.load(Ordering::Relaxed);
        let url = self.config.urls.get(index)?;
        Some(format!(
            "host {} of {}: {}",
            index + 1,
            self.config.urls.len(),
            url
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LdapConfig {
        serde_json::from_str(
            r#"{"urls":["ldap://127.0.0.1:1"],"base_dn":"ou=agents,dc=example,dc=org"}"#,
        )
        .unwrap()
    }

    fn problems(c: &LdapConfig) -> Vec<String> {
        let mut list = Vec::new();
        c.validate(&mut Problems::new("backend[0]", &mut list));
        list.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn escaping_keeps_filter_metacharacters_out_of_the_filter() {
        assert_eq!(ldap3::ldap_escape("*)(x=1"), r"\2a\29\28x=1");
        assert_eq!(
            render_filter(
                "(&(objectClass=device)(serialNumber={id}))",
                "{id}",
                "*)(x=1"
            ),
            r"(&(objectClass=device)(serialNumber=\2a\29\28x=1))"
        );
        assert_eq!(
            render_filter("(ipHostNumber={ip})", "{ip}", "fe80::1"),
            "(ipHostNumber=fe80::1)"
        );
        assert_eq!(render_filter("(a={id})", "{id}", "a\\b\0"), r"(a=a\5cb\00)");
    }

    #[test]
    fn defaults_follow_the_documented_mapping() {
        let c = config();
        assert_eq!(c.scope, LdapScope::Sub);
        assert_eq!(c.pool_size, 4);
        assert_eq!(c.attributes.id, "serialNumber");
        assert_eq!(c.attributes.key, "description");
        assert!(problems(&c).is_empty(), "{:?}", problems(&c));
        let unknown = serde_json::from_str::<LdapConfig>(
            r#"{"urls":["ldap://h"],"base_dn":"dc=x","attributes":{"secret":"x"}}"#,
        );
        assert!(unknown.is_err());
    }

    #[test]
    fn validation_reports_every_problem_with_its_key() {
        let mut c = config();
        c.urls = vec!["http://h".into(), "ldaps://u:pw@h".into()];
        c.starttls = true;
        c.bind_dn = Some("cn=keygate".into());
        c.base_dn = " ".into();
        c.pool_size = 0;
        c.filter_by_id = "(serialNumber={ip})".into();
        c.filter_by_ip = "(&(ipHostNumber={ip})".into();
        c.attributes.key = "desc ription".into();
        let p = problems(&c);
        let keys: Vec<&str> = p.iter().map(|m| m.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "backend[0].urls[0]",
                "backend[0].urls[1]",
                "backend[0].urls[1]",
                "backend[0].password_file",
                "backend[0].base_dn",
                "backend[0].pool_size",
                "backend[0].filter_by_id",
                "backend[0].filter_by_ip",
                "backend[0].attributes.key",
            ],
            "{p:?}"
        );
    }

    #[test]
    fn multi_valued_attributes_pass_only_when_all_values_are_equal() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(single_value(&v(&["k1", "k1"]), Field::Key).unwrap(), "k1");
        assert!(single_value(&v(&["k1", "k2"]), Field::Key).is_err());
        assert_eq!(
            single_value(&v(&[]), Field::Key).unwrap_err(),
            RecordError::Missing(Field::Key)
        );
    }

    #[tokio::test]
    async fn builds_while_the_directory_is_down_and_reports_an_outage() {
        let b = config().build("dir").await.unwrap();
        let q = keygate_core::Request::parse(b"id:001").unwrap();
        let e = b.lookup(&q).await.unwrap_err();
        assert_eq!(e.code(), keygate_core::ErrorCode::Unavailable, "{e}");
        assert!(b.health().await.is_err());
    }

    #[tokio::test]
    async fn unreadable_ca_file_is_a_build_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, "not a certificate\n").unwrap();
        c.ca_file = Some(pem);
        let e = c.build("dir").await.err().unwrap().to_string();
        assert!(e.contains("ca_file"), "{e}");
    }
}

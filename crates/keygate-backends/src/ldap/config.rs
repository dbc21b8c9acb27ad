//! `[[backend]] type = "ldap"`: its keys, their validation, and the TLS
//! trust store of `ca_file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ldap3::Scope;
use serde::Deserialize;

use crate::endpoint::{FieldDefaults, FieldNames};
use crate::error::{BuildError, FileError};
use crate::secret::PASSWORD_KEYS;
use crate::Problems;

crate::endpoint::network_config! {
    /// `[[backend]] type = "ldap"`: `url`/`urls` are `ldap://host[:port]`,
    /// `ldaps://host[:port]` (TLS) or `ldapi://<percent-encoded socket
    /// path>`, tried in order while a server is unreachable;
    /// `connect_timeout` defaults to `"2s"` (the TLS or StartTLS handshake
    /// may take as long again); the password is `bind_dn`'s.
    #[derive(Clone, Debug)]
    pub struct LdapConfig via RawLdapConfig("RawLdapConfig") {
        /// Upgrade `ldap://` connections with StartTLS (default false).
        #[serde(default)]
        pub starttls: bool,
        /// PEM file of the CA certificate(s) that sign the servers'
        /// certificates; without it the system's CA store is used.
        /// Certificates are always verified. Relative paths are resolved
        /// against the config file's directory.
        #[serde(default)]
        pub ca_file: Option<PathBuf>,
        /// DN to bind as; without it keygate searches anonymously. Needs a
        /// password (`password_file`, `password_env` or
        /// `password_credential`).
        #[serde(default)]
        pub bind_dn: Option<String>,
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
        /// Filter for `ip:` requests, with `{ip}` where the escaped address
        /// goes (default `(&(objectClass=ipHost)(ipHostNumber={ip}))`).
        #[serde(default = "default_filter_by_ip")]
        pub filter_by_ip: String,
        /// Filter that selects every agent, for listing (`keygate list`,
        /// `export`, `verify`, `sync`); no placeholder (default:
        /// `filter_by_id` with `{id}` replaced by `*`, e.g.
        /// `(&(objectClass=device)(serialNumber=*))`).
        #[serde(default)]
        pub filter_all: Option<String>,
        /// `[backend.attributes]`: which attribute holds each part of a
        /// record.
        #[serde(default)]
        pub attributes: LdapAttributes,
    }
}

/// The default attributes: `objectClass: device` plus `ipHost`.
#[derive(Debug)]
pub struct LdapAttributeDefaults;

impl FieldDefaults for LdapAttributeDefaults {
    const ID: &'static str = "serialNumber";
    const NAME: &'static str = "cn";
    const IP: &'static str = "ipHostNumber";
    const KEY: &'static str = "description";
}

/// `[backend.attributes]`: the attribute that holds each part of a record.
pub type LdapAttributes = FieldNames<LdapAttributeDefaults>;

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

fn default_pool_size() -> u32 {
    4
}
fn default_filter_by_id() -> String {
    "(&(objectClass=device)(serialNumber={id}))".into()
}
fn default_filter_by_ip() -> String {
    "(&(objectClass=ipHost)(ipHostNumber={ip}))".into()
}

/// The URL schemes of LDAP.
const SCHEMES: &[&str] = &["ldap", "ldaps", "ldapi"];

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
) -> bool {
    if template.trim().is_empty() {
        problems.push(key, "must not be empty");
        return false;
    }
    let placeholder = format!("{{{allowed}}}");
    if !template.contains(&placeholder) {
        problems.push(key, format!("must contain {placeholder}"));
        return false;
    }
    let rest = template.replace(&placeholder, "");
    if rest.contains('{') || rest.contains('}') {
        problems.push(
            key,
            format!("only {placeholder} may appear in braces (no other placeholders)"),
        );
        return false;
    }
    if ldap3::parse_filter(render_filter(template, &placeholder, sample)).is_err() {
        problems.push(key, "is not a valid LDAP filter (RFC 4515)");
        return false;
    }
    true
}

impl LdapConfig {
    /// `filter_all`, or its default: `filter_by_id` with `{id}` as `*`.
    pub fn filter_all(&self) -> String {
        match &self.filter_all {
            Some(filter) => filter.clone(),
            None => self.filter_by_id.replace("{id}", "*"),
        }
    }

    /// Makes `ca_file` and `password_file` absolute against `base`.
    pub(super) fn resolve_file_paths(&mut self, base: &Path) {
        self.hosts.resolve_paths(base);
        if let Some(p) = self.ca_file.as_mut() {
            crate::resolve(base, p);
        }
    }

    /// Reports every problem with its key.
    pub(super) fn check(&self, problems: &mut Problems<'_>) {
        self.hosts.validate(problems, SCHEMES, |_| true);
        for (key, url) in self.hosts.entries() {
            if self.starttls && (url.starts_with("ldaps://") || url.starts_with("ldapi://")) {
                problems.push(&key, "starttls applies to ldap:// URLs only");
            }
            if url.contains('@') {
                problems.push(
                    &key,
                    format!("must not carry credentials (use bind_dn and {PASSWORD_KEYS})"),
                );
            }
        }
        match (&self.bind_dn, self.hosts.password().is_set()) {
            (Some(dn), _) if dn.trim().is_empty() => problems.push(
                "bind_dn",
                "must not be empty (leave it out to bind anonymously)",
            ),
            (Some(_), false) => problems.push(
                "password_file",
                format!("a password ({PASSWORD_KEYS}) is required with bind_dn"),
            ),
            (None, true) => problems.push(
                "bind_dn",
                format!("is required with {}", self.hosts.password().key()),
            ),
            _ => {}
        }
        if self.base_dn.trim().is_empty() {
            problems.push("base_dn", "must not be empty");
        }
        if !(1..=64).contains(&self.pool_size) {
            problems.push("pool_size", "must be between 1 and 64");
        }
        let by_id_ok = validate_filter(problems, "filter_by_id", &self.filter_by_id, "id", "001");
        let _ = validate_filter(
            problems,
            "filter_by_ip",
            &self.filter_by_ip,
            "ip",
            "10.0.0.1",
        );
        match &self.filter_all {
            Some(filter) if filter.trim().is_empty() => {
                problems.push("filter_all", "must not be empty")
            }
            Some(filter) if filter.contains('{') || filter.contains('}') => {
                problems.push("filter_all", "takes no placeholder ({...})")
            }
            Some(filter) if ldap3::parse_filter(filter).is_err() => {
                problems.push("filter_all", "is not a valid LDAP filter (RFC 4515)")
            }
            None if by_id_ok && ldap3::parse_filter(self.filter_all()).is_err() => problems.push(
                "filter_all",
                "its default (filter_by_id with {id} as *) is not a valid LDAP filter; set it",
            ),
            _ => {}
        }
        self.attributes.validate(
            problems,
            "attributes",
            |name| {
                !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b';')
            },
            "must be an attribute name (letters, digits, '-')",
        );
    }
}

/// A rustls client config that trusts only the CAs in `path` (ring
/// provider). Errors name `ca_file` and the file.
pub(super) fn tls_config(path: &Path) -> Result<Arc<rustls::ClientConfig>, BuildError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let problem = |what: &str| BuildError::invalid("ca_file", format!("{} {what}", path.display()));
    let pem = std::fs::read(path).map_err(|e| FileError::new("ca_file", path, e))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
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

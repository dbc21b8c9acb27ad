//! How a network backend reaches its server, written once for all of them
//! (MySQL/MariaDB, PostgreSQL, Redis, LDAP).
//!
//! - [`HostList`]: the keys `url` or `urls`, `failback_after`,
//!   `connect_timeout` and the password source, flattened into each
//!   backend's config, validated with their key paths (`backend[1].urls[0]`);
//! - [`redact_url`]: the only way a URL is ever shown;
//! - [`Hosts`]: failing over between the hosts and back to the first;
//! - [`FieldNames`]: which field or attribute holds id, name, ip and key.
//!
//! A new network backend flattens a [`HostList`] into its config, builds a
//! [`Hosts`] of its own host type with [`HostList::build`], and runs every
//! operation through [`Hosts::run`].

mod fields;
mod hosts;
mod redact;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use fields::{FieldDefaults, FieldNames};
pub use hosts::{probe_interval, steady_health, Host, Hosts};
pub use redact::{has_inline_password, redact_url};

use crate::error::BuildError;
use crate::secret::PasswordSource;
use crate::Problems;

/// The keys every network backend has: where its servers are, how long a
/// connection may take, where its password comes from. A backend's config
/// declares them with [`network_config!`].
#[derive(Clone)]
pub struct HostList {
    /// `url`: one server's URL. Either `url` or `urls` is required. Never
    /// shown in messages or logs; `keygate backends` shows it redacted.
    pub url: Option<String>,
    /// `urls`: several servers instead of `url`, tried in order: a failed
    /// host is skipped, and the first host is used again after
    /// `failback_after` of health on it.
    pub urls: Vec<String>,
    /// `failback_after`: with `urls`, how long the first host must stay
    /// healthy before traffic goes back to it (default `"5m"`).
    pub failback_after: Duration,
    /// `connect_timeout`: the longest wait for one connection to one host;
    /// each backend has its own default ([`HostList::connect_timeout`]).
    pub connect_timeout: Option<Duration>,
    /// `password_file`: a file whose first line is the password; overrides
    /// a password in the URL, for every host. Relative paths are resolved
    /// against the config file's directory. At most one of
    /// `password_file`, `password_env` and `password_credential` is set.
    pub password_file: Option<PathBuf>,
    /// `password_env`: the name of an environment variable holding the
    /// password (read when the backend is built).
    pub password_env: Option<String>,
    /// `password_credential`: the name of a systemd credential
    /// (`LoadCredential=<name>:<file>` in the unit): the password is the
    /// first line of `$CREDENTIALS_DIRECTORY/<name>`.
    pub password_credential: Option<String>,
}

/// Declares a network backend's config struct: `hosts: HostList` (the keys
/// `url`, `urls`, `failback_after`, `connect_timeout`, `password_file`,
/// `password_env`, `password_credential`) plus the backend's own fields,
/// all read as one flat table through a hidden struct. serde's `flatten`
/// would do the same but lose the key path of a bad value
/// (`backend[0].urls[1]`) and the list of known keys.
macro_rules! network_config {
    (
        $(#[$attr:meta])*
        pub struct $name:ident $(<$g:ident: $bound:path>)? via $raw:ident($from:literal) {
            $( $(#[$fattr:meta])* pub $field:ident: $ty:ty, )*
        }
    ) => {
        $(#[$attr])*
        #[derive(serde::Deserialize)]
        #[serde(from = $from, bound = "")]
        pub struct $name $(<$g: $bound>)? {
            /// `url`/`urls`, `failback_after`, `connect_timeout` and the
            /// password source ([`HostList`](crate::endpoint::HostList)).
            pub hosts: $crate::endpoint::HostList,
            $( $(#[$fattr])* pub $field: $ty, )*
        }

        #[doc = concat!("The flat table [`", stringify!($name), "`] is read from.")]
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields, bound = "")]
        pub struct $raw $(<$g: $bound>)? {
            #[serde(default)]
            url: Option<String>,
            #[serde(default)]
            urls: Vec<String>,
            #[serde(default = "crate::endpoint::default_failback_after", deserialize_with = "crate::duration::deserialize")]
            failback_after: std::time::Duration,
            #[serde(default, deserialize_with = "crate::duration::option::deserialize")]
            connect_timeout: Option<std::time::Duration>,
            #[serde(default)]
            password_file: Option<std::path::PathBuf>,
            #[serde(default)]
            password_env: Option<String>,
            #[serde(default)]
            password_credential: Option<String>,
            $( $(#[$fattr])* $field: $ty, )*
        }

        impl $(<$g: $bound>)? From<$raw $(<$g>)?> for $name $(<$g>)? {
            fn from(raw: $raw $(<$g>)?) -> Self {
                Self {
                    hosts: $crate::endpoint::HostList {
                        url: raw.url,
                        urls: raw.urls,
                        failback_after: raw.failback_after,
                        connect_timeout: raw.connect_timeout,
                        password_file: raw.password_file,
                        password_env: raw.password_env,
                        password_credential: raw.password_credential,
                    },
                    $( $field: raw.$field, )*
                }
            }
        }
    };
}
pub(crate) use network_config;

pub(crate) fn default_failback_after() -> Duration {
    Duration::from_secs(300)
}

/// No host, every other key at its default.
impl Default for HostList {
    fn default() -> Self {
        Self {
            url: None,
            urls: Vec::new(),
            failback_after: default_failback_after(),
            connect_timeout: None,
            password_file: None,
            password_env: None,
            password_credential: None,
        }
    }
}

/// Shows every URL redacted.
impl fmt::Debug for HostList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostList")
            .field("url", &self.url.as_deref().map(redact_url))
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("failback_after", &self.failback_after)
            .field("connect_timeout", &self.connect_timeout)
            .field("password_file", &self.password_file)
            .field("password_env", &self.password_env)
            .field("password_credential", &self.password_credential)
            .finish()
    }
}

impl HostList {
    /// A list of the one host `url`, with every other key at its default.
    pub fn one(url: &str) -> Self {
        Self {
            url: Some(url.to_owned()),
            ..Self::default()
        }
    }

    /// The hosts in order with the key each comes from (`url`, or
    /// `urls[0]`, `urls[1]`, ...).
    pub fn entries(&self) -> Vec<(String, &str)> {
        match &self.url {
            Some(url) => vec![("url".to_owned(), url.as_str())],
            None => self
                .urls
                .iter()
                .enumerate()
                .map(|(i, u)| (format!("urls[{i}]"), u.as_str()))
                .collect(),
        }
    }

    /// `connect_timeout`, or the backend's own `default` when not set.
    pub fn connect_timeout(&self, default: Duration) -> Duration {
        self.connect_timeout.unwrap_or(default)
    }

    /// Whether a URL carries a password (in its user info or its query).
    pub fn has_inline_password(&self) -> bool {
        self.entries().iter().any(|(_, u)| has_inline_password(u))
    }

    /// Where the password comes from.
    pub fn password(&self) -> PasswordSource {
        PasswordSource {
            password_file: self.password_file.clone(),
            password_env: self.password_env.clone(),
            password_credential: self.password_credential.clone(),
        }
    }

    /// Makes `password_file` absolute against `base`.
    pub fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = self.password_file.as_mut() {
            crate::resolve(base, p);
        }
    }

    /// Reports every problem: `url` and `urls` both or neither set, a URL
    /// whose scheme is not one of `schemes` or that `parses` refuses, a
    /// zero duration, a bad password source. Messages never quote a URL.
    pub fn validate(
        &self,
        problems: &mut Problems<'_>,
        schemes: &[&str],
        parses: impl Fn(&str) -> bool,
    ) {
        match (&self.url, self.urls.is_empty()) {
            (Some(_), false) => problems.push("urls", "set either url or urls, not both"),
            (None, true) => problems.push("url", "is required (or urls, a list of hosts)"),
            _ => {
                for (key, url) in self.entries() {
                    validate_url(problems, &key, url, schemes, &parses);
                }
            }
        }
        if self.failback_after.is_zero() {
            problems.push("failback_after", "must be more than 0");
        }
        if self.connect_timeout.is_some_and(|t| t.is_zero()) {
            problems.push("connect_timeout", "must be greater than zero");
        }
        self.password().validate(problems);
    }

    /// Reads the password (once, for every host) and makes each host with
    /// `make(key, url, password)`.
    pub fn build<H: Host>(
        &self,
        backend: &str,
        mut make: impl FnMut(&str, &str, Option<&str>) -> Result<H, BuildError>,
    ) -> Result<Hosts<H>, BuildError> {
        let password = self.password().read()?;
        let mut hosts = Vec::new();
        for (key, url) in self.entries() {
            hosts.push(make(&key, url, password.as_ref().map(|p| p.as_str()))?);
        }
        if hosts.is_empty() {
            return Err(BuildError::invalid("url", "is required"));
        }
        Ok(Hosts::new(backend, hosts, self.failback_after))
    }
}

/// Checks one URL, reporting under `key`; never quotes the URL.
fn validate_url(
    problems: &mut Problems<'_>,
    key: &str,
    url: &str,
    schemes: &[&str],
    parses: &impl Fn(&str) -> bool,
) {
    let scheme = url.split_once("://").map(|(s, _)| s);
    if url.trim().is_empty() {
        problems.push(key, "must not be empty");
    } else if !scheme.is_some_and(|s| schemes.contains(&s)) {
        let expected = schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(", ");
        problems.push(
            key,
            format!(
                "must start with one of {expected} (the URL is not shown: it may hold a password)"
            ),
        );
    } else if !parses(url) {
        problems.push(
            key,
            "is not a valid connection URL (the URL is not shown: it may hold a password)",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(h: &HostList) -> Vec<String> {
        let mut list = Vec::new();
        h.validate(
            &mut Problems::new("backend[1]", &mut list),
            &["mysql", "mariadb"],
            |u| !u.contains("bad"),
        );
        list.into_iter().map(|p| p.to_string()).collect()
    }

    /// `url` or `urls`, each entry checked under its own key path, no
    /// message quoting a URL.
    #[test]
    fn every_url_is_checked_under_its_own_key() {
        let list = HostList {
            urls: [
                "mysql://kg@a/w",
                "redis://kg:hunter2@b",
                "",
                "mariadb://bad",
            ]
            .map(String::from)
            .to_vec(),
            ..HostList::default()
        };
        let p = problems(&list);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("backend[1].urls[1]: must start with one of mysql://, mariadb://"));
        assert!(p[1].starts_with("backend[1].urls[2]: must not be empty"));
        assert!(p[2].starts_with("backend[1].urls[3]: is not a valid connection URL"));
        assert!(!p.iter().any(|m| m.contains("hunter2")), "{p:?}");
        assert_eq!(list.failback_after, Duration::from_secs(300));

        let mut both = HostList::one("mysql://a/w");
        both.urls = vec!["mysql://b/w".into()];
        assert_eq!(
            problems(&both),
            ["backend[1].urls: set either url or urls, not both"]
        );
        let neither = HostList::default();
        assert!(problems(&neither)[0].starts_with("backend[1].url: is required"));
        let mut zero = HostList::one("mysql://a/w");
        zero.connect_timeout = Some(Duration::ZERO);
        assert_eq!(
            problems(&zero),
            ["backend[1].connect_timeout: must be greater than zero"]
        );
    }

    #[test]
    fn debug_output_redacts_every_url() {
        let list = HostList {
            urls: vec![
                "mysql://kg:hunter2@a/w".into(),
                "mysql://b/w?password=hunter2".into(),
            ],
            ..HostList::default()
        };
        let text = format!("{list:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("mysql://b/w?password=***"), "{text}");
        assert!(list.has_inline_password());
        assert!(!HostList::one("mysql://kg@a/w").has_inline_password());
    }
}

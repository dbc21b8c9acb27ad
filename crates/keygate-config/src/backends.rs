//! `[[backend]]` entries: the keys every backend shares, and the closed set
//! of backend types, each selected by `type` and configured by its own
//! struct in `keygate-backends`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use figment::value::{Dict, Value};
use keygate_backends::{BackendSpec, BuildError, Problem, Problems};
use keygate_core::chain::Action;
use keygate_core::{BreakerSettings, KeyBackend, TimeoutLayer};
use serde::Deserialize;

use crate::section::{deserialize_all, Section};

/// A backend's lookup deadline unless `timeout` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);

/// `on_not_found` / `on_error` as written.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ActionRaw {
    Continue,
    Stop,
}

impl From<ActionRaw> for Action {
    fn from(a: ActionRaw) -> Self {
        match a {
            ActionRaw::Continue => Action::Continue,
            ActionRaw::Stop => Action::Stop,
        }
    }
}

/// One validated `[[backend]]`.
#[derive(Clone, Debug)]
pub struct BackendEntry {
    /// Its unique name.
    pub name: String,
    /// Per-lookup deadline.
    pub timeout: Duration,
    /// Chain policy after a not-found.
    pub on_not_found: Action,
    /// Chain policy after an error.
    pub on_error: Action,
    /// Circuit breaker settings.
    pub breaker: BreakerSettings,
    /// The type and its own settings.
    pub kind: BackendKind,
    /// The table as written (environment overrides included), without
    /// `name`: whether a reload keeps the backend's cached answers.
    written: Written,
}

/// A `[[backend]]` table as written; its `Debug` shows nothing (it may hold
/// a password).
#[derive(Clone, PartialEq)]
struct Written(Dict);

impl std::fmt::Debug for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Written(..)")
    }
}

macro_rules! backend_kinds {
    ($( $feature:literal => $variant:ident($($ty:tt)+) ),+ $(,)?) => {
        /// Every backend type keygate knows, compiled in or not.
        pub const BACKEND_TYPES: &[&str] = &[$( $feature ),+];
        /// The backend types compiled into this build (its cargo features),
        /// in [`BACKEND_TYPES`] order; `keygate --version` prints them.
        pub const COMPILED_BACKEND_TYPES: &[&str] = &[$( #[cfg(feature = $feature)] $feature, )+];

        /// The backend types compiled into this build, each with its config.
        #[derive(Clone, Debug)]
        #[non_exhaustive]
        pub enum BackendKind {
            $(
                #[doc = concat!("`type = \"", $feature, "\"`")]
                #[cfg(feature = $feature)]
                $variant($($ty)+),
            )+
        }

        impl BackendKind {
            /// The `type` value.
            pub fn type_name(&self) -> &'static str {
                match *self {
                    $( #[cfg(feature = $feature)] Self::$variant(_) => $feature, )+
                }
            }

            fn validate(&self, problems: &mut Problems<'_>) {
                match self {
                    $( #[cfg(feature = $feature)] Self::$variant(c) => c.validate(problems), )+
                }
            }

            async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BuildError> {
                match self {
                    $( #[cfg(feature = $feature)] Self::$variant(c) => c.build(name).await, )+
                }
            }

            /// Valid but risky settings, under `prefix` (`backend[1]`).
            pub fn warnings(&self, prefix: &str, out: &mut Vec<Problem>) {
                let warnings = &mut Problems::new(prefix, out);
                match self {
                    $( #[cfg(feature = $feature)] Self::$variant(c) => c.warnings(warnings), )+
                }
            }

            /// Whether the backend's settings hold a password inline (in a URL).
            pub fn has_inline_password(&self) -> bool {
                match self {
                    $( #[cfg(feature = $feature)] Self::$variant(c) => c.has_inline_password(), )+
                }
            }

            fn parse(kind: &str, rest: Dict, base: &Path, prefix: &str, problems: &mut Vec<Problem>) -> Option<Self> {
                match kind {
                    $(
                        #[cfg(feature = $feature)]
                        $feature => parse_spec::<$($ty)+>(rest, base, prefix, problems).map(Self::$variant),
                        #[cfg(not(feature = $feature))]
                        $feature => {
                            let _ = (rest, base);
                            problems.push(Problem {
                                path: format!("{prefix}.type"),
                                message: format!(
                                    "backend type '{kind}' is not compiled into this keygate build (rebuild with cargo feature '{}')",
                                    $feature
                                ),
                            });
                            None
                        }
                    )+
                    other => {
                        problems.push(Problem {
                            path: format!("{prefix}.type"),
                            message: format!("unknown backend type '{other}'; expected one of: {}", BACKEND_TYPES.join(", ")),
                        });
                        None
                    }
                }
            }
        }
    };
}

backend_kinds! {
    "file" => File(keygate_backends::file::FileConfig),
    "sqlite" => Sqlite(keygate_backends::sqlite::SqliteConfig),
    "mysql" => Mysql(keygate_backends::mysql::MysqlConfig),
    "postgres" => Postgres(keygate_backends::postgres::PostgresConfig),
    "redis" => Redis(keygate_backends::redis::RedisConfig),
    "ldap" => Ldap(keygate_backends::ldap::LdapConfig),
    "exec" => Exec(keygate_backends::exec::ExecConfig),
    "http" => Http(keygate_backends::http::HttpConfig),
}

fn parse_spec<S: BackendSpec>(
    rest: Dict,
    base: &Path,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<S> {
    let mut spec: S = deserialize_all(rest, prefix, problems)?;
    spec.resolve_paths(base);
    Some(spec)
}

/// The key of `backend[i]` a problem path is about: `urls` for
/// `backend[0].urls[1]`, `fields` for `backend[0].fields.key`.
fn top_key<'a>(path: &'a str, prefix: &str) -> &'a str {
    let rest = path
        .strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('.'))
        .unwrap_or(path);
    rest.split(['.', '[']).next().unwrap_or(rest)
}

impl BackendEntry {
    /// Reads and validates `backend[index]`, adding every problem found.
    /// Returns the entry's name whenever it has one, valid or not, so
    /// duplicate names are reported even for entries with other problems.
    pub(crate) fn parse(
        index: usize,
        value: Value,
        base: &Path,
        problems: &mut Vec<Problem>,
    ) -> (Option<String>, Option<Self>) {
        let prefix = format!("backend[{index}]");
        let mut as_written = match &value {
            Value::Dict(_, table) => table.clone(),
            _ => Dict::new(),
        };
        as_written.remove("name");
        let mut s = Section::new(prefix.clone(), Some(value), problems);
        let name: Option<String> = s.required("name");
        let kind: Option<String> = s.required("type");
        let d = BreakerSettings::default();
        let timeout = s.duration("timeout", DEFAULT_TIMEOUT);
        let on_not_found = s.field("on_not_found", ActionRaw::Continue);
        let on_error = s.field("on_error", ActionRaw::Continue);
        let failures_to_trip: u32 = s.field("failures_to_trip", d.failures_to_trip);
        let max_retry_interval = s.duration("max_retry_interval", d.max_retry_interval);
        if name.as_ref().is_some_and(|n| {
            n.is_empty()
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }) {
            s.problem("name", "must be non-empty letters, digits, '-', '_' or '.'");
        }
        if timeout.is_zero() || timeout >= Duration::from_secs(60) {
            s.problem(
                "timeout",
                "must be more than 0 and less than 60s (Wazuh's own timeout)",
            );
        }
        if failures_to_trip == 0 {
            s.problem("failures_to_trip", "must be at least 1");
        }
        if max_retry_interval < Duration::from_secs(1) {
            s.problem("max_retry_interval", "must be at least 1s");
        }
        // The type's own keys: everything not read above.
        let rest = s.take_rest();
        let written: Vec<String> = rest.keys().cloned().collect();
        let before = s.problems().len();
        let kind = kind.and_then(|k| BackendKind::parse(&k, rest, base, &prefix, s.problems()));
        if let Some(kind) = &kind {
            let mut found = Vec::new();
            kind.validate(&mut Problems::new(prefix.clone(), &mut found));
            let unreadable: Vec<String> = s.problems()[before..]
                .iter()
                .map(|p| top_key(&p.path, &prefix).to_owned())
                .collect();
            // A key that could not be read (or is missing) took a default
            // or a stand-in; what the validation then says about it is a
            // consequence of the problem already reported, and so is what
            // it says about a key the file does not have once a key the
            // file has was unreadable (`url` when `urls` was). The rest is
            // reported: a missing key hides no other problem.
            let written_unreadable = unreadable.iter().any(|u| written.contains(u));
            found.retain(|p| {
                let key = top_key(&p.path, &prefix);
                !unreadable.iter().any(|u| u == key)
                    && (!written_unreadable || written.iter().any(|w| w == key))
            });
            s.problems().extend(found);
        }
        let ok = s.finish();
        let entry = match (name.clone(), kind) {
            (Some(name), Some(kind)) if ok => Some(Self {
                name,
                timeout,
                on_not_found: on_not_found.into(),
                on_error: on_error.into(),
                breaker: BreakerSettings {
                    failures_to_trip,
                    max_retry_interval,
                    ..d
                },
                kind,
                written: Written(as_written),
            }),
            _ => None,
        };
        (name, entry)
    }

    /// Builds the backend inside its timeout layer (without the breaker).
    /// The error names the key it comes from ([`BuildError::problem`]).
    pub async fn build(&self) -> Result<Arc<dyn KeyBackend>, BuildError> {
        let inner = self.kind.build(&self.name).await?;
        Ok(Arc::new(TimeoutLayer::new(inner, self.timeout)))
    }

    /// Whether two entries are written the same but for their names (what
    /// decides if the backend's cached answers survive a reload): any other
    /// key changed (a path, a URL, a query, a timeout, the chain policy) may
    /// change its answers.
    pub fn same_settings(&self, other: &Self) -> bool {
        self.written == other.written
    }
}

/// A warning for each backend that holds a password inline in a URL while
/// `config_file` is readable by users other than its owner and group:
/// `password_file`, `password_env` or `password_credential` keep it out of
/// the config. Names the backend, never the URL.
pub fn inline_password_warnings(entries: &[BackendEntry], config_file: &Path) -> Vec<Problem> {
    use std::os::unix::fs::PermissionsExt;
    let readable_by_others = std::fs::metadata(config_file)
        .map(|m| m.permissions().mode() & 0o004 != 0)
        .unwrap_or(false);
    if !readable_by_others {
        return Vec::new();
    }
    entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e.kind.has_inline_password())
        .map(|(i, e)| Problem {
            path: format!("backend[{i}]"),
            message: format!(
                "'{}' holds a password in a URL, and {} is readable by every user: move it to \
                 password_file, password_env or password_credential, or chmod o-r the file",
                e.name,
                config_file.display()
            ),
        })
        .collect()
}

//! `[[backend]]` entries: the keys every backend shares, and the closed set
//! of backend types, each selected by `type` and configured by its own
//! struct in `keygate-backends`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use figment::value::{Dict, Value};
use keygate_backends::{BackendSpec, Problem, Problems};
use keygate_core::chain::Action;
use keygate_core::{BackendError, BreakerSettings, KeyBackend, TimeoutLayer};
use serde::Deserialize;

use crate::load::figment_problems;

/// Every backend type keygate knows, compiled in or not.
pub const BACKEND_TYPES: &[&str] = &["file", "sqlite", "mysql", "postgres", "redis", "ldap"];

/// Keys every `[[backend]]` table has.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommonRaw {
    /// Unique name, used in messages, logs and metrics.
    name: String,
    /// Which backend: one of [`BACKEND_TYPES`].
    #[serde(rename = "type")]
    kind: String,
    /// Deadline for one lookup in this backend (default `"2s"`).
    #[serde(default = "default_timeout", with = "humantime_serde")]
    timeout: Duration,
    /// `continue` (default) asks the next backend after a not-found; `stop`
    /// ends the chain with 4.
    #[serde(default)]
    on_not_found: ActionRaw,
    /// `continue` (default) asks the next backend after an error; `stop`
    /// ends the chain with that error.
    #[serde(default)]
    on_error: ActionRaw,
    /// Consecutive outages after which the backend is skipped and probed in
    /// the background (default 3).
    #[serde(default = "default_failures_to_trip")]
    failures_to_trip: u32,
    /// Longest delay between two probes of a skipped backend (default
    /// `"60s"`).
    #[serde(default = "default_max_retry_interval", with = "humantime_serde")]
    max_retry_interval: Duration,
}

const COMMON_KEYS: &[&str] = &[
    "name",
    "type",
    "timeout",
    "on_not_found",
    "on_error",
    "failures_to_trip",
    "max_retry_interval",
];

fn default_failures_to_trip() -> u32 {
    3
}

fn default_max_retry_interval() -> Duration {
    Duration::from_secs(60)
}

#[derive(Debug, Default, Deserialize, Clone, Copy)]
#[serde(rename_all = "snake_case")]
enum ActionRaw {
    #[default]
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

fn default_timeout() -> Duration {
    Duration::from_secs(2)
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
}

macro_rules! backend_kinds {
    ($( $feature:literal => $variant:ident($($ty:tt)+) ),+ $(,)?) => {
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

            async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BackendError> {
                match self {
                    $( #[cfg(feature = $feature)] Self::$variant(c) => c.build(name).await, )+
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
}

fn parse_spec<S: BackendSpec>(
    rest: Dict,
    base: &Path,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<S> {
    match Value::from(rest).deserialize::<S>() {
        Ok(mut spec) => {
            spec.resolve_paths(base);
            Some(spec)
        }
        Err(e) => {
            problems.extend(figment_problems(prefix, e));
            None
        }
    }
}

impl BackendEntry {
    /// Parses and validates `backend[index]`, adding every problem found.
    pub(crate) fn parse(
        index: usize,
        value: Value,
        base: &Path,
        problems: &mut Vec<Problem>,
    ) -> Option<Self> {
        let prefix = format!("backend[{index}]");
        let Some(table) = value.into_dict() else {
            problems.push(Problem {
                path: prefix,
                message: "must be a table".into(),
            });
            return None;
        };
        let (common, rest): (Dict, Dict) = table
            .into_iter()
            .partition(|(k, _)| COMMON_KEYS.contains(&k.as_str()));
        let common = match Value::from(common).deserialize::<CommonRaw>() {
            Ok(c) => c,
            Err(e) => {
                problems.extend(figment_problems(&prefix, e));
                return None;
            }
        };
        let before = problems.len();
        let mut scope = Problems::new(prefix.clone(), problems);
        if common.name.is_empty()
            || !common
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            scope.push("name", "must be non-empty letters, digits, '-', '_' or '.'");
        }
        if common.timeout.is_zero() || common.timeout >= Duration::from_secs(60) {
            scope.push(
                "timeout",
                "must be more than 0 and less than 60s (Wazuh's own timeout)",
            );
        }
        if common.failures_to_trip == 0 {
            scope.push("failures_to_trip", "must be at least 1");
        }
        if common.max_retry_interval < Duration::from_secs(1) {
            scope.push("max_retry_interval", "must be at least 1s");
        }
        let kind = BackendKind::parse(&common.kind, rest, base, &prefix, problems)?;
        kind.validate(&mut Problems::new(prefix, problems));
        if problems.len() > before {
            return None;
        }
        Some(Self {
            name: common.name,
            timeout: common.timeout,
            on_not_found: common.on_not_found.into(),
            on_error: common.on_error.into(),
            breaker: BreakerSettings {
                failures_to_trip: common.failures_to_trip,
                max_retry_interval: common.max_retry_interval,
                ..BreakerSettings::default()
            },
            kind,
        })
    }

    /// Builds the backend inside its timeout layer (without the breaker).
    pub async fn build(&self) -> Result<Arc<dyn KeyBackend>, BackendError> {
        let inner = self.kind.build(&self.name).await?;
        Ok(Arc::new(TimeoutLayer::new(inner, self.timeout)))
    }

    /// Whether two entries name the same backend of the same type (what
    /// decides if cache entries survive a reload).
    pub fn same_backend(&self, other: &Self) -> bool {
        self.name == other.name && self.kind.type_name() == other.kind.type_name()
    }
}

//! Step one and two of loading: figment into raw sections, then validation
//! into [`Config`] with every problem and its key path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::value::Value;
use figment::Figment;
use keygate_backends::{Problem, Problems};
use serde::Deserialize;

use keygate_core::CacheSettings;

use crate::{BackendEntry, Config, LogConfig, ServerConfig};

/// Environment variables with this prefix override config keys; `__`
/// separates levels: `KEYGATE_SERVER__SOCKET=/run/k.sock`,
/// `KEYGATE_LOG__LEVEL=debug`. `KEYGATE_CONFIG` names the file instead.
pub const ENV_PREFIX: &str = "KEYGATE_";

/// Why a config could not be used: every problem found, each with its key
/// path.
#[derive(Debug, thiserror::Error)]
#[error("{}", render(.problems, .source_path.as_deref()))]
pub struct ConfigError {
    /// The file, if one was read.
    pub source_path: Option<PathBuf>,
    /// Every problem.
    pub problems: Vec<Problem>,
}

fn render(problems: &[Problem], path: Option<&Path>) -> String {
    let head = match path {
        Some(p) => format!(
            "invalid configuration in {} ({} problem(s)):",
            p.display(),
            problems.len()
        ),
        None => format!("invalid configuration ({} problem(s)):", problems.len()),
    };
    let mut out = head;
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// The file's top level; only these sections exist.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootRaw {
    server: Option<Value>,
    log: Option<Value>,
    cache: Option<Value>,
    backend: Option<Value>,
}

/// `[cache]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheRaw {
    /// Whether answers are cached at all (default true).
    #[serde(default = "default_true")]
    enabled: bool,
    /// Most entries kept, found and not-found together (default 100000).
    #[serde(default = "default_capacity")]
    capacity: u64,
    /// How long a found answer is served without asking (default `"5m"`).
    #[serde(default = "default_ttl", with = "humantime_serde")]
    ttl: Duration,
    /// How long a not-found answer is served without asking (default `"30s"`).
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    negative_ttl: Duration,
    /// How long past its expiry an entry may be served while every backend
    /// fails with an outage (default `"24h"`).
    #[serde(default = "default_stale_ttl", with = "humantime_serde")]
    stale_ttl: Duration,
    /// Fraction of ttl after which a hit also refreshes the entry in the
    /// background; 0 disables (default 0.75).
    #[serde(default = "default_refresh_ahead")]
    refresh_ahead: f64,
}

fn default_true() -> bool {
    true
}
fn default_capacity() -> u64 {
    100_000
}
fn default_ttl() -> Duration {
    Duration::from_secs(300)
}
fn default_negative_ttl() -> Duration {
    Duration::from_secs(30)
}
fn default_stale_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_refresh_ahead() -> f64 {
    0.75
}

impl Default for CacheRaw {
    fn default() -> Self {
        Self {
            enabled: true,
            capacity: default_capacity(),
            ttl: default_ttl(),
            negative_ttl: default_negative_ttl(),
            stale_ttl: default_stale_ttl(),
            refresh_ahead: default_refresh_ahead(),
        }
    }
}

fn validate_cache(raw: CacheRaw, problems: &mut Vec<Problem>) -> Option<Option<CacheSettings>> {
    let before = problems.len();
    let mut p = Problems::new("cache", problems);
    if raw.capacity == 0 {
        p.push(
            "capacity",
            "must be at least 1 (set enabled = false to turn the cache off)",
        );
    }
    if raw.ttl.is_zero() {
        p.push("ttl", "must be more than 0");
    }
    if !(0.0..1.0).contains(&raw.refresh_ahead) {
        p.push(
            "refresh_ahead",
            "must be at least 0 and less than 1 (0 disables)",
        );
    }
    if problems.len() > before {
        return None;
    }
    if !raw.enabled {
        return Some(None);
    }
    Some(Some(CacheSettings {
        capacity: raw.capacity,
        ttl: raw.ttl,
        negative_ttl: raw.negative_ttl,
        stale_ttl: raw.stale_ttl,
        refresh_ahead: raw.refresh_ahead,
        ..CacheSettings::default()
    }))
}

/// `[server]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServerRaw {
    /// Unix socket path Wazuh connects to (default
    /// `/run/keygate/keygate.sock`).
    #[serde(default = "default_socket")]
    socket: PathBuf,
    /// Socket file permissions, octal in a string (default `"0660"`).
    #[serde(default = "default_socket_mode")]
    socket_mode: String,
    /// Most connections served at once (default 1024).
    #[serde(default = "default_max_connections")]
    max_connections: usize,
    /// Time a client has to send its request (default `"5s"`).
    #[serde(default = "default_read_timeout", with = "humantime_serde")]
    read_timeout: Duration,
    /// Deadline for one whole answer, all backends included (default
    /// `"10s"`); must stay under Wazuh's 60 s client timeout.
    #[serde(default = "default_request_timeout", with = "humantime_serde")]
    request_timeout: Duration,
    /// Admin socket for `keygate cache|backends|reload` (mode 0600; default:
    /// the main socket's path plus `.ctl`).
    control_socket: Option<PathBuf>,
}

fn default_socket() -> PathBuf {
    PathBuf::from("/run/keygate/keygate.sock")
}
fn default_socket_mode() -> String {
    "0660".into()
}
fn default_max_connections() -> usize {
    1024
}
fn default_read_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_request_timeout() -> Duration {
    Duration::from_secs(10)
}

/// `[log]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LogRaw {
    /// `trace`, `debug`, `info` (default), `warn`, `error` or `off`.
    #[serde(default = "default_level")]
    level: String,
    /// Log file. Without it the daemon logs to stderr and exec mode logs
    /// nowhere (its stderr is Wazuh's stdout).
    file: Option<PathBuf>,
}

fn default_level() -> String {
    "info".into()
}

/// Loads `path` plus `KEYGATE_` environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let fail = |message: String| ConfigError {
        source_path: Some(path.to_owned()),
        problems: vec![Problem {
            path: "(file)".into(),
            message,
        }],
    };
    // figment silently skips a missing file; an operator wants to know.
    let text = std::fs::read_to_string(path)
        .map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let base = path.parent().map(Path::to_owned).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let figment = Figment::from(Toml::string(&text)).merge(env());
    from_figment(&figment, &base, Some(path.to_owned()))
}

/// Loads config text (no environment); relative paths are resolved
/// against `base`. For tests and tools.
pub fn load_str(text: &str, base: &Path) -> Result<Config, ConfigError> {
    from_figment(&Figment::from(Toml::string(text)), base, None)
}

/// The control socket named by the config at `path`, read leniently: only
/// `[server] socket` and `control_socket` need to be valid, so `keygate
/// reload` can reach the daemon (and show why a new config is refused)
/// even when the rest of the file is broken.
pub fn control_socket_of(path: &Path) -> PathBuf {
    #[derive(Deserialize, Default)]
    struct Lenient {
        socket: Option<PathBuf>,
        control_socket: Option<PathBuf>,
    }
    let base = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_owned);
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let raw: Lenient = Figment::from(Toml::string(&text))
        .merge(env())
        .extract_inner("server")
        .unwrap_or_default();
    let mut socket = raw.socket.unwrap_or_else(default_socket);
    keygate_backends::resolve(&base, &mut socket);
    let mut control = raw.control_socket.unwrap_or_else(|| {
        let mut s = socket.into_os_string();
        s.push(".ctl");
        PathBuf::from(s)
    });
    keygate_backends::resolve(&base, &mut control);
    control
}

fn env() -> Env {
    // Keys arrive with their original case (figment's keys are uncased).
    // KEYGATE_CONFIG names the file and KEYGATE_TEST_* belong to the test
    // suite: neither is a config key.
    Env::prefixed(ENV_PREFIX).split("__").filter(|k| {
        let k = k.as_str().to_ascii_lowercase();
        k != "config" && !k.starts_with("test_")
    })
}

fn from_figment(
    figment: &Figment,
    base: &Path,
    source: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let root = match figment.extract::<RootRaw>() {
        Ok(root) => root,
        Err(e) => {
            problems.extend(figment_problems("", e));
            return Err(ConfigError {
                source_path: source,
                problems,
            });
        }
    };
    let server = section::<ServerRaw>(root.server, "server", &mut problems);
    let log = section::<LogRaw>(root.log, "log", &mut problems);
    let cache = section::<CacheRaw>(root.cache, "cache", &mut problems);

    let server = server.and_then(|s| validate_server(s, base, &mut problems));
    let log = log.and_then(|l| validate_log(l, base, &mut problems));
    let cache = cache.and_then(|c| validate_cache(c, &mut problems));

    let mut backends = Vec::new();
    match root.backend {
        None => problems.push(Problem {
            path: "backend".into(),
            message: "at least one [[backend]] is needed".into(),
        }),
        Some(Value::Array(_, list)) if list.is_empty() => problems.push(Problem {
            path: "backend".into(),
            message: "at least one [[backend]] is needed".into(),
        }),
        Some(Value::Array(_, list)) => {
            for (i, value) in list.into_iter().enumerate() {
                if let Some(entry) = BackendEntry::parse(i, value, base, &mut problems) {
                    backends.push(entry);
                }
            }
        }
        Some(_) => problems.push(Problem {
            path: "backend".into(),
            message: "must be an array of tables ([[backend]])".into(),
        }),
    }
    for (i, b) in backends.iter().enumerate() {
        if backends[..i].iter().any(|o| o.name == b.name) {
            problems.push(Problem {
                path: "backend".into(),
                message: format!("backend name '{}' is used twice", b.name),
            });
        }
    }

    match (server, log, cache) {
        (Some(server), Some(log), Some(cache)) if problems.is_empty() => Ok(Config {
            source,
            server,
            log,
            backends,
            cache,
        }),
        _ => Err(ConfigError {
            source_path: source,
            problems,
        }),
    }
}

fn section<T: for<'de> Deserialize<'de> + Default>(
    value: Option<Value>,
    name: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let Some(value) = value else {
        return Some(T::default());
    };
    match value.deserialize::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            problems.extend(figment_problems(name, e));
            None
        }
    }
}

impl Default for ServerRaw {
    fn default() -> Self {
        Self {
            socket: default_socket(),
            socket_mode: default_socket_mode(),
            max_connections: default_max_connections(),
            read_timeout: default_read_timeout(),
            request_timeout: default_request_timeout(),
            control_socket: None,
        }
    }
}

impl Default for LogRaw {
    fn default() -> Self {
        Self {
            level: default_level(),
            file: None,
        }
    }
}

fn validate_server(
    raw: ServerRaw,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> Option<ServerConfig> {
    let before = problems.len();
    let mut p = Problems::new("server", problems);
    if raw.socket.as_os_str().is_empty() {
        p.push("socket", "must not be empty");
    }
    let mode = u32::from_str_radix(raw.socket_mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777);
    if mode.is_none() {
        p.push(
            "socket_mode",
            "must be octal permission bits such as \"0660\"",
        );
    }
    if !(1..=65_536).contains(&raw.max_connections) {
        p.push("max_connections", "must be between 1 and 65536");
    }
    if raw.read_timeout.is_zero() || raw.read_timeout >= Duration::from_secs(60) {
        p.push("read_timeout", "must be more than 0 and less than 60s");
    }
    if raw.request_timeout.is_zero() || raw.request_timeout >= Duration::from_secs(60) {
        p.push(
            "request_timeout",
            "must be more than 0 and less than 60s, Wazuh's default client timeout",
        );
    }
    if problems.len() > before {
        return None;
    }
    let mut socket = raw.socket;
    keygate_backends::resolve(base, &mut socket);
    let mut control_socket = raw.control_socket.unwrap_or_else(|| {
        let mut s = socket.clone().into_os_string();
        s.push(".ctl");
        PathBuf::from(s)
    });
    keygate_backends::resolve(base, &mut control_socket);
    Some(ServerConfig {
        socket,
        socket_mode: mode.unwrap_or(0o660),
        max_connections: raw.max_connections,
        read_timeout: raw.read_timeout,
        request_timeout: raw.request_timeout,
        control_socket,
    })
}

fn validate_log(raw: LogRaw, base: &Path, problems: &mut Vec<Problem>) -> Option<LogConfig> {
    if !["trace", "debug", "info", "warn", "error", "off"].contains(&raw.level.as_str()) {
        Problems::new("log", problems).push(
            "level",
            "must be one of trace, debug, info, warn, error, off",
        );
        return None;
    }
    let file = raw.file.map(|mut f| {
        keygate_backends::resolve(base, &mut f);
        f
    });
    Some(LogConfig {
        level: raw.level,
        file,
    })
}

fn push_once(parts: &mut Vec<String>, field: String) {
    if parts.last() != Some(&field) {
        parts.push(field);
    }
}

/// Turns figment's errors into problems with full key paths.
pub(crate) fn figment_problems(prefix: &str, error: figment::Error) -> Vec<Problem> {
    use figment::error::Kind;
    error
        .into_iter()
        .map(|e| {
            let mut parts: Vec<String> = Vec::new();
            if !prefix.is_empty() {
                parts.push(prefix.to_owned());
            }
            parts.extend(e.path.iter().cloned());
            let message = match &e.kind {
                Kind::UnknownField(field, expected) => {
                    push_once(&mut parts, field.clone());
                    format!("unknown key; expected one of: {}", expected.join(", "))
                }
                Kind::MissingField(field) => {
                    push_once(&mut parts, field.to_string());
                    "missing required key".to_owned()
                }
                Kind::DuplicateField(field) => {
                    push_once(&mut parts, field.to_string());
                    "key given twice".to_owned()
                }
                other => other.to_string(),
            };
            let path = if parts.is_empty() {
                "(top level)".to_owned()
            } else {
                parts.join(".")
            };
            Problem { path, message }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        load_str(text, Path::new("/etc/keygate"))
            .unwrap_err()
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect()
    }

    const MINIMAL: &str = "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n";

    #[test]
    fn minimal_config_gets_defaults_and_resolves_relative_paths() {
        let c = load_str(MINIMAL, Path::new("/etc/keygate")).unwrap();
        assert_eq!(c.server.socket, PathBuf::from("/run/keygate/keygate.sock"));
        assert_eq!(c.server.socket_mode, 0o660);
        assert_eq!(c.server.max_connections, 1024);
        assert_eq!(c.server.read_timeout, Duration::from_secs(5));
        assert_eq!(c.server.request_timeout, Duration::from_secs(10));
        assert_eq!(c.log.level, "info");
        assert_eq!(c.backends[0].timeout, Duration::from_secs(2));
        assert_eq!(
            c.server.control_socket,
            PathBuf::from("/run/keygate/keygate.sock.ctl")
        );
        let cache = c.cache.clone().unwrap();
        assert_eq!(
            (cache.capacity, cache.ttl, cache.negative_ttl),
            (100_000, Duration::from_secs(300), Duration::from_secs(30))
        );
        assert_eq!(
            (cache.stale_ttl, cache.refresh_ahead),
            (Duration::from_secs(86_400), 0.75)
        );
        assert_eq!(c.backends[0].breaker.failures_to_trip, 3);
        assert_eq!(
            c.backends[0].breaker.max_retry_interval,
            Duration::from_secs(60)
        );
        match &c.backends[0].kind {
            crate::BackendKind::File(f) => {
                assert_eq!(f.path, PathBuf::from("/etc/keygate/client.keys"))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_key_path() {
        let text = r#"
[server]
socket_mode = "999"
request_timeout = "60s"
max_conections = 5

[log]
level = "loud"

[[backend]]
name = "keys"
type = "file"
path = "client.keys"
fromat = "csv"

[[backend]]
name = "db"
type = "sqlite"
path = "a.db"
query_by_id = "SELECT id, name, ip, key FROM agent"
query_by_ip = "SELECT id, name, ip, key FROM agent WHERE ip = ?"
timeout = "fast"

[[backend]]
name = "x"
type = "oracle"
"#;
        let p = problems(text);
        let joined = p.join("\n");
        for want in [
            "server.max_conections: unknown key",
            "log.level: must be one of",
            "backend[0].fromat: unknown key",
            "backend[1].timeout:",
            "backend[2].type: unknown backend type 'oracle'",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
    }

    #[test]
    fn semantic_problems_are_all_listed() {
        let text = r#"
[server]
socket_mode = "999"
request_timeout = "60s"

[[backend]]
name = "db"
type = "sqlite"
path = "a.db"
query_by_id = "SELECT id, name, ip, key FROM agent"
query_by_ip = "SELECT id, name, ip, key FROM agent WHERE ip = ? OR ip = ?"
"#;
        let joined = problems(text).join("\n");
        for want in [
            "server.socket_mode: must be octal",
            "server.request_timeout: must be more than 0 and less than 60s",
            "backend[0].query_by_id: must have exactly one bind parameter (?), found 0",
            "backend[0].query_by_ip: must have exactly one bind parameter (?), found 2",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
    }

    #[test]
    fn missing_required_keys_and_duplicate_names_are_reported() {
        let text = "[[backend]]\nname = \"a\"\ntype = \"file\"\n[[backend]]\ntype = \"file\"\npath = \"x\"\n[[backend]]\nname = \"c\"\ntype = \"file\"\npath = \"x\"\n[[backend]]\nname = \"c\"\ntype = \"file\"\npath = \"y\"\n";
        let joined = problems(text).join("\n");
        for want in [
            "backend[0].path: missing required key",
            "backend[1].name: missing required key",
            "name 'c' is used twice",
        ] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
    }

    #[test]
    fn cache_section_is_validated_and_can_be_disabled() {
        let off = load_str(
            &format!("[cache]\nenabled = false\n{MINIMAL}"),
            Path::new("/"),
        )
        .unwrap();
        assert!(off.cache.is_none());
        let joined = problems(&format!(
            "[cache]\ncapacity = 0\nrefresh_ahead = 1.5\nttl = \"0s\"\n{MINIMAL}"
        ))
        .join("\n");
        for want in ["cache.capacity", "cache.refresh_ahead", "cache.ttl"] {
            assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
        }
    }

    #[test]
    fn no_backend_is_a_problem() {
        assert!(problems("[server]\n")
            .join("\n")
            .contains("backend: at least one [[backend]] is needed"));
        assert!(problems("[srever]\n").join("\n").contains("srever"));
    }

    #[test]
    fn missing_file_is_reported() {
        let e = load(Path::new("/nonexistent/keygate.toml")).unwrap_err();
        assert!(
            e.to_string()
                .contains("cannot read /nonexistent/keygate.toml"),
            "{e}"
        );
    }
}

//! Loading: the file and the environment into one table, then every section
//! read through [`Section`] into [`Config`], with every problem and its key
//! path.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Value};
use figment::{Profile, Provider};
use keygate_backends::Problem;

use crate::section::Section;
use crate::{env, server, BackendEntry, Config};

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
    let from_env = problems.iter().any(|p| p.path.starts_with(env::ENV_PREFIX));
    let mut out = match path {
        Some(p) => format!(
            "invalid configuration in {}{} ({} problem(s)):",
            p.display(),
            if from_env { " and the environment" } else { "" },
            problems.len()
        ),
        None => format!("invalid configuration ({} problem(s)):", problems.len()),
    };
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&p.to_string());
    }
    out
}

/// The top-level tables; anything else in the file is an unknown key.
const SECTIONS: &[&str] = &["server", "log", "cache", "metrics", "backend", "wazuh"];

/// Loads `path` plus `KEYGATE_` environment overrides.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let fail = |problems: Vec<Problem>| ConfigError {
        source_path: Some(path.to_owned()),
        problems,
    };
    // figment silently skips a missing file; an operator wants to know.
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(vec![Problem {
            path: "(file)".into(),
            message: format!("cannot read {}: {e}", path.display()),
        }])
    })?;
    let mut problems = Vec::new();
    let mut root = parse(&text).map_err(|p| fail(vec![p]))?;
    let origins = match env::overrides() {
        Ok(over) => env::apply(&mut root, over, &mut problems),
        Err(p) => {
            problems.push(p);
            env::Origins::default()
        }
    };
    from_root(root, &base_of(path), Some(path.to_owned()), problems).map_err(|mut e| {
        origins.name(&mut e.problems);
        e
    })
}

/// Loads config text (no environment); relative paths are resolved
/// against `base`. For tests and tools.
pub fn load_str(text: &str, base: &Path) -> Result<Config, ConfigError> {
    let root = parse(text).map_err(|p| ConfigError {
        source_path: None,
        problems: vec![p],
    })?;
    from_root(root, base, None, Vec::new())
}

/// The directory relative paths in the file at `path` are resolved against.
fn base_of(path: &Path) -> PathBuf {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), Path::to_owned)
}

/// The file's root table; a syntax error is one problem.
fn parse(text: &str) -> Result<Dict, Problem> {
    let mut data = Toml::string(text).data().map_err(|e| Problem {
        path: "(file)".into(),
        message: e.to_string(),
    })?;
    Ok(data.remove(&Profile::Default).unwrap_or_default())
}

/// The control socket named by the config at `path`, read leniently (see
/// [`sockets_of`]), so `keygate reload` can reach the daemon (and show why
/// a new config is refused) even when the rest of the file is broken.
pub fn control_socket_of(path: &Path) -> PathBuf {
    sockets_of(path).1
}

/// The Wazuh socket and the control socket named by the config at `path`
/// (environment overrides included), read leniently: only `[server]
/// socket` and `control_socket` are looked at, and anything missing or
/// unreadable takes its default. For reaching a running daemon before, or
/// without, validating the whole file.
pub fn sockets_of(path: &Path) -> (PathBuf, PathBuf) {
    sockets_in(lenient_server(path).as_ref(), path)
}

/// [`sockets_of`] from a `[server]` table already read.
fn sockets_in(server: Option<&Dict>, path: &Path) -> (PathBuf, PathBuf) {
    let get = |key: &str| {
        server
            .and_then(|s| s.get(key))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    };
    let base = base_of(path);
    let mut socket = get("socket").unwrap_or_else(|| server::WAZUH_SOCKET.into());
    keygate_backends::resolve(&base, &mut socket);
    let control = match get("control_socket") {
        Some(mut c) => {
            keygate_backends::resolve(&base, &mut c);
            c
        }
        None => server::control_socket_for(&socket),
    };
    (socket, control)
}

/// `[server]` of the file at `path` plus the environment, without any
/// validation; `None` when there is none (or the file cannot be read).
fn lenient_server(path: &Path) -> Option<Dict> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut root = parse(&text).unwrap_or_default();
    if let Ok(over) = env::overrides() {
        let _ = env::apply(&mut root, over, &mut Vec::new());
    }
    root.remove("server").and_then(Value::into_dict)
}

/// What exec mode needs to reach a running daemon: the socket and the
/// request deadline (see [`daemon_access`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonAccess {
    /// `[server] socket`, resolved against the config file's directory.
    pub socket: PathBuf,
    /// `[server] request_timeout`: the one-shot's whole deadline.
    pub request_timeout: Duration,
}

/// The Wazuh socket (as [`sockets_of`] reads it) and `[server]
/// request_timeout`, read leniently: exec mode asks a daemon running from
/// the last good config even while the file is being edited and broken
/// elsewhere. A timeout that cannot be read (or is out of range) takes its
/// default; the full validation happens on the direct path.
pub fn daemon_access(path: &Path) -> DaemonAccess {
    // Read once: exec mode runs this once per lookup.
    let server = lenient_server(path);
    let (socket, _) = sockets_in(server.as_ref(), path);
    let request_timeout = server
        .as_ref()
        .and_then(|s| s.get("request_timeout"))
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_duration(t).ok())
        .filter(|t| !t.is_zero() && *t < Duration::from_secs(60))
        .unwrap_or(crate::ServerConfig::default().request_timeout);
    DaemonAccess {
        socket,
        request_timeout,
    }
}

fn from_root(
    mut root: Dict,
    base: &Path,
    source: Option<PathBuf>,
    mut problems: Vec<Problem>,
) -> Result<Config, ConfigError> {
    for key in root.keys().filter(|k| !SECTIONS.contains(&k.as_str())) {
        problems.push(Problem {
            path: key.clone(),
            message: format!("unknown key; expected one of: {}", SECTIONS.join(", ")),
        });
    }
    let server = server::read(
        Section::new("server", root.remove("server"), &mut problems),
        base,
    );
    let log = crate::log::read(Section::new("log", root.remove("log"), &mut problems), base);
    let cache = crate::cache::read(Section::new("cache", root.remove("cache"), &mut problems));
    let metrics = crate::observe::read_metrics(root.remove("metrics"), &mut problems);
    let backends = read_backends(root.remove("backend"), base, &mut problems);
    let wazuh = crate::wazuh::read(root.remove("wazuh"), base, &mut problems);
    match (server, log, cache, metrics, wazuh) {
        (Some(server), Some(log), Some(cache), Some(metrics), Some(wazuh))
            if problems.is_empty() =>
        {
            Ok(Config {
                source,
                server,
                log,
                backends,
                cache,
                metrics,
                wazuh,
            })
        }
        _ => Err(ConfigError {
            source_path: source,
            problems,
        }),
    }
}

/// Reads every `[[backend]]` entry (each one fully, even after another
/// failed) and checks that the names are unique.
fn read_backends(
    value: Option<Value>,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> Vec<BackendEntry> {
    let list = match value {
        Some(Value::Array(_, list)) if !list.is_empty() => list,
        None | Some(Value::Array(..)) => {
            problems.push(Problem {
                path: "backend".into(),
                message: "at least one [[backend]] is needed".into(),
            });
            return Vec::new();
        }
        Some(_) => {
            problems.push(Problem {
                path: "backend".into(),
                message: "must be an array of tables ([[backend]])".into(),
            });
            return Vec::new();
        }
    };
    let mut names: Vec<String> = Vec::new();
    let mut backends = Vec::new();
    for (i, value) in list.into_iter().enumerate() {
        let (name, entry) = BackendEntry::parse(i, value, base, problems);
        if let Some(name) = name {
            if names.contains(&name) {
                problems.push(Problem {
                    path: format!("backend[{i}].name"),
                    message: format!("backend name '{name}' is used twice"),
                });
            }
            names.push(name);
        }
        backends.extend(entry);
    }
    backends
}

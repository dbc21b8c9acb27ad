//! keygate's configuration: TOML plus `KEYGATE_` environment overrides,
//! loaded in two steps.
//!
//! 1. figment reads the file and the environment into one table
//!    (`load`, `env`).
//! 2. Every table is read key by key through one `Section` reader, which
//!    records a bad value as a problem with its key path and goes on with
//!    the default, then reports the keys nobody read; so every problem of
//!    every table is reported at once (`backend[1].query_by_id: ...`). One
//!    module per table (`server`, `log`, `cache`, `backends`): a new key is
//!    one line there, a new table one module and one line in `load`.
//!
//! [`Config::build_stack`] then turns the backend list into the runtime
//! stack: each backend wrapped in its timeout, all of them in a chain. That
//! function is the one place the stack is assembled.

mod backends;
mod cache;
#[cfg(test)]
mod cache_tests;
mod env;
pub mod install;
mod load;
mod log;
mod observe;
#[cfg(test)]
mod readme_tests;
mod section;
mod server;
#[cfg(test)]
mod tests;
mod wazuh;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use backends::{BackendEntry, BackendKind, BACKEND_TYPES, COMPILED_BACKEND_TYPES};
pub use env::ENV_PREFIX;
pub use install::{Installation, Served, VersionSource};
pub use keygate_backends::Problem;
use keygate_core::chain::{Action, ChainPolicy};
use keygate_core::wazuh::VersionGuard;
use keygate_core::{Breaker, CacheLayer, CacheSettings, Chain, Kept, KeyBackend, LatencyLayer};
pub use load::{
    control_socket_of, daemon_access, load, load_str, sockets_of, ConfigError, DaemonAccess,
};
pub use log::AuditFailure;
pub use observe::{LogFormat, MetricsConfig};
pub use server::{control_socket_for, WAZUH_SOCKET};
pub use wazuh::{VersionSetting, WazuhApi, WazuhConfig, DEFAULT_BACKUP_DIR, DEFAULT_CLIENT_KEYS};

/// The default config file.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/keygate/keygate.toml";

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it was read from, if any.
    pub source: Option<PathBuf>,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[[backend]]`, in chain order.
    pub backends: Vec<BackendEntry>,
    /// `[cache]`; `None` when disabled.
    pub cache: Option<CacheSettings>,
    /// `[metrics]`; `None` when absent (nothing listens).
    pub metrics: Option<MetricsConfig>,
    /// `[wazuh]`: the manager keygate serves (every key at its default
    /// when the section is absent).
    pub wazuh: WazuhConfig,
}

/// `[server]`: the socket front end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Path of the Unix socket Wazuh connects to.
    pub socket: PathBuf,
    /// Permission bits of the socket file.
    pub socket_mode: u32,
    /// Most connections open at once, idle ones included; one more is
    /// closed at once and counted.
    pub max_connections: usize,
    /// Most lookups answered at once; more wait for a slot within
    /// `request_timeout`.
    pub max_lookups: usize,
    /// How long a connection may take to send its request.
    pub read_timeout: Duration,
    /// Deadline for answering one request through the whole chain.
    pub request_timeout: Duration,
    /// Admin socket (`keygate cache ...`, `backends`, `reload`), mode 0600.
    pub control_socket: PathBuf,
    /// Group of the socket file, by name or number; `None`: the daemon's.
    pub socket_group: Option<String>,
    /// User ids allowed to ask (SO_PEERCRED), on top of the file's mode;
    /// empty with `allowed_gids` empty: any peer the mode admits.
    pub allowed_uids: Vec<u32>,
    /// Group ids allowed to ask (the peer's effective gid).
    pub allowed_gids: Vec<u32>,
    /// Threads of the runtime that finishes what waits (database and
    /// network lookups, exec backends, the control socket, reloads);
    /// `None`: half the cores, at least one. Answers from memory are given
    /// on the accepting threads (one per core) whatever this is.
    pub worker_threads: Option<usize>,
}

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn`, `error` or `off`.
    pub level: String,
    /// Log file; without it the daemon logs to stderr and exec mode logs
    /// nowhere.
    pub file: Option<PathBuf>,
    /// `text` or `json` lines.
    pub format: LogFormat,
    /// Whether every answered request writes an audit event.
    pub audit: bool,
    /// Audit events go to this file as JSON lines; without it, into the log.
    pub audit_file: Option<PathBuf>,
    /// What an answer does when its audit event cannot be written.
    pub audit_failure: AuditFailure,
}

/// The assembled backend stack:
/// `VersionGuard(Cache(Chain[Breaker(Latency(Timeout(backend))), ...]))`,
/// the guard only for a Wazuh version that refuses something (before 4.4).
pub struct Stack {
    /// What the front ends ask: the cache (if enabled) around the chain.
    pub root: Arc<dyn KeyBackend>,
    /// Each backend, with its type and timeout layer, in chain order (what
    /// `keygate check` probes).
    pub backends: Vec<(String, &'static str, Arc<dyn KeyBackend>)>,
    /// Each backend's breaker, in chain order (`keygate backends`).
    pub breakers: Vec<Arc<Breaker>>,
    /// Each backend's latency statistics, in chain order (`keygate
    /// backends`, metrics).
    pub latencies: Vec<Arc<LatencyLayer>>,
    /// The cache layer, if enabled.
    pub cache: Option<Arc<CacheLayer>>,
}

impl Config {
    /// Builds every backend and assembles the stack: each backend inside
    /// its timeout and breaker, all of them in one chain, the cache around
    /// it, and around everything the guard that refuses what the Wazuh
    /// version served cannot take (`[wazuh] version`, read from the
    /// installation when `auto`). Fails only on problems a restart cannot fix (an unreadable
    /// password file); servers that are down are connected to later.
    ///
    /// `keep_cache`: the cache of the stack being replaced and what of it
    /// to keep ([`Config::cache_kept`]); nothing is kept when `[cache]`
    /// changed.
    pub async fn build_stack(
        &self,
        keep_cache: Option<(&CacheLayer, &Kept)>,
    ) -> Result<Stack, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut backends = Vec::new();
        let mut breakers = Vec::new();
        let mut latencies = Vec::new();
        let mut links = Vec::new();
        for (i, entry) in self.backends.iter().enumerate() {
            match entry.build().await {
                Ok(backend) => {
                    let latency = Arc::new(LatencyLayer::new(backend.clone()));
                    let breaker = Arc::new(Breaker::new(latency.clone(), entry.breaker.clone()));
                    let policy = ChainPolicy {
                        on_not_found: entry.on_not_found,
                        on_error: entry.on_error,
                    };
                    links.push((breaker.clone() as Arc<dyn KeyBackend>, policy));
                    breakers.push(breaker);
                    latencies.push(latency);
                    backends.push((entry.name.clone(), entry.kind.type_name(), backend));
                }
                Err(e) => problems.push(e.problem(&format!("backend[{i}]"))),
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let chain: Arc<dyn KeyBackend> = Arc::new(Chain::new("chain", links));
        let cache = self.cache.as_ref().map(|settings| match keep_cache {
            Some((old, kept)) if old.settings() == settings => {
                Arc::new(old.reloaded(chain.clone(), kept))
            }
            _ => Arc::new(CacheLayer::new(chain.clone(), settings.clone())),
        });
        let root = match &cache {
            Some(c) => c.clone() as Arc<dyn KeyBackend>,
            None => chain,
        };
        let root = VersionGuard::wrap(root, self.wazuh.served_version());
        Ok(Stack {
            root,
            backends,
            breakers,
            latencies,
            cache,
        })
    }

    /// Valid settings that will probably not work as meant, and a password
    /// inline in a config file every user can read (`keygate check`
    /// prints them, the daemon logs them at start and reload; they never
    /// make a config invalid).
    pub fn warnings(&self) -> Vec<Problem> {
        let mut warnings = self.server.warnings();
        for (i, backend) in self.backends.iter().enumerate() {
            backend
                .kind
                .warnings(&format!("backend[{i}]"), &mut warnings);
        }
        if let Some(path) = &self.source {
            warnings.extend(backends::inline_password_warnings(&self.backends, path));
        }
        warnings
    }

    /// What a reload from this config to `new` keeps of the cache: the
    /// found answers of the backends before the first one whose settings
    /// changed (any key but its name; a backend added, removed or moved
    /// counts), since that one may now answer what a later one did; and
    /// everything, not-found answers included, only when no backend
    /// changed.
    pub fn cache_kept(&self, new: &Config) -> Kept {
        let backends: Vec<(String, String)> = self
            .backends
            .iter()
            .zip(&new.backends)
            .take_while(|(old, new)| old.same_settings(new))
            .map(|(old, new)| (old.name.clone(), new.name.clone()))
            .collect();
        let everything =
            backends.len() == self.backends.len() && backends.len() == new.backends.len();
        Kept {
            backends,
            everything,
        }
    }
}

/// Re-exported so callers can name chain actions.
pub type ChainAction = Action;

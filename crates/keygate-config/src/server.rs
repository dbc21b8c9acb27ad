//! `[server]`: the socket front end Wazuh connects to and the admin socket.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keygate_backends::Problem;

use crate::section::Section;
use crate::ServerConfig;

/// Where the shipped Wazuh snippets (ossec.conf `<socket>`, the systemd
/// unit) expect the socket: the default of `[server] socket`.
pub const WAZUH_SOCKET: &str = "/run/keygate/keygate.sock";

impl Default for ServerConfig {
    fn default() -> Self {
        let socket = PathBuf::from(WAZUH_SOCKET);
        Self {
            control_socket: control_socket_for(&socket),
            socket,
            socket_mode: 0o660,
            max_connections: 4096,
            max_lookups: 256,
            socket_group: None,
            allowed_uids: Vec::new(),
            allowed_gids: Vec::new(),
            read_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(10),
            worker_threads: None,
        }
    }
}

/// The most `worker_threads` may be.
pub const MAX_WORKER_THREADS: usize = 1024;

/// The control socket's default: the main socket's path plus `.ctl`. The
/// one place that derives it.
pub fn control_socket_for(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".ctl");
    PathBuf::from(s)
}

impl ServerConfig {
    /// What is valid but will not work as the operator probably expects:
    /// a socket away from where the shipped Wazuh snippets point (Wazuh
    /// 4.4+ then silently falls back to exec for every request).
    pub fn warnings(&self) -> Vec<Problem> {
        let mut warnings = Vec::new();
        if self.socket != Path::new(WAZUH_SOCKET) {
            warnings.push(Problem {
                path: "server.socket".into(),
                message: format!(
                    "is {}, but the Wazuh snippets shipped with keygate (ossec.conf <socket>, \
                     the systemd unit) use {WAZUH_SOCKET}; point ossec.conf's <socket> here or \
                     Wazuh 4.4+ falls back to exec for every request",
                    self.socket.display()
                ),
            });
        }
        warnings
    }
}

/// Reads `[server]`; relative paths are resolved against `base`.
pub(crate) fn read(mut s: Section<'_>, base: &Path) -> Option<ServerConfig> {
    let d = ServerConfig::default();
    let mut socket: PathBuf = s.field("socket", d.socket);
    let socket_mode: String = s.field("socket_mode", format!("{:04o}", d.socket_mode));
    let max_connections: usize = s.field("max_connections", d.max_connections);
    let max_lookups: usize = s.field("max_lookups", d.max_lookups);
    let socket_group: Option<String> = s.optional("socket_group");
    let allowed_uids: Option<Vec<u32>> = s.optional("allowed_uids");
    let allowed_gids: Option<Vec<u32>> = s.optional("allowed_gids");
    let read_timeout = s.duration("read_timeout", d.read_timeout);
    let request_timeout = s.duration("request_timeout", d.request_timeout);
    let control_socket: Option<PathBuf> = s.optional("control_socket");
    let worker_threads: Option<usize> = s.optional("worker_threads");

    if socket.as_os_str().is_empty() {
        s.problem("socket", "must not be empty");
    }
    let mode = u32::from_str_radix(socket_mode.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o777);
    if mode.is_none() {
        s.problem(
            "socket_mode",
            "must be octal permission bits such as \"0660\"",
        );
    }
    if !(1..=65_536).contains(&max_connections) {
        s.problem("max_connections", "must be between 1 and 65536");
    }
    if !(1..=65_536).contains(&max_lookups) {
        s.problem("max_lookups", "must be between 1 and 65536");
    }
    if worker_threads.is_some_and(|n| !(1..=MAX_WORKER_THREADS).contains(&n)) {
        s.problem(
            "worker_threads",
            format!(
                "must be between 1 and {MAX_WORKER_THREADS} (remove the key for half the cores)"
            ),
        );
    }
    if socket_group.as_deref() == Some("") {
        s.problem("socket_group", "must be a group name or number");
    }
    for (key, list) in [
        ("allowed_uids", &allowed_uids),
        ("allowed_gids", &allowed_gids),
    ] {
        if list.as_ref().is_some_and(Vec::is_empty) {
            s.problem(
                key,
                "must list at least one id (remove the key to allow any peer)",
            );
        }
    }
    if read_timeout.is_zero() || read_timeout >= Duration::from_secs(60) {
        s.problem("read_timeout", "must be more than 0 and less than 60s");
    }
    if request_timeout.is_zero() || request_timeout >= Duration::from_secs(60) {
        s.problem(
            "request_timeout",
            "must be more than 0 and less than 60s, Wazuh's default client timeout",
        );
    }
    if !s.finish() {
        return None;
    }
    keygate_backends::resolve(base, &mut socket);
    let control_socket = match control_socket {
        Some(mut c) => {
            keygate_backends::resolve(base, &mut c);
            c
        }
        None => control_socket_for(&socket),
    };
    Some(ServerConfig {
        socket,
        socket_mode: mode.unwrap_or(d.socket_mode),
        max_connections,
        max_lookups,
        read_timeout,
        request_timeout,
        control_socket,
        socket_group,
        allowed_uids: allowed_uids.unwrap_or_default(),
        allowed_gids: allowed_gids.unwrap_or_default(),
        worker_threads,
    })
}

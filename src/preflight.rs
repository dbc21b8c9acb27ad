//! What `check`, `serve` and `reload` verify before a valid config is
//! used, written once so that `keygate check` reports everything the
//! daemon would refuse or warn about (`tests/check_parity.rs` runs a corpus
//! of bad configs and environments through all three).
//!
//! The steps, in the order each command takes them:
//! 1. `keygate_config::load`: the file and the `KEYGATE_` environment,
//!    every problem with its key path (an invalid config: 78);
//! 2. [`inspect`]: what the config asks of this machine, looked at without
//!    creating, locking or binding anything;
//!    - errors (`serve` does not start, `reload` refuses the config,
//!      `check` fails): a socket directory anyone may write to and not
//!      sticky, a `socket_group` that names no group, a log file that
//!      cannot be opened because its path is a directory;
//!    - warnings: the config's own ([`Config::warnings`]: a socket away
//!      from where the Wazuh blocks point, risky backend settings, a
//!      password inline in a config every user can read), a socket mode
//!      open to every user, an open-file limit below what
//!      `max_connections` needs;
//! 3. `Config::build_stack`: the backends built (password and CA files
//!    read); what they log meanwhile (an agent file's invalid lines) and
//!    when first asked (the first host of `urls` down) the daemon logs,
//!    and `check` prints as warnings (`check::collect`).
//!
//! The rules themselves live with what they protect (the socket's in
//! `keygate_server::socket`, the open-file limit's in
//! `keygate_server::fdlimit`); this module is where every command calls
//! them.

use std::path::Path;
use std::process::ExitCode;

use keygate_config::{Config, Problem};
use keygate_server::{fdlimit, socket};

/// Connections the control socket accepts at once (counted in the
/// open-file limit the daemon needs).
pub const CONTROL_CONNECTIONS: usize = 16;

/// What [`inspect`] found.
#[derive(Debug, Default)]
pub struct Findings {
    /// What stops the daemon from starting, each with its key path.
    pub errors: Vec<Problem>,
    /// What will probably not work as meant.
    pub warnings: Vec<Problem>,
}

/// Looks at what `config` asks of this machine (see the module doc).
/// Raises this process's soft open-file limit to the hard one, as the
/// daemon does, to tell whether `max_connections` fits.
pub fn inspect(config: &Config) -> Findings {
    let mut found = Findings {
        errors: Vec::new(),
        warnings: config.warnings(),
    };
    let server = &config.server;
    let dir_of = |path: &'_ Path| -> std::path::PathBuf {
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_owned()
    };
    let (dir, control_dir) = (dir_of(&server.socket), dir_of(&server.control_socket));
    let mut dirs = vec![("socket", dir.clone())];
    if control_dir != dir {
        dirs.push(("control_socket", control_dir));
    }
    for (key, dir) in dirs {
        // A missing directory is created by the daemon (and is then safe).
        if dir.exists() {
            if let Err(e) = socket::check_directory(&dir) {
                found.errors.push(problem(&format!("server.{key}"), e));
            }
        }
    }
    if let Some(group) = &server.socket_group {
        if let Err(e) = socket::resolve_group(group) {
            found.errors.push(problem("server.socket_group", e));
        }
    }
    if let Some(warning) = socket::mode_warning(server.socket_mode) {
        found.warnings.push(problem("server.socket_mode", warning));
    }
    let needed = (server.max_connections + CONTROL_CONNECTIONS) as u64 + fdlimit::RESERVED;
    if let (_, Some(warning)) = fdlimit::raise(needed) {
        found
            .warnings
            .push(problem("server.max_connections", warning));
    }
    for (key, file) in [
        ("file", &config.log.file),
        ("audit_file", &config.log.audit_file),
    ] {
        // Only a directory: whether the daemon's user may write the file
        // is not this user's to tell. Opening a directory fails at once and
        // creates nothing; the error is the one the daemon would print.
        let Some(file) = file.as_deref().filter(|f| f.is_dir()) else {
            continue;
        };
        if let Err(e) = std::fs::OpenOptions::new().append(true).open(file) {
            found.errors.push(problem(
                &format!("log.{key}"),
                format!("cannot open log file {}: {e}", file.display()),
            ));
        }
    }
    found
}

fn problem(path: &str, message: impl std::fmt::Display) -> Problem {
    Problem {
        path: path.to_owned(),
        message: message.to_string(),
    }
}

/// The daemon's start: [`inspect`], each warning logged; on an error, each
/// is logged and printed and the exit code returned (1: the machine, not
/// the config, is wrong).
pub fn before_serving(config: &Config) -> Result<(), ExitCode> {
    let found = inspect(config);
    log_warnings(&found.warnings);
    if found.errors.is_empty() {
        return Ok(());
    }
    for p in &found.errors {
        tracing::error!(problem = %p, "Cannot start.");
        crate::logging::journal::eprint_error(&p.to_string());
    }
    Err(crate::exit::Code::Failure.into())
}

/// A reload's reading of the config: loaded and validated, then
/// [`inspect`]ed, each warning logged; every problem, if any, refuses it
/// (the running config stays).
pub fn load_for_reload(path: &Path) -> Result<Config, Vec<String>> {
    let config = keygate_config::load(path).map_err(|e| {
        e.problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    })?;
    let found = inspect(&config);
    log_warnings(&found.warnings);
    if found.errors.is_empty() {
        Ok(config)
    } else {
        Err(found.errors.iter().map(ToString::to_string).collect())
    }
}

fn log_warnings(warnings: &[Problem]) {
    for p in warnings {
        tracing::warn!(problem = %p, "Configuration warning.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(text: &str, dir: &Path) -> Config {
        keygate_config::load_str(text, dir).unwrap()
    }

    /// A socket directory anyone may replace the socket in is an error for
    /// both sockets; a sticky one (like /tmp) is not; an unknown group is
    /// an error; a mode open to everyone a warning.
    #[test]
    fn socket_directory_group_and_mode_are_inspected() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let text = format!(
            "[server]\nsocket = \"{}/k.sock\"\nsocket_mode = \"0666\"\nsocket_group = \"no-such-group-kg\"\n\
             [[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"k\"\n",
            open.display()
        );
        let found = inspect(&config(&text, dir.path()));
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        assert_eq!(errors.len(), 2, "{errors:#?}");
        assert!(errors[0].starts_with("server.socket: ") && errors[0].contains("not sticky"));
        assert!(
            errors[1].contains("server.socket_group: ") && errors[1].contains("no-such-group-kg")
        );
        // The control socket elsewhere: its directory is checked on its own.
        let control = text.replace(
            "[[backend]]",
            &format!("control_socket = \"{}/k.ctl\"\n[[backend]]", open.display()),
        );
        let moved = control.replace(&format!("{}/k.sock", open.display()), "k.sock");
        let errors: Vec<String> = inspect(&config(&moved, dir.path()))
            .errors
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            errors[0].starts_with("server.control_socket: "),
            "{errors:#?}"
        );
        let warnings: Vec<String> = found.warnings.iter().map(ToString::to_string).collect();
        assert!(
            warnings
                .iter()
                .any(|w| w.starts_with("server.socket_mode: 0666 lets every local user")),
            "{warnings:#?}"
        );
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let sticky = text.replace("socket_group = \"no-such-group-kg\"\n", "");
        assert!(inspect(&config(&sticky, dir.path())).errors.is_empty());
    }

    /// A password inline in a URL is a warning only when every user can
    /// read the config file; the warning names the backend, not the URL.
    #[test]
    fn an_inline_password_in_a_world_readable_config_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keygate.toml");
        std::fs::write(
            &path,
            "[[backend]]\nname = \"inv\"\ntype = \"redis\"\nurl = \"redis://:S3cret-kg@127.0.0.1:1/0\"\n",
        )
        .unwrap();
        let inline = |mode| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let config = keygate_config::load(&path).unwrap();
            inspect(&config)
                .warnings
                .iter()
                .map(ToString::to_string)
                .filter(|w| w.starts_with("backend[0]: 'inv' holds a password"))
                .inspect(|w| assert!(!w.contains("S3cret-kg"), "{w}"))
                .count()
        };
        assert_eq!(inline(0o644), 1);
        assert_eq!(inline(0o640), 0);
    }
}

//! Test support shared by every keygate crate's tests (a dev-dependency
//! only; `publish = false`).
//!
//! - [`Fake`], [`q`], [`settle`] and [`logs_of`]: the scriptable in-memory
//!   backend and the small helpers layer tests need (defined in `keygate_core::testing`,
//!   compiled only through this crate's `testing` feature).
//! - [`redis::RedisServer`], [`slapd::Slapd`], [`sql::PrivateMariadb`],
//!   [`sql::PrivatePostgres`] and [`sql::TestDb`]: servers (or databases)
//!   of a test's own, loaded from the `docker/` fixtures that
//!   `docker/compose.yaml` loads too.
//! - [`daemon`]: the real `keygate` binary started on a config in a temp
//!   dir, spoken to the way Wazuh does (socket and exec mode).
//! - [`scrape`]: a daemon's `/metrics`, read as a scraper does.
//! - [`repo_root`], [`fixture`], [`free_port`]: where fixtures are, and a
//!   loopback port for a private server.
//! - [`tmpfs::Tmpfs`]: a small file system of a test's own, to fill.
//! - [`systemd`]: `systemd-analyze verify` and the offline exposure of a
//!   shipped unit.
//!
//! A missing server or binary fails the test loudly, naming what to install
//! (`bash tests/setup.sh`); nothing is ever skipped.
// Failing loudly is this crate's job: its helpers panic with a message
// instead of returning errors tests would only unwrap.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod cli;
pub mod daemon;
pub mod redis;
pub mod scrape;
pub mod slapd;
pub mod sql;
pub mod systemd;
pub mod tmpfs;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

pub use keygate_core::testing::{logs_of, q, settle, Fake};

/// The repository's root: the directory holding `docker/` and `config/`.
pub fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let root = root.canonicalize().unwrap_or(root);
    assert!(
        root.join("docker").is_dir(),
        "no docker/ in {} (the repository root)",
        root.display()
    );
    root
}

/// A fixture file or directory under the repository root, which must
/// exist (`fixture("docker/ldap/agents.ldif")`).
pub fn fixture(relative: &str) -> PathBuf {
    let path = repo_root().join(relative);
    assert!(path.exists(), "fixture {} does not exist", path.display());
    path
}

/// A loopback TCP port nothing listens on right now (free when asked; good
/// enough for tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The first of `candidates` that exists (absolute) or is on `PATH`.
/// Panics, naming the setup script, when none is installed.
pub fn find_binary(candidates: &[&str]) -> PathBuf {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() && p.exists() {
            return p.to_owned();
        }
        if !p.is_absolute() {
            if let Ok(path) = std::env::var("PATH") {
                for dir in std::env::split_paths(&path) {
                    if dir.join(c).exists() {
                        return dir.join(c);
                    }
                }
            }
        }
    }
    panic!(
        "none of {candidates:?} is installed: run `bash tests/setup.sh` (installs Debian's redis-server, slapd, ldap-utils and the SQL servers)"
    );
}

/// Waits until something listens on 127.0.0.1:`port`, failing with the
/// server's `log` if `child` exits first or 15 s pass.
pub fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status} before listening on {port}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 15s");
}

/// Kills and reaps a child process, if there is one.
fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

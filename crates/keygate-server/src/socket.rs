//! The socket file: bound safely, removed only if it is still ours.
//!
//! - A lock file beside the socket (`<socket>.lock`, held with `flock` for
//!   the daemon's life) makes "is another daemon here?" and "replace the
//!   stale file" one step: only the holder of the lock ever removes or
//!   creates the socket file, so two instances cannot race.
//! - An existing socket file is stale only when connecting to it is
//!   refused; any other failure (permission denied...) refuses to start,
//!   because a live daemon we cannot talk to is not ours to unplug.
//! - The file is created with its mode (umask set around `bind`), its group
//!   set and its mode finished without following symlinks; a path that is
//!   not a socket, a symlink included, is never touched.
//! - A directory anyone may write to (and not sticky) is refused: anyone
//!   could replace the socket there.

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, Flock, FlockArg, AT_FDCWD};
use nix::sys::stat::{fchmodat, umask, FchmodatFlags, Mode};
use nix::unistd::{fchownat, Gid, Group};
use tokio::net::UnixListener;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on this socket, or holds its lock.
    #[error("another process is already answering on {0} (or holds its .lock); refusing to replace its socket")]
    InUse(PathBuf),
    /// The path exists and is not a socket; it is never deleted.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// A socket file exists and we cannot tell whether a daemon is behind it.
    #[error("cannot tell whether a daemon answers on {path} ({source}); refusing to start rather than remove a socket that may be live (is it another user's?)")]
    Unknown {
        /// The socket path.
        path: PathBuf,
        /// Why connecting failed.
        source: std::io::Error,
    },
    /// The directory lets anyone replace the socket.
    #[error("{0} is writable by every user and not sticky: anyone could replace the socket; use a directory only keygate (and its group) can write, such as /run/keygate")]
    UnsafeDirectory(PathBuf),
    /// The lock file cannot be opened or locked (another user's daemon?).
    #[error("cannot take the lock {path} ({source}); is another user's keygate serving this socket? refusing to start")]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `socket_group` names no group.
    #[error("socket_group: no group named '{0}'")]
    NoSuchGroup(String),
    /// Anything else (permissions, a directory that cannot be made).
    #[error("cannot bind {path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// How the socket file is made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketOptions {
    /// Permission bits.
    pub mode: u32,
    /// Group owning the file, by name or number; `None`: the daemon's own.
    pub group: Option<String>,
}

impl SocketOptions {
    /// Permission bits `mode`, the daemon's own group.
    pub fn mode(mode: u32) -> Self {
        Self { mode, group: None }
    }
}

/// The socket file we bound, with its lock; the file is removed when this
/// is dropped, if it is still ours, and the lock released after.
pub struct SocketFile {
    path: PathBuf,
    ino: u64,
    _lock: Flock<File>,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

impl SocketFile {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still the one we bound.
    pub fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.ino() == self.ino && m.file_type().is_socket() {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    /// What a crashed daemon leaves: the lock released, the file kept.
    #[cfg(test)]
    fn crash(mut self) {
        self.ino = u64::MAX;
    }
}

/// The lock file beside `socket`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Refuses a directory anyone could replace the socket in: writable by
/// every user and not sticky. [`bind`] checks it; so does `keygate check`
/// (and the daemon, before it binds anything: `src/preflight.rs`).
pub fn check_directory(dir: &Path) -> Result<(), BindError> {
    let meta = std::fs::metadata(dir).map_err(|source| BindError::Io {
        path: dir.to_owned(),
        source,
    })?;
    if meta.mode() & 0o002 != 0 && meta.mode() & 0o1000 == 0 {
        return Err(BindError::UnsafeDirectory(dir.to_owned()));
    }
    Ok(())
}

/// The warning for a socket mode that lets every local user connect
/// (`0666`); `None` for a mode that does not. Not a refusal: the caller
/// logs it (`src/preflight.rs`, for `serve`, `reload` and `check` alike).
pub fn mode_warning(mode: u32) -> Option<String> {
    (mode & 0o007 != 0).then(|| {
        format!(
            "{mode:04o} lets every local user connect to the socket; use 0660 with \
             socket_group set to the group Wazuh runs as"
        )
    })
}

/// Binds `path` as `options` say. See the module doc for what is refused.
/// The parent directory is created if missing. A mode open to every user
/// is not refused; [`mode_warning`] says so, for the caller to log.
pub fn bind(path: &Path, options: &SocketOptions) -> Result<(UnixListener, SocketFile), BindError> {
    let io = |p: &Path| {
        let p = p.to_owned();
        move |source| BindError::Io { path: p, source }
    };
    let gid = options.group.as_deref().map(resolve_group).transpose()?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    check_directory(parent)?;
    let lock = lock(path)?;
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => return Err(BindError::NotASocket(path.to_owned())),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_owned())),
            Err(e) if is_stale(&e) => {
                tracing::info!(socket = %path.display(), "Replacing stale socket file.");
                match std::fs::remove_file(path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(path)(e)),
                    _ => {}
                }
            }
            Err(source) => {
                return Err(BindError::Unknown {
                    path: path.to_owned(),
                    source,
                })
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path)(e)),
    }
    let listener = bind_with_mode(path, options.mode, gid.is_some()).map_err(io(path))?;
    if let Some(gid) = gid {
        fchownat(
            AT_FDCWD,
            path,
            None,
            Some(gid),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| io(path)(e.into()))?;
    }
    // Clears what the umask could not (the owner's bits) and, with a
    // group, opens the group bits only now that the group is right.
    fchmodat(
        AT_FDCWD,
        path,
        Mode::from_bits_truncate(options.mode),
        FchmodatFlags::NoFollowSymlink,
    )
    .map_err(|e| io(path)(e.into()))?;
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket(path.to_owned()));
    }
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
            ino: meta.ino(),
            _lock: lock,
        },
    ))
}

/// Whether a failed connect means nobody is behind the file: refused, or
/// the file vanished meanwhile. Anything else is not ours to judge.
pub fn is_stale(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
    )
}

fn lock(socket: &Path) -> Result<Flock<File>, BindError> {
    let path = lock_path(socket);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(&path)
        .map_err(|source| BindError::Lock {
            path: path.clone(),
            source,
        })?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((_, Errno::EWOULDBLOCK)) => Err(BindError::InUse(socket.to_owned())),
        Err((_, e)) => Err(BindError::Lock {
            path,
            source: e.into(),
        }),
    }
}

/// umask is per process: binds made at once must not mix theirs.
static UMASK: Mutex<()> = Mutex::new(());

/// Binds with the umask set so the file never has more than `mode` for
/// group and others (and nothing for the group while it is not yet the
/// configured one). Owner bits are left to the final chmod, so files other
/// threads create meanwhile stay usable by their owner.
fn bind_with_mode(path: &Path, mode: u32, group_pending: bool) -> std::io::Result<UnixListener> {
    let _one = UMASK.lock().unwrap_or_else(PoisonError::into_inner);
    let mut mask = !mode & 0o077;
    if group_pending {
        mask |= 0o070;
    }
    let old = umask(Mode::from_bits_truncate(mask));
    let bound = UnixListener::bind(path);
    umask(old);
    bound
}

/// A group by name, or by number.
pub fn resolve_group(spec: &str) -> Result<Gid, BindError> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(Gid::from_raw(n));
    }
    match Group::from_name(spec) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(BindError::NoSuchGroup(spec.to_owned())),
        Err(e) => Err(BindError::Io {
            path: PathBuf::from("/etc/group"),
            source: e.into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_refused_regular_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.sock");

        let (first, first_file) = bind(&path, &SocketOptions::mode(0o660)).unwrap();
        assert_eq!(mode_of(&path), 0o660);
        assert!(matches!(
            bind(&path, &SocketOptions::mode(0o660)),
            Err(BindError::InUse(_))
        ));
        assert!(path.exists(), "a refused second bind leaves the socket");

        // The daemon dies: its listener and lock go, the file stays (stale).
        drop(first);
        first_file.crash();
        assert!(path.exists());
        let (_second, second_file) = bind(&path, &SocketOptions::mode(0o600)).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        drop(second_file);
        assert!(!path.exists());

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        assert!(matches!(
            bind(&file, &SocketOptions::mode(0o660)),
            Err(BindError::NotASocket(_))
        ));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }

    /// Only a refused connection or a missing file means "stale"; permission
    /// denied and the rest mean "cannot tell", which refuses to start.
    #[test]
    fn only_refused_or_missing_is_stale() {
        use std::io::{Error, ErrorKind};
        assert!(is_stale(&Error::from(ErrorKind::ConnectionRefused)));
        assert!(is_stale(&Error::from(ErrorKind::NotFound)));
        for kind in [
            ErrorKind::PermissionDenied,
            ErrorKind::TimedOut,
            ErrorKind::WouldBlock,
            ErrorKind::Other,
        ] {
            assert!(!is_stale(&Error::from(kind)), "{kind:?}");
        }
    }

    /// A symlink at the socket's path is refused and never followed: the
    /// file it points to keeps its mode and content.
    #[tokio::test]
    async fn a_symlink_at_the_path_is_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        std::fs::write(&target, "data").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        let link = dir.path().join("k.sock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(matches!(
            bind(&link, &SocketOptions::mode(0o666)),
            Err(BindError::NotASocket(_))
        ));
        assert_eq!(mode_of(&target), 0o600);
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "data");
        // The lock file is never a symlink either.
        let sock = dir.path().join("j.sock");
        std::os::unix::fs::symlink(&target, lock_path(&sock)).unwrap();
        assert!(matches!(
            bind(&sock, &SocketOptions::mode(0o666)),
            Err(BindError::Lock { .. })
        ));
        assert_eq!(mode_of(&target), 0o600);
    }

    /// The socket never has more than its mode: bound under a umask that
    /// grants nothing beyond it, even when the process umask is 0.
    #[tokio::test]
    async fn socket_is_created_with_its_mode_and_group() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sock");
        let (_l, _f) = bind(
            &path,
            &SocketOptions {
                mode: 0o660,
                group: Some("65534".into()),
            },
        )
        .unwrap();
        let m = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(m.permissions().mode() & 0o7777, 0o660);
        assert_eq!(m.gid(), 65534);
        assert!(matches!(
            bind(
                &dir.path().join("x.sock"),
                &SocketOptions {
                    mode: 0o660,
                    group: Some("no-such-group-here".into()),
                },
            ),
            Err(BindError::NoSuchGroup(_))
        ));
    }

    /// Right from `bind`, before any chmod, the file grants the group and
    /// others nothing beyond the mode (and nothing to the group while its
    /// group is still to be set). A plain bind under the usual umask 022
    /// would give 0755 for that moment.
    #[tokio::test]
    async fn the_file_is_born_with_no_more_than_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        for (i, (mode, group_pending, most)) in [
            (0o600, false, 0o000),
            (0o660, true, 0o000),
            (0o640, false, 0o040),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("{i}.sock"));
            let _l = bind_with_mode(&path, mode, group_pending).unwrap();
            let got = mode_of(&path) & 0o077;
            assert_eq!(got & !most, 0, "{path:?}: {got:o} beyond {most:o}");
        }
    }

    /// A directory anyone can write to is refused unless it is sticky.
    #[tokio::test]
    async fn world_writable_directory_is_refused_unless_sticky() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let path = dir.path().join("k.sock");
        assert!(matches!(
            bind(&path, &SocketOptions::mode(0o660)),
            Err(BindError::UnsafeDirectory(_))
        ));
        assert!(!path.exists());
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(bind(&path, &SocketOptions::mode(0o660)).is_ok());
    }
}

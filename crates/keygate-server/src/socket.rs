//! The socket file: bound safely, removed only if it is still ours.

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another process answers on this socket.
    #[error("another process is already answering on {0}; refusing to replace its socket")]
    InUse(PathBuf),
    /// The path exists and is not a socket; it is never deleted.
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    /// Anything else (permissions, missing directory that cannot be made).
    #[error("cannot bind {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// The socket file we bound; removed when this is dropped, if it is still
/// ours.
pub struct SocketFile {
    path: PathBuf,
    ino: u64,
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

    /// Removes the socket file if it is still the one we bound (a newer
    /// daemon may have replaced it).
    pub fn remove(&self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path) {
            if m.ino() == self.ino && m.file_type().is_socket() {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds `path` with permission bits `mode`. A stale socket file (nobody
/// answers) is replaced; a live one is refused; anything that is not a
/// socket is left alone and refused. The parent directory is created if
/// missing.
pub fn bind(path: &Path, mode: u32) -> Result<(UnixListener, SocketFile), BindError> {
    let io = |source| BindError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_socket() => return Err(BindError::NotASocket(path.to_owned())),
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(BindError::InUse(path.to_owned())),
            Err(_) => {
                tracing::info!(socket = %path.display(), "Replacing stale socket file.");
                std::fs::remove_file(path).map_err(io)?;
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    let ino = std::fs::symlink_metadata(path).map_err(io)?.ino();
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
            ino,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_live_one_refused_regular_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/k.sock");

        let (first, first_file) = bind(&path, 0o660).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o660
        );
        assert!(matches!(bind(&path, 0o660), Err(BindError::InUse(_))));

        drop(first); // listener closed, file left behind: stale
        std::mem::forget(first_file);
        let (_second, second_file) = bind(&path, 0o600).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        drop(second_file);
        assert!(!path.exists());

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        assert!(matches!(bind(&file, 0o660), Err(BindError::NotASocket(_))));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    }
}

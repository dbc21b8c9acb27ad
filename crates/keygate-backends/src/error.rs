//! What can stop a backend from being built: a problem a restart cannot fix,
//! reported with the key it comes from (`password_file`, `ca_file`, `urls[1]`)
//! and its cause. A build never fails because a server is down.

use std::path::{Path, PathBuf};

use crate::Problem;

/// A file a backend's config names could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{key}: cannot read {}: {}", path.display(), io_reason(source))]
pub struct FileError {
    /// The config key that names the file (`password_file`, `ca_file`).
    pub key: &'static str,
    /// The file, as configured (resolved against the config's directory).
    pub path: PathBuf,
    /// Why it could not be read.
    #[source]
    pub source: std::io::Error,
}

impl FileError {
    /// The error reading `path`, named by `key`.
    pub fn new(key: &'static str, path: &Path, source: std::io::Error) -> Self {
        Self {
            key,
            path: path.to_owned(),
            source,
        }
    }
}

/// Why a backend could not be built. Never carries a secret: files are
/// named by path, URLs by key, passwords never appear.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file named in the config cannot be read.
    #[error(transparent)]
    File(#[from] FileError),
    /// A setting is unusable (the file is read but its content is wrong, an
    /// environment variable is missing, a URL the driver refuses).
    #[error("{key}: {message}")]
    Invalid {
        /// The config key (`password_env`, `ca_file`, `urls[1]`).
        key: String,
        /// What is wrong, without any secret.
        message: String,
    },
}

impl BuildError {
    /// A problem with the setting `key`.
    pub fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }

    /// The key the error is about, relative to the backend's table.
    pub fn key(&self) -> &str {
        match self {
            Self::File(e) => e.key,
            Self::Invalid { key, .. } => key,
        }
    }

    /// The error as a config problem under `prefix` (`backend[1]`):
    /// `backend[1].password_file: cannot read /etc/keygate/x.pass: No such
    /// file or directory`.
    pub fn problem(&self, prefix: &str) -> Problem {
        let message = match self {
            Self::File(e) => format!("cannot read {}: {}", e.path.display(), io_reason(&e.source)),
            Self::Invalid { message, .. } => message.clone(),
        };
        Problem {
            path: format!("{prefix}.{}", self.key()),
            message,
        }
    }
}

/// An I/O error's reason as the system says it (`No such file or
/// directory`), without Rust's ` (os error 2)` suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The problem names the key and the file and gives the system's
    /// reason.
    #[test]
    fn a_missing_file_reads_like_the_system_says_it() {
        let path = Path::new("/nonexistent/keygate/x.pass");
        let e = BuildError::from(FileError::new(
            "password_file",
            path,
            std::fs::read(path).unwrap_err(),
        ));
        assert_eq!(
            e.problem("backend[1]").to_string(),
            "backend[1].password_file: cannot read /nonexistent/keygate/x.pass: \
             No such file or directory"
        );
        assert_eq!(
            e.to_string(),
            "password_file: cannot read /nonexistent/keygate/x.pass: No such file or directory"
        );
    }
}

//! keygate's storage backends, one file each, every one a
//! [`KeyBackend`](keygate_core::KeyBackend).
//!
//! Each backend's module holds its config struct (the raw, deserialized
//! `[[backend]]` table minus the keys every backend shares) and that struct
//! is the factory for the backend: [`BackendSpec::validate`] reports every
//! problem with its key path, [`BackendSpec::build`] returns the runtime
//! object. Builds never fail because a server is down: connections are made
//! lazily, so keygate starts and serves from its other backends.
//!
//! Heavy drivers sit behind cargo features (`file`, `sqlite`, `mysql`,
//! `postgres`, `redis`, `ldap`, `exec`, `http`), all on by default.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use keygate_core::KeyBackend;
use serde::de::DeserializeOwned;

pub use error::{BuildError, FileError};

pub mod duration;
#[cfg(feature = "_endpoint")]
pub mod endpoint;
pub mod error;
#[cfg(feature = "exec")]
pub mod exec;
#[cfg(feature = "file")]
pub mod file;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "ldap")]
pub mod ldap;
pub mod listing;
#[cfg(feature = "mysql")]
pub mod mysql;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod secret;
#[cfg(feature = "_sql")]
pub mod sql;
#[cfg(feature = "sqlite")]
pub mod sqlite;

/// One config problem: the key path (`backend[1].query_by_id`) and what is
/// wrong with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Where: a dotted key path with `[i]` for array entries.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Collects problems under one key prefix, so validation can report all of
/// them at once instead of stopping at the first.
#[derive(Debug)]
pub struct Problems<'a> {
    prefix: String,
    list: &'a mut Vec<Problem>,
}

impl<'a> Problems<'a> {
    /// Problems under `prefix` (e.g. `backend[1]`), appended to `list`.
    pub fn new(prefix: impl Into<String>, list: &'a mut Vec<Problem>) -> Self {
        Self {
            prefix: prefix.into(),
            list,
        }
    }

    /// Records a problem with the key `key` under this prefix.
    pub fn push(&mut self, key: &str, message: impl Into<String>) {
        let path = if key.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}.{key}", self.prefix)
        };
        self.list.push(Problem {
            path,
            message: message.into(),
        });
    }
}

/// A backend's own config section: everything in a `[[backend]]` table but
/// the keys all backends share (`name`, `type`, `timeout`, chain policy).
#[async_trait]
pub trait BackendSpec: DeserializeOwned + Send + Sync {
    /// The `type` value that selects this backend.
    const TYPE: &'static str;

    /// Makes relative paths absolute against `base` (the config file's
    /// directory).
    fn resolve_paths(&mut self, base: &Path) {
        let _ = base;
    }

    /// Checks the section without touching the network or the disk and
    /// reports every problem.
    fn validate(&self, problems: &mut Problems<'_>);

    /// Whether the section holds a password inline (in a URL), so that
    /// keygate warns when the config file is readable by others.
    fn has_inline_password(&self) -> bool {
        false
    }

    /// Settings that are valid but risky (`insecure = true`), each with
    /// its key: `keygate check` prints them, they never make a config
    /// invalid.
    fn warnings(&self, warnings: &mut Problems<'_>) {
        let _ = warnings;
    }

    /// Builds the backend. Fails only on problems a restart cannot fix
    /// (e.g. an unreadable password file), each with the key it comes
    /// from; an unreachable server is not one of them.
    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BuildError>;
}

/// Resolves `path` against `base` unless it is absolute.
pub fn resolve(base: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

//! keygate's client for a Wazuh manager's REST API (port 55000), used by
//! `keygate sync` to make the manager's agent registry equal to the store.
//!
//! Wazuh 5.0 removed key polling; the API's `POST /agents/insert` stays in
//! 4.x and 5.0 alike, so pushing is the way a store reaches the manager.
//! - [`api`]: requests and responses as the published API specification
//!   names them;
//! - `http` (private): TLS, login, retries, concurrency;
//! - [`Wazuh`]: the typed calls keygate makes;
//! - [`sync`]: the plan (insert, replace, delete) and its application;
//! - [`ossec_conf`]: what a manager's ossec.conf says about key requests
//!   (read by `keygate check`).

pub mod api;
mod client;
mod http;
pub mod ossec_conf;
pub mod sync;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{KeyLine, Wazuh};
use zeroize::Zeroizing;

/// How to reach the API.
#[derive(Clone)]
pub struct Settings {
    /// Base URL, `https://manager:55000`.
    pub url: String,
    /// API user (needs agent:create, agent:read, agent:delete).
    pub user: String,
    /// Its password.
    pub password: Zeroizing<String>,
    /// Extra CA certificates (PEM) to trust besides the system's.
    pub ca_file: Option<PathBuf>,
    /// Skip certificate verification (the caller warns about it).
    pub insecure: bool,
    /// Most requests in flight at once.
    pub concurrency: usize,
    /// Deadline of one HTTP request.
    pub timeout: Duration,
    /// Retries on HTTP 429, 5xx and connection failures.
    pub retry: Retry,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.url)
            .field("user", &self.user)
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("concurrency", &self.concurrency)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Bounded retries with exponential backoff (`base`, doubled each time, at
/// most `max`; a `Retry-After` header is honoured up to `max`).
#[derive(Clone, Debug)]
pub struct Retry {
    /// Attempts in all, the first included.
    pub attempts: u32,
    /// First wait.
    pub base: Duration,
    /// Longest wait.
    pub max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
        }
    }
}

/// Why a call failed. Texts never carry the password, the token or a key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client could not be set up (bad URL, unreadable CA file).
    #[error("{0}")]
    Setup(String),
    /// The API refused the user's credentials.
    #[error("the Wazuh API refused the credentials of user '{user}' ({detail}); check [wazuh] user and its password (password_file, password_env or password_credential)")]
    Auth {
        /// The user.
        user: String,
        /// HTTP status and the API's explanation.
        detail: String,
    },
    /// The API could not be reached or the connection failed.
    #[error("{call}: {reason}")]
    Transport {
        /// `METHOD /path`.
        call: String,
        /// Why.
        reason: String,
    },
    /// The API answered with an error status.
    #[error("{call}: HTTP {status}{detail}")]
    Api {
        /// `METHOD /path`.
        call: String,
        /// The HTTP status.
        status: u16,
        /// `: title: detail` from the body, or empty.
        detail: String,
        /// Wazuh's error code, if given.
        code: Option<i64>,
    },
    /// The answer was not what the specification describes.
    #[error("{call}: unexpected answer: {reason}")]
    Decode {
        /// `METHOD /path`.
        call: String,
        /// Why it could not be read.
        reason: String,
    },
}

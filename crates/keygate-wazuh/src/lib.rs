//! keygate's client for a Wazuh manager's REST API (port 55000), used by
//! `keygate sync` to make the manager's agent registry equal to the store.
//!
//! Wazuh 5.0 removed key polling; the API's `POST /agents/insert` stays in
//! 4.x and 5.0 alike, so pushing is the way a store reaches the manager.
//! - [`api`]: requests and responses as the published API specification
//!   names them;
//! - `http` (private): TLS, login, retries, concurrency, no redirects;
//! - `pace` (private): every call but authentication spaced evenly, inside
//!   the API's per-minute budget;
//! - [`Wazuh`]: the typed calls keygate makes;
//! - [`sync`]: the plan (delete, replace, insert) from one snapshot of the
//!   registry, its guards, the backup, and its application;
//! - [`ossec_conf`]: what a manager's ossec.conf says about key requests
//!   (read by `keygate check`).

pub mod api;
mod client;
mod http;
pub mod ossec_conf;
mod pace;
pub mod sync;

use std::path::PathBuf;
use std::time::Duration;

pub use client::{KeyLine, Registered, Registry, Stats, Wazuh, PAGE};
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
    /// Calls a minute, authentication excepted, spaced evenly
    /// (`[wazuh] max_requests_per_minute`).
    pub max_requests_per_minute: u32,
}

impl Settings {
    /// The time between two calls at the configured pace.
    pub fn pace(&self) -> Duration {
        Duration::from_secs(60) / self.max_requests_per_minute.max(1)
    }
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
            .field("max_requests_per_minute", &self.max_requests_per_minute)
            .finish_non_exhaustive()
    }
}

/// Bounded retries with exponential backoff (`base`, doubled each time, at
/// most `max`). HTTP 429 has its own, longer budget: the API refuses until
/// its minute ends, so a `Retry-After` header is honoured up to
/// `throttled_max` and without one the backoff grows to it, over
/// `throttled_attempts` attempts.
#[derive(Clone, Debug)]
pub struct Retry {
    /// Attempts in all, the first included (5xx, connection failures).
    pub attempts: u32,
    /// First wait.
    pub base: Duration,
    /// Longest wait (5xx, connection failures).
    pub max: Duration,
    /// Attempts in all for HTTP 429.
    pub throttled_attempts: u32,
    /// Longest wait after an HTTP 429.
    pub throttled_max: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            attempts: 6,
            base: Duration::from_millis(250),
            max: Duration::from_secs(10),
            // 0.25 + 0.5 + ... + 60 s: more than two of the API's minutes.
            throttled_attempts: 11,
            throttled_max: Duration::from_secs(60),
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
    /// The API answered with a redirect, which keygate never follows: no
    /// endpoint of the API redirects, and following one would send the
    /// request (an agent key, the token) to a host nobody configured.
    #[error("{call}: the API answered HTTP {status}, a redirect to {location}; keygate never follows redirects and sent nothing there: point [wazuh] url at the API itself")]
    Redirect {
        /// `METHOD /path`.
        call: String,
        /// The HTTP status (301, 302, 303, 307, 308).
        status: u16,
        /// The `Location`'s host and port (`(none)` without one).
        location: String,
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

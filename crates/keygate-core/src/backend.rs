//! The one trait every store and every layer implements.
//!
//! The result type says what happened and so what the caller does:
//! `Ok(Some(_))` is an answer; `Ok(None)` is a definite "not here" (cacheable,
//! try the next backend); an error is either a transport failure (try the
//! next backend, serve a stale answer) or a bad record (never forward it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::stream::{self, BoxStream, StreamExt};

use crate::{AgentRecord, ErrorCode, Query, RecordError};

/// One entry of a backend's full listing ([`KeyBackend::list`]).
#[derive(Clone, Debug)]
pub enum Listed {
    /// A stored agent that passed the same validation as a lookup.
    Record(AgentRecord),
    /// A stored entry that failed validation. It is reported, never emitted
    /// as a record. `at` says where it is (`line 12`, `row id=007`,
    /// `cn=web-01,ou=agents,...`) and never carries a key; `reason` is the
    /// validation error.
    Invalid {
        /// Where the entry is, in the backend's own terms.
        at: String,
        /// Why it was refused.
        reason: String,
    },
}

/// The stream [`KeyBackend::list`] returns: entries one by one, so a million
/// agents never sit in memory twice.
///
/// A stream that ends without an `Err` item is the whole store: callers
/// (`sync --prune` among them) treat what it lacks as absent. So a listing
/// that cannot be complete (a transport failure, a server's size limit, a
/// paging anomaly, a file that changed while it was read) yields an `Err`
/// item saying why, and the stream ends after it; it never just ends early.
pub type ListStream<'a> = BoxStream<'a, Result<Listed, BackendError>>;

/// A source of agent registrations, or a layer around one.
#[async_trait]
pub trait KeyBackend: Send + Sync + 'static {
    /// The backend's configured name, used in messages and logs.
    fn name(&self) -> &str;

    /// Looks one agent up. Implementations validate what they return: only
    /// an [`AgentRecord`] can be returned, and building one validates it.
    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError>;

    /// Checks that the backend can answer (reachable, data loaded). Used by
    /// `keygate check` and by probes; it must not be slower than a lookup.
    async fn health(&self) -> Result<(), BackendError>;

    /// For a backend with several hosts, the one it is using now, for
    /// `keygate backends` (never with a password). `None` otherwise.
    fn current_host(&self) -> Option<String> {
        None
    }

    /// A number that changes whenever the backend's data changed without a
    /// lookup saying so: an in-memory store re-read from its file. A cached
    /// not-found answer is fresh only while this is the number it was
    /// looked up under. A backend takes each new number from
    /// [`next_data_version`], so a chain, which gives the largest of its
    /// backends', changes whenever one of them does. `0` (the default) for
    /// backends that read their store at every lookup; layers forward it.
    fn data_version(&self) -> u64 {
        0
    }

    /// Lists every agent the backend holds (for `keygate list`, `export`,
    /// `verify` and `sync`). The default says the backend cannot list;
    /// layers forward to what they wrap, without their per-lookup deadline.
    fn list(&self) -> ListStream<'_> {
        let message = format!("backend '{}' cannot list its agents", self.name());
        stream::once(async move { Err(BackendError::Internal(message)) }).boxed()
    }
}

#[async_trait]
impl<T: KeyBackend + ?Sized> KeyBackend for Arc<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        (**self).lookup(query).await
    }
    async fn health(&self) -> Result<(), BackendError> {
        (**self).health().await
    }
    fn current_host(&self) -> Option<String> {
        (**self).current_host()
    }
    fn data_version(&self) -> u64 {
        (**self).data_version()
    }
    fn list(&self) -> ListStream<'_> {
        (**self).list()
    }
}

/// A new [`KeyBackend::data_version`]: larger than every one given before
/// in this process.
pub fn next_data_version() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Why a backend could not answer.
///
/// Texts never contain a key, a password or a connection URL: backends
/// build them from their own words and the driver's error *kind*, not from
/// connection strings.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    /// The store could not be reached or failed while answering. The caller
    /// tries the next backend and may serve a stale answer. (Code 2.)
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The lookup did not finish in time. Handled like `Unavailable`. (Code 2.)
    #[error("timed out after {}", humanize(*.0))]
    Timeout(Duration),
    /// The store answered with a record that must not be forwarded. (Code 5.)
    #[error("invalid record: {0}")]
    InvalidRecord(#[from] RecordError),
    /// The store answered with more than one record; handing out either
    /// could give an agent the wrong key. (Code 5.)
    #[error("ambiguous: more than one record matches")]
    Ambiguous,
    /// Misconfiguration or a bug on our side, e.g. a query that returns the
    /// wrong number of columns. (Code 6.)
    #[error("internal error: {0}")]
    Internal(String),
    /// The store refused keygate's login (a wrong user or password, an
    /// expired account) or its access to the agents: a configuration
    /// problem, answered 6 like [`Internal`](Self::Internal). Not an
    /// outage: the breaker does not count it and the other hosts of the
    /// backend are not tried (they take the same credentials). But the
    /// data did not change, keygate only lost access to it, so the cache
    /// still serves its entries stale, as during an outage, while the
    /// operator fixes the credentials ([`serves_stale`](Self::serves_stale)).
    #[error("login refused: {0}")]
    LoginRefused(String),
    /// Every backend of a chain failed or found nothing, and at least one
    /// failed; each entry names the backend.
    #[error("{}", chain_message(.0))]
    Chain(Vec<(String, BackendError)>),
}

impl BackendError {
    /// The reply code for this error. For a chain, a bad record (5) wins
    /// over an internal error (6), which wins over an outage (2): the most
    /// actionable problem is the one reported.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Unavailable(_) | Self::Timeout(_) => ErrorCode::Unavailable,
            Self::InvalidRecord(_) | Self::Ambiguous => ErrorCode::InvalidRecord,
            Self::Internal(_) | Self::LoginRefused(_) => ErrorCode::Internal,
            Self::Chain(errors) => {
                let codes = || errors.iter().map(|(_, e)| e.code());
                if codes().any(|c| c == ErrorCode::InvalidRecord) {
                    ErrorCode::InvalidRecord
                } else if codes().any(|c| c == ErrorCode::Internal) {
                    ErrorCode::Internal
                } else {
                    ErrorCode::Unavailable
                }
            }
        }
    }

    /// Whether this is an outage (the store could not answer), as opposed
    /// to an answer that was wrong. Outages may be answered from stale data.
    pub fn is_outage(&self) -> bool {
        self.code() == ErrorCode::Unavailable
    }

    /// Whether a cached answer may stand in for this error: an outage, or
    /// a refused login (the store's data did not change; keygate lost
    /// access to it). For a chain, only when every backend's error is one
    /// of those: a bad record (5) or another internal error (6) is never
    /// hidden behind a stale answer.
    pub fn serves_stale(&self) -> bool {
        match self {
            Self::LoginRefused(_) => true,
            Self::Chain(errors) => errors.iter().all(|(_, e)| e.serves_stale()),
            other => other.is_outage(),
        }
    }

    /// Whether this is, or a chain holds, a refused login.
    pub fn is_login_refused(&self) -> bool {
        match self {
            Self::LoginRefused(_) => true,
            Self::Chain(errors) => errors.iter().any(|(_, e)| e.is_login_refused()),
            _ => false,
        }
    }
}

fn chain_message(errors: &[(String, BackendError)]) -> String {
    // The same order as `code`: a bad record, then an internal error, then
    // a refused login (also 6), then an outage.
    let any = |f: fn(&BackendError) -> bool| errors.iter().any(|(_, e)| f(e));
    let prefix = if any(|e| e.code() == ErrorCode::InvalidRecord) {
        "refused a bad record"
    } else if any(|e| e.code() == ErrorCode::Internal && !e.serves_stale()) {
        "internal error"
    } else if any(BackendError::is_login_refused) {
        "login refused"
    } else {
        "no backend could answer"
    };
    let parts: Vec<String> = errors
        .iter()
        .map(|(name, e)| format!("backend '{name}': {e}"))
        .collect();
    format!("{prefix}: {}", parts.join("; "))
}

/// `1.5s`, `800ms`: how durations are written in config and messages.
pub fn humanize(d: Duration) -> String {
    if d.subsec_millis() == 0 && d.as_secs() > 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_code_prefers_bad_records_over_outages() {
        let e = BackendError::Chain(vec![
            (
                "a".into(),
                BackendError::Timeout(Duration::from_millis(800)),
            ),
            ("b".into(), BackendError::Ambiguous),
        ]);
        assert_eq!(e.code(), ErrorCode::InvalidRecord);
        assert_eq!(
            e.to_string(),
            "refused a bad record: backend 'a': timed out after 800ms; backend 'b': ambiguous: more than one record matches"
        );
        let e = BackendError::Chain(vec![(
            "a".into(),
            BackendError::Unavailable("connection refused".into()),
        )]);
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(e.is_outage());
        assert_eq!(
            e.to_string(),
            "no backend could answer: backend 'a': unavailable: connection refused"
        );
    }
}

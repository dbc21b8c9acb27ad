//! What every backend's [`KeyBackend::list`](keygate_core::KeyBackend::list)
//! shares: each step of a listing is bounded in time, the stream ends after
//! its first error, and a record that fails validation becomes
//! [`Listed::Invalid`] with its reason, never a record.

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use keygate_core::{AgentRecord, BackendError, ListStream, Listed};

/// The longest wait for one step of a listing (the next row, page or
/// batch of keys). A listing as a whole has no deadline: a million agents
/// take what they take, but a server that stops answering ends it.
pub const LIST_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Bounds every step of `inner` by `limit` (a stalled step ends the
/// listing with [`BackendError::Timeout`]) and ends the stream after its
/// first error, as [`ListStream`] promises.
pub fn bounded(inner: ListStream<'_>, limit: Duration) -> ListStream<'_> {
    stream::unfold(Some(inner), move |state| async move {
        let mut inner = state?;
        match tokio::time::timeout(limit, inner.next()).await {
            Err(_) => Some((Err(BackendError::Timeout(limit)), None)),
            Ok(None) => None,
            Ok(Some(Err(e))) => Some((Err(e), None)),
            Ok(Some(Ok(item))) => Some((Ok(item), Some(inner))),
        }
    })
    .boxed()
}

/// A listing that fails at once with `error`.
pub fn failed<'a>(error: BackendError) -> ListStream<'a> {
    stream::once(async move { Err(error) }).boxed()
}

/// The error of a backend whose listing needs a config key that is not
/// set; `what` says what the key must hold.
pub fn missing_key(backend: &str, key: &str, what: &str) -> BackendError {
    BackendError::Internal(format!(
        "backend '{backend}' cannot list its agents: {key} is not set ({what})"
    ))
}

/// Turns the result of validating one stored entry into a listing item:
/// a record, a bad record reported at `at()` (control characters escaped:
/// a DN or a Redis key is stored data and must not forge output lines)
/// with the reason, or a failure (transport, configuration) that ends the
/// listing.
pub fn entry(
    result: Result<AgentRecord, BackendError>,
    at: impl FnOnce() -> String,
) -> Result<Listed, BackendError> {
    match result {
        Ok(record) => Ok(Listed::Record(record)),
        Err(BackendError::InvalidRecord(e)) => Ok(Listed::Invalid {
            at: printable(&at()),
            reason: e.to_string(),
        }),
        Err(BackendError::Ambiguous) => Ok(Listed::Invalid {
            at: printable(&at()),
            reason: BackendError::Ambiguous.to_string(),
        }),
        Err(e) => Err(e),
    }
}

/// `text` with control characters written as escapes (`\n`, `\u{1b}`).
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| match c {
            c if c.is_control() => c.escape_default().to_string(),
            c => c.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::RecordError;

    /// A stream that errs then would go on ends after the error, and a
    /// stalled step ends the listing with a timeout instead of hanging.
    #[tokio::test(start_paused = true)]
    async fn ends_after_the_first_error_and_bounds_each_step() {
        let items: Vec<Result<Listed, BackendError>> = vec![
            Ok(Listed::Invalid {
                at: "row 1".into(),
                reason: "x".into(),
            }),
            Err(BackendError::Unavailable("lost".into())),
            Ok(Listed::Invalid {
                at: "row 3".into(),
                reason: "x".into(),
            }),
        ];
        let out: Vec<_> = bounded(stream::iter(items).boxed(), LIST_STEP_TIMEOUT)
            .collect()
            .await;
        assert_eq!(out.len(), 2);
        assert!(out[1].is_err());

        let stalled = stream::pending::<Result<Listed, BackendError>>().boxed();
        let out: Vec<_> = bounded(stalled, Duration::from_secs(5)).collect().await;
        assert!(
            matches!(out[..], [Err(BackendError::Timeout(_))]),
            "{out:?}"
        );
    }

    #[test]
    fn bad_records_are_reported_and_failures_end_the_listing() {
        let bad = entry(
            Err(BackendError::InvalidRecord(RecordError::Malformed("x"))),
            || "row 2".into(),
        );
        assert!(
            matches!(bad, Ok(Listed::Invalid { ref at, ref reason })
                if at == "row 2" && reason == "malformed record: x"),
            "{bad:?}"
        );
        let forged = entry(
            Err(BackendError::InvalidRecord(RecordError::Malformed("x"))),
            || "cn=a\nrow 9: fine\u{1b}[2J,ou=agents".into(),
        );
        assert!(
            matches!(forged, Ok(Listed::Invalid { ref at, .. })
                if at == "cn=a\\nrow 9: fine\\u{1b}[2J,ou=agents"),
            "{forged:?}"
        );
        let lost = entry(Err(BackendError::Unavailable("lost".into())), String::new);
        assert!(lost.is_err());
    }
}

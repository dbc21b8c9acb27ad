//! What every backend's [`KeyBackend::list`](keygate_core::KeyBackend::list)
//! shares: each step of a listing is bounded in time, the stream ends after
//! its first error, a record that fails validation becomes
//! [`Listed::Invalid`] with its reason, never a record, and a backend with
//! several hosts lists from one host at a time ([`one_host`]).
//!
//! A listing is complete exactly when its stream ends without an `Err`
//! item: `list`, `export`, `verify` and `sync` rely on that, and `sync
//! --prune` deletes what a complete listing lacks. So no backend may end
//! its stream early without an error (a short page, a size limit, a
//! referral, a file rewritten while it is read).

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

#[cfg(feature = "_endpoint")]
pub use hosts::one_host;

/// [`one_host`] and what it keeps; only with a backend that has hosts
/// (`endpoint` is compiled only then).
#[cfg(feature = "_endpoint")]
mod hosts {
    use std::collections::HashMap;
    use std::hash::{BuildHasher, RandomState};

    use futures_util::stream::{self, StreamExt};
    use keygate_core::{BackendError, ListStream, Listed};

    use super::failed;
    use crate::endpoint::{Host, Hosts};

    /// Lists from one host at a time: `open(host)` lists everything from that
    /// host alone (every page, row or batch), starting with the active host.
    /// When that listing fails with an outage, the host is marked failed and
    /// the listing restarts from the beginning on the next host, once per host.
    ///
    /// The entries already handed out are not handed out again: each one is
    /// remembered by a digest of its content (keyed at random for each
    /// listing; a few dozen bytes an entry, kept only when there are several
    /// hosts) and recognised in the new host's listing, which must hold every
    /// one of them. So what the caller receives is exactly one host's listing;
    /// a new host that lacks an entry the failed one listed fails the listing
    /// (the hosts disagree: nothing can say which one is right).
    pub fn one_host<'a, H, F>(hosts: &'a Hosts<H>, open: F) -> ListStream<'a>
    where
        H: Host,
        F: Fn(&'a H) -> ListStream<'a> + Send + 'a,
    {
        let index = hosts.active();
        let Some(first) = hosts.get(index) else {
            return failed(BackendError::Internal("no hosts configured".into()));
        };
        let state = OneHost {
            hosts,
            stream: open(first),
            open,
            index,
            tried: 1,
            seen: (hosts.count() > 1).then(Seen::default),
        };
        stream::unfold(Some(state), |state| async move {
            let mut state = state?;
            loop {
                match state.stream.next().await {
                    Some(Ok(item)) => {
                        if state.seen.as_mut().is_some_and(|seen| seen.again(&item)) {
                            continue;
                        }
                        return Some((Ok(item), Some(state)));
                    }
                    Some(Err(e)) if e.is_outage() && state.tried < state.hosts.count() => {
                        state.restart(&e);
                    }
                    Some(Err(e)) => return Some((Err(e), None)),
                    None => {
                        let missing = state.seen.as_ref().map_or(0, Seen::missing);
                        if missing == 0 {
                            return None;
                        }
                        let e = BackendError::Unavailable(format!(
                            "the listing restarted on host {} of {} after a host failed, and that \
                             host lacks {missing} entr{} the failed host had listed (the hosts \
                             disagree): the listing is incomplete",
                            state.index + 1,
                            state.hosts.count(),
                            if missing == 1 { "y" } else { "ies" },
                        ));
                        return Some((Err(e), None));
                    }
                }
            }
        })
        .boxed()
    }

    /// Where a [`one_host`] listing is.
    struct OneHost<'a, H, F> {
        hosts: &'a Hosts<H>,
        open: F,
        /// The host listing now, and how many hosts have been tried.
        index: usize,
        tried: usize,
        stream: ListStream<'a>,
        /// What was handed out (`None` with a single host: nothing to restart).
        seen: Option<Seen>,
    }

    impl<'a, H: Host, F: Fn(&'a H) -> ListStream<'a>> OneHost<'a, H, F> {
        /// Marks the current host failed and starts over on the next one.
        fn restart(&mut self, error: &BackendError) {
            let n = self.hosts.count();
            let next = (self.index + 1) % n;
            tracing::warn!(
                backend = %self.hosts.backend(),
                failed_host = self.index + 1,
                next_host = next + 1,
                hosts = n,
                %error,
                "Listing failed on a host; restarting it on the next one."
            );
            self.hosts.failed(self.index);
            self.index = next;
            self.tried += 1;
            if let Some(seen) = &mut self.seen {
                seen.replay = seen.listed.clone();
            }
            match self.hosts.get(next) {
                Some(host) => self.stream = (self.open)(host),
                None => self.stream = failed(BackendError::Internal("no such host".into())),
            }
        }
    }

    /// The digests of the entries handed out, and of those still to be
    /// recognised in a restarted listing (a multiset: an entry may repeat).
    #[derive(Default)]
    struct Seen {
        key: RandomState,
        listed: HashMap<u64, u32>,
        replay: HashMap<u64, u32>,
    }

    impl Seen {
        /// Whether `item` was handed out before the restart (it is then
        /// recognised, once); otherwise it is remembered as handed out.
        fn again(&mut self, item: &Listed) -> bool {
            let digest = match item {
                Listed::Record(r) => self.key.hash_one((
                    0u8,
                    r.id.as_str(),
                    r.name.as_str(),
                    r.ip.as_str(),
                    r.key.expose(),
                )),
                Listed::Invalid { at, reason } => self.key.hash_one((1u8, at, reason)),
            };
            if let Some(left) = self.replay.get_mut(&digest) {
                *left -= 1;
                if *left == 0 {
                    self.replay.remove(&digest);
                }
                return true;
            }
            *self.listed.entry(digest).or_default() += 1;
            false
        }

        /// Entries handed out that the current host has not listed.
        fn missing(&self) -> u64 {
            self.replay.values().map(|&n| u64::from(n)).sum()
        }
    }
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

    /// The tests of [`one_host`], with hosts of its own.
    #[cfg(feature = "_endpoint")]
    mod hosts {
        use super::*;
        use crate::endpoint::{Host, Hosts};
        use keygate_core::RecordError;

        /// A test host: what its listing yields, then (`Some`) a failure.
        struct Fixed {
            ids: Vec<&'static str>,
            fails: Option<BackendError>,
        }

        impl Host for Fixed {
            async fn probe(&self) -> bool {
                true
            }
            fn label(&self) -> &str {
                "fixed"
            }
        }

        fn record(id: &str) -> Listed {
            Listed::Record(AgentRecord::parse(id, &format!("agent-{id}"), "any", "k").unwrap())
        }

        fn hosts(list: Vec<(Vec<&'static str>, Option<BackendError>)>) -> Hosts<Fixed> {
            let hosts = list
                .into_iter()
                .map(|(ids, fails)| Fixed { ids, fails })
                .collect();
            Hosts::new("test", hosts, Duration::from_secs(300))
        }

        fn listing_of(host: &Fixed) -> ListStream<'_> {
            let items = host.ids.iter().map(|id| Ok(record(id)));
            let end = host.fails.clone().map(Err);
            stream::iter(items.chain(end)).boxed()
        }

        async fn collect(hosts: &Hosts<Fixed>) -> Vec<String> {
            one_host(hosts, listing_of)
                .map(|item| match item {
                    Ok(Listed::Record(r)) => r.id.as_str().to_owned(),
                    Ok(Listed::Invalid { at, .. }) => format!("invalid {at}"),
                    Err(e) => format!("error {e}"),
                })
                .collect()
                .await
        }

        fn lost() -> Option<BackendError> {
            Some(BackendError::Unavailable("connection reset".into()))
        }

        /// A host that fails midway: the listing restarts on the next host and
        /// the caller receives exactly that host's listing, each entry once,
        /// however the hosts order it; the next host is the active one after.
        #[tokio::test]
        async fn a_host_failing_midway_restarts_the_listing_on_the_next() {
            let h = hosts(vec![
                (vec!["001", "002"], lost()),
                (vec!["003", "002", "004", "001"], None),
            ]);
            assert_eq!(collect(&h).await, ["001", "002", "003", "004"]);
            assert_eq!(h.active(), 1);
        }

        /// The next host lacks an entry the failed one listed: the listing
        /// fails (the hosts disagree), never looks complete.
        #[tokio::test]
        async fn a_next_host_lacking_a_listed_entry_fails_the_listing() {
            let h = hosts(vec![
                (vec!["001", "002"], lost()),
                (vec!["001", "003"], None),
            ]);
            let out = collect(&h).await;
            assert_eq!(out[..3], ["001", "002", "003"]);
            assert_eq!(out.len(), 4);
            assert!(
                out[3].contains("host 2 of 2") && out[3].contains("lacks 1 entry"),
                "{out:?}"
            );
        }

        /// Every host tried once: the last outage ends the listing; a failure
        /// that is not an outage (a misconfiguration) is not retried
        /// elsewhere; with one host an outage simply ends it.
        #[tokio::test]
        async fn each_host_is_tried_once_and_only_outages_restart() {
            let h = hosts(vec![(vec!["001"], lost()), (vec!["001"], lost())]);
            let out = collect(&h).await;
            assert_eq!(out.len(), 2, "{out:?}");
            assert!(out[1].starts_with("error unavailable"), "{out:?}");

            let bad = Some(BackendError::Internal("bad query".into()));
            let h = hosts(vec![(vec!["001"], bad), (vec!["001", "002"], None)]);
            assert_eq!(
                collect(&h).await,
                ["001", "error internal error: bad query"]
            );
            assert_eq!(h.active(), 0);

            let h = hosts(vec![(vec!["001"], lost())]);
            let out = collect(&h).await;
            assert_eq!(out.len(), 2, "{out:?}");
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
}

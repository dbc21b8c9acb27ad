//! Backends in config order: the first one that finds the agent wins.
//!
//! A not-found moves on to the next backend, and so does an error, unless the
//! backend's [`ChainPolicy`] says stop (an authoritative database can end the
//! chain with a 4 so the answer never falls through to a stale file). If
//! nothing is found, the chain answers `Ok(None)` (code 4) when every backend
//! that was asked said not-found, and [`BackendError::Chain`] otherwise, which
//! names every backend that failed and why.

use std::sync::Arc;

use async_trait::async_trait;

use crate::audit::Source;
use crate::{AgentRecord, BackendError, KeyBackend, Query};

/// What the chain does after a backend's answer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Action {
    /// Ask the next backend.
    #[default]
    Continue,
    /// End the chain with this answer.
    Stop,
}

/// Per-backend chain policy, like Dovecot's `result_*` settings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChainPolicy {
    /// After a not-found.
    pub on_not_found: Action,
    /// After an error (outage or bad record).
    pub on_error: Action,
}

/// An ordered list of backends, itself a backend.
pub struct Chain {
    name: String,
    links: Vec<(Arc<dyn KeyBackend>, ChainPolicy)>,
}

impl Chain {
    /// Builds a chain; backends are asked in the given order.
    pub fn new(name: impl Into<String>, links: Vec<(Arc<dyn KeyBackend>, ChainPolicy)>) -> Self {
        Self {
            name: name.into(),
            links,
        }
    }

    /// The backends, in order.
    pub fn backends(&self) -> impl Iterator<Item = &Arc<dyn KeyBackend>> {
        self.links.iter().map(|(b, _)| b)
    }
}

#[async_trait]
impl KeyBackend for Chain {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let mut errors = Vec::new();
        for (backend, policy) in &self.links {
            let outcome = match backend.lookup(query).await {
                Ok(Some(record)) => match record.check_matches(query) {
                    Ok(()) => {
                        crate::audit::answered_by(Source::Backend(backend.name().into()));
                        return Ok(Some(record));
                    }
                    Err(e) => Err(BackendError::from(e)),
                },
                other => other,
            };
            match outcome {
                Ok(_) => {
                    if policy.on_not_found == Action::Stop {
                        break;
                    }
                }
                Err(error) => {
                    if error.is_outage() {
                        tracing::debug!(backend = backend.name(), %query, %error, "Backend could not answer.");
                    } else if error.is_login_refused() {
                        tracing::warn!(backend = backend.name(), %query, %error, "Backend refused keygate's login: a configuration problem (user, password or grants); answering 6, or a stale cache entry.");
                    } else {
                        tracing::warn!(backend = backend.name(), %query, %error, "Backend answer refused.");
                    }
                    errors.push((backend.name().to_owned(), error));
                    if policy.on_error == Action::Stop {
                        break;
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(None)
        } else {
            Err(BackendError::Chain(errors))
        }
    }

    fn data_version(&self) -> u64 {
        self.backends()
            .map(|b| b.data_version())
            .max()
            .unwrap_or_default()
    }

    async fn health(&self) -> Result<(), BackendError> {
        let mut errors = Vec::new();
        for backend in self.backends() {
            match backend.health().await {
                Ok(()) => return Ok(()),
                Err(e) => errors.push((backend.name().to_owned(), e)),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(BackendError::Chain(errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{q, Fake};
    use crate::ErrorCode;

    fn chain(links: Vec<(Fake, ChainPolicy)>) -> Chain {
        Chain::new(
            "chain",
            links
                .into_iter()
                .map(|(f, p)| (Arc::new(f) as Arc<dyn KeyBackend>, p))
                .collect(),
        )
    }

    #[tokio::test]
    async fn first_backend_that_finds_wins_after_not_found_and_error() {
        let c = chain(vec![
            (Fake::empty("a"), ChainPolicy::default()),
            (Fake::down("b"), ChainPolicy::default()),
            (Fake::with("c", "001", "agent-c"), ChainPolicy::default()),
            (Fake::with("d", "001", "agent-d"), ChainPolicy::default()),
        ]);
        let r = c.lookup(&q("id:001")).await.unwrap().unwrap();
        assert_eq!(r.name.as_str(), "agent-c");
    }

    #[tokio::test]
    async fn nothing_found_is_4_without_errors_and_2_with_one() {
        let c = chain(vec![
            (Fake::empty("a"), ChainPolicy::default()),
            (Fake::empty("b"), ChainPolicy::default()),
        ]);
        assert!(c.lookup(&q("id:001")).await.unwrap().is_none());
        let c = chain(vec![
            (Fake::empty("a"), ChainPolicy::default()),
            (Fake::down("b"), ChainPolicy::default()),
        ]);
        let e = c.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Unavailable);
        assert!(e.to_string().contains("backend 'b'"), "{e}");
    }

    /// When nothing is found, errors outrank not-found and each other:
    /// 5 (bad record) over 6 (internal) over 2 (outage) over 4.
    #[tokio::test]
    async fn nothing_found_ranks_5_over_6_over_2_over_4() {
        let internal = || {
            let f = Fake::empty("internal");
            f.fail_with(Some(BackendError::Internal("login refused".into())));
            f
        };
        let c = chain(vec![
            (Fake::empty("a"), ChainPolicy::default()),
            (internal(), ChainPolicy::default()),
            (Fake::down("b"), ChainPolicy::default()),
        ]);
        let e = c.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::Internal);
        let c = chain(vec![
            (Fake::liar("liar", "002", "other"), ChainPolicy::default()),
            (internal(), ChainPolicy::default()),
            (Fake::empty("a"), ChainPolicy::default()),
        ]);
        let e = c.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRecord);
    }

    #[tokio::test]
    async fn a_record_for_another_agent_is_refused_and_the_chain_goes_on() {
        let c = chain(vec![
            (Fake::liar("liar", "002", "other"), ChainPolicy::default()),
            (Fake::with("good", "001", "right"), ChainPolicy::default()),
        ]);
        assert_eq!(
            c.lookup(&q("id:001")).await.unwrap().unwrap().name.as_str(),
            "right"
        );
        let c = chain(vec![(
            Fake::liar("liar", "002", "other"),
            ChainPolicy::default(),
        )]);
        let e = c.lookup(&q("id:001")).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRecord);
        assert!(e.to_string().contains("backend 'liar'"), "{e}");
    }

    #[tokio::test]
    async fn stop_policies_end_the_chain() {
        let stop_nf = ChainPolicy {
            on_not_found: Action::Stop,
            ..Default::default()
        };
        let c = chain(vec![
            (Fake::empty("auth"), stop_nf),
            (Fake::with("stale", "001", "x"), ChainPolicy::default()),
        ]);
        assert!(c.lookup(&q("id:001")).await.unwrap().is_none());
        let stop_err = ChainPolicy {
            on_error: Action::Stop,
            ..Default::default()
        };
        let c = chain(vec![
            (Fake::down("auth"), stop_err),
            (Fake::with("stale", "001", "x"), ChainPolicy::default()),
        ]);
        assert_eq!(
            c.lookup(&q("id:001")).await.unwrap_err().code(),
            ErrorCode::Unavailable
        );
    }
}

//! An answer cache around the backend stack: positive and negative entries,
//! jittered expiry, refresh-ahead, stale answers while the backends are
//! down, and single flight.
//!
//! Wazuh has no rate limit: an unknown agent asks again with every message,
//! and after a manager rebuild thousands of agents ask at once. The cache
//! absorbs the repeats (not-found answers are cached too), coalesces
//! identical concurrent misses into one backend lookup, and keeps answering
//! known agents through an outage, like Dovecot's auth cache, and while a
//! store refuses keygate's login (its data did not change: see
//! [`BackendError::serves_stale`]). Other errors are never hidden behind a
//! stale answer.
//!
//! Freshness is decided here, against [`tokio::time::Instant`] deadlines kept
//! in each entry: that keeps the behaviour testable with paused time. The
//! store ([`store`]) only bounds memory (capacity, and removal once an entry
//! is past `stale_ttl`). A hit takes one read lock on one shard and clones
//! a reference-counted record: no allocation.
//!
//! Entries hold an [`AgentRecord`](crate::AgentRecord) whose key is wiped when the record is
//! dropped; the cache keeps exactly one copy per entry (behind an `Arc`), so
//! an entry that is evicted, expired or flushed is wiped once the last
//! request still reading it has finished.

mod entry;
mod flight;
mod stats;
mod store;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::audit::{answered_by, Source};
use crate::{BackendError, KeyBackend, Query};
pub use entry::CacheSettings;
use flight::{Answer, State};
use stats::bump;
pub use stats::CacheStats;

/// The cache layer, itself a [`KeyBackend`]. Only answers 0 (found) and 4
/// (not found) are cached; errors never are.
pub struct CacheLayer {
    state: Arc<State>,
}

impl CacheLayer {
    /// Wraps `inner` (usually the whole chain).
    pub fn new(inner: Arc<dyn KeyBackend>, settings: CacheSettings) -> Self {
        let entries = Arc::new(store::Store::new(settings.capacity));
        Self {
            state: Arc::new(State {
                inner,
                settings,
                entries,
                in_flight: Mutex::new(HashMap::new()),
                counters: Arc::default(),
            }),
        }
    }

    /// The same entries and counters in front of another backend stack:
    /// what a reload that kept the backend list and the cache settings
    /// does. Lookups in flight finish on the old stack (and still fill the
    /// shared entries); new ones go to `inner`.
    pub fn with_inner(&self, inner: Arc<dyn KeyBackend>) -> Self {
        Self {
            state: Arc::new(State {
                inner,
                settings: self.state.settings.clone(),
                entries: Arc::clone(&self.state.entries),
                in_flight: Mutex::new(HashMap::new()),
                counters: Arc::clone(&self.state.counters),
            }),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &CacheSettings {
        &self.state.settings
    }

    /// Drops every entry (each key is wiped once no request still reads it).
    pub async fn flush_all(&self) {
        self.state.entries.clear();
    }

    /// Drops the entry for one query; says whether there was one.
    pub async fn flush(&self, query: &Query) -> bool {
        self.state.entries.remove(query)
    }

    /// The counters so far.
    pub fn stats(&self) -> CacheStats {
        self.state.counters.snapshot(self.state.entries.len())
    }

    /// Drops the entries past their `stale_ttl` now (inserts do it every so
    /// often), so that [`CacheStats::entries`] counts only live ones.
    pub async fn run_pending_tasks(&self) {
        self.state.entries.run_pending_tasks();
    }

    #[cfg(test)]
    async fn entry(&self, query: &Query) -> Option<Arc<entry::Entry>> {
        self.state.entries.get(query)
    }
}

#[async_trait]
impl KeyBackend for CacheLayer {
    fn name(&self) -> &str {
        self.state.inner.name()
    }

    async fn lookup(&self, query: &Query) -> Answer {
        let state = &self.state;
        let now = Instant::now();
        let cached = state.entries.get(query);
        if let Some(entry) = &cached {
            if now < entry.expires_at {
                bump(if entry.answer.is_some() {
                    &state.counters.hits
                } else {
                    &state.counters.negative_hits
                });
                if entry.refresh_at.is_some_and(|at| now >= at) {
                    let (_, running) = state.flight(query);
                    if !running {
                        bump(&state.counters.refreshes);
                        tracing::debug!(%query, "Refreshing a cache entry ahead of its expiry.");
                    }
                }
                answered_by(Source::Cache);
                return Ok(entry.answer.clone());
            }
        }
        bump(&state.counters.misses);
        let (flight, running) = state.flight(query);
        if running {
            bump(&state.counters.coalesced_waits);
        }
        let (answer, source) = flight.await;
        match answer {
            Err(error) if error.serves_stale() => match cached {
                Some(entry) if Instant::now() < entry.stale_until => {
                    bump(&state.counters.stale_served);
                    answered_by(Source::Stale);
                    if error.is_login_refused() {
                        tracing::warn!(%query, %error, "Serving a stale cache entry while a backend refuses keygate's login.");
                    } else {
                        tracing::debug!(%query, %error, "Backends down; serving a stale cache entry.");
                    }
                    Ok(entry.answer.clone())
                }
                _ => Err(error),
            },
            answer => {
                if let Some(source) = source {
                    answered_by(source);
                }
                answer
            }
        }
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.state.inner.health().await
    }
}

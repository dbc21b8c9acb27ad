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
//! store ([`store`]) only bounds memory (capacity, a separate budget for
//! not-found answers, and removal once an entry is past `stale_ttl`) and
//! refuses answers looked up before the last flush or reload. A hit takes
//! one read lock on one shard and clones a reference-counted record: no
//! allocation.
//!
//! What the cache must forget, and when:
//! - a flush drops entries, and lookups already in flight do not store
//!   their answer after it (each notes the store's generation);
//! - a reload keeps only the found answers of the backends whose config is
//!   unchanged, and of those only the ones before the first changed backend
//!   (a changed backend may now answer what a later one did); not-found
//!   answers only when no backend changed ([`CacheLayer::reloaded`]);
//! - a not-found answer is fresh only while the backends'
//!   [`data_version`](crate::KeyBackend::data_version) is the one it was
//!   looked up under: an agent added to a re-read file is found at once.
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
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::time::Instant;

use crate::audit::{answered_by, Source};
use crate::{BackendError, KeyBackend, Query};
pub use entry::CacheSettings;
use flight::{Answer, State};
use stats::bump;
pub use stats::CacheStats;

/// What a reload keeps of the cache's entries ([`CacheLayer::reloaded`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kept {
    /// The backends whose found answers stay: `(old name, new name)`.
    pub backends: Vec<(String, String)>,
    /// Whether every backend is unchanged: then not-found answers (and found
    /// ones no backend was named for) stay too.
    pub everything: bool,
}

/// The cache layer, itself a [`KeyBackend`]. Only answers 0 (found) and 4
/// (not found) are cached; errors never are.
pub struct CacheLayer {
    state: Arc<State>,
}

impl CacheLayer {
    /// Wraps `inner` (usually the whole chain).
    pub fn new(inner: Arc<dyn KeyBackend>, settings: CacheSettings) -> Self {
        let entries = Arc::new(store::Store::new(
            settings.capacity,
            settings.negative_capacity,
        ));
        Self {
            state: Arc::new(State {
                inner,
                settings,
                entries,
                in_flight: Mutex::new(HashMap::new()),
                counters: Arc::default(),
                retired: AtomicBool::new(false),
            }),
        }
    }

    /// The same entries and counters in front of another backend stack,
    /// after a reload with the same `[cache]` settings: only the entries
    /// `kept` allows stay (see the module doc). From now on this layer's
    /// lookups (on the old stack, in flight or started by a request that
    /// took it before the swap) store nothing; the new layer's go to
    /// `inner`.
    pub fn reloaded(&self, inner: Arc<dyn KeyBackend>, kept: &Kept) -> Self {
        self.state.retired.store(true, Ordering::SeqCst);
        let backends: HashMap<&str, Arc<str>> = kept
            .backends
            .iter()
            .map(|(old, new)| (old.as_str(), Arc::from(new.as_str())))
            .collect();
        self.state.entries.retain(|entry| {
            match (&entry.answer, &entry.origin.backend) {
                (Some(_), Some(name)) => match backends.get(&**name) {
                    Some(new) if new == name => true,
                    Some(new) => {
                        *entry = Arc::new(entry.renamed(Arc::clone(new)));
                        true
                    }
                    None => false,
                },
                // Not-found, or found by a stack that did not say by whom.
                _ => kept.everything,
            }
        });
        Self {
            state: Arc::new(State {
                inner,
                settings: self.state.settings.clone(),
                entries: Arc::clone(&self.state.entries),
                in_flight: Mutex::new(HashMap::new()),
                counters: Arc::clone(&self.state.counters),
                retired: AtomicBool::new(false),
            }),
        }
    }

    /// The settings in use.
    pub fn settings(&self) -> &CacheSettings {
        &self.state.settings
    }

    /// Drops every entry (each key is wiped once no request still reads
    /// it); lookups in flight do not store their answers after it.
    pub async fn flush_all(&self) {
        self.state.entries.clear();
    }

    /// Drops the entry for one query; says whether there was one. Lookups
    /// in flight do not store their answers after it.
    pub async fn flush(&self, query: &Query) -> bool {
        self.state.entries.flush(query)
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
            if now < entry.expires_at
                && (entry.answer.is_some()
                    || entry.origin.data_version == state.inner.data_version())
            {
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

    fn data_version(&self) -> u64 {
        self.state.inner.data_version()
    }
}

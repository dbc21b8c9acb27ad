//! Single flight: one backend lookup per query at a time, run in its own
//! task and shared by every request waiting for it; its answer fills the
//! cache, unless a flush or a reload came between its start and its end.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::entry::{CacheSettings, Entry, Origin};
use super::stats::Counters;
use super::store::Store;
use crate::audit::{attributed, Source};
use crate::{AgentRecord, BackendError, KeyBackend, Query};

/// What a lookup answers.
pub(super) type Answer = Result<Option<AgentRecord>, BackendError>;

/// A lookup in flight, awaited by every request for the same query, with
/// what answered it (see [`crate::audit`]).
pub(super) type Flight = Shared<BoxFuture<'static, (Answer, Option<Source>)>>;

/// What the spawned lookups share with the layer.
pub(super) struct State {
    pub(super) inner: Arc<dyn KeyBackend>,
    pub(super) settings: CacheSettings,
    pub(super) entries: Arc<Store>,
    /// The lookups in flight, each with the store's generation when it
    /// started.
    pub(super) in_flight: Mutex<HashMap<Query, (u64, Flight)>>,
    pub(super) counters: Arc<Counters>,
    /// Set when a reload replaced this layer: its lookups, on the old
    /// backends, store nothing in the entries the new layer shares.
    pub(super) retired: AtomicBool,
}

impl State {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Query, (u64, Flight)>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the lookup in flight for `query`, or starts one. The lookup
    /// runs in its own task, so it finishes (and fills the cache) even if
    /// every request waiting for it gives up. A lookup that started before
    /// the last flush or reload is not joined: its answer may be what was
    /// flushed. Returns the flight and whether it was already running.
    pub(super) fn flight(self: &Arc<Self>, query: &Query) -> (Flight, bool) {
        let mut in_flight = self.in_flight();
        let generation = self.entries.generation();
        if let Some((started, flight)) = in_flight.get(query) {
            if *started == generation {
                return (flight.clone(), true);
            }
        }
        let origin = Origin {
            backend: None,
            generation,
            data_version: self.inner.data_version(),
        };
        let landing = Landing {
            state: Arc::clone(self),
            key: query.clone(),
            generation,
        };
        // The lock is held until the flight is in the map, so the task
        // cannot land (and remove it) before it is there.
        let task = tokio::spawn(async move {
            let Landing { state, key, .. } = &landing;
            let (answer, source) = attributed(state.inner.lookup(key)).await;
            let backend = match &source {
                Some(Source::Backend(name)) => Some(Arc::clone(name)),
                _ => None,
            };
            state.store(key, &answer, Origin { backend, ..origin });
            drop(landing);
            (answer, source)
        });
        let flight = async move {
            task.await.unwrap_or_else(|e| {
                let message = format!("cache lookup task failed: {e}");
                (Err(BackendError::Internal(message)), None)
            })
        }
        .boxed()
        .shared();
        in_flight.insert(query.clone(), (generation, flight.clone()));
        (flight, false)
    }

    /// Records what the backends answered.
    fn store(&self, query: &Query, answer: &Answer, origin: Origin) {
        match answer {
            // Checked before the store's generation: a reload sets this
            // first, then raises the generation.
            Ok(_) if self.retired.load(Ordering::SeqCst) => {}
            Ok(found) => {
                let found = found.clone();
                let backend = origin.backend.clone().filter(|_| found.is_some());
                let origin = Origin { backend, ..origin };
                let entry = Arc::new(Entry::new(&self.settings, found, origin));
                self.entries.insert(query, entry);
            }
            // Keep the entry: it may be served stale through the outage
            // (or while the store refuses keygate's login).
            Err(e) if e.serves_stale() => {}
            // The backends answered, and differently: the entry is wrong now.
            Err(_) => {
                self.entries.remove(query);
            }
        }
    }
}

/// Removes a finished lookup from the in-flight map, also when the lookup
/// panicked or its task was cancelled, so that a key never stays stuck on a
/// dead flight; a newer lookup for the same key (started after a flush)
/// stays.
struct Landing {
    state: Arc<State>,
    key: Query,
    generation: u64,
}

impl Drop for Landing {
    fn drop(&mut self) {
        let mut in_flight = self.state.in_flight();
        if in_flight
            .get(&self.key)
            .is_some_and(|(started, _)| *started == self.generation)
        {
            in_flight.remove(&self.key);
        }
    }
}

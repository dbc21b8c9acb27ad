//! Single flight: one backend lookup per query at a time, run in its own
//! task and shared by every request waiting for it; its answer fills the
//! cache.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::future::{BoxFuture, FutureExt, Shared};

use super::entry::{CacheSettings, Entry};
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
    pub(super) in_flight: Mutex<HashMap<Query, Flight>>,
    pub(super) counters: Arc<Counters>,
}

impl State {
    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<Query, Flight>> {
        self.in_flight
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the lookup in flight for `query`, or starts one. The lookup
    /// runs in its own task, so it finishes (and fills the cache) even if
    /// every request waiting for it gives up. Returns the flight and whether
    /// it was already running.
    pub(super) fn flight(self: &Arc<Self>, query: &Query) -> (Flight, bool) {
        let mut in_flight = self.in_flight();
        if let Some(flight) = in_flight.get(query) {
            return (flight.clone(), true);
        }
        let landing = Landing {
            state: Arc::clone(self),
            key: query.clone(),
        };
        // The lock is held until the flight is in the map, so the task
        // cannot land (and remove it) before it is there.
        let task = tokio::spawn(async move {
            let Landing { state, key } = &landing;
            let (answer, source) = attributed(state.inner.lookup(key)).await;
            state.store(key, &answer).await;
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
        in_flight.insert(query.clone(), flight.clone());
        (flight, false)
    }

    /// Records what the backends answered.
    async fn store(&self, query: &Query, answer: &Answer) {
        match answer {
            Ok(found) => {
                let entry = Arc::new(Entry::new(&self.settings, found.clone()));
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
/// dead flight.
struct Landing {
    state: Arc<State>,
    key: Query,
}

impl Drop for Landing {
    fn drop(&mut self) {
        self.state.in_flight().remove(&self.key);
    }
}

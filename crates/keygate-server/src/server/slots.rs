//! A socket's connection slots and its live counters: at most
//! `max_connections` open at once; at the limit, the oldest connection
//! that has not sent anything gives its slot to the new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::idle::IdleSet;

/// Live counters of one served socket, shared with whoever reports them
/// (metrics, `keygate backends`). Each is kept as it happens, so reading
/// them costs a load each.
#[derive(Debug, Default)]
pub struct Counters {
    pub(crate) open: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) refused_at_limit: AtomicU64,
    pub(crate) evicted_idle: AtomicU64,
    pub(crate) refused_peers: AtomicU64,
    pub(crate) accept_errors: AtomicU64,
    pub(crate) panics: AtomicU64,
}

impl Counters {
    /// Connections open now.
    pub fn open(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }
    /// Connections accepted and served since start.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
    /// Connections closed at once because `max_connections` were open and
    /// none of them was idle.
    pub fn refused_at_limit(&self) -> u64 {
        self.refused_at_limit.load(Ordering::Relaxed)
    }
    /// Idle connections (nothing sent yet) closed to admit a new one at
    /// `max_connections`.
    pub fn evicted_idle(&self) -> u64 {
        self.evicted_idle.load(Ordering::Relaxed)
    }
    /// Connections closed at accept because the peer is not allowed.
    pub fn refused_peers(&self) -> u64 {
        self.refused_peers.load(Ordering::Relaxed)
    }
    /// Failed accepts (each followed by a back-off).
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }
    /// Requests whose answering panicked (a bug), answered 6.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }
    /// Counts a request whose answering panicked; the count so far.
    pub fn count_panic(&self) -> u64 {
        bump(&self.panics)
    }
}

/// Adds one to `counter`; the count with this one (1 the first time), for
/// the logs that say how many so far and log the 1st, 2nd, 4th... only.
pub(crate) fn bump(counter: &AtomicU64) -> u64 {
    counter.fetch_add(1, Ordering::Relaxed) + 1
}

/// The connection slots of one socket, shared by every loop serving it
/// ([`Limits::max_connections`](super::Limits::max_connections) of them),
/// and its idle connections.
#[derive(Clone, Debug)]
pub struct Slots {
    open: Arc<Semaphore>,
    pub(crate) limit: usize,
    pub(crate) idle: Arc<IdleSet<Slot>>,
}

/// One connection's place among the open ones; freed (and the open count
/// lowered) when dropped.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    counters: Arc<Counters>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a connection got its slot, or why it got none.
#[derive(Debug)]
pub(crate) enum Admission {
    /// A free slot.
    Free(Slot),
    /// The slot of the oldest idle connection, which is told to close.
    Evicted(Slot),
    /// Every slot is held by a connection that has sent its request.
    Full,
}

impl Slots {
    /// `max_connections` slots (at least one).
    pub fn new(max_connections: usize) -> Self {
        let limit = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            open: Arc::new(Semaphore::new(limit)),
            limit,
            idle: Arc::default(),
        }
    }

    /// A slot for a new connection: a free one, else the oldest idle
    /// connection's. Counted in `counters` either way.
    pub(crate) fn admit(&self, counters: &Arc<Counters>) -> Admission {
        if let Ok(permit) = Arc::clone(&self.open).try_acquire_owned() {
            counters.open.fetch_add(1, Ordering::Relaxed);
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            return Admission::Free(Slot {
                _permit: permit,
                counters: counters.clone(),
            });
        }
        match self.idle.evict_oldest() {
            Some(slot) => {
                counters.accepted.fetch_add(1, Ordering::Relaxed);
                counters.evicted_idle.fetch_add(1, Ordering::Relaxed);
                Admission::Evicted(slot)
            }
            None => {
                counters.refused_at_limit.fetch_add(1, Ordering::Relaxed);
                Admission::Full
            }
        }
    }

    /// Waits up to `drain` for every connection of the socket to close
    /// (after its loops stopped accepting).
    pub async fn drain(&self, drain: Duration) {
        let all = u32::try_from(self.limit).unwrap_or(u32::MAX);
        if tokio::time::timeout(drain, self.open.acquire_many(all))
            .await
            .is_err()
        {
            tracing::warn!(
                drain_s = drain.as_secs(),
                "Connections still open at shutdown were abandoned."
            );
        }
    }
}

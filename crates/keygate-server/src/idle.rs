//! Connections that have not sent a request yet, oldest first, each
//! holding what it was admitted with (its connection slot). When a socket
//! is at its limit, a new connection takes the slot of the oldest idle one,
//! which is told to close ([`IdleSet::evict_oldest`]): a flood of clients
//! that connect and say nothing can never turn away a client that asks at
//! once, as Wazuh's does. The Wazuh socket and the metrics endpoint both
//! use it.
//!
//! Only connections that have to *wait* for their request are parked here
//! (a request already in the socket at accept is answered without touching
//! the set), so the fast path takes no lock.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

/// Idle connections, oldest first; each holds a `T` (its slot).
#[derive(Debug)]
pub struct IdleSet<T> {
    inner: Mutex<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    next: u64,
    /// By order of parking: the first is the oldest.
    waiting: BTreeMap<u64, (T, oneshot::Sender<()>)>,
}

/// One parked connection's place in the set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ticket(u64);

/// Resolves when the connection was evicted (its slot given to another);
/// also when the set dropped it, which only its own [`IdleSet::unpark`]
/// does.
pub type Evicted = oneshot::Receiver<()>;

impl<T> Default for IdleSet<T> {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                next: 0,
                waiting: BTreeMap::new(),
            }),
        }
    }
}

impl<T> IdleSet<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Parks `held` for a connection that starts waiting for its request.
    /// Take it back with [`unpark`](Self::unpark) once the request came
    /// (or the wait ended); `Evicted` resolves if it was taken first.
    pub fn park(&self, held: T) -> (Ticket, Evicted) {
        let (tx, rx) = oneshot::channel();
        let mut inner = self.lock();
        let ticket = inner.next;
        inner.next += 1;
        inner.waiting.insert(ticket, (held, tx));
        (Ticket(ticket), rx)
    }

    /// Takes back what `ticket` parked; `None` if it was evicted.
    pub fn unpark(&self, ticket: Ticket) -> Option<T> {
        self.lock().waiting.remove(&ticket.0).map(|(held, _)| held)
    }

    /// Takes what the oldest idle connection holds and tells that
    /// connection to close; `None` when no connection is idle.
    pub fn evict_oldest(&self) -> Option<T> {
        let (_, (held, evict)) = self.lock().waiting.pop_first()?;
        // The connection may have stopped waiting just now; it then finds
        // its slot gone and closes all the same.
        let _ = evict.send(());
        Some(held)
    }

    /// Connections parked now.
    pub fn len(&self) -> usize {
        self.lock().waiting.len()
    }

    /// Whether no connection is parked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The oldest parked connection is evicted first, and told so; one
    /// that took its slot back is never evicted; an empty set evicts
    /// nothing.
    #[tokio::test]
    async fn the_oldest_idle_connection_is_evicted_first_and_told() {
        let set = IdleSet::default();
        let (first, mut first_evicted) = set.park("a");
        let (second, second_evicted) = set.park("b");
        let (third, _third_evicted) = set.park("c");
        assert_eq!(set.len(), 3);
        assert_eq!(set.unpark(second), Some("b"));
        assert_eq!(set.evict_oldest(), Some("a"));
        assert_eq!(first_evicted.try_recv(), Ok(()));
        assert_eq!(set.unpark(first), None, "an evicted slot is gone");
        // Unparked: its own wait ended, nobody evicted it.
        assert!(second_evicted.await.is_err());
        assert_eq!(set.evict_oldest(), Some("c"));
        assert_eq!(set.unpark(third), None);
        assert_eq!(set.evict_oldest(), None);
        assert!(set.is_empty());
    }
}

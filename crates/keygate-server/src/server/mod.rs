//! The one accept loop every keygate socket goes through (after mini-redis's
//! `server::run`): the caller hands in the bound listener, a [`Handler`] for
//! each connection and a shutdown future.
//!
//! - Accepting never waits for anything but the kernel. A peer the handler
//!   does not allow ([`Handler::allows`], SO_PEERCRED) is told so if its
//!   socket takes the reply at once and closed there: it never holds a
//!   slot or a lookup. At [`Limits::max_connections`], the oldest
//!   connection that has not sent anything is closed to admit the new one
//!   ([`crate::idle`]); only when every open connection has sent its
//!   request is the new one closed at once. Clients that connect and say
//!   nothing can thus neither keep Wazuh's request in the backlog nor turn
//!   it away. What bounds the work done at once is up to the handler (the
//!   Wazuh handler bounds lookups in flight separately).
//! - A connection is served on the accepting task while it can be, and
//!   gets a task of its own only when it has to wait: the handler's future
//!   is polled once right after `accept()`, and spawned only if that poll is
//!   pending. A fresh [`Connection`] is a plain socket the runtime does not
//!   watch: its reads and writes are first tried at once, and the socket is
//!   handed back to the runtime's poller only if one would block. A Wazuh
//!   request whose bytes are there and whose answer is in memory is thus
//!   accepted, read, answered and closed with no task, no wait in the
//!   poller and no wake-up of another thread.
//! - Several loops may serve one socket ([`serve`] with shared [`Slots`]).
//!   The Wazuh socket is served by [`accept_blocking`] instead: plain
//!   threads blocking in `accept()` on the one listener (the kernel wakes
//!   one of them per connection), each serving what it accepted on the spot
//!   and handing only what has to wait to the runtime. No poller
//!   registration, no wake-up of another thread, no spurious accept: per
//!   answered request the system calls are those of a fixed-reply server
//!   plus one `getsockopt` for the peer's credentials and one `recv`: the
//!   Wazuh request is peeked and consumed only after the reply
//!   ([`Connection::read_once`]), which spares the client a spurious
//!   wake-up per request.
//! - An accept error (EMFILE when file descriptors run out) backs off
//!   exponentially up to [`MAX_BACKOFF`] instead of spinning, and the delay
//!   resets after the next successful accept.
//! - A panic while serving a connection (a bug) is caught where the
//!   connection is polled on the accepting thread, logged and counted; it
//!   never ends the loop. A spawned connection's panic ends only its task.
//! - At shutdown the loop stops accepting and waits up to
//!   [`Limits::drain`] for the connections being served.

use std::future::Future;
use std::io;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use tokio::net::UnixListener;

mod connection;
mod slots;
mod threads;

pub use connection::{Connection, Held, Peer};
pub use slots::{Counters, Slot, Slots};
pub use threads::{accept_blocking, AcceptorEnded, Acceptors, BlockingListener};

use slots::Admission;

/// First delay after a failed accept; it doubles with each failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest delay between two accepts while they keep failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// What serves one accepted connection. The loop calls this once per
/// connection and polls the future once on the accepting task; only if it
/// is pending then does it get a task of its own.
pub trait Handler: Send + Sync + 'static {
    /// Serves `connection`, opened by `peer`, to the end.
    fn handle(&self, connection: Connection, peer: Option<Peer>)
        -> impl Future<Output = ()> + Send;

    /// Whether `peer` may be served at all. A peer refused here is closed
    /// at accept, before it takes a connection slot, after being sent
    /// [`refusal`](Self::refusal) if its socket takes it at once.
    fn allows(&self, _peer: Option<&Peer>) -> bool {
        true
    }

    /// What a peer that [`allows`](Self::allows) refused is told (and any
    /// record of it the handler keeps); called on the accepting thread.
    fn refusal(&self, _peer: Option<Peer>) -> Vec<u8> {
        Vec::new()
    }
}

/// A source of connections: the Unix listener, or a stand-in in tests.
pub trait Accept: Send {
    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<Connection>> + Send;
}

impl Accept for UnixListener {
    async fn accept(&mut self) -> io::Result<Connection> {
        let (stream, _) = UnixListener::accept(self).await?;
        Connection::accepted(stream)
    }
}

/// The loop's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once. One more takes the slot of the
    /// oldest connection that has sent nothing (counted in
    /// [`Counters::evicted_idle`]); if there is none, it is closed at once
    /// (counted in [`Counters::refused_at_limit`]).
    pub max_connections: usize,
    /// How long shutdown waits for connections being served.
    pub drain: Duration,
}

/// Exponential back-off between failed accepts.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// The delay to wait now; the following one is twice as long, up to
    /// [`MAX_BACKOFF`].
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(MAX_BACKOFF);
        delay
    }

    /// Back to the first delay (after a successful accept).
    pub fn reset(&mut self) {
        self.next = FIRST_BACKOFF;
    }
}

/// Serves `listener` with `handler` until `shutdown` completes, then stops
/// accepting and waits up to `limits.drain` for the connections open.
pub async fn run<L: Accept, H: Handler>(
    listener: L,
    handler: Arc<H>,
    limits: Limits,
    counters: Arc<Counters>,
    shutdown: impl Future,
) {
    let slots = Slots::new(limits.max_connections);
    serve(listener, handler, &slots, limits.drain, counters, shutdown).await;
}

/// [`run`] for one of several loops serving the same socket: `slots` and
/// `counters` are the socket's, shared by all its loops. At shutdown each
/// loop waits up to `drain` for every connection of the socket.
pub async fn serve<L: Accept, H: Handler>(
    mut listener: L,
    handler: Arc<H>,
    slots: &Slots,
    drain: Duration,
    counters: Arc<Counters>,
    shutdown: impl Future,
) {
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok(connection) => {
                backoff.reset();
                admit(connection, &handler, slots, &counters);
            }
            Err(error) => {
                let delay = accept_failed(&counters, &mut backoff, &error);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        }
    }
    drop(listener);
    slots.drain(drain).await;
}

/// Counts and logs a failed accept; returns how long to wait before the
/// next one.
fn accept_failed(counters: &Counters, backoff: &mut Backoff, error: &io::Error) -> Duration {
    let delay = backoff.next_delay();
    let n = slots::bump(&counters.accept_errors);
    tracing::warn!(%error, errors = n, retry_in_ms = delay.as_millis() as u64, "Accept failed; backing off.");
    delay
}

/// Serves an accepted connection (on this thread while it can be, see
/// [`start`]) if its peer is allowed and it gets a slot; otherwise closes
/// it at once and counts it. Refusals are logged the 1st, 2nd, 4th, 8th...
/// time, so a flood cannot flood the log.
fn admit<H: Handler>(
    mut connection: Connection,
    handler: &Arc<H>,
    slots: &Slots,
    counters: &Arc<Counters>,
) {
    let peer = connection.peer();
    if !handler.allows(peer.as_ref()) {
        let n = slots::bump(&counters.refused_peers);
        if n.is_power_of_two() {
            tracing::warn!(
                uid = peer.map(|p| i64::from(p.uid)),
                gid = peer.map(|p| i64::from(p.gid)),
                pid = peer.and_then(|p| p.pid),
                refused = n,
                "Connection refused at accept: this peer is not in allowed_uids or allowed_gids."
            );
        }
        connection.reply_now_and_close(&handler.refusal(peer));
        return;
    }
    let slot = match slots.admit(counters) {
        Admission::Free(slot) => slot,
        Admission::Evicted(slot) => {
            let n = counters.evicted_idle();
            if n.is_power_of_two() {
                tracing::warn!(
                    max_connections = slots.limit,
                    evicted = n,
                    "Idle connection closed to admit a new one: max_connections are open."
                );
            }
            slot
        }
        Admission::Full => {
            let n = counters.refused_at_limit();
            if n.is_power_of_two() {
                tracing::warn!(
                    max_connections = slots.limit,
                    refused = n,
                    "Connection closed at once: max_connections are open, none of them idle."
                );
            }
            return;
        }
    };
    connection.hold(slot, slots.idle.clone());
    let handler = handler.clone();
    start(
        Box::pin(async move { handler.handle(connection, peer).await }),
        counters,
    );
}

/// Polls `serving` once here, on the accepting task; spawns it only if it
/// has to wait. Polling with a no-op waker is sound: a pending future has
/// registered that waker, and the task's first poll registers the real one
/// (every future must use the waker of its latest poll). A panic in that
/// poll is caught (the connection is dropped, closing it), logged and
/// counted, so that it cannot end the accepting thread; a panic in a
/// spawned task ends only that task.
fn start(mut serving: Pin<Box<dyn Future<Output = ()> + Send>>, counters: &Counters) {
    let mut cx = Context::from_waker(Waker::noop());
    match std::panic::catch_unwind(AssertUnwindSafe(|| serving.as_mut().poll(&mut cx))) {
        Ok(std::task::Poll::Pending) => {
            tokio::spawn(serving);
        }
        Ok(std::task::Poll::Ready(())) => {}
        Err(_) => {
            let panics = counters.count_panic();
            tracing::error!(
                panics,
                "Serving a connection panicked (a bug); it was closed."
            );
        }
    }
}

#[cfg(test)]
mod tests;

//! The one accept loop every keygate socket goes through (after mini-redis's
//! `server::run`): the caller hands in the bound listener, a [`Handler`] for
//! each connection and a shutdown future.
//!
//! - Accepting never waits for anything but the kernel: a connection beyond
//!   [`Limits::max_connections`] is closed at once and counted, so clients
//!   that connect and say nothing can never keep Wazuh's request in the
//!   backlog. What bounds the work done at once is up to the handler (the
//!   Wazuh handler bounds lookups in flight separately).
//! - An accept error (EMFILE when file descriptors run out) backs off
//!   exponentially up to [`MAX_BACKOFF`] instead of spinning, and the delay
//!   resets after the next successful accept.
//! - At shutdown the loop stops accepting and waits up to
//!   [`Limits::drain`] for the connections being served.

use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// First delay after a failed accept; it doubles with each failure in a row.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(10);
/// Longest delay between two accepts while they keep failing.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Who is on the other end of a connection (SO_PEERCRED), kept with every
/// request for access control, logs and the audit trail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    /// The peer's effective user id.
    pub uid: u32,
    /// The peer's effective group id.
    pub gid: u32,
    /// The peer's process id, when the kernel reports one.
    pub pid: Option<i32>,
}

impl Peer {
    /// The credentials of the process that connected `stream`; `None` if the
    /// kernel does not say (never on Linux).
    pub fn of(stream: &UnixStream) -> Option<Self> {
        let cred = stream.peer_cred().ok()?;
        Some(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        })
    }
}

/// What serves one accepted connection. The loop spawns one task per
/// connection and calls this once in it.
pub trait Handler: Send + Sync + 'static {
    /// Serves `stream`, opened by `peer`, to the end.
    fn handle(&self, stream: UnixStream, peer: Option<Peer>) -> impl Future<Output = ()> + Send;
}

/// A source of connections: the Unix listener, or a stand-in in tests.
pub trait Accept: Send {
    /// The next connection.
    fn accept(&mut self) -> impl Future<Output = io::Result<UnixStream>> + Send;
}

impl Accept for UnixListener {
    async fn accept(&mut self) -> io::Result<UnixStream> {
        UnixListener::accept(self).await.map(|(stream, _)| stream)
    }
}

/// The loop's bounds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Most connections open at once; one more is closed at once and
    /// counted in [`Counters::refused_at_limit`].
    pub max_connections: usize,
    /// How long shutdown waits for connections being served.
    pub drain: Duration,
}

/// Live counters of one served socket, shared with whoever reports them
/// (metrics, `keygate backends`).
#[derive(Debug, Default)]
pub struct Counters {
    open: AtomicU64,
    accepted: AtomicU64,
    refused_at_limit: AtomicU64,
    refused_peers: AtomicU64,
    accept_errors: AtomicU64,
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
    /// Connections closed at once because `max_connections` were open.
    pub fn refused_at_limit(&self) -> u64 {
        self.refused_at_limit.load(Ordering::Relaxed)
    }
    /// Requests refused because the peer is not allowed.
    pub fn refused_peers(&self) -> u64 {
        self.refused_peers.load(Ordering::Relaxed)
    }
    /// Failed accepts (each followed by a back-off).
    pub fn accept_errors(&self) -> u64 {
        self.accept_errors.load(Ordering::Relaxed)
    }
    /// Counts a request refused because of who sent it.
    pub fn count_refused_peer(&self) -> u64 {
        self.refused_peers.fetch_add(1, Ordering::Relaxed) + 1
    }
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
    mut listener: L,
    handler: Arc<H>,
    limits: Limits,
    counters: Arc<Counters>,
    shutdown: impl Future,
) {
    let limit = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let open = Arc::new(Semaphore::new(limit));
    let mut backoff = Backoff::default();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok(stream) => {
                backoff.reset();
                stream
            }
            Err(error) => {
                let delay = backoff.next_delay();
                let n = counters.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(%error, errors = n, retry_in_ms = delay.as_millis() as u64, "Accept failed; backing off.");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(delay) => continue,
                }
            }
        };
        let Ok(permit) = open.clone().try_acquire_owned() else {
            let n = counters.refused_at_limit.fetch_add(1, Ordering::Relaxed) + 1;
            // Log the 1st, 2nd, 4th, 8th... so a flood cannot flood the log.
            if n.is_power_of_two() {
                tracing::warn!(
                    max_connections = limit,
                    refused = n,
                    "Connection closed at once: max_connections are open."
                );
            }
            drop(stream);
            continue;
        };
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        counters.open.fetch_add(1, Ordering::Relaxed);
        let peer = Peer::of(&stream);
        let handler = handler.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            handler.handle(stream, peer).await;
            counters.open.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
    drop(listener);
    let all = u32::try_from(limit).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.drain, open.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            drain_s = limits.drain.as_secs(),
            "Connections still open at shutdown were abandoned."
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A listener whose accept always fails with EMFILE, counting attempts.
    struct Exhausted(Arc<AtomicUsize>);

    impl Accept for Exhausted {
        async fn accept(&mut self) -> io::Result<UnixStream> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::from_raw_os_error(24)) // EMFILE
        }
    }

    struct Nothing;
    impl Handler for Nothing {
        async fn handle(&self, _stream: UnixStream, _peer: Option<Peer>) {}
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_resets() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..10).map(|_| b.next_delay().as_millis() as u64).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), FIRST_BACKOFF);
    }

    /// While accept keeps failing (EMFILE), the loop backs off instead of
    /// retrying every few milliseconds: over 60 s of failures it tries 67
    /// times (7 doubling steps, then once a second), not thousands; and it
    /// still stops at shutdown.
    #[tokio::test(start_paused = true)]
    async fn failing_accepts_back_off_exponentially() {
        let attempts = Arc::new(AtomicUsize::new(0));
        let counters = Arc::new(Counters::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(
            Exhausted(attempts.clone()),
            Arc::new(Nothing),
            Limits {
                max_connections: 4,
                drain: Duration::from_secs(1),
            },
            counters.clone(),
            async {
                rx.await.ok();
            },
        ));
        // 10+20+...+640 = 1270 ms for the first 8 attempts, then one a second.
        tokio::time::sleep(Duration::from_millis(1275)).await;
        assert_eq!(attempts.load(Ordering::Relaxed), 8);
        tokio::time::sleep(Duration::from_millis(60_000 - 1275)).await;
        let n = attempts.load(Ordering::Relaxed);
        assert!((66..=68).contains(&n), "{n} accepts in 60 s");
        assert_eq!(counters.accept_errors(), n as u64);
        tx.send(()).unwrap();
        task.await.unwrap();
    }
}

//! The one accept loop every keygate socket goes through (after mini-redis's
//! `server::run`): the caller hands in the bound listener, a [`Handler`] for
//! each connection and a shutdown future.
//!
//! - Accepting never waits for anything but the kernel: a connection beyond
//!   [`Limits::max_connections`] is closed at once and counted, so clients
//!   that connect and say nothing can never keep Wazuh's request in the
//!   backlog. What bounds the work done at once is up to the handler (the
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
//! - At shutdown the loop stops accepting and waits up to
//!   [`Limits::drain`] for the connections being served.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Waker};
use std::time::Duration;

use nix::sys::socket::MsgFlags;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// The credentials (SO_PEERCRED) of the process that connected `stream`;
    /// `None` if the kernel does not say (never on Linux).
    pub fn of(stream: &impl AsFd) -> Option<Self> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let cred = getsockopt(stream, PeerCredentials).ok()?;
        Some(Self {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: Some(cred.pid()).filter(|&p| p > 0),
        })
    }
}

/// One accepted connection, with its peer's credentials.
///
/// Fresh from the listener it is a plain socket that the runtime does not
/// watch: [`read`](Self::read) and [`write_all`](Self::write_all) first try
/// the system call at once without waiting (`MSG_DONTWAIT`, whatever the
/// socket's own mode), and only when it would block is the socket made
/// non-blocking, registered with the runtime's poller (once; it stays so)
/// and the call awaited. A Wazuh client sends its
/// request as soon as it is connected and reads a reply that fits the
/// socket buffer, so most connections never wait in the poller.
#[derive(Debug)]
pub struct Connection {
    state: State,
    peer: Option<Peer>,
    /// Bytes [`read_once`](Self::read_once) left in the socket (peeked,
    /// not consumed), discarded after the reply or at the latest on drop.
    peeked: usize,
}

#[derive(Debug)]
enum State {
    /// Not registered with the runtime; blocking or not.
    Plain(std::os::unix::net::UnixStream),
    /// Registered with the runtime's poller.
    Watched(UnixStream),
    /// Registering failed; the socket is closed.
    Lost,
}

impl Connection {
    /// A connection fresh from the listener (registered with the runtime,
    /// as tokio's `accept` leaves it): its peer is read, then it is taken
    /// off the poller and its first read is tried at once.
    pub fn accepted(stream: UnixStream) -> io::Result<Self> {
        Ok(Self::plain(stream.into_std()?))
    }

    /// A connection fresh from a blocking `accept()`: its peer is read,
    /// and its first read is tried at once.
    pub fn plain(stream: std::os::unix::net::UnixStream) -> Self {
        Self {
            peer: Peer::of(&stream),
            state: State::Plain(stream),
            peeked: 0,
        }
    }

    /// A connection that stays registered with the runtime.
    pub fn watched(stream: UnixStream) -> Self {
        Self {
            peer: Peer::of(&stream),
            state: State::Watched(stream),
            peeked: 0,
        }
    }

    /// Who connected; `None` if the kernel does not say.
    pub fn peer(&self) -> Option<Peer> {
        self.peer
    }

    /// Reads what the peer sent, at most `buf.len()` bytes; 0 at its end.
    pub async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let State::Plain(s) = &self.state {
            if let Some(n) = recv_now(s.as_raw_fd(), buf, MsgFlags::empty())? {
                return Ok(n);
            }
        }
        self.registered()?.read(buf).await
    }

    /// Reads the one request of a connection that reads nothing more:
    /// what is there is copied without being consumed (`MSG_PEEK`), and
    /// consumed only after the reply is written (or when the connection is
    /// dropped). Consuming the client's bytes wakes a client already
    /// waiting for the reply (the kernel wakes a Unix socket's sender when
    /// its bytes are freed, and the waiting reader sleeps on the same
    /// queue): done after the reply, that wake-up finds the client awake.
    /// A request that is not there yet is read as [`read`](Self::read)
    /// does.
    pub async fn read_once(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let State::Plain(s) = &self.state {
            if let Some(n) = recv_now(s.as_raw_fd(), buf, MsgFlags::MSG_PEEK)? {
                self.peeked = n;
                return Ok(n);
            }
        }
        // Not there yet: nothing to try again at once, wait for it.
        self.registered()?.read(buf).await
    }

    /// Consumes what [`read_once`](Self::read_once) peeked, so closing the
    /// socket with it unread does not reset the client's connection.
    fn discard_peeked(&mut self) {
        let fd = match &self.state {
            State::Plain(s) => s.as_raw_fd(),
            State::Watched(s) => s.as_raw_fd(),
            State::Lost => return,
        };
        let mut scratch = [0u8; 1024];
        while self.peeked > 0 {
            let want = self.peeked.min(scratch.len());
            match recv_now(fd, &mut scratch[..want], MsgFlags::empty()) {
                Ok(Some(n)) if n > 0 => self.peeked -= n,
                _ => break,
            }
        }
        self.peeked = 0;
    }

    /// Writes all of `bytes`.
    pub async fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        use nix::sys::socket::send;
        if let State::Plain(s) = &mut self.state {
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            while !bytes.is_empty() {
                match send(s.as_raw_fd(), bytes, flags) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => bytes = &bytes[n..],
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(nix::errno::Errno::EAGAIN) => break,
                    Err(e) => return Err(e.into()),
                }
            }
            if bytes.is_empty() {
                self.discard_peeked();
                return Ok(());
            }
        }
        self.registered()?.write_all(bytes).await?;
        self.discard_peeked();
        Ok(())
    }

    /// The connection as a tokio stream, registered with the runtime (for
    /// handlers that want tokio's reading and writing helpers).
    pub fn into_tokio(mut self) -> io::Result<UnixStream> {
        self.registered()?;
        match std::mem::replace(&mut self.state, State::Lost) {
            State::Watched(s) => Ok(s),
            _ => Err(lost()),
        }
    }

    /// Registers the socket with the runtime if it is not yet.
    fn registered(&mut self) -> io::Result<&mut UnixStream> {
        if matches!(self.state, State::Plain(_)) {
            let State::Plain(plain) = std::mem::replace(&mut self.state, State::Lost) else {
                return Err(lost());
            };
            // A socket from a blocking accept() is blocking; the poller
            // needs it not to be.
            plain.set_nonblocking(true)?;
            self.state = State::Watched(UnixStream::from_std(plain)?);
        }
        match &mut self.state {
            State::Watched(s) => Ok(s),
            _ => Err(lost()),
        }
    }
}

/// One `recv` at once, whatever the socket's own mode (`MSG_DONTWAIT` is
/// added to `flags`), retried when interrupted: `None` when it would block.
fn recv_now(fd: RawFd, buf: &mut [u8], flags: MsgFlags) -> io::Result<Option<usize>> {
    loop {
        match nix::sys::socket::recv(fd, buf, flags | MsgFlags::MSG_DONTWAIT) {
            Ok(n) => return Ok(Some(n)),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(nix::errno::Errno::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.discard_peeked();
    }
}

fn lost() -> io::Error {
    io::Error::new(
        io::ErrorKind::NotConnected,
        "the connection could not be registered with the runtime",
    )
}

/// What serves one accepted connection. The loop calls this once per
/// connection and polls the future once on the accepting task; only if it
/// is pending then does it get a task of its own.
pub trait Handler: Send + Sync + 'static {
    /// Serves `connection`, opened by `peer`, to the end.
    fn handle(&self, connection: Connection, peer: Option<Peer>)
        -> impl Future<Output = ()> + Send;
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

/// The connection slots of one socket, shared by every loop serving it
/// ([`Limits::max_connections`] of them).
#[derive(Clone, Debug)]
pub struct Slots {
    open: Arc<Semaphore>,
    limit: usize,
}

impl Slots {
    /// `max_connections` slots (at least one).
    pub fn new(max_connections: usize) -> Self {
        let limit = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            open: Arc::new(Semaphore::new(limit)),
            limit,
        }
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

impl Slots {
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

/// Counts and logs a failed accept; returns how long to wait before the
/// next one.
fn accept_failed(counters: &Counters, backoff: &mut Backoff, error: &io::Error) -> Duration {
    let delay = backoff.next_delay();
    let n = counters.accept_errors.fetch_add(1, Ordering::Relaxed) + 1;
    tracing::warn!(%error, errors = n, retry_in_ms = delay.as_millis() as u64, "Accept failed; backing off.");
    delay
}

/// Serves an accepted connection if a slot is free (on this thread while
/// it can be, see [`start`]); closes it at once and counts it if not.
fn admit<H: Handler>(
    connection: Connection,
    handler: &Arc<H>,
    slots: &Slots,
    counters: &Arc<Counters>,
) {
    let Ok(permit) = Arc::clone(&slots.open).try_acquire_owned() else {
        let n = counters.refused_at_limit.fetch_add(1, Ordering::Relaxed) + 1;
        // Log the 1st, 2nd, 4th, 8th... so a flood cannot flood the log.
        if n.is_power_of_two() {
            tracing::warn!(
                max_connections = slots.limit,
                refused = n,
                "Connection closed at once: max_connections are open."
            );
        }
        return;
    };
    counters.accepted.fetch_add(1, Ordering::Relaxed);
    counters.open.fetch_add(1, Ordering::Relaxed);
    let peer = connection.peer();
    let (handler, counters) = (handler.clone(), counters.clone());
    start(Box::pin(async move {
        handler.handle(connection, peer).await;
        counters.open.fetch_sub(1, Ordering::Relaxed);
        drop(permit);
    }));
}

/// One listener served by threads blocking in `accept()`: see
/// [`accept_blocking`].
#[derive(Debug)]
pub struct BlockingListener {
    listener: std::os::unix::net::UnixListener,
    stopping: AtomicBool,
}

impl BlockingListener {
    /// Takes `listener` for blocking accepts (it is made blocking).
    pub fn new(listener: std::os::unix::net::UnixListener) -> io::Result<Self> {
        listener.set_nonblocking(false)?;
        Ok(Self {
            listener,
            stopping: AtomicBool::new(false),
        })
    }

    /// Stops accepting: every thread blocked in [`accept_blocking`] returns
    /// once the connections already queued are taken, and a connect from
    /// now on is refused (`shutdown(SHUT_RD)` on the listening socket).
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let fd = self.listener.as_raw_fd();
        if let Err(error) = nix::sys::socket::shutdown(fd, nix::sys::socket::Shutdown::Read) {
            tracing::warn!(%error, "Cannot stop the accept threads.");
        }
    }
}

/// Serves `listener` from the calling thread until [`BlockingListener::stop`]:
/// blocks in `accept()`, serves each connection on this thread while it
/// can (read, answer, write and close with no task), and spawns on the
/// runtime only what has to wait (a late request, a lookup that waits).
/// Run one per core on the same listener; the kernel wakes one waiting
/// thread per connection. Must run inside the runtime's context
/// ([`tokio::runtime::Handle::enter`]): timers and spawned connections are
/// the runtime's. Accept errors back off as in [`serve`] (the thread
/// sleeps). Draining is the caller's ([`Slots::drain`]).
pub fn accept_blocking<H: Handler>(
    listener: &BlockingListener,
    handler: &Arc<H>,
    slots: &Slots,
    counters: &Arc<Counters>,
) {
    let mut backoff = Backoff::default();
    loop {
        match listener.listener.accept() {
            Ok((stream, _)) => {
                backoff.reset();
                admit(Connection::plain(stream), handler, slots, counters);
            }
            Err(_) if listener.stopping.load(Ordering::SeqCst) => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => {
                let delay = accept_failed(counters, &mut backoff, &error);
                std::thread::sleep(delay);
            }
        }
    }
}

/// Polls `serving` once here, on the accepting task; spawns it only if it
/// has to wait. Polling with a no-op waker is sound: a pending future has
/// registered that waker, and the task's first poll registers the real one
/// (every future must use the waker of its latest poll).
fn start(mut serving: Pin<Box<dyn Future<Output = ()> + Send>>) {
    let mut cx = Context::from_waker(Waker::noop());
    if serving.as_mut().poll(&mut cx).is_pending() {
        tokio::spawn(serving);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A listener whose accept always fails with EMFILE, counting attempts.
    struct Exhausted(Arc<AtomicUsize>);

    impl Accept for Exhausted {
        async fn accept(&mut self) -> io::Result<Connection> {
            self.0.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::from_raw_os_error(24)) // EMFILE
        }
    }

    struct Nothing;
    impl Handler for Nothing {
        async fn handle(&self, _connection: Connection, _peer: Option<Peer>) {}
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

    /// Echoes what it reads, `times` times over, then closes: a reply as
    /// large as the test wants.
    struct Echo {
        times: usize,
    }
    impl Handler for Echo {
        async fn handle(&self, mut connection: Connection, _peer: Option<Peer>) {
            let mut buf = [0u8; 64];
            let Ok(n) = connection.read(&mut buf).await else {
                return;
            };
            let reply = buf[..n].repeat(self.times);
            let _ = connection.write_all(&reply).await;
        }
    }

    struct Served {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        counters: Arc<Counters>,
        stop: tokio::sync::watch::Sender<bool>,
        loops: Vec<tokio::task::JoinHandle<()>>,
    }

    /// `loops` accept loops on clones of one listener, sharing `slots`.
    async fn serve_with(handler: impl Handler, loops: usize, slots: Slots) -> Served {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let handler = Arc::new(handler);
        let counters = Arc::new(Counters::default());
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let loops = (0..loops)
            .map(|_| {
                let listener = listener.try_clone().unwrap();
                listener.set_nonblocking(true).unwrap();
                let listener = UnixListener::from_std(listener).unwrap();
                let (handler, slots, counters) = (handler.clone(), slots.clone(), counters.clone());
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let until = async move {
                        let _ = stopped.wait_for(|s| *s).await;
                    };
                    serve(
                        listener,
                        handler,
                        &slots,
                        Duration::from_secs(5),
                        counters,
                        until,
                    )
                    .await;
                })
            })
            .collect();
        Served {
            _dir: dir,
            path,
            counters,
            stop,
            loops,
        }
    }

    /// A request read with `read_once` (peeked) is consumed after the
    /// reply: the client reads the reply and then a clean end, never a
    /// reset, whether the reply was written or the connection dropped
    /// without one; and it was only peeked until then.
    #[tokio::test]
    async fn a_request_read_once_is_consumed_after_the_reply_and_never_resets() {
        use std::io::{Read, Write};
        for reply in [Some(&b"{\"error\":0}"[..]), None] {
            let (mut client, server) = std::os::unix::net::UnixStream::pair().unwrap();
            client.write_all(b"id:001").unwrap();
            let mut connection = Connection::plain(server);
            let mut buf = [0u8; 64];
            let n = connection.read_once(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"id:001");
            // Still in the socket: a plain read sees the same bytes.
            let mut again = [0u8; 64];
            let State::Plain(s) = &connection.state else {
                panic!("the connection left the plain state")
            };
            let m = recv_now(s.as_raw_fd(), &mut again, MsgFlags::MSG_PEEK).unwrap();
            assert_eq!(m.map(|m| &again[..m]), Some(&b"id:001"[..]));
            if let Some(reply) = reply {
                connection.write_all(reply).await.unwrap();
            }
            drop(connection);
            let mut out = Vec::new();
            // A reset would be an error here (ECONNRESET), not the end.
            client.read_to_end(&mut out).unwrap();
            assert_eq!(out, reply.unwrap_or_default());
        }
    }

    /// A request that is not there when `read_once` is called is waited
    /// for and read as `read` would.
    #[tokio::test]
    async fn read_once_waits_for_a_late_request() {
        let (client, server) = std::os::unix::net::UnixStream::pair().unwrap();
        client.set_nonblocking(true).unwrap();
        let mut client = UnixStream::from_std(client).unwrap();
        let mut connection = Connection::plain(server);
        let late = async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            client.write_all(b"ip:10.0.0.1").await.unwrap();
        };
        let mut buf = [0u8; 64];
        let (read, ()) = tokio::join!(connection.read_once(&mut buf), late);
        assert_eq!(&buf[..read.unwrap()], b"ip:10.0.0.1");
        connection.write_all(b"ok").await.unwrap();
        drop(connection);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"ok");
    }

    /// A request that arrives after the connection was accepted (the first
    /// read would block) is still read and answered: the connection is
    /// handed to the runtime and awaited.
    #[tokio::test]
    async fn a_request_sent_late_is_awaited_and_answered() {
        let served = serve_with(Echo { times: 1 }, 1, Slots::new(4)).await;
        let mut client = UnixStream::connect(&served.path).await.unwrap();
        while served.counters.accepted() < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        client.write_all(b"late").await.unwrap();
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, b"late");
    }

    /// A reply larger than the socket buffer is written in full: the part
    /// that does not fit at once is awaited.
    #[tokio::test]
    async fn a_reply_larger_than_the_socket_buffer_is_written_in_full() {
        let times = 200_000;
        let served = serve_with(Echo { times }, 1, Slots::new(4)).await;
        let mut client = UnixStream::connect(&served.path).await.unwrap();
        client.write_all(b"0123456789").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        assert_eq!(out.len(), 10 * times);
        assert!(out.chunks(10).all(|c| c == b"0123456789"));
    }

    /// Loops serving one socket share its connection slots: with three
    /// idle connections open (whichever loop accepted them) the fourth is
    /// closed at once and counted; and every loop stops at shutdown.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loops_on_one_socket_share_its_connection_limit() {
        let served = serve_with(Echo { times: 1 }, 2, Slots::new(3)).await;
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(UnixStream::connect(&served.path).await.unwrap());
        }
        while served.counters.open() < 3 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut extra = UnixStream::connect(&served.path).await.unwrap();
        let mut buf = [0u8; 8];
        let n = tokio::time::timeout(Duration::from_secs(10), extra.read(&mut buf))
            .await
            .expect("the connection beyond the shared limit was kept waiting")
            .unwrap_or(0);
        assert_eq!(n, 0);
        assert_eq!(served.counters.refused_at_limit(), 1);
        drop(idle);
        served.stop.send(true).unwrap();
        for l in served.loops {
            tokio::time::timeout(Duration::from_secs(10), l)
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// Threads blocking in `accept()` on one listener: a request there at
    /// once and a request sent late (handed to the runtime) are both
    /// answered; the threads share the socket's connection slots (the
    /// connection beyond them is closed at once and counted); `stop` ends
    /// every thread and refuses later connects.
    #[test]
    fn blocking_acceptors_answer_share_slots_and_stop() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = Arc::new(BlockingListener::new(listener).unwrap());
        let handler = Arc::new(Echo { times: 1 });
        let slots = Slots::new(3);
        let counters = Arc::new(Counters::default());
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (l, h, s, c) = (
                    listener.clone(),
                    handler.clone(),
                    slots.clone(),
                    counters.clone(),
                );
                let rt = runtime.handle().clone();
                std::thread::spawn(move || {
                    let _context = rt.enter();
                    accept_blocking(&l, &h, &s, &c);
                })
            })
            .collect();
        use std::io::{Read, Write};
        let ask = |late: bool| {
            let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            if late {
                std::thread::sleep(Duration::from_millis(100));
            }
            c.write_all(b"ping").unwrap();
            let mut out = Vec::new();
            c.read_to_end(&mut out).unwrap();
            out
        };
        assert_eq!(ask(false), b"ping");
        assert_eq!(ask(true), b"ping");

        let idle: Vec<_> = (0..3)
            .map(|_| std::os::unix::net::UnixStream::connect(&path).unwrap())
            .collect();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while counters.open() < 3 {
            assert!(
                std::time::Instant::now() < deadline,
                "idle connections not accepted"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut extra = std::os::unix::net::UnixStream::connect(&path).unwrap();
        extra
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(extra.read(&mut buf).unwrap_or(0), 0);
        assert_eq!(counters.refused_at_limit(), 1);
        drop(idle);

        listener.stop();
        for t in threads {
            t.join().unwrap();
        }
        assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
        assert_eq!(counters.accepted(), 5);
    }
}

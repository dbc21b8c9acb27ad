//! Tests of the accept loops: back-off, reads tried at once, connection
//! slots shared, idle connections evicted at the limit, refused peers,
//! panics caught, accept threads watched.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

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
    slots: Slots,
    stop: tokio::sync::watch::Sender<bool>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

/// `loops` accept loops on clones of one listener, sharing `slots`.
async fn serve_with<H: Handler>(handler: Arc<H>, loops: usize, slots: Slots) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let counters = Arc::new(Counters::default());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shared = slots.clone();
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
        slots: shared,
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
        let m = connection.peek_now(&mut again);
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
    let served = serve_with(Arc::new(Echo { times: 1 }), 1, Slots::new(4)).await;
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
    let served = serve_with(Arc::new(Echo { times }), 1, Slots::new(4)).await;
    let mut client = UnixStream::connect(&served.path).await.unwrap();
    client.write_all(b"0123456789").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut out = Vec::new();
    client.read_to_end(&mut out).await.unwrap();
    assert_eq!(out.len(), 10 * times);
    assert!(out.chunks(10).all(|c| c == b"0123456789"));
}

/// Reads a request (counted), then holds the connection until the client
/// hangs up: a connection that has asked and is being served.
#[derive(Default)]
struct Busy(AtomicUsize);
impl Handler for Busy {
    async fn handle(&self, mut connection: Connection, _peer: Option<Peer>) {
        let mut buf = [0u8; 64];
        if let Ok(1..) = connection.read(&mut buf).await {
            self.0.fetch_add(1, Ordering::SeqCst);
            while let Ok(1..) = connection.read(&mut buf).await {}
        }
    }
}

/// Waits (up to 10 s) until `done` holds.
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a client reads until the server closes (at most 10 s).
async fn read_all(client: &mut UnixStream) -> Vec<u8> {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut out))
        .await
        .expect("the server kept the connection open")
        .unwrap_or(0);
    out
}

/// Loops serving one socket share its connection slots: with three
/// connections being served (each has sent its request, whichever loop
/// accepted it) the fourth is closed at once and counted, since none of
/// the three is idle; and every loop stops at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loops_on_one_socket_share_its_connection_limit() {
    let handler = Arc::new(Busy::default());
    let served = serve_with(handler.clone(), 2, Slots::new(3)).await;
    let mut busy = Vec::new();
    for _ in 0..3 {
        let mut c = UnixStream::connect(&served.path).await.unwrap();
        c.write_all(b"x").await.unwrap();
        busy.push(c);
    }
    until("three requests read", || {
        handler.0.load(Ordering::SeqCst) == 3
    })
    .await;
    let mut extra = UnixStream::connect(&served.path).await.unwrap();
    assert_eq!(read_all(&mut extra).await, b"");
    assert_eq!(served.counters.refused_at_limit(), 1);
    assert_eq!(served.counters.evicted_idle(), 0);
    drop(busy);
    until("the busy connections closed", || {
        served.counters.open() == 0
    })
    .await;
    served.stop.send(true).unwrap();
    for l in served.loops {
        tokio::time::timeout(Duration::from_secs(10), l)
            .await
            .unwrap()
            .unwrap();
    }
}

/// At the limit, a new connection takes the slot of the oldest connection
/// that has sent nothing: the new one is answered, the oldest idle one is
/// closed (its client reads the end), counted as evicted; the other idle
/// ones and a connection being served are left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_oldest_idle_connection_makes_room_for_a_new_one() {
    let served = serve_with(Arc::new(Echo { times: 1 }), 2, Slots::new(3)).await;
    let mut idle = Vec::new();
    for i in 1..=3 {
        idle.push(UnixStream::connect(&served.path).await.unwrap());
        // One at a time, so that their order is known.
        until("the idle connection parked", || {
            served.slots.idle.len() == i
        })
        .await;
    }
    assert_eq!(served.counters.open(), 3);
    let mut asking = UnixStream::connect(&served.path).await.unwrap();
    asking.write_all(b"ping").await.unwrap();
    assert_eq!(read_all(&mut asking).await, b"ping");
    assert_eq!(read_all(&mut idle[0]).await, b"", "the oldest was closed");
    assert_eq!(served.counters.evicted_idle(), 1);
    assert_eq!(served.counters.refused_at_limit(), 0);
    assert_eq!(served.slots.idle.len(), 2);
    // The others are still served: each is answered when it asks.
    for c in &mut idle[1..] {
        c.write_all(b"late").await.unwrap();
        assert_eq!(read_all(c).await, b"late");
    }
    until("every connection closed", || served.counters.open() == 0).await;
    assert!(served.slots.idle.is_empty());
}

/// Refuses root (the tests run as root), telling it so.
struct RefuseRoot(AtomicUsize);
impl Handler for RefuseRoot {
    async fn handle(&self, _connection: Connection, _peer: Option<Peer>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
    fn allows(&self, peer: Option<&Peer>) -> bool {
        peer.is_some_and(|p| p.uid != 0)
    }
    fn refusal(&self, _peer: Option<Peer>) -> Vec<u8> {
        b"not you".to_vec()
    }
}

/// A peer the handler does not allow is closed at accept: it reads the
/// refusal and the end, never takes a slot (with one slot, five refused
/// peers in a row leave it free and none is evicted), and the handler
/// never serves it; each is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_peers_are_closed_at_accept_and_take_no_slot() {
    assert_eq!(nix::unistd::geteuid().as_raw(), 0, "this test runs as root");
    let served = serve_with(Arc::new(RefuseRoot(AtomicUsize::new(0))), 1, Slots::new(1)).await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut c = UnixStream::connect(&served.path).await.unwrap();
        assert_eq!(read_all(&mut c).await, b"not you");
        held.push(c);
    }
    assert_eq!(served.counters.refused_peers(), 5);
    assert_eq!(served.counters.open(), 0);
    assert_eq!(served.counters.accepted(), 0);
    assert_eq!(served.counters.evicted_idle(), 0);
    assert_eq!(served.counters.refused_at_limit(), 0);
}

/// Refuses root without saying why: `refusal` is the trait's default.
struct RefuseRootSilently;
impl Handler for RefuseRootSilently {
    async fn handle(&self, _connection: Connection, _peer: Option<Peer>) {}
    fn allows(&self, peer: Option<&Peer>) -> bool {
        peer.is_some_and(|p| p.uid != 0)
    }
}

/// A handler that refuses a peer without a refusal of its own sends it
/// nothing: the peer reads the end at once, not a stray byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_peer_is_told_nothing_by_default() {
    assert_eq!(nix::unistd::geteuid().as_raw(), 0, "this test runs as root");
    let served = serve_with(Arc::new(RefuseRootSilently), 1, Slots::new(1)).await;
    let mut c = UnixStream::connect(&served.path).await.unwrap();
    assert_eq!(read_all(&mut c).await, b"");
    assert_eq!(served.counters.refused_peers(), 1);
}

/// Panics in its first poll, on the accepting thread.
struct Panicking;
impl Handler for Panicking {
    async fn handle(&self, _connection: Connection, _peer: Option<Peer>) {
        panic!("a bug while serving")
    }
}

/// Threads blocking in `accept()` on one listener ([`Acceptors`]): a
/// request there at once and a request sent late (handed to the runtime)
/// are both answered; the threads share the socket's connection slots (the
/// connection beyond them, while none is idle, is closed at once and
/// counted); stopping ends every thread and refuses later connects.
#[test]
fn blocking_acceptors_answer_share_slots_and_stop() {
    let handler = Arc::new(Busy::default());
    let threads = crate::test_support::Threads::start(handler.clone(), Arc::default(), 3, 2);
    let (path, counters) = (threads.path.clone(), threads.counters.clone());
    use std::io::{Read, Write};
    let connect = |late: bool| {
        let mut c = std::os::unix::net::UnixStream::connect(&path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        if late {
            std::thread::sleep(Duration::from_millis(100));
        }
        c.write_all(b"x").unwrap();
        c
    };
    let busy = [connect(false), connect(true), connect(false)];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while handler.0.load(Ordering::SeqCst) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the requests were not read"
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
    drop(busy);

    threads.stop();
    assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
    assert_eq!(counters.accepted(), 3);
    assert_eq!(counters.open(), 0);
}

/// A panic while serving a connection on an accepting thread is caught
/// and counted, and the thread goes on: with two threads, after five
/// panics (each thread's at least twice over, or one's five times) the
/// acceptors still run.
#[test]
fn a_panic_while_serving_does_not_end_the_accepting_thread() {
    let threads = crate::test_support::Threads::start(Arc::new(Panicking), Arc::default(), 8, 2);
    use std::io::Read;
    for _ in 0..5 {
        let mut c = std::os::unix::net::UnixStream::connect(&threads.path).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut out = Vec::new();
        // Closed, not left hanging.
        c.read_to_end(&mut out).unwrap();
    }
    // Each is counted after its connection was dropped (closed).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while threads.counters.panics() < 5 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(threads.counters.panics(), 5);
    assert!(threads.serving(), "the acceptors stopped");
    threads.stop();
}

/// An accept thread that ends while the socket is still to be served (for
/// any reason: here, its listener stopped behind the acceptors' back) is
/// reported, so that the daemon exits instead of staying up unserved.
#[test]
fn an_accept_thread_ending_on_its_own_is_reported() {
    let threads =
        crate::test_support::Threads::start(Arc::new(Busy::default()), Arc::default(), 8, 2);
    threads.listener.stop();
    let ended = threads.ended();
    assert!(ended.is_err(), "{ended:?}");
}

/// A counter's bump says the count with it: 1 the first time, so the first
/// refused peer and the first failed accept are logged (1, 2, 4... are).
#[test]
fn a_bumped_counter_says_the_count_with_this_one() {
    let counter = std::sync::atomic::AtomicU64::new(0);
    assert_eq!(slots::bump(&counter), 1);
    assert_eq!(slots::bump(&counter), 2);
    assert_eq!(counter.load(Ordering::Relaxed), 2);
}

/// The kernel's credentials of the peer, pid included (the audit trail and
/// the refusal logs name it).
#[test]
fn a_peers_credentials_name_its_process() {
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    let peer = Peer::of(&a).unwrap();
    assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
    assert_eq!(peer.gid, nix::unistd::getegid().as_raw());
    assert_eq!(peer.pid, Some(std::process::id() as i32));
}

/// Reads twice: a request sent in two parts.
struct TwoReads;
impl Handler for TwoReads {
    async fn handle(&self, mut connection: Connection, _peer: Option<Peer>) {
        let (mut first, mut second) = ([0u8; 16], [0u8; 16]);
        let Ok(n) = connection.read(&mut first).await else {
            return;
        };
        let Ok(m) = connection.read(&mut second).await else {
            return;
        };
        let _ = connection
            .write_all(&[&first[..n], &second[..m]].concat())
            .await;
    }
}

/// A connection that has sent part of its request is not idle: while it
/// waits for the rest it keeps its slot, so a new connection at
/// `max_connections` is refused instead of evicting it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sent_something_is_never_evicted_as_idle() {
    let served = serve_with(Arc::new(TwoReads), 1, Slots::new(1)).await;
    let mut asking = UnixStream::connect(&served.path).await.unwrap();
    asking.write_all(b"pi").await.unwrap();
    until("the first part read", || served.counters.open() == 1).await;
    // The handler waits for the rest now; give it time to park if it would.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut newcomer = UnixStream::connect(&served.path).await.unwrap();
    assert_eq!(read_all(&mut newcomer).await, b"", "the newcomer is closed");
    until("the newcomer refused", || {
        served.counters.refused_at_limit() == 1
    })
    .await;
    assert_eq!(served.counters.evicted_idle(), 0);
    asking.write_all(b"ng").await.unwrap();
    assert_eq!(read_all(&mut asking).await, b"ping");
}

//! The Wazuh socket's [`Handler`]: one request per connection, exactly as
//! Wazuh's client talks (the first read is the request, the reply is one
//! write, a connect-and-close is a health check).
//!
//! Two bounds, kept apart on purpose: the accept loop bounds connections
//! *open* (idle ones included), and this handler bounds *lookups in flight*
//! with its own semaphore, taken only once a request has arrived. A client
//! that connects and says nothing holds a connection slot for at most
//! `read_timeout` (less if a new connection needs it at the limit) and
//! never a lookup slot, so it cannot delay an answer. A peer not in
//! `allowed_uids`/`allowed_gids` is refused by the accept loop
//! ([`Handler::allows`]) before it holds either.
//!
//! [`Wazuh::answer`] is the one place a request becomes a reply; a panic
//! there (a backend's bug) is caught and answered 6, so it can never end an
//! accepting thread.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::FutureExt;
use keygate_core::audit::Asked;
use keygate_core::request::MAX_REQUEST_LEN;
use keygate_core::{gateway, ErrorCode, KeyBackend, Reply, RequestError};
use tokio::sync::Semaphore;

use crate::server::{Connection, Counters, Handler, Peer};

/// What is being served; swapped whole on reload, so a request in flight
/// finishes on the stack it started with.
pub struct Serving {
    /// The backend stack (chain, layers).
    pub root: Arc<dyn KeyBackend>,
    /// Deadline for one answer through the whole stack, waiting for a
    /// lookup slot included.
    pub request_timeout: Duration,
}

/// Which peers may ask, by SO_PEERCRED, on top of the socket file's mode
/// and group. Both lists empty: every peer the file's mode admits.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Access {
    /// User ids allowed to ask.
    pub uids: Vec<u32>,
    /// Group ids (the peer's effective gid) allowed to ask.
    pub gids: Vec<u32>,
}

impl Access {
    /// Whether `peer` may ask: its uid or its gid is listed, or nothing is
    /// listed. A peer whose credentials are unknown is refused when
    /// anything is listed.
    pub fn allows(&self, peer: Option<&Peer>) -> bool {
        if self.uids.is_empty() && self.gids.is_empty() {
            return true;
        }
        peer.is_some_and(|p| self.uids.contains(&p.uid) || self.gids.contains(&p.gid))
    }
}

/// Settings of the Wazuh handler.
#[derive(Clone, Debug)]
pub struct WazuhSettings {
    /// How long a client has to send its request.
    pub read_timeout: Duration,
    /// Most lookups answered at once; more wait (within the request
    /// timeout) for a slot.
    pub max_lookups: usize,
    /// Who may ask.
    pub access: Access,
}

/// The Wazuh socket's handler.
pub struct Wazuh {
    serving: Arc<ArcSwap<Serving>>,
    read_timeout: Duration,
    lookups: Semaphore,
    access: Access,
    counters: Arc<Counters>,
}

impl Wazuh {
    /// A handler serving `serving`, counting panics in `counters` (the
    /// same counters the accept loop keeps).
    pub fn new(
        serving: Arc<ArcSwap<Serving>>,
        settings: WazuhSettings,
        counters: Arc<Counters>,
    ) -> Self {
        Self {
            serving,
            read_timeout: settings.read_timeout,
            lookups: Semaphore::new(settings.max_lookups.clamp(1, Semaphore::MAX_PERMITS)),
            access: settings.access,
            counters,
        }
    }

    /// The reply to one request from an allowed peer (the accept loop
    /// closed the others, see [`Handler::allows`]). A panic while
    /// answering (a bug in a backend) is caught here: the request is
    /// answered 6, and the panic logged and counted.
    pub async fn answer(&self, request: &[u8]) -> Reply {
        match AssertUnwindSafe(self.lookup(request)).catch_unwind().await {
            Ok(reply) => reply,
            Err(_) => {
                let panics = self.counters.count_panic();
                tracing::error!(panics, "Answering a request panicked (a bug); answered 6.");
                Reply::error(
                    ErrorCode::Internal,
                    "internal error: answering this request failed unexpectedly (see keygate's log)",
                )
            }
        }
    }

    async fn lookup(&self, request: &[u8]) -> Reply {
        if request.len() > MAX_REQUEST_LEN {
            let e = RequestError::TooLong;
            return Reply::error(e.code(), e.to_string());
        }
        let serving = self.serving.load_full();
        // A free slot is taken at once; only a wait for one reads the clock.
        let slot = match self.lookups.try_acquire() {
            Ok(slot) => Some((slot, Duration::ZERO)),
            Err(_) => {
                let start = tokio::time::Instant::now();
                tokio::time::timeout(serving.request_timeout, self.lookups.acquire())
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|slot| (slot, start.elapsed()))
            }
        };
        let Some((_slot, waited)) = slot else {
            return Reply::error(
                ErrorCode::Unavailable,
                format!(
                    "too busy: no lookup slot within the request timeout of {} ([server] max_lookups)",
                    keygate_core::backend::humanize(serving.request_timeout)
                ),
            );
        };
        let left = serving.request_timeout.saturating_sub(waited);
        gateway::answer(serving.root.as_ref(), request, left).await
    }
}

impl Handler for Wazuh {
    fn allows(&self, peer: Option<&Peer>) -> bool {
        self.access.allows(peer)
    }

    /// A refused peer's connection is closed at accept, before it sends
    /// anything: it is told why if its socket takes the reply at once, and
    /// the refusal is in the audit trail (the accept loop counts and logs
    /// it).
    fn refusal(&self, peer: Option<Peer>) -> Vec<u8> {
        let asked = Asked::socket(
            peer.map(|p| p.uid),
            peer.map(|p| p.gid),
            peer.and_then(|p| p.pid),
        );
        asked
            .refused(Reply::error(
                ErrorCode::BadRequest,
                "access denied: this client is not allowed to ask ([server] allowed_uids, allowed_gids)",
            ))
            .encode()
    }

    async fn handle(&self, mut stream: Connection, peer: Option<Peer>) {
        // Room for more than the longest valid request, so oversized input
        // is seen as such rather than cut to something that parses.
        let mut buf = [0u8; 4 * MAX_REQUEST_LEN];
        let asked = Asked::socket(
            peer.map(|p| p.uid),
            peer.map(|p| p.gid),
            peer.and_then(|p| p.pid),
        );
        let reply = match keygate_core::timeout::within(
            self.read_timeout,
            stream.read_once(&mut buf),
        )
        .await
        {
            // Connect and close: Wazuh 3.x's health check. Nothing to say.
            Ok(Ok(0)) => return,
            Ok(Ok(n)) => asked.answered(&buf[..n], self.answer(&buf[..n])).await,
            Ok(Err(error)) => {
                tracing::debug!(%error, "Read failed.");
                return;
            }
            Err(_) => asked.refused(Reply::error(
                ErrorCode::Incomplete,
                format!(
                    "no request received within the read timeout of {}",
                    keygate_core::backend::humanize(self.read_timeout)
                ),
            )),
        };
        let bytes = reply.encode();
        tracing::debug!(
            code = reply.code().as_u8(),
            uid = peer.map(|p| i64::from(p.uid)),
            pid = peer.and_then(|p| p.pid),
            "Answered."
        );
        if let Err(error) = stream.write_all(&bytes).await {
            tracing::debug!(%error, "Reply could not be written.");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::{run, Limits};
    use keygate_testkit::Fake;
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixStream;

    struct Running {
        _dir: tempfile::TempDir,
        path: PathBuf,
        counters: Arc<Counters>,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
    }

    fn settings() -> WazuhSettings {
        WazuhSettings {
            read_timeout: Duration::from_millis(300),
            max_lookups: 4,
            access: Access::default(),
        }
    }

    async fn start(backend: Fake, max_connections: usize, settings: WazuhSettings) -> Running {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("k.sock");
        let (listener, file) =
            crate::socket::bind(&path, &crate::socket::SocketOptions::mode(0o666)).unwrap();
        std::mem::forget(file);
        let serving = Arc::new(ArcSwap::from_pointee(Serving {
            root: Arc::new(backend),
            request_timeout: Duration::from_secs(5),
        }));
        let counters = Arc::new(Counters::default());
        let handler = Arc::new(Wazuh::new(serving, settings, counters.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let limits = Limits {
            max_connections,
            drain: Duration::from_secs(5),
        };
        let task = tokio::spawn(run(listener, handler, limits, counters.clone(), async {
            rx.await.ok();
        }));
        Running {
            _dir: dir,
            path,
            counters,
            stop: Some(tx),
            task,
        }
    }

    /// What a refused peer reads: the connection is closed at accept, so
    /// its request may not even be sent (the write's error is ignored).
    async fn refused(path: &Path, req: &[u8]) -> serde_json::Value {
        use tokio::io::AsyncWriteExt;
        let mut s = UnixStream::connect(path).await.unwrap();
        let _ = s.write_all(req).await;
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        serde_json::from_slice(&buf[..n]).unwrap()
    }

    /// Waits until `n` connections are open, failing after 10 s (a peer
    /// refused at accept never opens one).
    async fn open_at_least(r: &Running, n: u64) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while r.counters.open() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{n} connections never opened"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    async fn ask(path: &Path, req: &[u8]) -> serde_json::Value {
        let raw = crate::client::ask(path, req, Duration::from_secs(5))
            .await
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    #[tokio::test]
    async fn answers_one_request_per_connection_without_terminator() {
        let r = start(Fake::with("f", "001", "a"), 4, settings()).await;
        let v = ask(&r.path, b"id:001").await;
        assert_eq!(v["error"], 0);
        assert_eq!(v["data"]["id"], "001");
        assert_eq!(ask(&r.path, b"id:002").await["error"], 4);
        assert_eq!(ask(&r.path, b"bogus").await["error"], 3);
    }

    #[tokio::test]
    async fn slow_client_gets_code_1_after_read_timeout_and_others_are_served() {
        let r = start(Fake::with("f", "001", "a"), 4, settings()).await;
        let mut idle = UnixStream::connect(&r.path).await.unwrap();
        assert_eq!(ask(&r.path, b"id:001").await["error"], 0);
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(v["error"], 1);
    }

    /// Lookups in flight are bounded apart from connections: with one
    /// lookup slot, ten concurrent requests are all answered, one at a time.
    #[tokio::test]
    async fn lookup_limit_queues_but_serves_everyone() {
        let slow = Fake::with("f", "001", "a").delayed(Duration::from_millis(50));
        let r = start(
            slow.clone(),
            64,
            WazuhSettings {
                max_lookups: 1,
                ..settings()
            },
        )
        .await;
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let p = r.path.clone();
            tasks.push(tokio::spawn(async move {
                ask(&p, b"id:001").await["error"].as_u64()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(0));
        }
        assert_eq!(slow.calls(), 10);
    }

    /// A request longer than 128 bytes is refused before it waits for a
    /// lookup slot: with the only slot held by a lookup that outlasts the
    /// request timeout, it is still answered "longer than 128 bytes", not
    /// "too busy". A request of exactly 128 bytes is not too long (it is
    /// refused for its id).
    #[tokio::test]
    async fn an_oversized_request_is_refused_before_waiting_for_a_slot() {
        let stuck = Fake::with("f", "001", "a").delayed(Duration::from_secs(60));
        let r = start(
            stuck,
            8,
            WazuhSettings {
                max_lookups: 1,
                ..settings()
            },
        )
        .await;
        let p = r.path.clone();
        let _holding = tokio::spawn(async move { ask(&p, b"id:001").await });
        open_at_least(&r, 1).await;
        let long = format!("id:{}", "1".repeat(126));
        assert_eq!(long.len(), 129);
        let v = ask(&r.path, long.as_bytes()).await;
        assert_eq!(v["error"], 3, "{v}");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .contains("longer than 128 bytes"),
            "{v}"
        );
        // The slot is still held: the 128-byte request is asked elsewhere.
        let free = start(Fake::with("f", "001", "a"), 8, settings()).await;
        let exact = &long[..128];
        let v = ask(&free.path, exact.as_bytes()).await;
        assert_eq!(v["error"], 3, "{v}");
        assert!(
            !v["message"].as_str().unwrap().contains("longer than 128"),
            "{v}"
        );
    }

    /// Idle connections at the open limit do not turn a request away:
    /// with `max_connections` idle connections open, a request is answered
    /// at once (no waiting for the idle ones' 30 s read timeout) in the
    /// slot of the oldest idle connection, which is closed and counted.
    #[tokio::test]
    async fn idle_connections_at_the_limit_make_room_for_a_request() {
        let r = start(
            Fake::with("f", "001", "a"),
            3,
            WazuhSettings {
                read_timeout: Duration::from_secs(30),
                ..settings()
            },
        )
        .await;
        let mut idle = Vec::new();
        for _ in 0..3 {
            idle.push(UnixStream::connect(&r.path).await.unwrap());
        }
        open_at_least(&r, 3).await;
        let v = tokio::time::timeout(Duration::from_secs(10), ask(&r.path, b"id:001"))
            .await
            .expect("the request waited for the idle connections");
        assert_eq!(v["error"], 0);
        assert_eq!(r.counters.evicted_idle(), 1);
        assert_eq!(r.counters.refused_at_limit(), 0);
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(10), idle[0].read(&mut buf))
            .await
            .expect("the oldest idle connection was left open")
            .unwrap_or(0);
        assert_eq!(n, 0, "the oldest idle connection got a reply");
    }

    /// A backend's panic while answering is caught on every path (a lookup
    /// answered on the accepting thread, as here from memory): the request
    /// is answered 6 and counted, and the accepting threads go on. Three
    /// panics per thread, then the next 100 requests are all answered.
    #[test]
    fn a_panicking_lookup_is_answered_6_and_the_socket_stays_served() {
        let fake = Fake::with("f", "001", "a").panicking_on("666");
        let serving = Arc::new(ArcSwap::from_pointee(Serving {
            root: Arc::new(fake.clone()),
            request_timeout: Duration::from_secs(5),
        }));
        let counters = Arc::new(Counters::default());
        let handler = Arc::new(Wazuh::new(serving, settings(), counters.clone()));
        let n = 2;
        let threads = crate::test_support::Threads::start(handler, counters.clone(), 64, n);
        threads.runtime.block_on(async {
            for _ in 0..3 * n {
                let v = ask(&threads.path, b"id:666").await;
                assert_eq!(v["error"], 6, "{v}");
                assert!(v.get("data").is_none(), "{v}");
            }
            for _ in 0..100 {
                assert_eq!(ask(&threads.path, b"id:001").await["error"], 0);
            }
        });
        assert_eq!(counters.panics(), 3 * n as u64);
        assert_eq!(fake.calls(), 3 * n + 100);
        assert!(threads.serving(), "the acceptors stopped");
        threads.stop();
    }

    #[tokio::test]
    async fn shutdown_lets_requests_in_flight_finish() {
        let slow = Fake::with("f", "001", "a").delayed(Duration::from_millis(300));
        let mut r = start(slow, 4, settings()).await;
        let p = r.path.clone();
        let inflight = tokio::spawn(async move { ask(&p, b"id:001").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.stop.take().unwrap().send(()).unwrap();
        assert_eq!(inflight.await.unwrap()["error"], 0);
        tokio::time::timeout(Duration::from_secs(5), &mut r.task)
            .await
            .unwrap()
            .unwrap();
        assert!(UnixStream::connect(&r.path).await.is_err());
    }

    #[test]
    fn access_lists_admit_by_uid_or_gid() {
        let peer = |uid, gid| {
            Some(Peer {
                uid,
                gid,
                pid: Some(1),
            })
        };
        assert!(Access::default().allows(None));
        let a = Access {
            uids: vec![1000],
            gids: vec![27],
        };
        assert!(a.allows(peer(1000, 5).as_ref()));
        assert!(a.allows(peer(5, 27).as_ref()));
        assert!(!a.allows(peer(0, 0).as_ref()));
        assert!(!a.allows(None));
    }

    /// The uid the allowed-peer test runs its client as.
    const NOBODY: u32 = 65534;

    /// Not a test on its own: the client half of
    /// `only_allowed_uids_get_answers_root_is_refused`, which runs it in a
    /// child process under another uid. Prints the reply.
    #[test]
    #[ignore = "run by only_allowed_uids_get_answers_root_is_refused as another uid"]
    fn child_client() {
        let path = crate::test_support::given_path();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let raw = rt
            .block_on(crate::client::ask(&path, b"id:001", Duration::from_secs(5)))
            .unwrap();
        println!("REPLY {}", String::from_utf8(raw).unwrap());
    }

    /// `allowed_uids = [65534]`: a client running as uid 65534 gets its
    /// answer; root, whom the socket's mode admits, is closed at accept
    /// with an error and no data, is counted, never takes a slot, and the
    /// backend is never asked.
    #[tokio::test(flavor = "multi_thread")]
    async fn only_allowed_uids_get_answers_root_is_refused() {
        assert_eq!(nix::unistd::geteuid().as_raw(), 0, "this test runs as root");
        let fake = Fake::with("f", "001", "a");
        let r = start(
            fake.clone(),
            4,
            WazuhSettings {
                access: Access {
                    uids: vec![NOBODY],
                    gids: vec![],
                },
                ..settings()
            },
        )
        .await;
        let v = refused(&r.path, b"id:001").await;
        assert_eq!(v["error"], 3, "{v}");
        assert!(v.get("data").is_none(), "{v}");
        assert!(v["message"].as_str().unwrap().contains("access denied"));
        assert_eq!(r.counters.refused_peers(), 1);
        assert_eq!(r.counters.accepted(), 0, "a refused peer took a slot");
        assert_eq!(fake.calls(), 0);

        let reply =
            crate::test_support::run_as("wazuh::tests::child_client", &r.path, NOBODY, "REPLY ")
                .await;
        let v: serde_json::Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(v["error"], 0, "{v}");
        assert_eq!(v["data"]["id"], "001");
        assert_eq!(r.counters.refused_peers(), 1);
        assert_eq!(fake.calls(), 1);
    }
}

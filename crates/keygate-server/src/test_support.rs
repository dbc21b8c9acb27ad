//! What the crate's tests share: accept threads on a socket of their own
//! (as the daemon serves the Wazuh socket), and one of this binary's
//! ignored tests run again as another user (for the peer checks).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{AcceptorEnded, Acceptors, BlockingListener, Counters, Handler, Slots};

/// [`Acceptors`] serving `handler` on a socket in a temp dir, on a runtime
/// of their own.
pub(crate) struct Threads {
    pub runtime: tokio::runtime::Runtime,
    pub path: PathBuf,
    pub counters: Arc<Counters>,
    /// The listener the threads block on.
    pub listener: Arc<BlockingListener>,
    _dir: tempfile::TempDir,
    stop: tokio::sync::oneshot::Sender<()>,
    served: tokio::task::JoinHandle<Result<(), AcceptorEnded>>,
}

impl Threads {
    /// `threads` accept threads sharing `max_connections` slots and
    /// `counters` (those the handler counts in, if it does).
    pub fn start<H: Handler>(
        handler: Arc<H>,
        counters: Arc<Counters>,
        max_connections: usize,
        threads: usize,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let slots = Slots::new(max_connections);
        let acceptors = {
            let _context = runtime.enter();
            Acceptors::start(listener, &handler, &slots, &counters, threads).unwrap()
        };
        let listener = acceptors.listener();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = runtime.spawn(acceptors.run_until(stopped, Duration::from_secs(5)));
        Self {
            runtime,
            path,
            counters,
            listener,
            _dir: dir,
            stop,
            served,
        }
    }

    /// Whether every thread still serves.
    pub fn serving(&self) -> bool {
        !self.served.is_finished()
    }

    /// Stops the threads and waits for them and their connections; they
    /// must not have ended before.
    pub fn stop(self) {
        self.stop.send(()).unwrap();
        self.runtime.block_on(self.served).unwrap().unwrap();
    }

    /// How the acceptors ended without being told to stop (at most 10 s).
    pub fn ended(self) -> Result<(), AcceptorEnded> {
        let served = self.served;
        self.runtime.block_on(async {
            tokio::time::timeout(Duration::from_secs(10), served)
                .await
                .expect("the acceptors did not end")
                .unwrap()
        })
    }
}

/// Runs this test binary's ignored test `test` as `uid`:`gid` (no other
/// group), with `KEYGATE_TEST_PATH` set to `path`; returns what it printed
/// after `prefix` on a line of its own.
pub(crate) async fn run_as(test: &str, path: &Path, uid: u32, prefix: &str) -> String {
    use std::os::unix::process::CommandExt;
    let (test, path, prefix) = (test.to_owned(), path.to_owned(), prefix.to_owned());
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &test, "--ignored", "--nocapture"])
            .env("KEYGATE_TEST_PATH", &path)
            .uid(uid)
            .gid(uid)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()).map(str::to_owned))
            .unwrap_or_else(|| panic!("nothing from {test} as uid {uid}: {out:?}"))
    })
    .await
    .unwrap()
}

/// The path [`run_as`] gave the test it runs.
pub(crate) fn given_path() -> PathBuf {
    PathBuf::from(std::env::var_os("KEYGATE_TEST_PATH").unwrap())
}

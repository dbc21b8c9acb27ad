//! The socket daemon's accept loop (after mini-redis's `server::run`): the
//! caller hands in the bound listener, the stack to serve and a shutdown
//! future; a semaphore bounds the connections served at once.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use keygate_core::request::MAX_REQUEST_LEN;
use keygate_core::{gateway, ErrorCode, KeyBackend, Reply, RequestError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Semaphore;

/// What is being served; swapped whole on reload, so a request in flight
/// finishes on the stack it started with.
pub struct Serving {
    /// The backend stack (chain, layers).
    pub root: Arc<dyn KeyBackend>,
    /// Deadline for one answer through the whole stack.
    pub request_timeout: Duration,
}

/// Connection limits.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// Most connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// How long a client has to send its request.
    pub read_timeout: Duration,
}

/// Serves `listener` until `shutdown` completes, then stops accepting and
/// waits for requests in flight to finish (at most one read timeout plus
/// one request timeout).
pub async fn run(
    listener: UnixListener,
    serving: Arc<ArcSwap<Serving>>,
    settings: Settings,
    shutdown: impl Future,
) {
    let limit = settings.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let permits = Arc::new(Semaphore::new(limit));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let serving = serving.load_full();
        tokio::spawn(async move {
            handle(stream, &serving, settings.read_timeout).await;
            drop(permit);
        });
    }
    drop(listener);
    let drain = settings.read_timeout + serving.load().request_timeout;
    let all = u32::try_from(limit).unwrap_or(u32::MAX);
    if tokio::time::timeout(drain, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            drain_s = drain.as_secs(),
            "Requests still in flight at shutdown were abandoned."
        );
    }
}

/// One connection: the first read is the request; the reply is one write.
async fn handle(mut stream: UnixStream, serving: &Serving, read_timeout: Duration) {
    // Room for more than the longest valid request, so oversized input is
    // seen as such rather than cut to something that parses.
    let mut buf = [0u8; 4 * MAX_REQUEST_LEN];
    let reply = match tokio::time::timeout(read_timeout, stream.read(&mut buf)).await {
        // Connect and close: Wazuh 3.x's health check. Nothing to say.
        Ok(Ok(0)) => return,
        Ok(Ok(n)) if n > MAX_REQUEST_LEN => {
            let e = RequestError::TooLong;
            Reply::error(e.code(), e.to_string())
        }
        Ok(Ok(n)) => {
            gateway::answer(serving.root.as_ref(), &buf[..n], serving.request_timeout).await
        }
        Ok(Err(error)) => {
            tracing::debug!(%error, "Read failed.");
            return;
        }
        Err(_) => Reply::error(
            ErrorCode::Incomplete,
            format!(
                "no request received within the read timeout of {}",
                keygate_core::backend::humanize(read_timeout)
            ),
        ),
    };
    let bytes = reply.encode();
    tracing::debug!(code = reply.code().as_u8(), "Answered.");
    if let Err(error) = stream.write_all(&bytes).await {
        tracing::debug!(%error, "Reply could not be written.");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_testkit::Fake;
    use std::path::PathBuf;

    async fn start(
        backend: Fake,
        settings: Settings,
    ) -> (
        tempfile::TempDir,
        PathBuf,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<()>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.sock");
        let (listener, file) = crate::socket::bind(&path, 0o600).unwrap();
        std::mem::forget(file);
        let serving = Arc::new(ArcSwap::from_pointee(Serving {
            root: Arc::new(backend),
            request_timeout: Duration::from_secs(5),
        }));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run(listener, serving, settings, async {
            rx.await.ok();
        }));
        (dir, path, tx, task)
    }

    fn settings() -> Settings {
        Settings {
            max_connections: 4,
            read_timeout: Duration::from_millis(300),
        }
    }

    async fn ask(path: &std::path::Path, req: &[u8]) -> serde_json::Value {
        let raw = crate::client::ask(path, req, Duration::from_secs(5))
            .await
            .unwrap();
        serde_json::from_slice(&raw).unwrap()
    }

    #[tokio::test]
    async fn answers_one_request_per_connection_without_terminator() {
        let (_d, path, _tx, _t) = start(Fake::with("f", "001", "a"), settings()).await;
        let v = ask(&path, b"id:001").await;
        assert_eq!(v["error"], 0);
        assert_eq!(v["data"]["id"], "001");
        assert_eq!(ask(&path, b"id:002").await["error"], 4);
        assert_eq!(ask(&path, b"bogus").await["error"], 3);
    }

    #[tokio::test]
    async fn slow_client_gets_code_1_after_read_timeout_and_others_are_served() {
        let (_d, path, _tx, _t) = start(Fake::with("f", "001", "a"), settings()).await;
        let mut idle = UnixStream::connect(&path).await.unwrap();
        assert_eq!(ask(&path, b"id:001").await["error"], 0);
        let mut buf = vec![0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(v["error"], 1);
    }

    #[tokio::test]
    async fn connection_limit_queues_but_serves_everyone() {
        let slow = Fake::with("f", "001", "a").delayed(Duration::from_millis(50));
        let (_d, path, _tx, _t) = start(
            slow,
            Settings {
                max_connections: 2,
                ..settings()
            },
        )
        .await;
        let mut tasks = Vec::new();
        for _ in 0..10 {
            let p = path.clone();
            tasks.push(tokio::spawn(async move {
                ask(&p, b"id:001").await["error"].as_u64()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), Some(0));
        }
    }

    #[tokio::test]
    async fn shutdown_lets_requests_in_flight_finish() {
        let slow = Fake::with("f", "001", "a").delayed(Duration::from_millis(300));
        let (_d, path, tx, task) = start(slow, settings()).await;
        let p = path.clone();
        let inflight = tokio::spawn(async move { ask(&p, b"id:001").await });
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(()).unwrap();
        assert_eq!(inflight.await.unwrap()["error"], 0);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(UnixStream::connect(&path).await.is_err());
    }
}

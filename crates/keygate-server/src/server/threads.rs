//! The Wazuh socket's accept threads: plain threads blocking in `accept()`
//! on one listener ([`accept_blocking`]), started and watched together
//! ([`Acceptors`]). A thread that ends before it is told to stop is a
//! socket no longer served: [`Acceptors::run_until`] reports it, and the
//! daemon exits non-zero so that its service manager restarts it.

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{accept_failed, admit, Backoff, Connection, Counters, Handler, Slots};

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
/// the runtime's. Accept errors back off as in [`serve`](super::serve) (the
/// thread sleeps). Draining is the caller's ([`Slots::drain`]).
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

/// Accept threads on one listener, sharing its slots and counters.
#[derive(Debug)]
pub struct Acceptors {
    listener: Arc<BlockingListener>,
    slots: Slots,
    /// Each thread sends its number here when it ends, however it ends
    /// (returning or unwinding).
    ended: mpsc::UnboundedReceiver<usize>,
    threads: usize,
}

/// An accept thread ended while the socket was to be served.
#[derive(Debug, thiserror::Error)]
#[error("accept thread {0} ended while the socket was still to be served")]
pub struct AcceptorEnded(pub usize);

/// Tells [`Acceptors`] that its thread ended, when dropped (a panic
/// unwinding through the thread included).
struct Ending(usize, mpsc::UnboundedSender<usize>);

impl Drop for Ending {
    fn drop(&mut self) {
        let _ = self.1.send(self.0);
    }
}

impl Acceptors {
    /// Starts `threads` threads (at least one) blocking in `accept()` on
    /// `listener`, inside the calling runtime's context (what has to wait
    /// is spawned on it). On failure, those already started are stopped.
    pub fn start<H: Handler>(
        listener: std::os::unix::net::UnixListener,
        handler: &Arc<H>,
        slots: &Slots,
        counters: &Arc<Counters>,
        threads: usize,
    ) -> io::Result<Self> {
        let listener = Arc::new(BlockingListener::new(listener)?);
        let runtime = tokio::runtime::Handle::current();
        let (tx, ended) = mpsc::unbounded_channel();
        let threads = threads.max(1);
        for i in 0..threads {
            let (mine, handler, slots, counters) = (
                listener.clone(),
                handler.clone(),
                slots.clone(),
                counters.clone(),
            );
            let (runtime, ending) = (runtime.clone(), Ending(i, tx.clone()));
            let started = std::thread::Builder::new()
                .name(format!("keygate-accept-{i}"))
                .spawn(move || {
                    let _ending = ending;
                    let _context = runtime.enter();
                    accept_blocking(&mine, &handler, &slots, &counters);
                });
            if let Err(error) = started {
                listener.stop();
                return Err(error);
            }
        }
        Ok(Self {
            listener,
            slots: slots.clone(),
            ended,
            threads,
        })
    }

    /// Serves until `stop` completes, then stops the threads, waits for
    /// them and for the connections open then (at most `drain`). If a
    /// thread ends first, the others are stopped the same way and its
    /// number is returned as an error: the socket was not served whole.
    pub async fn run_until(
        mut self,
        stop: impl Future,
        drain: Duration,
    ) -> Result<(), AcceptorEnded> {
        let outcome = tokio::select! {
            _ = stop => Ok(()),
            Some(i) = self.ended.recv() => {
                tracing::error!(thread = i, "An accept thread ended; stopping.");
                Err(AcceptorEnded(i))
            }
        };
        self.listener.stop();
        let mut left = self.threads - usize::from(outcome.is_err());
        while left > 0 && self.ended.recv().await.is_some() {
            left -= 1;
        }
        self.slots.drain(drain).await;
        outcome
    }

    #[cfg(test)]
    pub(crate) fn listener(&self) -> Arc<BlockingListener> {
        self.listener.clone()
    }
}

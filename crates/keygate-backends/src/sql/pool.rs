//! The connections of one database server host, as its lookups use them.
//!
//! sqlx's own pool costs every lookup two extra round trips: it pings a
//! connection when it hands it out (`test_before_acquire`) and, in a task
//! it spawns, again when it gets it back. A lookup is a single round trip
//! (the statement is prepared once per connection and cached by the
//! driver), so those pings tripled the work per request. This pool hands
//! out a connection as it is and takes it back as it is; a connection
//! found dead when it is used (the server restarted or closed it while
//! idle) is dropped with every other idle one, and the lookup runs once
//! more on a fresh connection, so a stale connection never fails a
//! request.
//!
//! A connection comes back only through [`Lease::release`]: a lease that
//! is dropped (the lookup failed on the connection, or was cancelled by a
//! timeout in the middle of a round trip) closes its connection, so a
//! connection in an unknown state is never reused.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use keygate_core::BackendError;
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Semaphore, SemaphorePermit};

use super::{describe_error, Failed};

/// At most `size` connections to one host, opened on demand and kept open.
pub struct ConnPool<C: Connection> {
    options: C::Options,
    connect_timeout: Duration,
    /// One permit per connection that may be open (idle or leased).
    permits: Semaphore,
    /// Open connections nobody uses, the most recently used last.
    idle: Mutex<Vec<C>>,
}

/// One connection, lent out of a [`ConnPool`] until [`Lease::release`] (or
/// closed when dropped).
pub struct Lease<'p, C: Connection> {
    pool: &'p ConnPool<C>,
    conn: C,
    reused: bool,
    _permit: SemaphorePermit<'p>,
}

impl<C: Connection> ConnPool<C> {
    /// A pool of at most `size` connections made with `options`; nothing
    /// is opened until the first [`acquire`](Self::acquire).
    pub fn new(options: C::Options, size: u32, connect_timeout: Duration) -> Self {
        Self {
            options,
            connect_timeout,
            permits: Semaphore::new(usize::try_from(size).unwrap_or(1).max(1)),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The connect options (for a connection the pool does not keep).
    pub fn options(&self) -> &C::Options {
        &self.options
    }

    /// The longest wait for a connection.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// An idle connection, or a new one. Waits at most `connect_timeout`
    /// for a free slot and as long again to connect.
    pub async fn acquire(&self) -> Result<Lease<'_, C>, BackendError> {
        let permit = match tokio::time::timeout(self.connect_timeout, self.permits.acquire()).await
        {
            Ok(Ok(permit)) => permit,
            Ok(Err(_)) => return Err(BackendError::Unavailable("connection pool closed".into())),
            Err(_) => {
                return Err(BackendError::Unavailable(
                    "timed out waiting for a database connection".into(),
                ))
            }
        };
        let idle = self.idle().pop();
        let (conn, reused) = match idle {
            Some(conn) => (conn, true),
            None => (self.connect().await?, false),
        };
        Ok(Lease {
            pool: self,
            conn,
            reused,
            _permit: permit,
        })
    }

    /// How many connections are idle in the pool.
    pub fn idle_count(&self) -> usize {
        self.idle().len()
    }

    async fn connect(&self) -> Result<C, BackendError> {
        tokio::time::timeout(self.connect_timeout, self.options.connect())
            .await
            .map_err(|_| BackendError::Timeout(self.connect_timeout))?
            .map_err(|e| describe_error(&e))
    }

    /// Closes every idle connection (one was found dead: the others were
    /// opened to the same server and are most likely dead too).
    fn clear_idle(&self) {
        let dead = std::mem::take(&mut *self.idle());
        drop(dead);
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<C>> {
        // The list stays valid whatever a panicking holder did to it.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<C: Connection> Lease<'_, C> {
    /// Whether the connection was idle in the pool (rather than opened for
    /// this lease): only such a connection can be stale.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// Gives the connection back to the pool, for the next lease.
    pub fn release(self) {
        self.pool.idle().push(self.conn);
    }

    /// Gives the connection back unless `result` says it is lost (closed
    /// then, as the lease drops), and returns the answer.
    pub fn settle<T>(self, result: Result<T, Failed>) -> Result<T, BackendError> {
        match result {
            Ok(value) => {
                self.release();
                Ok(value)
            }
            Err(failed) => {
                if !failed.lost {
                    self.release();
                }
                Err(failed.error)
            }
        }
    }

    /// Closes this connection and every idle one, and opens a fresh one in
    /// its place (under the same slot).
    pub async fn reconnect(&mut self) -> Result<(), BackendError> {
        self.pool.clear_idle();
        self.conn = self.pool.connect().await?;
        self.reused = false;
        Ok(())
    }
}

impl<C: Connection> std::ops::Deref for Lease<'_, C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.conn
    }
}

impl<C: Connection> std::ops::DerefMut for Lease<'_, C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.conn
    }
}

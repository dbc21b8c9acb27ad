//! The LDAP backend's hosts and its small pool of bound connections.
//!
//! The pool is written here rather than taken from a pool crate: an ldap3
//! handle is multiplexed (many operations in flight on one connection,
//! matched by message id), so a lookup only needs a clone of a bound
//! handle, not exclusive use of it, which is what generic pools (deadpool,
//! bb8) provide. The pool has `pool_size` slots used in turn; a slot
//! connects on first use to the host [`Hosts`](crate::endpoint::Hosts)
//! says is active, binds, and is emptied when its connection fails, so the
//! next lookup through it reconnects and rebinds (e.g. after a server
//! restart). A slot connected to another host than the one asked for (after
//! a failover or a failback) reconnects too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use keygate_core::BackendError;
use ldap3::{Ldap, LdapConnAsync, LdapConnSettings};
use tokio::sync::Mutex;
use tracing::debug;
use zeroize::Zeroizing;

use super::{describe, result_error, OPERATION_TIMEOUT};
use crate::endpoint::Host;

/// One LDAP server of a backend.
pub(super) struct LdapHost {
    /// Its index in `url`/`urls`.
    pub index: usize,
    pub url: String,
    /// The URL redacted, for `keygate backends`.
    pub label: String,
    pub backend: String,
    pub starttls: bool,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub connect_timeout: Duration,
    /// `bind_dn` and its password; anonymous without.
    pub bind: Option<(String, Zeroizing<String>)>,
}

impl LdapHost {
    /// Connects (TCP, TLS or StartTLS), bounded by `connect_timeout` for
    /// the TCP connect and twice that for the whole handshake, which
    /// ldap3's own timeout does not cover.
    async fn open(&self) -> Result<Ldap, BackendError> {
        let mut settings = LdapConnSettings::new()
            .set_conn_timeout(self.connect_timeout)
            .set_starttls(self.starttls);
        if let Some(tls) = &self.tls {
            settings = settings.set_config(tls.clone());
        }
        let limit = self.connect_timeout * 2;
        let (conn, ldap) =
            match tokio::time::timeout(limit, LdapConnAsync::with_settings(settings, &self.url))
                .await
            {
                Err(_) => return Err(BackendError::Unavailable("LDAP connect timed out".into())),
                Ok(Err(e)) => return Err(describe(&e, "connect").0),
                Ok(Ok(pair)) => pair,
            };
        let name = self.backend.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.drive().await {
                debug!(backend = %name, error = %describe(&e, "connection").0, "LDAP connection ended.");
            }
        });
        Ok(ldap)
    }

    /// Connects and binds.
    async fn connect(&self) -> Result<Ldap, BackendError> {
        let mut ldap = self.open().await?;
        if let Some((dn, password)) = &self.bind {
            let result = ldap
                .with_timeout(OPERATION_TIMEOUT)
                .simple_bind(dn, password.as_str())
                .await
                .map_err(|e| describe(&e, "bind").0)?;
            if result.rc != 0 {
                return Err(result_error(result.rc, "bind"));
            }
        }
        Ok(ldap)
    }
}

impl Host for LdapHost {
    /// A connect (no bind), bounded like every connect.
    async fn probe(&self) -> bool {
        self.open().await.is_ok()
    }

    fn label(&self) -> &str {
        &self.label
    }
}

/// One pooled connection: the handle and the host it reached.
struct Conn {
    ldap: Ldap,
    host: usize,
}

/// `pool_size` slots, used in turn.
pub(super) struct Pool {
    slots: Vec<Mutex<Option<Conn>>>,
    next: AtomicUsize,
}

impl Pool {
    pub(super) fn new(size: u32) -> Self {
        Self {
            slots: (0..size.max(1)).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A bound handle to `host` from the next slot, and the slot's index;
    /// the slot (re)connects when it is empty, closed, or on another host.
    pub(super) async fn handle(&self, host: &LdapHost) -> Result<(usize, Ldap), BackendError> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[i].lock().await;
        if let Some(conn) = slot.as_mut() {
            if conn.host == host.index && !conn.ldap.is_closed() {
                return Ok((i, conn.ldap.clone()));
            }
        }
        *slot = None;
        let ldap = host.connect().await?;
        *slot = Some(Conn {
            ldap: ldap.clone(),
            host: host.index,
        });
        Ok((i, ldap))
    }

    /// Empties slot `i`: its connection failed.
    pub(super) async fn discard(&self, i: usize) {
        *self.slots[i].lock().await = None;
    }
}

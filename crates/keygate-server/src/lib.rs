//! keygate's front ends.
//!
//! - [`server`]: the one accept loop every socket goes through (peers
//!   screened at accept, open connections bounded with idle ones evicted at
//!   the limit, panics caught, accept errors backed off, shutdown drained),
//!   with the peer's credentials handed to each connection's [`Handler`];
//!   the Wazuh socket's accept threads, watched.
//! - [`idle`]: connections that have not sent a request yet, oldest first,
//!   so that one can make room for a new connection.
//! - [`wazuh`]: the Wazuh socket's handler, exactly as Wazuh's client talks
//!   to it: one request per connection, the first read is the request, the
//!   reply goes out in one write, a connect-and-close is a health check.
//!   Lookups in flight and allowed peers are bounded here.
//! - [`control`]: the admin protocol (typed requests and responses) shared
//!   by the daemon and the `keygate` admin commands.
//! - [`client`]: the Wazuh conversation from the client side (one send
//!   without terminator, one recv, close). Exec mode uses it to ask a
//!   running daemon; the load generator and the tests use it too.
//! - [`socket`]: binding the socket file safely (lock file, stale file
//!   replaced, live daemon refused, mode and group set without following
//!   links) and removing it on shutdown.
//! - [`fdlimit`]: raising the open-file limit at start.

pub mod client;
pub mod control;
pub mod fdlimit;
pub mod idle;
pub mod server;
pub mod socket;
pub mod wazuh;

#[cfg(test)]
mod test_support;

pub use server::{
    accept_blocking, run, serve, AcceptorEnded, Acceptors, BlockingListener, Connection, Counters,
    Handler, Limits, Peer, Slots,
};
pub use wazuh::{Access, Serving, Wazuh, WazuhSettings};

//! keygate's front ends.
//!
//! - [`server`]: the Unix socket daemon, exactly as Wazuh's client talks to
//!   it: one request per connection, the first read is the request, the
//!   reply goes out in one write, a connect-and-close is a health check.
//! - [`client`]: the same conversation from the client side, as Wazuh does
//!   it (one send without terminator, one recv, close). Exec mode uses it to
//!   ask a running daemon; the load generator and the tests use it too.
//! - [`socket`]: binding the socket file safely (stale file replaced, live
//!   daemon refused, mode set) and removing it on shutdown.

pub mod client;
pub mod server;
pub mod socket;

pub use server::{run, Serving, Settings};

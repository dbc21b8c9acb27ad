//! keygate's core: what a Wazuh key request is, what an answer may contain,
//! and the [`KeyBackend`] trait every store and every layer implements.
//!
//! The flow is the same for both front ends (socket daemon and exec
//! one-shot): raw bytes are parsed into a [`Request`] (the [`Query`] backends
//! see), the backend stack answers with a validated [`AgentRecord`] or a
//! [`BackendError`], and [`gateway::answer`] turns that into a [`Reply`],
//! one line of JSON with a stable [`ErrorCode`].
//!
//! Nothing here knows about sockets, processes or config files: layers such
//! as [`TimeoutLayer`] and [`Chain`] wrap `Arc<dyn KeyBackend>` and are
//! themselves `KeyBackend`s, so the stack is composed once, from config, by
//! the caller.

pub mod audit;
pub mod backend;
pub mod breaker;
pub mod cache;
pub mod chain;
pub mod gateway;
pub mod latency;
pub mod metrics;
pub mod record;
pub mod reply;
pub mod request;
pub mod timeout;
pub mod wazuh;

pub use backend::{BackendError, KeyBackend, ListStream, Listed};
pub use breaker::{Breaker, BreakerSettings, BreakerSnapshot, BreakerState};
pub use cache::{CacheLayer, CacheSettings, CacheStats, Kept};
pub use chain::{Chain, ChainPolicy};
pub use latency::{LatencyLayer, LatencyStats};
pub use record::{AgentAddress, AgentId, AgentKey, AgentName, AgentRecord, RecordError};
pub use reply::{DecodeError, ErrorCode, Reply};
pub use request::{Query, Request, RequestError};
pub use timeout::TimeoutLayer;
pub use wazuh::WazuhVersion;

/// Test support: the fake backend and small helpers. Compiled for this
/// crate's own tests and, through the `testing` feature, for
/// keygate-testkit only (which re-exports it); never in release builds.
#[cfg(any(test, feature = "testing"))]
pub mod testing;

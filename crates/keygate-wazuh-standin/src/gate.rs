//! What the stand-in decides before an endpoint runs: the API's rate limit
//! (`access.max_request_per_minute` in api.yaml: a fixed window counting
//! every request of every user but authentication, HTTP 429 with Wazuh's
//! code 6001 beyond it, and no `Retry-After`), the test switches (the next
//! N requests answered 429, a redirect of a path to another host), and the
//! timeline of writes a test reads to check the order of sync's phases.

use std::time::{Duration, Instant};

use hyper::StatusCode;

use crate::handlers::error;
use crate::{Response, State};

/// A limit of requests per window, as the API's `max_request_per_minute`
/// (300 by default) with the minute scaled for a test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed in one window.
    pub requests: usize,
    /// The window (a minute in Wazuh).
    pub window: Duration,
}

/// What a write did, for [`Write`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// `DELETE /agents`.
    Delete,
    /// `POST /agents/insert` with `force.enabled`.
    Replace,
    /// `POST /agents/insert` without it.
    Insert,
}

/// One write as the server saw it: `started` when it arrived, `finished`
/// when its answer left, both from one counter of events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Write {
    /// Which write.
    pub kind: WriteKind,
    /// The ids it named (the body's id, or `agents_list`).
    pub ids: String,
    /// The event number at arrival.
    pub started: u64,
    /// The event number when answered (0 while in flight).
    pub finished: u64,
}

impl State {
    /// The next event number.
    pub(crate) fn event(&mut self) -> u64 {
        self.events += 1;
        self.events
    }

    /// The answer that replaces the endpoint's, if any: a redirect set by
    /// the test, the 429 switch, or the rate limit (authentication is not
    /// counted, as in Wazuh).
    pub(crate) fn gate(&mut self, path: &str, authentication: bool) -> Option<Response> {
        if let Some((_, location)) = self.redirects.iter().find(|(p, _)| p == path) {
            return Some(
                hyper::Response::builder()
                    .status(StatusCode::PERMANENT_REDIRECT)
                    .header("location", location.as_str())
                    .body(Default::default())
                    .unwrap(),
            );
        }
        if self.fail_429 > 0 {
            self.fail_429 -= 1;
            return Some(self.too_many());
        }
        if authentication {
            return None;
        }
        let limit = self.rate_limit?;
        let now = Instant::now();
        let (start, count) = self.window.get_or_insert((now, 0));
        if now.duration_since(*start) >= limit.window {
            *start = now;
            *count = 0;
        }
        *count += 1;
        if *count > limit.requests {
            return Some(self.too_many());
        }
        None
    }

    fn too_many(&mut self) -> Response {
        self.served_429 += 1;
        error(
            StatusCode::TOO_MANY_REQUESTS,
            "Too Many Requests",
            "Maximum number of requests per minute reached",
            6001,
        )
    }
}

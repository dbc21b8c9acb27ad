//! Listing every agent of a Redis backend: `SCAN` (never `KEYS`, which
//! blocks the server) over the `key_by_id` pattern, each hash read by the
//! lookups' own code ([`RedisBackend::hash`]) and checked to carry the id
//! its key names, as a lookup's answer is.
//!
//! The pattern is `key_by_id` with `{id}` replaced by `*` and every glob
//! character of the rest escaped. A matching key whose `{id}` part is not
//! an agent id is reported (a lookup could never reach it), unless it also
//! matches `key_by_ip` (an address index sharing the prefix). `SCAN` may
//! return a key twice while Redis resizes its table; the ids already
//! listed are remembered (8 bytes each, the only state that grows with
//! the store) so no agent is listed twice. Hashes are read 64 at a time
//! over the multiplexed connection, in `SCAN` order.

use std::collections::{HashSet, VecDeque};

use futures_util::future;
use futures_util::stream::{self, StreamExt, TryStreamExt};
use keygate_core::{AgentId, BackendError, ListStream, Listed, RecordError};
use redis::aio::ConnectionManager;

use super::{describe, RedisBackend};
use crate::listing;

/// Keys asked of each `SCAN` step (a hint to Redis).
const SCAN_COUNT: usize = 1000;
/// Hashes read at once.
const READ_AHEAD: usize = 64;

/// `template` with `{placeholder}` replaced by `*` and glob characters
/// (`*?[]\`) of the rest escaped.
pub(super) fn scan_pattern(template: &str, placeholder: &str) -> String {
    let escape = |s: &str| {
        let mut out = String::with_capacity(s.len());
        for c in s.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                out.push('\\');
            }
            out.push(c);
        }
        out
    };
    template
        .split(placeholder)
        .map(escape)
        .collect::<Vec<_>>()
        .join("*")
}

/// The text where `{placeholder}` is in `template`, if `key` has the
/// template's shape.
fn placeholder_part<'k>(template: &str, placeholder: &str, key: &'k str) -> Option<&'k str> {
    let (prefix, suffix) = template.split_once(placeholder)?;
    key.strip_prefix(prefix)?.strip_suffix(suffix)
}

/// One key `SCAN` found.
enum Scanned {
    /// An agent id to read, and its key (for reports).
    Agent(AgentId, String),
    /// A key of the agent pattern whose `{id}` part is not an id.
    NotAnId(String, RecordError),
}

/// What the `SCAN` loop carries from one step to the next.
struct Scan {
    conn: ConnectionManager,
    /// The next cursor; `None` once Redis answered cursor 0.
    cursor: Option<u64>,
    pending: VecDeque<Vec<u8>>,
    /// The ids already handed out, as `len << 32 | value`.
    seen: HashSet<u64>,
}

/// An id of 3 to 8 digits as one number that keeps its length (`007` and
/// `0007` differ).
fn id_code(id: &AgentId) -> u64 {
    let s = id.as_str();
    let value: u64 = s.bytes().fold(0, |n, b| n * 10 + u64::from(b - b'0'));
    ((s.len() as u64) << 32) | value
}

impl RedisBackend {
    /// Lists every agent from one host: the active one, or after an outage
    /// (connecting or midway) the next one, from the start
    /// ([`listing::one_host`]; `SCAN` cursors mean nothing on another
    /// server).
    pub(super) fn list_all(&self) -> ListStream<'_> {
        listing::one_host(&self.hosts, move |host| {
            let entries = stream::once(host.connection())
                .map_ok(move |conn| {
                    self.scan(conn.clone())
                        .map(move |scanned| {
                            let conn = conn.clone();
                            async move { self.read(conn, scanned?).await }
                        })
                        .buffered(READ_AHEAD)
                        .try_filter_map(future::ok)
                })
                .try_flatten();
            listing::bounded(entries.boxed(), listing::LIST_STEP_TIMEOUT)
        })
    }

    /// The keys of the agent pattern, each once.
    fn scan(
        &self,
        conn: ConnectionManager,
    ) -> impl futures_util::Stream<Item = Result<Scanned, BackendError>> + Send + '_ {
        let pattern = scan_pattern(&self.config.key_by_id, "{id}");
        let state = Scan {
            conn,
            cursor: Some(0),
            pending: VecDeque::new(),
            seen: HashSet::new(),
        };
        stream::unfold(state, move |mut state| {
            let pattern = pattern.clone();
            async move {
                loop {
                    while let Some(key) = state.pending.pop_front() {
                        match self.classify(key) {
                            Some(Scanned::Agent(id, key)) if state.seen.insert(id_code(&id)) => {
                                return Some((Ok(Scanned::Agent(id, key)), state));
                            }
                            // Already listed: SCAN returned it again.
                            Some(Scanned::Agent(..)) | None => {}
                            Some(other) => return Some((Ok(other), state)),
                        }
                    }
                    let cursor = state.cursor?;
                    let step: Result<(u64, Vec<Vec<u8>>), _> = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(SCAN_COUNT)
                        .query_async(&mut state.conn)
                        .await;
                    match step {
                        Ok((next, keys)) => {
                            state.cursor = (next != 0).then_some(next);
                            state.pending.extend(keys);
                        }
                        Err(e) => {
                            state.cursor = None;
                            state.pending.clear();
                            return Some((Err(describe(&e)), state));
                        }
                    }
                }
            }
        })
    }

    /// What a key of the pattern is: an agent id, a key that cannot be
    /// one, or (`None`) an address index that shares the pattern.
    fn classify(&self, key: Vec<u8>) -> Option<Scanned> {
        let key = String::from_utf8_lossy(&key).into_owned();
        if placeholder_part(&self.config.key_by_ip, "{ip}", &key).is_some() {
            return None;
        }
        let part = placeholder_part(&self.config.key_by_id, "{id}", &key).unwrap_or("");
        Some(match AgentId::parse(part) {
            Ok(id) => Scanned::Agent(id, key),
            Err(e) => Scanned::NotAnId(key, e),
        })
    }

    /// Reads one agent's hash like a lookup by id, and checks it carries
    /// that id; `None` when the key vanished since `SCAN` saw it.
    async fn read(
        &self,
        mut conn: ConnectionManager,
        scanned: Scanned,
    ) -> Result<Option<Listed>, BackendError> {
        let (id, key) = match scanned {
            Scanned::Agent(id, key) => (id, key),
            Scanned::NotAnId(key, e) => {
                return Ok(Some(Listed::Invalid {
                    at: listing::printable(&key),
                    reason: format!("the key holds no agent id: {e}"),
                }))
            }
        };
        let record = match self.hash(&mut conn, id.as_str()).await {
            Ok(None) => return Ok(None),
            Ok(Some(record)) if record.id != id => {
                Err(BackendError::InvalidRecord(RecordError::IdMismatch {
                    asked: id.as_str().to_owned(),
                }))
            }
            Ok(Some(record)) => Ok(record),
            Err(e) => Err(e),
        };
        listing::entry(record, || key).map(Some)
    }
}

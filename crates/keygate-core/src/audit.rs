//! The audit trail: one event for every answered request, saying who asked,
//! what was asked, what answered and which agent was disclosed. Never the
//! key: an [`Answered`] has no field that could hold one.
//!
//! Events are `tracing` events with the target [`AUDIT_TARGET`]; the
//! subscriber the binary installs decides where they go (the diagnostic
//! log, their own JSON-lines file, or nowhere). The same call records the
//! request metrics, so a front end has one line to add per answer.
//!
//! "What answered" travels without changing [`KeyBackend`]'s signature: a
//! front end runs the lookup inside [`attributed`], and the layer that
//! produced the answer says so with [`answered_by`] (the chain names the
//! backend, the cache says `cache` or `stale`). Outside [`attributed`],
//! [`answered_by`] does nothing.
//!
//! [`KeyBackend`]: crate::KeyBackend

use std::cell::RefCell;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::{Query, Reply, Request};

/// The `tracing` target of audit events.
pub const AUDIT_TARGET: &str = "keygate::audit";

/// What produced an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A backend, by its configured name.
    Backend(Arc<str>),
    /// A fresh cache entry.
    Cache,
    /// An expired cache entry, served because the backends are down.
    Stale,
}

impl Source {
    /// The backend's name, `cache` or `stale`.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Backend(name) => name,
            Self::Cache => "cache",
            Self::Stale => "stale",
        }
    }
}

/// What the layers said about the lookup running in a task.
#[derive(Default)]
struct Noted {
    /// What answered ([`answered_by`]).
    source: Option<Source>,
    /// Why Wazuh will probably refuse the agent served ([`conflict`]).
    conflict: Option<Box<str>>,
}

tokio::task_local! {
    static NOTED: RefCell<Noted>;
}

/// Runs `lookup` and returns its output with what answered it, as said by
/// the layers through [`answered_by`] (the last one to speak wins, so an
/// outer layer such as the cache overrides what it wraps).
pub async fn attributed<F: Future>(lookup: F) -> (F::Output, Option<Source>) {
    let (out, noted) = noted(lookup).await;
    (out, noted.source)
}

/// Runs `lookup` and returns its output with everything the layers noted.
async fn noted<F: Future>(lookup: F) -> (F::Output, Noted) {
    NOTED
        .scope(RefCell::new(Noted::default()), async move {
            let out = lookup.await;
            let noted = NOTED.with(|n| std::mem::take(&mut *n.borrow_mut()));
            (out, noted)
        })
        .await
}

/// Records what answered the lookup running in this task; nothing happens
/// outside [`attributed`].
pub fn answered_by(source: Source) {
    let _ = NOTED.try_with(|n| n.borrow_mut().source = Some(source));
}

/// Records that Wazuh will probably refuse the agent being served, and
/// why (another agent in client.keys holds its name or ip): the audit
/// event carries it as `conflict`. Nothing happens outside a request
/// being answered.
pub fn conflict(reason: &str) {
    let _ = NOTED.try_with(|n| n.borrow_mut().conflict = Some(reason.into()));
}

/// Which front end answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frontend {
    /// The Unix socket daemon.
    Socket,
    /// The exec one-shot (`keygate id|ip`), or a one-shot that forwarded
    /// its request to the daemon.
    Exec,
}

impl Frontend {
    /// `socket` or `exec`, as the metrics label it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Exec => "exec",
        }
    }
}

/// Who asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requester {
    /// The peer's uid (SO_PEERCRED), socket mode.
    pub uid: Option<u32>,
    /// The peer's gid (SO_PEERCRED), socket mode.
    pub gid: Option<u32>,
    /// The peer's pid (SO_PEERCRED), socket mode.
    pub pid: Option<i32>,
    /// The parent of the exec one-shot: the Wazuh daemon that ran it.
    pub parent_pid: Option<i32>,
}

/// One answered request, as the audit trail and the metrics see it.
#[derive(Debug)]
pub struct Answered<'a> {
    /// The front end that answered.
    pub frontend: Frontend,
    /// Who asked.
    pub requester: Requester,
    /// The request, if it parsed.
    pub query: Option<&'a Query>,
    /// The reply sent.
    pub reply: &'a Reply,
    /// What answered; `None` (written `none`) when no backend or cache
    /// entry did: errors, not-found from every backend, refused requests.
    pub source: Option<&'a Source>,
    /// From the request's arrival to the reply.
    pub latency: Duration,
    /// Why Wazuh will probably refuse the agent served, when keygate saw
    /// a reason in the manager's client.keys.
    pub conflict: Option<&'a str>,
}

/// Writes the audit event for `answer` and counts it in the metrics.
pub fn record(answer: &Answered<'_>) {
    let kind = answer.query.map_or("none", Query::kind);
    let code = answer.reply.code().as_u8();
    crate::metrics::request_answered(kind, answer.frontend, code, answer.latency);
    let (agent_id, agent_name) = match answer.reply {
        Reply::Found(record) => (Some(record.id.as_str()), Some(record.name.as_str())),
        Reply::Error { .. } => (None, None),
    };
    let r = &answer.requester;
    // Whole microseconds: a latency written as 0.18387199999999998 helps nobody.
    let latency_ms = (answer.latency.as_secs_f64() * 1e6).round() / 1e3;
    tracing::info!(
        target: AUDIT_TARGET,
        frontend = answer.frontend.as_str(),
        peer_uid = r.uid,
        peer_gid = r.gid,
        peer_pid = r.pid,
        parent_pid = r.parent_pid,
        query = answer.query.map(tracing::field::display),
        code,
        answered_by = answer.source.map_or("none", Source::as_str),
        agent_id,
        agent_name,
        latency_ms,
        conflict = answer.conflict,
        "Key request answered."
    );
}

/// One request being answered: which front end, who asked, since when.
/// Its methods answer through the stack and write the one audit event.
#[derive(Clone, Copy, Debug)]
pub struct Asked {
    frontend: Frontend,
    requester: Requester,
    started: Instant,
}

impl Asked {
    /// A request on the Wazuh socket from the peer with these credentials
    /// (SO_PEERCRED). A peer that is a `keygate id|ip` one-shot forwarding
    /// its request (same process name as ours) is counted as the exec front
    /// end, with its parent (the Wazuh daemon that ran it) as `parent_pid`.
    pub fn socket(uid: Option<u32>, gid: Option<u32>, pid: Option<i32>) -> Self {
        let parent_pid = pid.and_then(forwarding_exec_parent);
        Self {
            frontend: if parent_pid.is_some() {
                Frontend::Exec
            } else {
                Frontend::Socket
            },
            requester: Requester {
                uid,
                gid,
                pid,
                parent_pid,
            },
            started: Instant::now(),
        }
    }

    /// The exec one-shot answering by itself; its parent ran it.
    pub fn exec() -> Self {
        Self {
            frontend: Frontend::Exec,
            requester: Requester {
                parent_pid: i32::try_from(std::os::unix::process::parent_id()).ok(),
                ..Requester::default()
            },
            started: Instant::now(),
        }
    }

    /// Awaits `answering`, the reply to the request `raw`, noting what
    /// answered it; then writes the audit event (with the query, if `raw`
    /// parses) and returns the reply. The front end's whole answering path,
    /// refusals included, goes inside.
    pub async fn answered(&self, raw: &[u8], answering: impl Future<Output = Reply>) -> Reply {
        let (reply, noted) = noted(answering).await;
        let query = Request::parse(raw).ok();
        self.record(
            query.as_ref(),
            &reply,
            noted.source.as_ref(),
            noted.conflict.as_deref(),
        );
        reply
    }

    /// Writes the audit event of a reply made before a request was read
    /// (a read timeout), and returns it.
    pub fn refused(&self, reply: Reply) -> Reply {
        self.record(None, &reply, None, None);
        reply
    }

    fn record(
        &self,
        query: Option<&Query>,
        reply: &Reply,
        source: Option<&Source>,
        conflict: Option<&str>,
    ) {
        record(&Answered {
            frontend: self.frontend,
            requester: self.requester,
            query,
            reply,
            source,
            latency: self.started.elapsed(),
            conflict,
        });
    }
}

/// How long what `/proc` said about a peer process is reused for the next
/// requests from the same pid on the same thread. Wazuh's authd asks from
/// one long-lived process, so reading `/proc/<pid>/stat` (three system
/// calls, more than the rest of a cached answer) once per connection is
/// waste; a pid reused by another process within this time is not a case
/// worth a system call per request for a label.
const PEER_MEMO: Duration = Duration::from_secs(1);

thread_local! {
    /// The last peer looked up on this thread: its pid, when, and the answer.
    static LAST_PEER: std::cell::Cell<Option<(i32, Instant, Option<i32>)>> =
        const { std::cell::Cell::new(None) };
}

/// The parent of process `pid` if `pid` runs under our own process name
/// (a keygate one-shot), read from `/proc/<pid>/stat`, which any user may
/// read, or remembered from a lookup of the same pid less than
/// [`PEER_MEMO`] ago. Only a label for the metrics and the audit trail,
/// never used to decide anything.
fn forwarding_exec_parent(pid: i32) -> Option<i32> {
    let now = Instant::now();
    if let Some((last, at, parent)) = LAST_PEER.get() {
        if last == pid && now.saturating_duration_since(at) < PEER_MEMO {
            return parent;
        }
    }
    let parent = read_exec_parent(pid);
    LAST_PEER.set(Some((pid, now, parent)));
    parent
}

/// [`forwarding_exec_parent`], read from `/proc` every time.
fn read_exec_parent(pid: i32) -> Option<i32> {
    static OURS: OnceLock<Option<String>> = OnceLock::new();
    let ours = OURS
        .get_or_init(|| stat("self").map(|(comm, _)| comm))
        .as_deref()?;
    let (comm, ppid) = stat(&pid.to_string())?;
    (comm == ours).then_some(ppid)
}

/// The command name and parent pid in `/proc/<pid>/stat`
/// (`pid (comm) state ppid ...`; the name may hold spaces and parentheses).
fn stat(pid: &str) -> Option<(String, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_owned();
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((comm, ppid))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The innermost layer names the backend; an outer layer overrides it;
    /// outside a scope nothing is recorded and nothing panics.
    #[tokio::test]
    async fn the_last_layer_to_speak_is_what_answered() {
        answered_by(Source::Cache);
        let ((), source) = attributed(async {
            answered_by(Source::Backend("db".into()));
        })
        .await;
        assert_eq!(source, Some(Source::Backend("db".into())));
        let ((), source) = attributed(async {
            answered_by(Source::Backend("db".into()));
            answered_by(Source::Stale);
        })
        .await;
        assert_eq!(source.as_ref().map(Source::as_str), Some("stale"));
        let ((), source) = attributed(async {}).await;
        assert_eq!(source, None);
    }

    /// A conflict noted while answering travels with the answer; outside
    /// a request nothing is noted and nothing panics.
    #[tokio::test]
    async fn a_conflict_travels_with_the_answer() {
        conflict("ignored outside a request");
        let ((), found) = noted(async {
            answered_by(Source::Cache);
            conflict("Duplicate name: agent 012 holds 'web-01'");
        })
        .await;
        assert_eq!(
            found.conflict.as_deref(),
            Some("Duplicate name: agent 012 holds 'web-01'")
        );
        assert_eq!(found.source, Some(Source::Cache));
        let ((), nothing) = noted(async {}).await;
        assert_eq!(nothing.conflict, None);
    }

    /// Our own process is recognised by name, with its real parent; an
    /// unrelated process (pid 1) is not; a pid that does not exist is not.
    #[test]
    fn a_forwarding_one_shot_is_recognised_by_its_process_name() {
        let me = i32::try_from(std::process::id()).unwrap();
        let parent = i32::try_from(std::os::unix::process::parent_id()).unwrap();
        assert_eq!(forwarding_exec_parent(me), Some(parent));
        assert_eq!(forwarding_exec_parent(1), None);
        assert_eq!(forwarding_exec_parent(i32::MAX), None);
        let asked = Asked::socket(Some(0), Some(0), Some(me));
        assert_eq!(asked.frontend, Frontend::Exec);
        assert_eq!(asked.requester.parent_pid, Some(parent));
    }

    /// What `/proc` said about the last peer is reused for its next
    /// requests, within `PEER_MEMO` only and for that pid only (a planted
    /// answer shows which was used: pid 1 is never a keygate one-shot).
    #[test]
    fn the_last_peer_is_remembered_for_a_moment() {
        let now = Instant::now();
        LAST_PEER.set(Some((1, now, Some(42))));
        assert_eq!(forwarding_exec_parent(1), Some(42));
        LAST_PEER.set(Some((2, now, Some(42))));
        assert_eq!(forwarding_exec_parent(1), None);
        if let Some(old) = now.checked_sub(PEER_MEMO * 2) {
            LAST_PEER.set(Some((1, old, Some(42))));
            assert_eq!(forwarding_exec_parent(1), None);
        }
    }
}

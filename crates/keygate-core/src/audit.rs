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
//! An answer is on record before it is sent. With `[log] audit_failure =
//! "refuse"` the binary's audit writer writes each event before the answer
//! goes out and tells [`report_write`] whether it did
//! ([`require_reports`] says it will); an answer whose event could not be
//! written is replaced by error 2, "audit trail unavailable", counted
//! (`keygate_audit_write_failures_total`) and logged, at most every
//! [`UNAVAILABLE_LOG_EVERY`], until events are written again.
//!
//! [`KeyBackend`]: crate::KeyBackend

use std::cell::{Cell, RefCell};
use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::{ErrorCode, Query, Reply, Request};

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

/// The message of an answer refused because its audit event could not
/// be written.
pub const UNAVAILABLE: &str = "audit trail unavailable";

/// How often, at most, a failing audit trail is logged.
pub const UNAVAILABLE_LOG_EVERY: Duration = Duration::from_secs(10);

/// Whether the audit writer reports every event ([`require_reports`]).
static REPORTS_REQUIRED: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// What the audit writer said of the event being written on this
    /// thread ([`report_write`]).
    static WRITTEN: Cell<Option<io::Result<()>>> = const { Cell::new(None) };
}

/// Says whether every audit event's writer reports its outcome through
/// [`report_write`] (`audit_failure = "refuse"`, and the events have
/// somewhere to go). While it does, an event it did not report as written
/// (an error, or no writer at all: a file that could not be opened) makes
/// its answer error 2, [`UNAVAILABLE`].
pub fn require_reports(required: bool) {
    REPORTS_REQUIRED.store(required, Ordering::Relaxed);
}

/// Called by the audit writer, on the thread that logs the event and before
/// the event's `tracing` call returns: whether its line was written, whole.
pub fn report_write(result: io::Result<()>) {
    WRITTEN.set(Some(result));
}

/// Writes the audit event for `answer`; an error when reports are required
/// and the event was not reported written.
fn write_event(answer: &Answered<'_>) -> io::Result<()> {
    let (agent_id, agent_name) = match answer.reply {
        Reply::Found(record) => (Some(record.id.as_str()), Some(record.name.as_str())),
        Reply::Error { .. } => (None, None),
    };
    let r = &answer.requester;
    // Whole microseconds: a latency written as 0.18387199999999998 helps nobody.
    let latency_ms = (answer.latency.as_secs_f64() * 1e6).round() / 1e3;
    WRITTEN.set(None);
    tracing::info!(
        target: AUDIT_TARGET,
        frontend = answer.frontend.as_str(),
        peer_uid = r.uid,
        peer_gid = r.gid,
        peer_pid = r.pid,
        parent_pid = r.parent_pid,
        query = answer.query.map(tracing::field::display),
        code = answer.reply.code().as_u8(),
        answered_by = answer.source.map_or("none", Source::as_str),
        agent_id,
        agent_name,
        latency_ms,
        conflict = answer.conflict,
        "Key request answered."
    );
    if !REPORTS_REQUIRED.load(Ordering::Relaxed) {
        return Ok(());
    }
    WRITTEN
        .take()
        .unwrap_or_else(|| Err(io::Error::other("the audit event reached no writer")))
}

/// Writes the audit event for `answer` and counts it in the metrics;
/// returns the reply to send: the answer's, or error 2 ([`UNAVAILABLE`],
/// no key) when its event had to be written and could not be.
pub fn record(answer: &Answered<'_>) -> Option<Reply> {
    let refused = match write_event(answer) {
        Ok(()) => {
            unavailable::written();
            None
        }
        Err(error) => {
            unavailable::lost(&error);
            Some(Reply::error(ErrorCode::Unavailable, UNAVAILABLE))
        }
    };
    let kind = answer.query.map_or("none", Query::kind);
    let code = refused.as_ref().unwrap_or(answer.reply).code().as_u8();
    crate::metrics::request_answered(kind, answer.frontend, code, answer.latency);
    refused
}

/// The failing audit trail's count and rate-limited log.
mod unavailable {
    use super::*;

    /// Events lost since the trail started failing, and since last logged.
    struct Failures {
        streak: u64,
        unlogged: u64,
        logged_at: Option<Instant>,
    }

    static FAILING: AtomicBool = AtomicBool::new(false);
    static FAILURES: Mutex<Failures> = Mutex::new(Failures {
        streak: 0,
        unlogged: 0,
        logged_at: None,
    });

    /// Counts an event that could not be written; logs the first at once,
    /// then at most every [`UNAVAILABLE_LOG_EVERY`] with how many since.
    pub(super) fn lost(error: &io::Error) {
        crate::metrics::audit_write_failed(1);
        FAILING.store(true, Ordering::Relaxed);
        let mut f = FAILURES.lock().unwrap_or_else(PoisonError::into_inner);
        f.streak += 1;
        f.unlogged += 1;
        let now = Instant::now();
        if f.logged_at
            .is_none_or(|at| now.saturating_duration_since(at) >= UNAVAILABLE_LOG_EVERY)
        {
            let refused = std::mem::take(&mut f.unlogged);
            f.logged_at = Some(now);
            drop(f);
            tracing::error!(
                %error,
                refused,
                "Audit trail unavailable: answers are refused until their audit events can be written."
            );
        }
    }

    /// An event was written: if the trail was failing, says it is back.
    pub(super) fn written() {
        if !FAILING.load(Ordering::Relaxed) || !FAILING.swap(false, Ordering::Relaxed) {
            return;
        }
        let mut f = FAILURES.lock().unwrap_or_else(PoisonError::into_inner);
        let refused = std::mem::take(&mut f.streak);
        f.unlogged = 0;
        f.logged_at = None;
        drop(f);
        tracing::warn!(refused, "Audit trail written again; answering.");
    }
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
    /// its request (running our executable) is counted as the exec front
    /// end, with its parent (the Wazuh daemon that ran it) as `parent_pid`.
    pub fn socket(uid: Option<u32>, gid: Option<u32>, pid: Option<i32>) -> Self {
        let started = Instant::now();
        let parent_pid = pid.and_then(|pid| forwarding_exec_parent(pid, started));
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
            started,
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
    /// parses) and returns the reply to send: the answer, or error 2 if its
    /// event had to be written first and could not be. The front end's
    /// whole answering path, refusals included, goes inside.
    pub async fn answered(&self, raw: &[u8], answering: impl Future<Output = Reply>) -> Reply {
        let (reply, noted) = noted(answering).await;
        let query = Request::parse(raw).ok();
        self.record(
            query.as_ref(),
            reply,
            noted.source.as_ref(),
            noted.conflict.as_deref(),
        )
    }

    /// Writes the audit event of a reply made before a request was read
    /// (a read timeout), and returns the reply to send.
    pub fn refused(&self, reply: Reply) -> Reply {
        self.record(None, reply, None, None)
    }

    fn record(
        &self,
        query: Option<&Query>,
        reply: Reply,
        source: Option<&Source>,
        conflict: Option<&str>,
    ) -> Reply {
        record(&Answered {
            frontend: self.frontend,
            requester: self.requester,
            query,
            reply: &reply,
            source,
            latency: self.started.elapsed(),
            conflict,
        })
        .unwrap_or(reply)
    }
}

/// How long what `/proc` said about a peer process is reused for the next
/// requests from the same pid on the same thread. Wazuh's authd asks from
/// one long-lived process, so looking at `/proc/<pid>` (two system calls
/// for a process that is not ours, as many as the rest of a cached answer)
/// once per connection is waste; a pid reused by another process within
/// this time is not a case worth a system call per request for a label.
const PEER_MEMO: Duration = Duration::from_secs(1);

thread_local! {
    /// The last peer looked up on this thread: its pid, when, and the answer.
    static LAST_PEER: Cell<Option<(i32, Instant, Option<i32>)>> = const { Cell::new(None) };
}

/// The parent of process `pid` if `pid` runs this same executable (a
/// keygate one-shot): see [`read_exec_parent`]; remembered from a lookup of
/// the same pid less than [`PEER_MEMO`] before `now`. Only a label for the
/// metrics and the audit trail, never used to decide anything.
fn forwarding_exec_parent(pid: i32, now: Instant) -> Option<i32> {
    if let Some((last, at, parent)) = LAST_PEER.get() {
        if last == pid && now.saturating_duration_since(at) < PEER_MEMO {
            return parent;
        }
    }
    let parent = read_exec_parent(pid);
    LAST_PEER.set(Some((pid, now, parent)));
    parent
}

/// [`forwarding_exec_parent`], read from `/proc` every time: the parent
/// from `/proc/<pid>/stat` if `/proc/<pid>/exe` is our executable. A
/// process name proves nothing (any program can be run under the name
/// `keygate`); the executable is the kernel's word. Reading another user's
/// `exe` needs the right to trace it: a daemon that may not (its own user,
/// or systemd's `ProtectProc=invisible`) labels every peer `socket`.
fn read_exec_parent(pid: i32) -> Option<i32> {
    static OURS: OnceLock<Option<Executable>> = OnceLock::new();
    let ours = OURS.get_or_init(|| Executable::of("self")).as_ref()?;
    let pid = pid.to_string();
    if !ours.runs_in(&pid) {
        return None;
    }
    parent_of(&pid)
}

/// A process's executable: the file (device and inode), and its path.
struct Executable {
    dev: u64,
    ino: u64,
    path: PathBuf,
}

impl Executable {
    /// The executable of `/proc/<pid>`.
    fn of(pid: &str) -> Option<Self> {
        let link = format!("/proc/{pid}/exe");
        let meta = std::fs::metadata(&link).ok()?;
        Some(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            path: std::fs::read_link(&link).ok()?,
        })
    }

    /// Whether process `pid` runs this executable: the same file, or the
    /// file installed at the same path (a package upgrade replaced ours;
    /// the kernel then shows our path with " (deleted)").
    fn runs_in(&self, pid: &str) -> bool {
        let link = format!("/proc/{pid}/exe");
        let Ok(meta) = std::fs::metadata(&link) else {
            return false;
        };
        if (meta.dev(), meta.ino()) == (self.dev, self.ino) {
            return true;
        }
        std::fs::read_link(&link).is_ok_and(|theirs| installed(&theirs) == installed(&self.path))
    }
}

/// An executable's path as installed: without the " (deleted)" the kernel
/// adds once the file was removed or replaced.
fn installed(path: &std::path::Path) -> &OsStr {
    let bytes = path.as_os_str().as_bytes();
    OsStr::from_bytes(bytes.strip_suffix(b" (deleted)").unwrap_or(bytes))
}

/// The parent pid in `/proc/<pid>/stat` (`pid (comm) state ppid ...`; the
/// name may hold spaces and parentheses).
fn parent_of(pid: &str) -> Option<i32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = text.rfind(')')?;
    let mut rest = text.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    rest.next()?.parse().ok()
}

#[cfg(test)]
mod tests;

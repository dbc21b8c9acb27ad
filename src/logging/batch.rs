//! The log writer: lines are appended to a buffer in memory by whoever
//! logs, and the buffer is written in one `write` at a time, so many lines
//! cost one system call. Each line is handed over one of three ways
//! ([`Delivery`]):
//!
//! - **lossy** (the diagnostic log): a thread of the writer's own writes
//!   what gathered at most [`FLUSH_EVERY`] after the first line of a batch
//!   (sooner once [`HIGH_WATER`] bytes wait). When the sink cannot keep up
//!   and [`CAPACITY`] bytes wait, lines are dropped, counted, and the log
//!   says so.
//! - **lossless** (the audit trail with `audit_failure = "serve"`): the
//!   same, but the logging thread waits for room instead of dropping. A
//!   batch that cannot be written is counted, audit lines by the callback
//!   given to [`Batched::new`].
//! - **committed** (the audit trail with `audit_failure = "refuse"`): the
//!   line is written before the caller goes on, and the caller learns
//!   whether it was ([`Line::written`]). A group commit, as a database
//!   writes its log: the caller that finds nobody writing takes everything
//!   waiting (its own line, and whatever other threads queued) and writes
//!   it itself, on its own thread; callers that arrive while a write is
//!   under way queue their lines and wait for it, and the first of them to
//!   wake writes the next batch for all of them. An idle daemon writes each
//!   line as it comes (one `write`, no other thread woken: no 10 ms wait);
//!   a busy one writes as many lines per `write` as arrived during the
//!   previous one.
//!
//! Whoever writes takes the sink out of the shared state and puts it back
//! after, so batches never interleave and the thread and the committers
//! take turns. Condition variables are only signalled when someone waits
//! (std's `notify` is a system call even then).
//!
//! It replaced tracing-appender's background writer, which hands every
//! line to its thread through a channel: one wake-up of that thread and one
//! `write` per line, and the thread spinning (`sched_yield`) while it
//! waits (on two cores the audit line cost about 15 % of the socket's
//! throughput: docs/dev/benchmarks-history.md, "Server hot path, second
//! pass"). Dropping the [`Flusher`] writes what is left and stops the
//! thread.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest a lossy or lossless line waits in memory before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(10);

/// Bytes waiting that make the thread write at once.
pub const HIGH_WATER: usize = 256 << 10;

/// Most bytes waiting by default; beyond it lossy lines are dropped and
/// lossless ones wait.
pub const CAPACITY: usize = 16 << 20;

/// How a line is handed to the writer (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Written within [`FLUSH_EVERY`]; dropped and counted when the buffer
    /// is full.
    Lossy,
    /// Written within [`FLUSH_EVERY`]; waits for room when the buffer is
    /// full.
    Lossless,
    /// Written before the caller goes on, which learns the outcome.
    Committed,
}

/// Why a batch was not written: enough to rebuild the `io::Error` for
/// every line in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WriteFailed {
    kind: io::ErrorKind,
    os: Option<i32>,
}

impl WriteFailed {
    fn of(error: &io::Error) -> Self {
        Self {
            kind: error.kind(),
            os: error.raw_os_error(),
        }
    }

    /// The error, as the sink gave it.
    pub fn error(self) -> io::Error {
        self.os
            .map_or_else(|| self.kind.into(), io::Error::from_raw_os_error)
    }
}

/// One batch's outcome, shared by the committed lines in it.
#[derive(Default)]
struct Batch(OnceLock<Result<(), WriteFailed>>);

/// What the writer is: a name for its notes, and the callback that counts
/// lost audit lines.
struct Settings {
    capacity: usize,
    /// `log` or `audit trail`, for the notes on stderr.
    name: &'static str,
    /// Lines start with a syslog priority (stderr is the journal).
    journal: bool,
    /// Counts audit lines (lossless ones) lost with a batch.
    lost_audit: fn(u64),
    /// A thread writes lossy and lossless lines; without one (exec mode),
    /// every line is committed and nothing is said on stderr.
    threaded: bool,
}

struct State {
    buf: Vec<u8>,
    /// The batch the committed lines in `buf` belong to; made by the first.
    batch: Option<Arc<Batch>>,
    /// Lossless lines in `buf`.
    lossless_lines: u64,
    dropped: u64,
    closing: bool,
    /// The sink, while nobody is writing to it.
    sink: Option<Box<dyn Write + Send>>,
    /// The buffer the last batch was written from, kept for the next one.
    spare: Vec<u8>,
    /// The last write failed (the failure was said once on stderr).
    failing: bool,
    /// Threads waiting on [`Shared::room`], [`Shared::written`].
    waiting_room: usize,
    waiting_written: usize,
}

struct Shared {
    state: Mutex<State>,
    /// The flushing thread waits on it for lines, or for the batch to fill.
    lines: Condvar,
    /// Lossless lines wait on it for room.
    room: Condvar,
    /// Committers (and the thread) wait on it for a write to end.
    written: Condvar,
    settings: Settings,
}

impl Shared {
    fn new(sink: Box<dyn Write + Send>, settings: Settings) -> Self {
        Self {
            state: Mutex::new(State {
                buf: Vec::new(),
                batch: None,
                lossless_lines: 0,
                dropped: 0,
                closing: false,
                sink: Some(sink),
                spare: Vec::new(),
                failing: false,
                waiting_room: 0,
                waiting_written: 0,
            }),
            lines: Condvar::new(),
            room: Condvar::new(),
            written: Condvar::new(),
            settings,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(
        &self,
        condvar: &Condvar,
        st: MutexGuard<'a, State>,
        count: fn(&mut State) -> &mut usize,
    ) -> MutexGuard<'a, State> {
        let mut st = st;
        *count(&mut st) += 1;
        let mut st = condvar.wait(st).unwrap_or_else(PoisonError::into_inner);
        *count(&mut st) -= 1;
        st
    }

    /// A lossy or lossless line, for the thread to write.
    fn append(&self, line: &[u8], lossless: bool) {
        let capacity = self.settings.capacity;
        let mut st = self.lock();
        while lossless && !st.closing && !st.buf.is_empty() && st.buf.len() + line.len() > capacity
        {
            st = self.wait(&self.room, st, |s| &mut s.waiting_room);
        }
        if st.buf.len() + line.len() > capacity && !st.buf.is_empty() {
            st.dropped += 1;
            return;
        }
        let before = st.buf.len();
        st.buf.extend_from_slice(line);
        st.lossless_lines += u64::from(lossless);
        // Wake the thread for the first line of a batch and when the batch
        // is full; every other line only waits.
        if before == 0 || (before < HIGH_WATER && st.buf.len() >= HIGH_WATER) {
            self.lines.notify_one();
        }
    }

    /// A committed line: written (by this thread or with another's batch)
    /// before this returns.
    fn commit(&self, line: &[u8]) -> Result<(), WriteFailed> {
        let mut st = self.lock();
        st.buf.extend_from_slice(line);
        let batch = st.batch.get_or_insert_with(Arc::default).clone();
        loop {
            if let Some(outcome) = batch.0.get() {
                return *outcome;
            }
            // Our batch is still waiting (a batch taken has its outcome
            // set before the sink is put back): write it.
            st = if st.sink.is_some() {
                self.write_out(st)
            } else {
                self.wait(&self.written, st, |s| &mut s.waiting_written)
            };
        }
    }

    /// Writes everything waiting, if nobody else is writing; returns with
    /// the lock held again.
    fn write_out<'a>(&'a self, mut st: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        let Some(mut sink) = st.sink.take() else {
            return st;
        };
        let mut buf = std::mem::take(&mut st.spare);
        std::mem::swap(&mut st.buf, &mut buf);
        let batch = st.batch.take();
        let lossless = std::mem::take(&mut st.lossless_lines);
        let dropped = std::mem::take(&mut st.dropped);
        if st.waiting_room > 0 {
            self.room.notify_all();
        }
        drop(st);
        // The batch's own outcome: what its committed lines are told.
        let written = if buf.is_empty() {
            Ok(())
        } else {
            sink.write_all(&buf)
        }
        .and_then(|()| sink.flush());
        if written.is_err() && lossless > 0 {
            (self.settings.lost_audit)(lossless);
        }
        let noted = if dropped > 0 {
            let note = format!(
                "{}keygate: {dropped} log line(s) dropped: the log could not be written fast enough\n",
                if self.settings.journal { "<4>" } else { "" }
            );
            sink.write_all(note.as_bytes())
        } else {
            Ok(())
        };
        buf.clear();
        if buf.capacity() > 2 * HIGH_WATER {
            buf.shrink_to(HIGH_WATER);
        }
        let mut st = self.lock();
        self.note_outcome(&mut st, written.as_ref().err().or(noted.as_ref().err()));
        st.sink = Some(sink);
        st.spare = buf;
        if let Some(batch) = batch {
            let _ = batch
                .0
                .set(written.as_ref().map_err(WriteFailed::of).copied());
        }
        if st.waiting_written > 0 {
            self.written.notify_all();
        }
        st
    }

    /// Says on stderr when writing starts failing, and when it works again
    /// (not in exec mode, whose stderr is Wazuh's pipe).
    fn note_outcome(&self, st: &mut State, error: Option<&io::Error>) {
        if !self.settings.threaded {
            return;
        }
        let prefix = |p: &'static str| if self.settings.journal { p } else { "" };
        let name = self.settings.name;
        match error {
            Some(error) if !st.failing => {
                st.failing = true;
                eprintln!("{}keygate: cannot write the {name}: {error}", prefix("<3>"));
            }
            None if st.failing => {
                st.failing = false;
                eprintln!("{}keygate: the {name} is written again", prefix("<6>"));
            }
            _ => {}
        }
    }
}

/// The writer half, for a `tracing_subscriber` layer (see [`Line`]).
#[derive(Clone)]
pub struct Batched(Arc<Shared>);

/// The flushing thread; dropping it writes what is left and stops it.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Batched {
    /// A writer into `sink` with the thread that writes lossy and lossless
    /// lines; `capacity` bytes may wait at most; `name` (`log`, `audit
    /// trail`) is what its notes on stderr call it, which start with a
    /// syslog priority if `journal`; `lost_audit` counts the lossless lines
    /// of a batch that could not be written.
    pub fn new(
        sink: impl Write + Send + 'static,
        capacity: usize,
        name: &'static str,
        journal: bool,
        lost_audit: fn(u64),
    ) -> io::Result<(Self, Flusher)> {
        let shared = Arc::new(Shared::new(
            Box::new(sink),
            Settings {
                capacity,
                name,
                journal,
                lost_audit,
                threaded: true,
            },
        ));
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("keygate-log".to_owned())
            .spawn(move || flush_loop(&theirs))?;
        Ok((
            Self(shared.clone()),
            Flusher {
                shared,
                thread: Some(thread),
            },
        ))
    }

    /// A writer into `sink` with no thread: every line is committed by
    /// whoever logs it (exec mode: a line or two per process, and a thread's
    /// start and shutdown would add to every one-shot).
    pub fn direct(sink: impl Write + Send + 'static, name: &'static str) -> Self {
        Self(Arc::new(Shared::new(
            Box::new(sink),
            Settings {
                capacity: CAPACITY,
                name,
                journal: false,
                lost_audit: |_| {},
                threaded: false,
            },
        )))
    }

    /// Whether a lossless line is waiting for room (for tests).
    #[cfg(test)]
    pub fn waiting_for_room(&self) -> bool {
        self.0.lock().waiting_room > 0
    }

    /// The writer of one line delivered as `delivery`.
    pub fn line(&self, delivery: Delivery) -> Line<'_> {
        Line {
            shared: &self.0,
            delivery,
            written: None,
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.lines.notify_one();
        self.shared.room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn flush_loop(shared: &Shared) {
    let mut st = shared.lock();
    loop {
        while st.buf.is_empty() && st.dropped == 0 && !st.closing {
            st = shared
                .lines
                .wait(st)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if !st.closing && st.buf.len() < HIGH_WATER {
            st = shared
                .lines
                .wait_timeout(st, FLUSH_EVERY)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        // A committer may be writing; its batch may not hold our lines.
        while st.sink.is_none() {
            st = shared.wait(&shared.written, st, |s| &mut s.waiting_written);
        }
        if !st.buf.is_empty() || st.dropped > 0 {
            st = shared.write_out(st);
        }
        if st.closing && st.buf.is_empty() {
            return;
        }
    }
}

/// One event's writer: the formatter writes each event with one
/// `write_all`, so an event is one piece of a batch, never interleaved.
/// Writing never fails (the formatter would print to stderr, which is
/// Wazuh's pipe in exec mode); a committed line keeps its outcome in
/// [`written`](Self::written).
pub struct Line<'a> {
    shared: &'a Shared,
    delivery: Delivery,
    written: Option<Result<(), WriteFailed>>,
}

impl Line<'_> {
    /// Whether the committed line was written: `None` until it is, or for
    /// a line that is not committed.
    pub fn written(&self) -> Option<Result<(), WriteFailed>> {
        self.written
    }
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.delivery {
            _ if !self.shared.settings.threaded => self.written = Some(self.shared.commit(buf)),
            Delivery::Lossy => self.shared.append(buf, false),
            Delivery::Lossless => self.shared.append(buf, true),
            Delivery::Committed => self.written = Some(self.shared.commit(buf)),
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests;

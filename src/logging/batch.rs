//! The daemon's log writer: lines are appended to a buffer in memory by
//! whoever logs, and one thread writes what gathered in one `write` at a
//! time, at most [`FLUSH_EVERY`] after the first line of a batch (sooner
//! once [`HIGH_WATER`] bytes wait).
//!
//! It replaces tracing-appender's background writer, which hands every
//! line to its thread through a channel: one wake-up of that thread and one
//! `write` per line, and the thread spinning (`sched_yield`) while it waits.
//! With the audit trail on, that was one line per Wazuh request (on two
//! cores the audit line, formatting and writing together, cost about 15 %
//! of the socket's throughput: docs/dev/benchmarks-history.md, "Server hot path, second
//! pass"). Here a request's line costs a lock and a copy; the thread wakes
//! once per batch.
//!
//! When the sink cannot keep up and its capacity is waiting, a
//! lossy writer (the diagnostic log) drops lines, counts them and says so
//! in the log; a lossless one (the separate audit file) makes the logging
//! thread wait for room: the audit trail must be complete. Dropping the
//! [`Flusher`] writes what is left and stops the thread.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Longest a line waits in memory before it is written.
pub const FLUSH_EVERY: Duration = Duration::from_millis(10);

/// Bytes waiting that make the thread write at once.
pub const HIGH_WATER: usize = 256 << 10;

/// Most bytes waiting by default; beyond it lines are dropped (lossy) or
/// the logging thread waits (lossless).
pub const CAPACITY: usize = 16 << 20;

struct Pending {
    buf: Vec<u8>,
    dropped: u64,
    closing: bool,
}

struct Shared {
    pending: Mutex<Pending>,
    /// The flushing thread waits on it for lines, or for the batch to fill.
    lines: Condvar,
    /// Lossless writers wait on it for room.
    room: Condvar,
    lossless: bool,
    capacity: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, line: &[u8]) {
        let mut p = self.lock();
        while self.lossless
            && !p.closing
            && !p.buf.is_empty()
            && p.buf.len() + line.len() > self.capacity
        {
            p = self.room.wait(p).unwrap_or_else(PoisonError::into_inner);
        }
        if p.buf.len() + line.len() > self.capacity && !p.buf.is_empty() {
            p.dropped += 1;
            return;
        }
        let before = p.buf.len();
        p.buf.extend_from_slice(line);
        // Wake the thread for the first line of a batch and when the batch
        // is full; every other line only waits.
        if before == 0 || (before < HIGH_WATER && p.buf.len() >= HIGH_WATER) {
            self.lines.notify_one();
        }
    }
}

/// The writer half, for a `tracing_subscriber` layer.
#[derive(Clone)]
pub struct Batched(Arc<Shared>);

/// The flushing thread; dropping it writes what is left and stops it.
pub struct Flusher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Batched {
    /// A writer batching into `sink` (lossless: never drops a line), with
    /// the thread that writes; `capacity` bytes may wait at most.
    pub fn new(
        sink: impl Write + Send + 'static,
        lossless: bool,
        capacity: usize,
    ) -> io::Result<(Self, Flusher)> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                buf: Vec::new(),
                dropped: 0,
                closing: false,
            }),
            lines: Condvar::new(),
            room: Condvar::new(),
            lossless,
            capacity,
        });
        let theirs = shared.clone();
        let thread = std::thread::Builder::new()
            .name("keygate-log".to_owned())
            .spawn(move || flush_loop(&theirs, sink))?;
        Ok((
            Self(shared.clone()),
            Flusher {
                shared,
                thread: Some(thread),
            },
        ))
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

fn flush_loop(shared: &Shared, mut sink: impl Write) {
    let mut batch = Vec::new();
    let mut failing = false;
    loop {
        let (dropped, closing) = {
            let mut p = shared.lock();
            while p.buf.is_empty() && !p.closing {
                p = shared.lines.wait(p).unwrap_or_else(PoisonError::into_inner);
            }
            if !p.closing && p.buf.len() < HIGH_WATER {
                p = shared
                    .lines
                    .wait_timeout(p, FLUSH_EVERY)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut p.buf, &mut batch);
            (
                std::mem::take(&mut p.dropped),
                p.closing && batch.is_empty(),
            )
        };
        shared.room.notify_all();
        let mut written = sink.write_all(&batch);
        if dropped > 0 {
            let note = format!(
                "keygate: {dropped} log line(s) dropped: the log could not be written fast enough\n"
            );
            written = written.and_then(|()| sink.write_all(note.as_bytes()));
        }
        written = written.and_then(|()| sink.flush());
        match written {
            Err(error) if !failing => {
                failing = true;
                eprintln!("keygate: cannot write the log: {error}");
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
        batch.clear();
        if batch.capacity() > 2 * HIGH_WATER {
            batch.shrink_to(HIGH_WATER);
        }
        if closing {
            return;
        }
    }
}

/// One event's writer: the formatter writes each event with one
/// `write_all`, so an event is one piece of the batch, never interleaved.
pub struct Line<'a>(&'a Shared);

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    /// A sink keeping what it was given and how many writes it took; it
    /// blocks while `hold` is locked.
    #[derive(Clone, Default)]
    struct Sink {
        data: Arc<Mutex<Vec<u8>>>,
        writes: Arc<AtomicUsize>,
        hold: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _held = self.hold.lock().unwrap();
            self.writes.fetch_add(1, Ordering::SeqCst);
            self.data.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn line(thread: usize, i: usize) -> String {
        format!("thread {thread} line {i} {}\n", "x".repeat(i % 50))
    }

    /// Lines from several threads all arrive, each whole, and far fewer
    /// writes than lines reach the sink; dropping the flusher writes what
    /// was left.
    #[test]
    fn every_line_arrives_whole_in_few_writes() {
        let sink = Sink::default();
        let (writer, flusher) = Batched::new(sink.clone(), true, CAPACITY).unwrap();
        std::thread::scope(|s| {
            for t in 0..4 {
                let writer = writer.clone();
                s.spawn(move || {
                    for i in 0..2_000 {
                        writer
                            .make_writer()
                            .write_all(line(t, i).as_bytes())
                            .unwrap();
                    }
                });
            }
        });
        drop(flusher);
        let data = String::from_utf8(sink.data.lock().unwrap().clone()).unwrap();
        let mut got: Vec<&str> = data.lines().collect();
        got.sort_unstable();
        let mut want: Vec<String> = (0..4)
            .flat_map(|t| (0..2_000).map(move |i| line(t, i)))
            .collect();
        want.sort_unstable();
        let want: Vec<&str> = want.iter().map(|l| l.trim_end_matches('\n')).collect();
        assert_eq!(got, want);
        let writes = sink.writes.load(Ordering::SeqCst);
        assert!(writes < 8_000 / 10, "{writes} writes for 8,000 lines");
    }

    /// A line is written without waiting for the flusher to be dropped.
    #[test]
    fn lines_are_written_while_the_flusher_runs() {
        let sink = Sink::default();
        let (writer, _flusher) = Batched::new(sink.clone(), false, CAPACITY).unwrap();
        writer.make_writer().write_all(b"hello\n").unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while sink.data.lock().unwrap().as_slice() != b"hello\n" {
            assert!(Instant::now() < deadline, "the line was never written");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// With the sink stuck and the buffer full, a lossy writer drops lines
    /// and says how many once the sink moves again.
    #[test]
    fn a_lossy_writer_drops_and_counts_when_full() {
        let sink = Sink::default();
        let held = sink.hold.lock().unwrap();
        let (writer, flusher) = Batched::new(sink.clone(), false, 100).unwrap();
        writer.make_writer().write_all(&[b'a'; 60]).unwrap();
        // The thread takes that first batch and blocks on the sink.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !writer.0.lock().buf.is_empty() {
            assert!(Instant::now() < deadline, "the first batch was never taken");
            std::thread::sleep(Duration::from_millis(5));
        }
        writer.make_writer().write_all(&[b'b'; 60]).unwrap();
        writer.make_writer().write_all(&[b'c'; 60]).unwrap();
        writer.make_writer().write_all(&[b'd'; 60]).unwrap();
        drop(held);
        drop(flusher);
        let data = String::from_utf8(sink.data.lock().unwrap().clone()).unwrap();
        assert!(data.starts_with(&"a".repeat(60)), "{data}");
        assert!(data.contains(&"b".repeat(60)), "{data}");
        assert!(!data.contains("cc") && !data.contains("dd"), "{data}");
        assert!(data.contains("2 log line(s) dropped"), "{data}");
    }

    /// A lossless writer waits for room instead of dropping.
    #[test]
    fn a_lossless_writer_waits_for_room() {
        let sink = Sink::default();
        let held = sink.hold.lock().unwrap();
        let (writer, flusher) = Batched::new(sink.clone(), true, 100).unwrap();
        let done = Arc::new(AtomicUsize::new(0));
        let (w, d) = (writer.clone(), done.clone());
        let logger = std::thread::spawn(move || {
            for c in [b'a', b'b', b'c', b'd'] {
                w.make_writer().write_all(&[c; 60]).unwrap();
                d.fetch_add(1, Ordering::SeqCst);
            }
        });
        // a is taken by the thread (stuck on the sink), b waits in the
        // buffer, c cannot fit: the logger waits.
        std::thread::sleep(Duration::from_millis(300));
        assert!(done.load(Ordering::SeqCst) < 4);
        drop(held);
        logger.join().unwrap();
        drop(flusher);
        let data = String::from_utf8(sink.data.lock().unwrap().clone()).unwrap();
        for c in ["a", "b", "c", "d"] {
            assert!(data.contains(&c.repeat(60)), "{c} missing: {data}");
        }
        assert!(!data.contains("dropped"));
    }
}

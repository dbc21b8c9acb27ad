//! The batching writer's tests: every line whole, lossy lines dropped and
//! counted, lossless ones waiting, committed ones written before the call
//! returns (alone or grouped) and told when they were not.

use super::*;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

/// A sink keeping what it was given and how many writes it took; it
/// blocks while `hold` is locked, and fails (ENOSPC) while `full`.
#[derive(Clone, Default)]
pub(crate) struct Sink {
    data: Arc<Mutex<Vec<u8>>>,
    writes: Arc<AtomicUsize>,
    pub(crate) hold: Arc<Mutex<()>>,
    pub(crate) full: Arc<AtomicBool>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _held = self.hold.lock().unwrap();
        self.writes.fetch_add(1, Ordering::SeqCst);
        if self.full.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28));
        }
        self.data.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Sink {
    pub(crate) fn text(&self) -> String {
        String::from_utf8(self.data.lock().unwrap().clone()).unwrap()
    }
}

/// Lossless lines counted as lost by the writers made with [`start`].
static LOST: AtomicU64 = AtomicU64::new(0);

fn start(sink: &Sink, capacity: usize) -> (Batched, Flusher) {
    Batched::new(sink.clone(), capacity, "log", false, |n| {
        LOST.fetch_add(n, Ordering::SeqCst);
    })
    .unwrap()
}

fn line(thread: usize, i: usize) -> String {
    format!("thread {thread} line {i} {}\n", "x".repeat(i % 50))
}

/// Waits (at most 20 s, else fails saying `what`) until `done` holds.
pub(crate) fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Lines from several threads all arrive, each whole, and far fewer
/// writes than lines reach the sink; dropping the flusher writes what
/// was left.
#[test]
fn every_line_arrives_whole_in_few_writes() {
    let sink = Sink::default();
    let (writer, flusher) = start(&sink, CAPACITY);
    std::thread::scope(|s| {
        for t in 0..4 {
            let writer = writer.clone();
            s.spawn(move || {
                for i in 0..2_000 {
                    writer
                        .line(Delivery::Lossless)
                        .write_all(line(t, i).as_bytes())
                        .unwrap();
                }
            });
        }
    });
    drop(flusher);
    let data = sink.text();
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
    let (writer, _flusher) = start(&sink, CAPACITY);
    writer.line(Delivery::Lossy).write_all(b"hello\n").unwrap();
    wait_until("the line written", || sink.text() == "hello\n");
}

/// With the sink stuck and the buffer full, a lossy writer drops lines
/// and says how many once the sink moves again.
#[test]
fn a_lossy_writer_drops_and_counts_when_full() {
    let sink = Sink::default();
    let (writer, flusher) = start(&sink, 100);
    let held = sink.hold.lock().unwrap();
    writer.line(Delivery::Lossy).write_all(&[b'a'; 60]).unwrap();
    // The thread takes that first batch and blocks on the sink.
    wait_until("the first batch taken", || writer.0.lock().buf.is_empty());
    for c in [b'b', b'c', b'd'] {
        writer.line(Delivery::Lossy).write_all(&[c; 60]).unwrap();
    }
    drop(held);
    drop(flusher);
    let data = sink.text();
    assert!(data.starts_with(&"a".repeat(60)), "{data}");
    assert!(data.contains(&"b".repeat(60)), "{data}");
    assert!(!data.contains("cc") && !data.contains("dd"), "{data}");
    assert!(data.contains("2 log line(s) dropped"), "{data}");
}

/// A lossless writer waits for room instead of dropping, and goes on once
/// there is room: with the sink stuck on `a`, `b` waits in the buffer and
/// `c` cannot fit, so the logger waits; released, every line is written.
/// Fails (instead of hanging) if the logger is never let go.
#[test]
fn a_lossless_writer_waits_for_room() {
    let sink = Sink::default();
    let (writer, flusher) = start(&sink, 100);
    // Taken after the flusher, so dropped before it if an assertion fails:
    // the flusher's drop waits for the sink.
    let held = sink.hold.lock().unwrap();
    writer
        .line(Delivery::Lossless)
        .write_all(&[b'a'; 60])
        .unwrap();
    wait_until("a taken by the thread", || writer.0.lock().buf.is_empty());
    let done = Arc::new(AtomicUsize::new(0));
    let (w, d) = (writer.clone(), done.clone());
    let logger = std::thread::spawn(move || {
        for c in [b'b', b'c', b'd'] {
            w.line(Delivery::Lossless).write_all(&[c; 60]).unwrap();
            d.fetch_add(1, Ordering::SeqCst);
        }
    });
    wait_until("the logger waiting for room", || writer.waiting_for_room());
    assert_eq!(done.load(Ordering::SeqCst), 1, "b in, c waiting");
    drop(held);
    wait_until("the logger let go", || done.load(Ordering::SeqCst) == 3);
    logger.join().unwrap();
    drop(flusher);
    let data = sink.text();
    for c in ["a", "b", "c", "d"] {
        assert!(data.contains(&c.repeat(60)), "{c} missing: {data}");
    }
    assert!(!data.contains("dropped"));
}

/// A committed line is in the sink when its write returns (no 10 ms
/// wait for the thread), with the lossy lines queued before it, in order
/// and in one write; the line learns it was written.
#[test]
fn a_committed_line_is_written_before_the_call_returns() {
    let sink = Sink::default();
    let (writer, _flusher) = start(&sink, CAPACITY);
    writer.line(Delivery::Lossy).write_all(b"before\n").unwrap();
    let writes = sink.writes.load(Ordering::SeqCst);
    let mut committed = writer.line(Delivery::Committed);
    committed.write_all(b"audit\n").unwrap();
    assert_eq!(committed.written(), Some(Ok(())));
    let text = sink.text();
    // The thread may have written `before` on its own meanwhile; either
    // way both are there, in order, when the call returns.
    assert_eq!(text, "before\naudit\n");
    assert!(sink.writes.load(Ordering::SeqCst) - writes <= 2);
}

/// A committed line that cannot be written learns why (ENOSPC), and so do
/// the next ones until the sink works again; nothing of theirs is
/// written; lossless lines lost with a batch are counted.
#[test]
fn a_committed_line_learns_that_it_was_not_written() {
    let sink = Sink::default();
    let (writer, flusher) = start(&sink, CAPACITY);
    sink.full.store(true, Ordering::SeqCst);
    for _ in 0..3 {
        let mut line = writer.line(Delivery::Committed);
        line.write_all(b"lost\n").unwrap();
        let failed = line.written().unwrap().unwrap_err();
        assert_eq!(failed.error().raw_os_error(), Some(28));
    }
    let lost_before = LOST.load(Ordering::SeqCst);
    writer
        .line(Delivery::Lossless)
        .write_all(b"serve\n")
        .unwrap();
    wait_until("the lossless line counted as lost", || {
        LOST.load(Ordering::SeqCst) > lost_before
    });
    sink.full.store(false, Ordering::SeqCst);
    let mut line = writer.line(Delivery::Committed);
    line.write_all(b"kept\n").unwrap();
    assert_eq!(line.written(), Some(Ok(())));
    drop(flusher);
    assert_eq!(sink.text(), "kept\n");
}

/// Group commit: while one committed line is being written (the sink
/// stuck), the lines committed meanwhile wait, and are then written
/// together in one write, each told so.
#[test]
fn lines_committed_during_a_write_share_the_next_one() {
    let sink = Sink::default();
    let (writer, _flusher) = start(&sink, CAPACITY);
    let held = sink.hold.lock().unwrap();
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    let commit = |text: &'static str| {
        let (writer, outcomes) = (writer.clone(), outcomes.clone());
        std::thread::spawn(move || {
            let mut line = writer.line(Delivery::Committed);
            line.write_all(text.as_bytes()).unwrap();
            outcomes.lock().unwrap().push(line.written());
        })
    };
    let first = commit("first\n");
    wait_until("the first line being written", || {
        writer.0.lock().sink.is_none()
    });
    let others: Vec<_> = ["2\n", "3\n", "4\n", "5\n"].map(commit).into();
    // (The thread may be waiting for the write to end too.)
    wait_until("four lines waiting", || {
        writer.0.lock().waiting_written >= 4
    });
    drop(held);
    first.join().unwrap();
    for t in others {
        t.join().unwrap();
    }
    assert_eq!(sink.writes.load(Ordering::SeqCst), 2);
    let text = sink.text();
    assert!(text.starts_with("first\n"), "{text}");
    let mut rest: Vec<&str> = text.lines().skip(1).collect();
    rest.sort_unstable();
    assert_eq!(rest, ["2", "3", "4", "5"]);
    assert!(outcomes.lock().unwrap().iter().all(|o| *o == Some(Ok(()))));
}

/// Without a thread (exec mode), every line is written when it is logged,
/// lossy or not.
#[test]
fn a_direct_writer_writes_every_line_at_once() {
    let sink = Sink::default();
    let writer = Batched::direct(sink.clone(), "log");
    writer
        .line(Delivery::Lossy)
        .write_all(b"diagnostic\n")
        .unwrap();
    assert_eq!(sink.text(), "diagnostic\n");
    let mut audit = writer.line(Delivery::Committed);
    audit.write_all(b"audit\n").unwrap();
    assert_eq!(audit.written(), Some(Ok(())));
    assert_eq!(sink.text(), "diagnostic\naudit\n");
}

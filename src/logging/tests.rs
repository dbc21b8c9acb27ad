//! How the log setup routes audit events: never dropped, and, with
//! `audit_failure = "refuse"`, an answer refused when its event was not
//! written.

use super::*;
use keygate_core::{AgentRecord, ErrorCode, Reply};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A sink that keeps what it is given, blocks while `hold` is locked and
/// fails (ENOSPC) while `full`.
#[derive(Clone, Default)]
struct Sink {
    data: Arc<Mutex<Vec<u8>>>,
    hold: Arc<Mutex<()>>,
    full: Arc<AtomicBool>,
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _held = self.hold.lock().unwrap();
        if self.full.load(Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(28));
        }
        self.data.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A dispatcher writing JSON lines through [`Routed`] under `policy`.
fn dispatch(writer: Batched, policy: AuditFailure) -> tracing::Dispatch {
    let layer = fmt_layer(LogFormat::Json, Routed::new(writer, policy), false, false);
    tracing::Dispatch::new(tracing_subscriber::registry().with(layer))
}

/// Waits (at most 20 s, else fails saying `what`) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// With `audit_failure = "serve"`, the log's sink stuck and its buffer
/// full, diagnostic lines are dropped (and said so) but audit events wait
/// for room: every one is written once the sink moves. Kills issue 26's
/// mutant "the audit file switched from lossless to lossy" (the audit
/// delivery in [`Routed::new`] made `Lossy`: events are then dropped).
#[test]
fn audit_events_wait_for_room_where_diagnostic_lines_are_dropped() {
    let sink = Sink::default();
    let (writer, flusher) = Batched::new(sink.clone(), 400, "log", false, |_| {}).unwrap();
    // After the flusher: dropped first if an assertion fails.
    let held = sink.hold.lock().unwrap();
    let dispatch = dispatch(writer.clone(), AuditFailure::Serve);
    let logger = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            for i in 0..8 {
                tracing::info!(i, "diagnostic");
            }
            for i in 0..4 {
                tracing::info!(target: AUDIT_TARGET, i, "audit");
            }
        });
    });
    // Dropped lines would let the logger finish; kept ones make it wait.
    wait_until("the logger waiting or done", || {
        logger.is_finished() || writer.waiting_for_room()
    });
    drop(held);
    wait_until("the logger done", || logger.is_finished());
    logger.join().unwrap();
    drop(flusher);
    let data = String::from_utf8(sink.data.lock().unwrap().clone()).unwrap();
    assert_eq!(data.matches("\"message\":\"audit\"").count(), 4, "{data}");
    assert!(data.contains("log line(s) dropped"), "{data}");
}

/// With `audit_failure = "refuse"`, an answer goes through the log setup's
/// writer: sent when its event was written (and the event is there when
/// the answer is), error 2 "audit trail unavailable" when the sink fails
/// (ENOSPC); `"serve"` sends it either way.
#[test]
fn an_answer_is_refused_when_the_writer_fails_its_event() {
    let record = AgentRecord::parse("001", "web-01", "any", "k3y").unwrap();
    let answer = |policy: AuditFailure, full: bool| {
        let sink = Sink::default();
        sink.full.store(full, Ordering::SeqCst);
        let (writer, _flusher) =
            Batched::new(sink.clone(), batch::CAPACITY, "audit trail", false, |_| {}).unwrap();
        keygate_core::audit::require_reports(policy == AuditFailure::Refuse);
        let reply = tracing::dispatcher::with_default(&dispatch(writer, policy), || {
            keygate_core::audit::Asked::exec().refused(Reply::Found(record.clone()))
        });
        keygate_core::audit::require_reports(false);
        let written = String::from_utf8(sink.data.lock().unwrap().clone()).unwrap();
        (reply, written)
    };
    let (reply, written) = answer(AuditFailure::Refuse, false);
    assert_eq!(reply.code(), ErrorCode::Found);
    assert!(written.contains("\"agent_id\":\"001\""), "{written}");
    let (reply, _) = answer(AuditFailure::Refuse, true);
    assert!(
        matches!(&reply, Reply::Error { code: ErrorCode::Unavailable, message } if message == "audit trail unavailable"),
        "{reply:?}"
    );
    let (reply, _) = answer(AuditFailure::Serve, true);
    assert_eq!(reply.code(), ErrorCode::Found);
}

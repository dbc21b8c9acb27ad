//! How the log setup routes audit events: never dropped, and, with
//! `audit_failure = "refuse"`, an answer refused when its event was not
//! written.

use super::batch::tests::{wait_until, Sink};
use super::*;
use keygate_core::{AgentRecord, ErrorCode, Reply};
use std::sync::atomic::Ordering;

/// A dispatcher writing JSON lines through [`Routed`] under `policy`.
fn dispatch(writer: Batched, policy: AuditFailure) -> tracing::Dispatch {
    let layer = fmt_layer(LogFormat::Json, Routed::new(writer, policy), false, false);
    tracing::Dispatch::new(tracing_subscriber::registry().with(layer))
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
    let data = sink.text();
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
        let written = sink.text();
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

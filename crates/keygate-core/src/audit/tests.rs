//! The audit module's tests: attribution, the writer's reports, the peer's label.

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

/// Our own process is recognised, with its real parent; an unrelated
/// process (pid 1) is not; a pid that does not exist is not.
#[test]
fn a_forwarding_one_shot_is_recognised_by_its_executable() {
    let me = i32::try_from(std::process::id()).unwrap();
    let parent = i32::try_from(std::os::unix::process::parent_id()).unwrap();
    assert_eq!(read_exec_parent(me), Some(parent));
    assert_eq!(read_exec_parent(1), None);
    assert_eq!(read_exec_parent(i32::MAX), None);
    let asked = Asked::socket(Some(0), Some(0), Some(me));
    assert_eq!(asked.frontend, Frontend::Exec);
    assert_eq!(asked.requester.parent_pid, Some(parent));
}

/// Not a test on its own: the process `the_executable_decides_not_the_name`
/// starts under another name; it waits until its stdin is closed.
#[test]
#[ignore = "started by the_executable_decides_not_the_name"]
fn child_waits_for_stdin() {
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
}

/// Starts `program` through a link named `name` (so the process is
/// named so), waits until it runs under that name, and returns it.
fn run_as(
    dir: &std::path::Path,
    name: &str,
    program: &std::path::Path,
    args: &[&str],
) -> std::process::Child {
    let link = dir.join(name);
    std::os::unix::fs::symlink(program, &link).unwrap();
    let child = std::process::Command::new(&link)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let comm = format!("/proc/{}/comm", child.id());
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::fs::read_to_string(&comm)
        .unwrap_or_default()
        .trim_end()
        != name
    {
        assert!(Instant::now() < deadline, "{name} never ran");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// A program run under our process name is not taken for a keygate
/// one-shot, and our own executable run under another name is: the
/// executable decides, not the name (which any program can take).
#[test]
fn the_executable_decides_not_the_name() {
    let me = i32::try_from(std::process::id()).unwrap();
    let dir = tempfile_dir();
    let our_name = std::fs::read_to_string("/proc/self/comm").unwrap();
    let our_name = our_name.trim_end();
    let mut impostor = run_as(&dir, our_name, std::path::Path::new("/bin/sleep"), &["60"]);
    let mut renamed = run_as(
        &dir,
        "not-keygate",
        &std::env::current_exe().unwrap(),
        &[
            "--exact",
            "audit::tests::child_waits_for_stdin",
            "--ignored",
        ],
    );
    let impostor_parent = read_exec_parent(i32::try_from(impostor.id()).unwrap());
    let renamed_parent = read_exec_parent(i32::try_from(renamed.id()).unwrap());
    let _ = impostor.kill();
    let _ = impostor.wait();
    drop(renamed.stdin.take());
    let _ = renamed.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        impostor_parent, None,
        "a process named {our_name} is not keygate"
    );
    assert_eq!(
        renamed_parent,
        Some(me),
        "our executable under another name"
    );
}

/// A fresh directory under the system's temp dir (keygate-core has no
/// tempfile dependency).
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "keygate-audit-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).unwrap();
    dir
}

/// What `/proc` said about the last peer is reused for its next
/// requests, within `PEER_MEMO` only and for that pid only (a planted
/// answer shows which was used: pid 1 is never a keygate one-shot).
#[test]
fn the_last_peer_is_remembered_for_a_moment() {
    let then = Instant::now();
    LAST_PEER.set(Some((1, then, Some(42))));
    assert_eq!(forwarding_exec_parent(1, then + PEER_MEMO / 2), Some(42));
    LAST_PEER.set(Some((2, then, Some(42))));
    assert_eq!(forwarding_exec_parent(1, then), None, "another pid");
    LAST_PEER.set(Some((1, then, Some(42))));
    assert_eq!(forwarding_exec_parent(1, then + PEER_MEMO), None, "too old");
}

/// The path an upgraded executable shows is the installed one.
#[test]
fn a_replaced_executable_is_the_one_installed_at_its_path() {
    let p = |s: &str| std::path::PathBuf::from(s);
    assert_eq!(
        installed(&p("/usr/bin/keygate (deleted)")),
        "/usr/bin/keygate"
    );
    assert_eq!(installed(&p("/usr/bin/keygate")), "/usr/bin/keygate");
}

/// A subscriber standing in for the binary's audit writer: every event is
/// reported written (`None`) or failed with `Some(error)`; `silent` reports
/// nothing (an event that reached no writer).
struct Reporting {
    failure: Option<io::ErrorKind>,
    silent: bool,
}

impl tracing::Subscriber for Reporting {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        if event.metadata().target() == AUDIT_TARGET && !self.silent {
            report_write(self.failure.map_or(Ok(()), |kind| Err(kind.into())));
        }
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The reply sent for a found agent when the writer reports as `writer`
/// does, with reports required or not.
fn sent(writer: Reporting, required: bool) -> Reply {
    let record = crate::AgentRecord::parse("001", "web-01", "any", "k3y").unwrap();
    require_reports(required);
    let reply = tracing::subscriber::with_default(writer, || {
        Asked::exec().record(None, Reply::Found(record), None, None)
    });
    require_reports(false);
    reply
}

/// With reports required (`audit_failure = "refuse"`), a found agent is
/// sent only if its event was reported written: a failed write, or an
/// event no writer reported, turns it into error 2 "audit trail
/// unavailable" with no data. Without (`"serve"`), it is sent whatever the
/// writer says.
#[test]
fn an_answer_whose_event_was_not_written_is_refused() {
    let ok = || Reporting {
        failure: None,
        silent: false,
    };
    let full = || Reporting {
        failure: Some(io::ErrorKind::StorageFull),
        silent: false,
    };
    let silent = || Reporting {
        failure: None,
        silent: true,
    };
    assert_eq!(sent(ok(), true).code(), crate::ErrorCode::Found);
    for (name, writer) in [("failed", full()), ("unreported", silent())] {
        let reply = sent(writer, true);
        assert!(
            matches!(&reply, Reply::Error { code: crate::ErrorCode::Unavailable, message } if message == UNAVAILABLE),
            "{name}: {reply:?}"
        );
        assert!(!String::from_utf8_lossy(&reply.encode()).contains("k3y"));
    }
    assert_eq!(sent(full(), false).code(), crate::ErrorCode::Found);
    assert_eq!(sent(silent(), false).code(), crate::ErrorCode::Found);
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

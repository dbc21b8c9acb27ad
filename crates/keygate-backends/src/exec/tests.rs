//! The exec backend against scripts written by each test into a temp dir:
//! well-behaved ones, and hostile ones for every failure the backend must
//! survive (garbage, two objects, a bad exit, 10 MB of output, a hang).

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use keygate_core::{ErrorCode, Request, TimeoutLayer};

use super::*;

const KEY: &str = "ac57f6a5e1d9b0c2e5a1d6f7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50c71";

struct Script {
    dir: tempfile::TempDir,
    config: ExecConfig,
}

/// A script with `body` (after a `#!/bin/sh` line), executable.
fn script(body: &str) -> Script {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent_key_pull.sh");
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = ExecConfig {
        command: vec![path.display().to_string()],
        max_concurrent: 4,
        env: BTreeMap::new(),
    };
    Script { dir, config }
}

impl Script {
    /// The backend inside a timeout layer, as the config builds it.
    async fn backend(&self, timeout: Duration) -> TimeoutLayer<Arc<dyn KeyBackend>> {
        let inner = self.config.build("legacy").await.unwrap();
        TimeoutLayer::new(inner, timeout)
    }
}

fn q(text: &str) -> Request {
    Request::parse(text.as_bytes()).unwrap()
}

/// A script answering agent `$2` with a good record.
fn good_reply() -> String {
    format!(
        r#"printf '{{"error":0,"data":{{"id":"%s","name":"web-01","ip":"10.0.0.1","key":"{KEY}"}}}}\n' "$2""#
    )
}

async fn error_of(s: &Script, request: &str) -> BackendError {
    let b = s.backend(Duration::from_secs(20)).await;
    b.lookup(&q(request)).await.unwrap_err()
}

/// The request is appended to the configured argv as two words, and a
/// record on stdout is the answer; stderr noise is not parsed.
#[tokio::test]
async fn a_record_on_stdout_is_found_and_stderr_is_ignored() {
    let mut s = script(&format!(
        "[ \"$1\" = --db ] && [ \"$2\" = wazuh ] && [ \"$3\" = id ] || exit 9\n\
         echo 'DeprecationWarning: {{\"error\":4}}' >&2\nshift 2\n{}",
        good_reply()
    ));
    s.config
        .command
        .extend(["--db".to_owned(), "wazuh".to_owned()]);
    let b = s.backend(Duration::from_secs(20)).await;
    let r = b.lookup(&q("id:001")).await.unwrap().unwrap();
    assert_eq!(r.id.as_str(), "001");
    assert_eq!(r.key.expose(), KEY);
}

/// `error 4` is not found; `2` an outage; `1`/`3` a misconfiguration.
#[tokio::test]
async fn the_scripts_error_decides_the_answer() {
    let s = script(r#"echo '{"error":4,"message":"No agent key found"}'"#);
    let b = s.backend(Duration::from_secs(20)).await;
    assert!(b.lookup(&q("ip:10.0.0.1")).await.unwrap().is_none());
    let s = script(r#"echo '{"error":2,"message":"Access denied for user"}'"#);
    let e = error_of(&s, "id:001").await;
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(!e.to_string().contains("Access denied"), "{e}");
    let s = script(r#"echo '{"error":3,"message":"Bad request type"}'"#);
    assert_eq!(error_of(&s, "id:001").await.code(), ErrorCode::Internal);
}

/// A record that breaks client.keys rules is refused like any backend's.
#[tokio::test]
async fn a_bad_record_is_refused() {
    let s =
        script(r#"echo '{"error":0,"data":{"id":"001","name":"a b","ip":"10.0.0.1","key":"k"}}'"#);
    let e = error_of(&s, "id:001").await;
    assert_eq!(e.code(), ErrorCode::InvalidRecord, "{e}");
}

/// Garbage, two objects and a non-zero exit (even with a good reply) are
/// clear errors, and the backend keeps answering afterwards.
#[tokio::test]
async fn hostile_output_is_a_clear_error_and_the_backend_stays_healthy() {
    let s = script(&format!(
        "case \"$2\" in\n\
         002) echo 'Traceback (most recent call last):' ;;\n\
         003) echo '{{\"error\":4}}{{\"error\":4}}' ;;\n\
         004) {}; exit 3 ;;\n\
         *) {} ;;\n\
         esac",
        good_reply(),
        good_reply()
    ));
    let b = s.backend(Duration::from_secs(20)).await;
    for (request, code, text) in [
        (
            "id:002",
            ErrorCode::Internal,
            "not a Wazuh reply: expected value",
        ),
        ("id:003", ErrorCode::Internal, "trailing characters"),
        ("id:004", ErrorCode::Unavailable, "exited with status 3"),
    ] {
        let e = b.lookup(&q(request)).await.unwrap_err();
        assert_eq!(e.code(), code, "{request}: {e}");
        assert!(e.to_string().contains(text), "{request}: {e}");
        assert!(!e.to_string().contains(KEY), "{e}");
        assert!(b.lookup(&q("id:001")).await.unwrap().is_some());
    }
}

/// 10 MB on stdout: the read stops at the cap, the script is killed, the
/// error says why.
#[tokio::test]
async fn ten_megabytes_of_output_is_cut_off() {
    let s = script("head -c 10485760 /dev/zero | tr '\\0' x\nsleep 300");
    let e = error_of(&s, "id:001").await;
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.to_string().contains("more than 64 KiB"), "{e}");
}

/// The child sees PATH, LANG and the configured variables, nothing else
/// of keygate's environment (the shell adds PWD itself).
#[tokio::test]
async fn the_child_gets_only_path_lang_and_env() {
    let mut s = script(r#"/usr/bin/env > "$OUT"; echo '{"error":4}'"#);
    let out = s.dir.path().join("env.txt");
    s.config.env.insert("OUT".into(), out.display().to_string());
    s.config.env.insert("DB_HOST".into(), "127.0.0.1".into());
    let b = s.backend(Duration::from_secs(20)).await;
    assert!(b.lookup(&q("id:001")).await.unwrap().is_none());
    let text = std::fs::read_to_string(&out).unwrap();
    let names: Vec<&str> = text.lines().filter_map(|l| l.split('=').next()).collect();
    assert!(
        names.contains(&"PATH") && names.contains(&"DB_HOST"),
        "{names:?}"
    );
    for name in &names {
        assert!(
            ["PATH", "LANG", "OUT", "DB_HOST", "PWD"].contains(name),
            "{name} leaked into the script's environment: {names:?}"
        );
    }
}

/// With max_concurrent = 1, scripts never overlap: each takes a lock
/// directory that a concurrent run would find taken (and fail).
#[tokio::test]
async fn max_concurrent_bounds_the_scripts_running_at_once() {
    let mut s = script(&format!(
        "mkdir \"$LOCK\" || exit 7\nsleep 0.2\nrmdir \"$LOCK\"\n{}",
        good_reply()
    ));
    let lock = s.dir.path().join("lock");
    s.config
        .env
        .insert("LOCK".into(), lock.display().to_string());
    s.config.max_concurrent = 1;
    let b = s.backend(Duration::from_secs(30)).await;
    let (q1, q2, q3) = (q("id:001"), q("id:002"), q("id:003"));
    let (a, c, d) = tokio::join!(b.lookup(&q1), b.lookup(&q2), b.lookup(&q3));
    for r in [a, c, d] {
        assert!(r.unwrap().is_some());
    }
}

fn state(pid: &str) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next())
}

/// On timeout the whole process group is killed (the script and the
/// `sleep` it started in the background) and the script is reaped: its pid
/// disappears instead of staying a zombie.
#[tokio::test]
async fn a_timeout_kills_the_group_and_leaves_no_zombie() {
    let s = script("sleep 300 &\necho $! > \"$D/grandchild\"\necho $$ > \"$D/child\"\nsleep 300");
    let mut s = s;
    let d = s.dir.path().to_owned();
    s.config.env.insert("D".into(), d.display().to_string());
    let b = s.backend(Duration::from_millis(500)).await;
    let e = b.lookup(&q("id:001")).await.unwrap_err();
    assert!(matches!(e, BackendError::Timeout(_)), "{e}");
    let child = std::fs::read_to_string(d.join("child")).unwrap();
    let grandchild = std::fs::read_to_string(d.join("grandchild")).unwrap();
    let (child, grandchild) = (child.trim(), grandchild.trim());
    // Wait (bounded) for the kill and the reap to happen.
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let child_gone = state(child).is_none();
        let grandchild_dead = matches!(state(grandchild), None | Some('Z'));
        if child_gone && grandchild_dead {
            break;
        }
        assert!(
            Instant::now() < until,
            "child {child} state {:?}, grandchild {grandchild} state {:?}",
            state(child),
            state(grandchild)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `keygate check`: the command must exist and be executable; a bare name
/// is looked up in PATH.
#[tokio::test]
async fn health_checks_the_command_is_executable() {
    let s = script("exit 0");
    let b = s.config.build("legacy").await.unwrap();
    b.health().await.unwrap();
    std::fs::set_permissions(&s.config.command[0], std::fs::Permissions::from_mode(0o644)).unwrap();
    let e = b.health().await.unwrap_err();
    assert!(e.to_string().contains("is not executable"), "{e}");
    for (command, ok) in [
        ("sh", true),
        ("/nonexistent/x.py", false),
        ("no-such-kg-script", false),
    ] {
        let c = ExecConfig {
            command: vec![command.into()],
            max_concurrent: 1,
            env: BTreeMap::new(),
        };
        let b = c.build("legacy").await.unwrap();
        assert_eq!(b.health().await.is_ok(), ok, "{command}");
    }
    // A script that is not there fails the lookup clearly too.
    let c = ExecConfig {
        command: vec!["/nonexistent/x.py".into()],
        max_concurrent: 1,
        env: BTreeMap::new(),
    };
    let e = c
        .build("legacy")
        .await
        .unwrap()
        .lookup(&q("id:001"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("cannot run /nonexistent/x.py"),
        "{e}"
    );
}

/// Every problem of the section, with its key path; env values are not
/// shown by Debug.
#[test]
fn validation_names_each_bad_key() {
    let c: ExecConfig = serde_json::from_str(
        r#"{"command":[],"max_concurrent":0,"env":{"1BAD":"x","DB_PASSWORD":"hunter2"}}"#,
    )
    .unwrap();
    let mut list = Vec::new();
    c.validate(&mut Problems::new("backend[0]", &mut list));
    let p: Vec<String> = list.iter().map(ToString::to_string).collect();
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].starts_with("backend[0].command: "), "{p:?}");
    assert!(p[1].starts_with("backend[0].max_concurrent: "), "{p:?}");
    assert!(p[2].starts_with("backend[0].env.1BAD: "), "{p:?}");
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(serde_json::from_str::<ExecConfig>(r#"{"command":["x"],"shell":true}"#).is_err());
    let mut c: ExecConfig = serde_json::from_str(r#"{"command":["bin/pull.py","a/b"]}"#).unwrap();
    c.resolve_paths(Path::new("/etc/keygate"));
    assert_eq!(c.command, ["/etc/keygate/bin/pull.py", "a/b"]);
    assert_eq!(c.max_concurrent, 4);
}

/// Waits (bounded) until `pid` is gone or a zombie; fails naming it.
async fn assert_dies(pid: &str, what: &str) {
    let until = Instant::now() + Duration::from_secs(20);
    while !matches!(state(pid), None | Some('Z')) {
        assert!(
            Instant::now() < until,
            "{what} {pid} outlived the lookup: state {:?}",
            state(pid)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs a script that starts `background` (a shell command ending in
/// `&`), notes its pid and answers agent 001; asks it with `timeout`;
/// returns the lookup's result and the background process's pid.
async fn answer_with_background(
    background: &str,
    timeout: Duration,
) -> (Result<Option<AgentRecord>, BackendError>, String) {
    let mut s = script(&format!(
        "{background}\necho $! > \"$D/background\"\n{}",
        good_reply()
    ));
    let d = s.dir.path().to_owned();
    s.config.env.insert("D".into(), d.display().to_string());
    let b = s.backend(timeout).await;
    let r = b.lookup(&q("id:001")).await;
    let pid = std::fs::read_to_string(d.join("background")).unwrap();
    (r, pid.trim().to_owned())
}

/// A background child that inherited stdout and keeps it open does not
/// hold the answer back: the reply is the first line, stdout is closed
/// after it, and the child dies with the script's group. Before, the read
/// waited for stdout's end and the valid answer became a timeout.
#[tokio::test]
async fn a_background_child_holding_stdout_neither_delays_the_answer_nor_outlives_it() {
    let (r, pid) = answer_with_background("sleep 300 &", Duration::from_secs(10)).await;
    assert_eq!(r.unwrap().unwrap().id.as_str(), "001");
    assert_dies(&pid, "the background child").await;
}

/// A background child with its own stdio (nothing ties it to the pipes)
/// is killed with the group once the script has answered and exited.
/// Before, only a timeout killed the group: this one lived on.
#[tokio::test]
async fn a_detached_background_child_is_killed_when_the_answer_is_read() {
    let (r, pid) = answer_with_background(
        "sleep 300 </dev/null >/dev/null 2>&1 &",
        Duration::from_secs(20),
    )
    .await;
    assert!(r.unwrap().is_some());
    assert_dies(&pid, "the background child").await;
}

/// The reply is stdout's first line that is not blank: blank lines before
/// it are skipped, what the script writes after it is read and dropped (the
/// script is not killed by SIGPIPE for writing on: the `sleep` puts that
/// write after the reply was read), and the exit status still counts.
#[tokio::test]
async fn the_reply_is_the_first_line_that_is_not_blank() {
    let s = script(&format!(
        "case \"$2\" in\n\
         002) {}; exit 3 ;;\n\
         *) echo; echo '  '; {}; sleep 1; echo 'Traceback (most recent call last):' ;;\n\
         esac",
        good_reply(),
        good_reply()
    ));
    let b = s.backend(Duration::from_secs(20)).await;
    let r = b.lookup(&q("id:001")).await.unwrap().unwrap();
    assert_eq!(r.id.as_str(), "001");
    let e = b.lookup(&q("id:002")).await.unwrap_err();
    assert!(e.to_string().contains("exited with status 3"), "{e}");
}

/// A failing script's stderr (a traceback may quote a row, key included)
/// is logged at debug level only, cut to 1 KiB, never as a warning.
/// Before, a failed lookup logged it at warn.
#[tokio::test]
async fn stderr_is_logged_at_debug_only_and_truncated() {
    let s = script(&format!(
        "echo 'Traceback: row {KEY}' >&2\nhead -c 5000 /dev/zero | tr '\\0' x >&2\nexit 1"
    ));
    let b = s.backend(Duration::from_secs(20)).await;
    let ((), logs) = keygate_testkit::logs_of(async {
        let e = b.lookup(&q("id:001")).await.unwrap_err();
        assert!(e.to_string().contains("exited with status 1"), "{e}");
    })
    .await;
    let line = logs
        .lines()
        .find(|l| l.contains("Key script wrote to stderr."))
        .unwrap_or_else(|| panic!("no stderr line in:\n{logs}"));
    assert!(line.contains("DEBUG"), "{line}");
    assert!(line.contains("[truncated]"), "{line}");
    assert!(line.len() < 2 * run::MAX_STDERR_KEPT, "{line}");
    assert!(
        !logs
            .lines()
            .any(|l| l.contains("WARN") || l.contains("ERROR")),
        "{logs}"
    );
}

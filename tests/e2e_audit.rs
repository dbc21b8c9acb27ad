//! The audit trail under strain, with the real daemon: a full disk (a
//! tmpfs of 64 KiB filled for real) with `audit_failure = "refuse"` and
//! `"serve"`; files the exec one-shot creates as root and the daemon then
//! opens as its own user; the log's priorities when stderr is the journal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{bin, exec, wazuh_request};
use keygate_testkit::free_port;
use keygate_testkit::tmpfs::Tmpfs;

/// A daemon started on a whole config; killed when dropped.
struct Started {
    child: Child,
    socket: PathBuf,
}

impl Started {
    /// Starts `keygate serve` on `config` (whose socket is `socket`), its
    /// stderr into `stderr`, as `cmd` (environment, user) says.
    fn start(
        config: &Path,
        socket: &Path,
        stderr: &Path,
        prepare: impl FnOnce(&mut Command),
    ) -> Self {
        let mut cmd = Command::new(bin());
        cmd.arg("--config")
            .arg(config)
            .arg("serve")
            .env_remove("KEYGATE_CONFIG")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(stderr).unwrap());
        prepare(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(socket).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("keygate exited with {status}: {}", read(stderr));
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            socket: socket.to_owned(),
        }
    }

    fn request(&self, req: &str) -> serde_json::Value {
        serde_json::from_slice(&wazuh_request(&self.socket, req.as_bytes())).unwrap()
    }

    /// SIGTERM, and waits for the exit (lines still waiting are written).
    fn stop(mut self) {
        Command::new("kill")
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "keygate did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A client.keys of agents 001..=`count`, named `agent-NNN`.
fn many_agents(path: &Path, count: u32) {
    let text: String = (1..=count)
        .map(|i| format!("{i:03} agent-{i:03} any {:064x}\n", u64::from(i) * 7919))
        .collect();
    std::fs::write(path, text).unwrap();
}

/// The value of `series` (unlabelled) in a scrape of `/metrics`.
fn metric(port: u16, series: &str) -> Option<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    raw.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().unwrap())
    })
}

const FAILURES: &str = "keygate_audit_write_failures_total";

/// Every line of the audit file parsed: each must be exactly one JSON
/// event (a cut line, or two events on one line, fails here).
fn audit_lines(path: &Path) -> Vec<serde_json::Value> {
    read(path)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("not one JSON event ({e}): {l:?}"));
            assert_eq!(v["message"], "Key request answered.", "{l}");
            v
        })
        .collect()
}

/// A daemon whose `audit_file` is on a 64 KiB tmpfs (its log elsewhere),
/// metrics on a free port, serving agents 001..=900 from a file.
struct FullDisk {
    // Dropped first: the daemon stops before its file system goes.
    daemon: Option<Started>,
    tmpfs: Tmpfs,
    dir: tempfile::TempDir,
    port: u16,
}

impl FullDisk {
    fn start(policy: &str) -> Self {
        let tmpfs = Tmpfs::mount(64 << 10);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        many_agents(&dir.path().join("client.keys"), 900);
        let config = dir.path().join("keygate.toml");
        let socket = dir.path().join("keygate.sock");
        std::fs::write(
            &config,
            format!(
                "[server]\nsocket = \"{}\"\n[log]\nlevel = \"info\"\nfile = \"{}\"\naudit_file = \"{}\"\naudit_failure = \"{policy}\"\n\
                 [metrics]\nlisten = \"127.0.0.1:{port}\"\n[cache]\nenabled = false\n\
                 [[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n",
                socket.display(),
                dir.path().join("keygate.log").display(),
                tmpfs.join("audit.log").display(),
            ),
        )
        .unwrap();
        let daemon = Started::start(&config, &socket, &dir.path().join("stderr.log"), |_| {});
        Self {
            daemon: Some(daemon),
            tmpfs,
            dir,
            port,
        }
    }

    fn daemon(&self) -> &Started {
        self.daemon.as_ref().unwrap()
    }

    /// Asks for agents `ids`; returns each reply with its id.
    fn ask(&self, ids: std::ops::RangeInclusive<u32>) -> Vec<(String, serde_json::Value)> {
        ids.map(|i| {
            let q = format!("id:{i:03}");
            let reply = self.daemon().request(&q);
            (q, reply)
        })
        .collect()
    }

    fn audit_file(&self) -> PathBuf {
        self.tmpfs.join("audit.log")
    }

    fn log(&self) -> String {
        read(&self.dir.path().join("keygate.log"))
    }
}

/// `audit_failure = "refuse"` (the default) on a full disk: an answer
/// whose audit event cannot be written is error 2 "audit trail
/// unavailable" with no key; every answer that carried a key has its line
/// on disk, and no refused answer has one; each refusal is counted; the
/// log says so, rate-limited; once space comes back, keys are served and
/// recorded again by themselves; every line on disk is one whole JSON
/// event (the line that did not fit was taken back, not cut).
#[test]
fn a_full_disk_refuses_the_keys_it_cannot_record() {
    let mut disk = FullDisk::start("refuse");
    let mut replies = disk.ask(1..=50);
    assert!(replies.iter().all(|(_, r)| r["error"] == 0), "{replies:?}");
    disk.tmpfs.fill("filler");
    let full = Instant::now();
    let when_full = disk.ask(51..=600);
    let full_for = full.elapsed();
    std::fs::remove_file(disk.tmpfs.join("filler")).unwrap();
    let after = disk.ask(601..=700);
    assert!(
        after.iter().all(|(_, r)| r["error"] == 0),
        "not back: {after:?}"
    );

    let refused: Vec<String> = when_full
        .iter()
        .filter(|(_, r)| r["error"] != 0)
        .map(|(q, _)| q.clone())
        .collect();
    assert!(refused.len() > 400, "{} refused of 550", refused.len());
    for (q, r) in &when_full {
        if r["error"] != 0 {
            assert_eq!(r["error"], 2, "{q}: {r}");
            assert_eq!(r["message"], "audit trail unavailable", "{q}: {r}");
            assert!(r.get("data").is_none(), "{q}: {r}");
        }
    }
    replies.extend(when_full);
    replies.extend(after);
    let served: HashSet<String> = replies
        .iter()
        .filter(|(_, r)| r["error"] == 0)
        .map(|(q, _)| q.clone())
        .collect();
    let lines = audit_lines(&disk.audit_file());
    let on_disk: HashSet<String> = lines
        .iter()
        .map(|l| {
            assert_eq!(l["code"], 0, "{l}");
            l["query"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(lines.len(), on_disk.len(), "one line per answer");
    assert_eq!(
        on_disk, served,
        "the keys served are exactly those on record"
    );
    assert_eq!(
        metric(disk.port, FAILURES),
        Some(refused.len() as f64),
        "every refusal counted"
    );
    disk.daemon.take().unwrap().stop();
    let log = disk.log();
    let logged = log.matches("Audit trail unavailable").count();
    let most = 1 + full_for.as_secs() / 10;
    assert!(
        (1..=most as usize).contains(&logged),
        "{logged} log lines for {} refusals in {full_for:?}:\n{log}",
        refused.len()
    );
    assert!(log.contains("Audit trail written again"), "{log}");
}

/// `audit_failure = "serve"` on a full disk: keys keep being served, and
/// the events that could not be written are counted: the lines on disk
/// and the failures add up to the answers; every line on disk is whole.
#[test]
fn a_full_disk_with_serve_keeps_serving_and_counts_the_lost_events() {
    let disk = FullDisk::start("serve");
    let mut replies = disk.ask(1..=50);
    // The lines are written by the writer's thread: let them reach the
    // disk before it is filled.
    let deadline = Instant::now() + Duration::from_secs(20);
    while read(&disk.audit_file()).lines().count() < 50 {
        assert!(
            Instant::now() < deadline,
            "the first 50 lines never written"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    disk.tmpfs.fill("filler");
    replies.extend(disk.ask(51..=600));
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(disk.port, FAILURES).unwrap_or(0.0) == 0.0 {
        assert!(Instant::now() < deadline, "no failure counted");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::remove_file(disk.tmpfs.join("filler")).unwrap();
    replies.extend(disk.ask(601..=700));
    assert!(
        replies
            .iter()
            .all(|(_, r)| r["error"] == 0 && r["data"]["key"].is_string()),
        "every key served"
    );
    // Every line is on disk or counted lost once the thread has written
    // (or failed to write) each batch.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (lines, failures) = loop {
        let lines = audit_lines(&disk.audit_file());
        let failures = metric(disk.port, FAILURES).unwrap();
        if lines.len() as f64 + failures == 700.0 {
            break (lines, failures);
        }
        assert!(
            Instant::now() < deadline,
            "{} on disk + {failures} lost != 700 answered",
            lines.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(failures > 100.0, "{failures}");
    assert!(
        lines.iter().any(|l| l["query"] == "id:700"),
        "written again"
    );
}

/// The exec one-shot run as root with no daemon up creates the daemon's
/// log and audit files with the owner and group of their directory (the
/// unit's LogsDirectory), so the daemon, started afterwards as that user,
/// opens them instead of exiting 78; the one-shot's own answer is in the
/// audit file, and so is the daemon's.
#[test]
fn files_the_one_shot_creates_are_the_daemons_to_open() {
    const NOBODY: u32 = 65534;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::chown(&logs, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o750)).unwrap();
    many_agents(&dir.path().join("client.keys"), 3);
    let config = dir.path().join("keygate.toml");
    let socket = logs.join("keygate.sock");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket = \"{}\"\n[log]\nfile = \"{}\"\naudit_file = \"{}\"\n\
             [[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n",
            socket.display(),
            logs.join("keygate.log").display(),
            logs.join("audit.log").display(),
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

    let out = exec(&config, &["id", "001"]);
    assert_eq!(out.json()["error"], 0, "{}", out.output);
    for name in ["keygate.log", "audit.log"] {
        let meta = std::fs::metadata(logs.join(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (NOBODY, NOBODY), "{name}");
    }
    let daemon = Started::start(&config, &socket, &dir.path().join("stderr.log"), |cmd| {
        cmd.uid(NOBODY).gid(NOBODY);
    });
    assert_eq!(daemon.request("id:002")["error"], 0);
    daemon.stop();
    let events = audit_lines(&logs.join("audit.log"));
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| {
            (
                e["frontend"].as_str().unwrap(),
                e["query"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [("exec", "id:001"), ("socket", "id:002")]);
}

/// The exec one-shot answering by itself is held to the same rule: with
/// its audit file unwritable (/dev/full: every write fails with ENOSPC),
/// its answer is error 2 "audit trail unavailable" with no key (still one
/// JSON line, exit 0); with `audit_failure = "serve"` the key is served.
#[test]
fn the_one_shot_refuses_a_key_it_cannot_record() {
    let dir = tempfile::tempdir().unwrap();
    many_agents(&dir.path().join("client.keys"), 3);
    let config = dir.path().join("keygate.toml");
    let answer = |policy: &str| {
        std::fs::write(
            &config,
            format!(
                "[server]\nsocket = \"{}\"\n[log]\naudit_file = \"/dev/full\"\naudit_failure = \"{policy}\"\n\
                 [[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n",
                dir.path().join("none.sock").display()
            ),
        )
        .unwrap();
        let out = exec(&config, &["id", "001"]);
        assert!(out.status.success());
        out.json()
    };
    let refused = answer("refuse");
    assert_eq!(refused["error"], 2, "{refused}");
    assert_eq!(refused["message"], "audit trail unavailable");
    assert!(refused.get("data").is_none(), "{refused}");
    let served = answer("serve");
    assert_eq!(served["error"], 0, "{served}");
    assert!(served["data"]["key"].is_string());
}

/// A daemon logging to stderr at debug level, in the environment `env`
/// sets; returns its stderr after an answered request (info and debug
/// lines), a reload that changes `[server]` (a warning) and one refused
/// (an error).
fn stderr_of(env: impl FnOnce(&Path, &mut Command)) -> String {
    let dir = tempfile::tempdir().unwrap();
    many_agents(&dir.path().join("client.keys"), 3);
    let config = dir.path().join("keygate.toml");
    let socket = dir.path().join("keygate.sock");
    let text = |server: &str| {
        format!(
            "[server]\nsocket = \"{}\"\n{server}\n[log]\nlevel = \"debug\"\n\
             [[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n",
            socket.display()
        )
    };
    std::fs::write(&config, text("")).unwrap();
    let stderr = dir.path().join("stderr.log");
    let daemon = Started::start(&config, &socket, &stderr, |cmd| env(&stderr, cmd));
    assert_eq!(daemon.request("id:001")["error"], 0);
    let reload = |what: &str| {
        Command::new("kill")
            .args(["-HUP", &daemon.child.id().to_string()])
            .status()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !read(&stderr).contains(what) {
            assert!(Instant::now() < deadline, "no {what:?}: {}", read(&stderr));
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::fs::write(&config, text("max_connections = 100")).unwrap();
    reload("take effect only after a restart");
    std::fs::write(&config, "[server\n").unwrap();
    reload("Reload refused");
    daemon.stop();
    read(&stderr)
}

/// When stderr is the journal (`JOURNAL_STREAM` names its device and
/// inode), every line starts with its syslog priority (`<3>` error, `<4>`
/// warning, `<6>` info, `<7>` debug) and carries no timestamp; anywhere
/// else lines start with their timestamp, as before.
#[test]
fn on_the_journal_each_line_has_its_priority_and_no_timestamp() {
    let timestamp = |l: &str| {
        l.len() > 20 && l.as_bytes()[4] == b'-' && l.as_bytes()[10] == b'T' && l.contains('Z')
    };
    let journal = stderr_of(|stderr, cmd| {
        let meta = std::fs::metadata(stderr).unwrap();
        cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
    });
    let lines: Vec<&str> = journal.lines().collect();
    for line in &lines {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or_else(|| panic!("no priority: {line:?}\n{journal}"));
        assert!(!timestamp(rest), "a timestamp of its own: {line:?}");
    }
    for (prefix, what) in [
        ("<3>", "Reload refused"),
        ("<4>", "take effect only after a restart"),
        ("<6>", "Key request answered."),
        ("<7>", "Answered."),
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(prefix) && l.contains(what)),
            "no {prefix} {what}:\n{journal}"
        );
    }
    // A daemon whose stderr is not the stream JOURNAL_STREAM names (a
    // child with its stderr redirected) writes as before: no priority, a
    // timestamp first.
    let elsewhere = stderr_of(|_, cmd| {
        cmd.env("JOURNAL_STREAM", "1:1");
    });
    assert!(
        elsewhere.lines().all(|l| !l.starts_with('<')),
        "{elsewhere}"
    );
    for what in [
        "Serving.",
        "Key request answered.",
        "Answered.",
        "take effect only after a restart",
        "Reload refused",
    ] {
        let line = elsewhere.lines().find(|l| l.contains(what));
        assert!(line.is_some_and(timestamp), "{what}: {line:?}\n{elsewhere}");
    }
}

//! Exec mode, run as Wazuh runs it: no shell, stdin /dev/null, stdout and
//! stderr on one pipe, output thrown away unless the exit code is 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use keygate_testkit::daemon::{self, exec, exec_cmd, Daemon, DemoConfig};
use keygate_testkit::repo_root as repo;

/// The quick start's config answers `id 001` from the demo data (a copy,
/// whose socket no quick-start daemon listens on).
#[test]
fn default_config_answers_id_001() {
    let demo = DemoConfig::new();
    let default_config = || demo.path();
    let out = exec(default_config(), &["id", "001"]);
    assert!(out.status.success());
    let v = out.json();
    assert_eq!(v["error"], 0);
    assert_eq!(v["data"]["name"], "web-01");
    assert_eq!(
        exec(default_config(), &["ip", "172.16.0.2"]).json()["data"]["id"],
        "102"
    );
}

/// Every outcome is one JSON line on the shared pipe, and exit code 0.
#[test]
fn every_outcome_is_one_json_line_and_exit_0() {
    let demo = DemoConfig::new();
    let default_config = || demo.path().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let bad_cfg = dir.path().join("bad.toml");
    std::fs::write(&bad_cfg, "[[backend]]\nname = \"x\"\ntype = \"nope\"\n").unwrap();
    let cases: Vec<(std::path::PathBuf, Vec<&str>, u64)> = vec![
        (default_config(), vec!["id", "001"], 0),
        (default_config(), vec!["id", "999"], 4),
        (default_config(), vec!["id"], 1),
        (default_config(), vec!["ip"], 1),
        (default_config(), vec!["id", "abc"], 3),
        (default_config(), vec!["id", "001' OR '1'='1"], 3),
        (default_config(), vec!["ip", "10.0.0.1", "extra"], 3),
        (default_config(), vec!["id", "--bogus-flag"], 1),
        (dir.path().join("missing.toml"), vec!["id", "001"], 6),
        (bad_cfg, vec!["id", "001"], 6),
    ];
    for (cfg, args, code) in cases {
        let out = exec(&cfg, &args);
        assert!(out.status.success(), "{args:?}: {}", out.status);
        let v = out.json();
        assert_eq!(v["error"], code, "{args:?}: {v}");
        if code != 0 {
            assert!(v["message"].is_string(), "{args:?}: {v}");
        }
    }
}

/// A missing config file's message names the problem, never a secret.
#[test]
fn config_error_message_is_useful() {
    let out = exec(
        std::path::Path::new("/nonexistent/keygate.toml"),
        &["id", "001"],
    );
    let msg = out.json()["message"].as_str().unwrap().to_owned();
    assert!(
        msg.contains("configuration error") && msg.contains("/nonexistent/keygate.toml"),
        "{msg}"
    );
}

/// With a daemon on the configured socket, exec mode asks it (sharing its
/// memory): the data file is deleted after the daemon loaded it, so only the
/// daemon can still answer.
#[test]
fn exec_asks_the_running_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::copy(repo().join("config/demo/client.keys"), &keys).unwrap();
    let d = Daemon::start(&format!(
        "[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"{}\"\n",
        keys.display()
    ));
    std::fs::remove_file(&keys).unwrap();
    let out = exec(d.config(), &["id", "001"]);
    assert_eq!(out.json()["error"], 0, "{}", out.output);
}

/// Without a daemon (stale socket file), exec mode looks up directly.
#[test]
fn exec_without_daemon_looks_up_directly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nsocket = \"{}\"\n[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"{}\"\n",
            sock.display(),
            repo().join("config/demo/client.keys").display()
        ),
    )
    .unwrap();
    let out = exec(&cfg, &["ip", "192.168.1.105"]);
    assert_eq!(out.json()["data"]["name"], "mail-01");
}

/// Exec mode writes logs only to [log] file, never to the shared pipe, even
/// at debug level and on a backend outage.
#[test]
fn exec_logs_only_to_the_log_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("exec.log");
    let cfg = dir.path().join("k.toml");
    let body = format!(
        "[server]\nsocket = \"{}\"\n[[backend]]\nname = \"gone\"\ntype = \"file\"\npath = \"missing.keys\"\n[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"{}\"\n",
        dir.path().join("none.sock").display(),
        repo().join("config/demo/client.keys").display()
    );
    std::fs::write(&cfg, format!("[log]\nlevel = \"debug\"\n{body}")).unwrap();
    let out = exec(&cfg, &["id", "001"]);
    assert_eq!(out.json()["error"], 0);
    std::fs::write(
        &cfg,
        format!(
            "[log]\nlevel = \"debug\"\nfile = \"{}\"\n{body}",
            log.display()
        ),
    )
    .unwrap();
    let out = exec(&cfg, &["id", "999"]);
    let v = out.json();
    assert_eq!(v["error"], 2, "one backend is down and none found it: {v}");
    assert!(
        v["message"].as_str().unwrap().contains("backend 'gone'"),
        "{v}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("missing.keys"), "{logged}");
}

/// The bare command (no subcommand) runs the daemon, as Wazuh 3.x's
/// launcher starts exec_path.
#[test]
fn bare_invocation_runs_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("k.sock");
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nsocket = \"{}\"\n[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"{}\"\n",
            sock.display(),
            repo().join("config/demo/client.keys").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(daemon::bin())
        .arg("--config")
        .arg(&cfg)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    // Ready when it accepts, not when the file appears (bind comes first).
    while std::os::unix::net::UnixStream::connect(&sock).is_err()
        && start.elapsed() < std::time::Duration::from_secs(10)
    {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&daemon::wazuh_request(&sock, b"id:001")).unwrap();
    assert_eq!(v["error"], 0);
    // And exec mode through the same config goes through this daemon.
    let mut cmd = Command::new(daemon::bin());
    cmd.arg("--config").arg(&cfg).args(["id", "005"]);
    assert_eq!(exec_cmd(cmd).json()["data"]["name"], "mail-01");
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    child.wait().unwrap();
}

/// A daemon that accepts but never answers cannot eat Wazuh's timeout: it
/// gets half of request_timeout, and exec mode then looks up directly within
/// the same deadline.
#[test]
fn exec_falls_back_when_the_daemon_hangs() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("wedged.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let _held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming() {
            conns.push(c); // accept and keep open, never reply
        }
    });
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nsocket = \"{}\"\nrequest_timeout = \"1s\"\n[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"{}\"\n",
            sock.display(),
            repo().join("config/demo/client.keys").display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = exec(&cfg, &["id", "001"]);
    assert_eq!(out.json()["data"]["name"], "web-01");
    let took = started.elapsed();
    assert!(took < std::time::Duration::from_secs(2), "{took:?}");
}

/// A config whose socket is `sock` and whose only backend is the demo
/// client.keys, with `extra` appended to `[server]`.
fn demo_config(
    dir: &std::path::Path,
    sock: &std::path::Path,
    server_extra: &str,
) -> std::path::PathBuf {
    let cfg = dir.join("k.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nsocket = \"{}\"\n{server_extra}\n[log]\nlevel = \"debug\"\nfile = \"{}\"\n\
             [[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"{}\"\n",
            sock.display(),
            dir.join("exec.log").display(),
            repo().join("config/demo/client.keys").display()
        ),
    )
    .unwrap();
    cfg
}

/// A listener on the socket path that answers every connection with
/// `reply` after reading the request, and records what it was asked.
fn fake_daemon(sock: &std::path::Path, reply: &'static [u8]) -> std::sync::mpsc::Receiver<Vec<u8>> {
    use std::io::{Read, Write};
    let listener = std::os::unix::net::UnixListener::bind(sock).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 256];
            let n = conn.read(&mut buf).unwrap_or(0);
            let _ = tx.send(buf[..n].to_vec());
            let _ = conn.write_all(reply);
        }
    });
    rx
}

/// Issue 10, defect 1: a listener on the socket answering `id:001` with a
/// record for agent 999 plus a second line is not forwarded: exec mode
/// prints exactly one line, the direct lookup's answer for 001, and logs why.
#[test]
fn a_forged_daemon_reply_is_discarded_and_the_lookup_done_directly() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("forged.sock");
    let asked = fake_daemon(
        &sock,
        b"{\"error\":0,\"data\":{\"id\":\"999\",\"name\":\"evil name\",\"ip\":\"any\",\"key\":\"k\"}}\n{\"x\":1}",
    );
    let cfg = demo_config(dir.path(), &sock, "");
    let out = exec(&cfg, &["id", "001"]);
    assert!(out.status.success());
    let v = out.json(); // exactly one line
    assert_eq!(v["error"], 0, "{v}");
    assert_eq!(v["data"]["id"], "001");
    assert_eq!(v["data"]["name"], "web-01");
    assert_eq!(asked.recv().unwrap(), b"id:001");
    let log = std::fs::read_to_string(dir.path().join("exec.log")).unwrap();
    assert!(log.contains("discarded"), "{log}");
    assert!(!log.contains("evil"), "{log}");
}

/// A forged reply that is a valid record for another agent, or for the
/// right id with a name that could corrupt client.keys, is discarded too;
/// a daemon's well-formed error reply is forwarded as it is.
#[test]
fn only_a_valid_reply_answering_the_query_is_taken_from_the_daemon() {
    for (reply, expect_code, expect_name) in [
        (
            &b"{\"error\":0,\"data\":{\"id\":\"005\",\"name\":\"x\",\"ip\":\"any\",\"key\":\"k\"}}"[..],
            0,
            Some("web-01"),
        ),
        (
            b"{\"error\":0,\"data\":{\"id\":\"001\",\"name\":\"a b\",\"ip\":\"any\",\"key\":\"k\"}}",
            0,
            Some("web-01"),
        ),
        (b"{\"error\":0,\"data\":{\"id\":1}}", 0, Some("web-01")),
        (b"not json", 0, Some("web-01")),
        (b"{\"error\":2,\"message\":\"backend 'db' timed out\"}", 2, None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let _asked = fake_daemon(&sock, reply);
        let cfg = demo_config(dir.path(), &sock, "");
        let v = exec(&cfg, &["id", "001"]).json();
        assert_eq!(v["error"], expect_code, "{:?}: {v}", String::from_utf8_lossy(reply));
        if let Some(name) = expect_name {
            assert_eq!(v["data"]["name"], name, "{v}");
        }
    }
}

/// Issue 10, defect 2: one deadline for the whole one-shot. A daemon that
/// never replies plus a MySQL server that accepts and never speaks (backend
/// timeout far longer than request_timeout) end within request_timeout
/// (2 s) plus a margin, with one JSON error line, not after 2x.
#[test]
fn daemon_attempt_and_direct_lookup_share_request_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("wedged.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming() {
            held.push(c);
        }
    });
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in silent.incoming() {
            held.push(c);
        }
    });
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        format!(
            "[server]\nsocket = \"{}\"\nrequest_timeout = \"2s\"\n\
             [[backend]]\nname = \"db\"\ntype = \"mysql\"\ntimeout = \"50s\"\n\
             connect_timeout = \"50s\"\nurl = \"mysql://kg@127.0.0.1:{port}/wazuh\"\n\
             query_by_id = \"SELECT id, name, ip, agent_key FROM agent WHERE id = ?\"\n\
             query_by_ip = \"SELECT id, name, ip, agent_key FROM agent WHERE ip = ?\"\n",
            sock.display()
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = exec(&cfg, &["id", "001"]);
    let took = started.elapsed();
    let v = out.json();
    assert_eq!(v["error"], 2, "{v}");
    assert!(
        took < std::time::Duration::from_secs(3),
        "took {took:?}, more than request_timeout (2 s) + 1 s"
    );
}

/// Issue 10, defect 10: `keygate --config C serve id 001` (an exec_path
/// copied from `ExecStart=... serve`, with Wazuh 4.4+'s `id 001` appended)
/// answers as the one-shot, by id and by address.
#[test]
fn serve_followed_by_id_or_ip_is_the_one_shot() {
    let demo = DemoConfig::new();
    let default_config = || demo.path();
    let mut cmd = Command::new(daemon::bin());
    cmd.arg("--config")
        .arg(default_config())
        .args(["serve", "id", "001"]);
    let out = exec_cmd(cmd);
    assert!(out.status.success());
    assert_eq!(out.json()["data"]["name"], "web-01");
    let mut cmd = Command::new(daemon::bin());
    cmd.arg("--config")
        .arg(default_config())
        .args(["serve", "ip", "172.16.0.2"]);
    assert_eq!(exec_cmd(cmd).json()["data"]["id"], "102");
    let mut cmd = Command::new(daemon::bin());
    cmd.arg("--config")
        .arg(default_config())
        .args(["serve", "id", "abc"]);
    assert_eq!(exec_cmd(cmd).json()["error"], 3);
}

/// Issue 15, item 11: a daemon started from a good config keeps answering
/// exec mode after the file is broken by an edit; only without the daemon
/// does the broken file answer 6.
#[test]
fn a_broken_config_still_reaches_the_healthy_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::copy(repo().join("config/demo/client.keys"), &keys).unwrap();
    let mut d = Daemon::start(&format!(
        "[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"{}\"\n",
        keys.display()
    ));
    let good = std::fs::read_to_string(d.config()).unwrap();
    std::fs::write(
        d.config(),
        format!("{good}\n[[backend]]\nname = \"k\"\ntype = \"nope\"\non_error = \"explode\"\n"),
    )
    .unwrap();
    let v = exec(d.config(), &["id", "001"]).json();
    assert_eq!(v["error"], 0, "{v}");
    assert_eq!(v["data"]["name"], "web-01");
    d.stop();
    let v = exec(d.config(), &["id", "001"]).json();
    assert_eq!(v["error"], 6, "{v}");
}

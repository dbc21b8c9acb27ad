//! Exec mode, run as Wazuh runs it: no shell, stdin /dev/null, stdout and
//! stderr on one pipe, output thrown away unless the exit code is 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use keygate_testkit::daemon::{self, exec, exec_cmd, Daemon};
use keygate_testkit::repo_root as repo;

fn default_config() -> std::path::PathBuf {
    repo().join("config/keygate.toml")
}

/// `keygate --config config/keygate.toml id 001` answers from the demo data.
#[test]
fn default_config_answers_id_001() {
    let out = exec(&default_config(), &["id", "001"]);
    assert!(out.status.success());
    let v = out.json();
    assert_eq!(v["error"], 0);
    assert_eq!(v["data"]["name"], "web-01");
    assert_eq!(
        exec(&default_config(), &["ip", "172.16.0.2"]).json()["data"]["id"],
        "102"
    );
}

/// Every outcome is one JSON line on the shared pipe, and exit code 0.
#[test]
fn every_outcome_is_one_json_line_and_exit_0() {
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
    while !sock.exists() && start.elapsed() < std::time::Duration::from_secs(10) {
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

/// A daemon that accepts but never answers cannot eat Wazuh's timeout: the
/// round trip is bounded (request_timeout + 1 s) and exec mode then looks
/// up directly.
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
    assert!(
        took >= std::time::Duration::from_secs(2) && took < std::time::Duration::from_secs(10),
        "{took:?}"
    );
}

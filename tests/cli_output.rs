//! What `keygate check` and the other commands print: every problem once
//! with its key path, "valid" only when it is, a warning when the socket is
//! not where Wazuh is told to look, and a quiet exit when the reader of the
//! output has gone (`keygate check | head -1`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn keygate(config: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.arg("--config").arg(config).args(args);
    cmd.env_remove("KEYGATE_CONFIG");
    cmd
}

fn run(config: &Path, args: &[&str]) -> (Output, String) {
    let out = keygate(config, args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out, text)
}

/// A config whose only backend is a readable CSV file in `dir`.
fn file_config(dir: &Path, socket: &Path) -> std::path::PathBuf {
    std::fs::write(
        dir.join("agents.csv"),
        "id,name,ip,key\n001,web-01,10.0.0.1,k001\n",
    )
    .unwrap();
    let config = dir.join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket = \"{}\"\n[[backend]]\nname = \"agents\"\ntype = \"file\"\npath = \"agents.csv\"\nformat = \"csv\"\n",
            socket.display()
        ),
    )
    .unwrap();
    config
}

/// Backends whose build fails (unreadable password files) make the config invalid: each problem is printed once, with its
/// backend's key path, and "valid" is never printed.
#[test]
fn check_never_calls_a_config_valid_that_fails_to_build() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        r#"
[server]
socket = "/run/keygate/keygate.sock"

[[backend]]
name = "db"
type = "mysql"
url = "mysql://keygate@127.0.0.1:1/wazuh"
password_file = "/nonexistent/keygate/mysql.pass"
query_by_id = "SELECT id, name, ip, agent_key FROM agent WHERE id = ?"
query_by_ip = "SELECT id, name, ip, agent_key FROM agent WHERE ip = ?"

[[backend]]
name = "pg"
type = "postgres"
url = "postgres://keygate@127.0.0.1:1/wazuh"
password_file = "/nonexistent/keygate/pg.pass"
query_by_id = "SELECT id, name, ip, agent_key FROM agent WHERE id = $1"
query_by_ip = "SELECT id, name, ip, agent_key FROM agent WHERE ip = $1"
"#,
    )
    .unwrap();
    let (out, stdout) = run(&config, &["check"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(!stdout.contains("valid,"), "{stdout}");
    assert!(
        text.starts_with("keygate check: invalid configuration in"),
        "{text}"
    );
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let of = |prefix: &str| lines.iter().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(of("backend[0]"), 1, "{text}");
    assert_eq!(of("backend[1]"), 1, "{text}");
    assert!(text.contains("password_file"), "{text}");
    assert!(text.contains("problem(s)"), "{text}");
}

/// A config that validates and builds says so once, before the table, on
/// stdout; with nothing to warn about, stderr stays empty.
#[test]
fn check_calls_a_good_config_valid_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_config(dir.path(), Path::new("/run/keygate/keygate.sock"));
    let (out, text) = run(&config, &["check"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}{err}");
    assert_eq!(text.matches("valid, 1 backend(s)").count(), 1, "{text}");
    assert!(text.contains("BACKEND"), "{text}");
    assert!(err.is_empty(), "{err}");
}

/// A socket away from /run/keygate/keygate.sock (where the shipped ossec.conf
/// snippets point) is valid but gets a warning naming the key, on stderr
/// (the table stays alone on stdout); the exit code stays 0.
#[test]
fn check_warns_when_the_socket_is_not_where_wazuh_looks() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_config(dir.path(), Path::new("keygate.sock"));
    let (out, stdout) = run(&config, &["check"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(!stdout.contains("warning"), "{stdout}");
    let warning = text
        .lines()
        .find(|l| l.starts_with("warning: server.socket:"))
        .unwrap_or_else(|| panic!("no socket warning in:\n{text}"));
    assert!(warning.contains("/run/keygate/keygate.sock"), "{warning}");
    assert!(
        warning.contains(&dir.path().join("keygate.sock").display().to_string()),
        "{warning}"
    );
}

/// Spawns `keygate args` with stdout and stderr on pipes whose reader is
/// already closed: every write fails with EPIPE.
fn with_closed_output(config: &Path, args: &[&str]) -> std::process::ExitStatus {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let (err_reader, err_writer) = std::io::pipe().unwrap();
    drop(err_reader);
    keygate(config, args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(err_writer)
        .status()
        .unwrap()
}

/// `keygate check | head -1`, and admin commands whose reader has gone,
/// end quietly with 141 (128 + SIGPIPE) instead of panicking (101).
#[test]
fn every_command_exits_quietly_when_its_output_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let good = file_config(dir.path(), Path::new("/run/keygate/keygate.sock"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nread_timeout = \"x\"\n").unwrap();
    let absent = dir.path().join("absent.toml");
    for (config, args) in [
        (&good, &["check"][..]),
        (&bad, &["check"][..]),
        // No daemon runs: the message goes to the closed stderr.
        (&good, &["backends"][..]),
        (&good, &["cache", "stats"][..]),
        (&absent, &["reload"][..]),
    ] {
        let status = with_closed_output(config, args);
        assert_eq!(status.code(), Some(141), "keygate {args:?}: {status}");
    }
    // With the output open, the same commands do not exit 141.
    let (out, _) = run(&good, &["check"]);
    assert!(out.status.success());
}

/// `reload`, `cache` and `backends` exit 69 (EX_UNAVAILABLE) with a message
/// naming the control socket when no daemon runs.
#[test]
fn admin_commands_exit_69_without_a_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = file_config(dir.path(), &dir.path().join("k.sock"));
    for args in [
        &["reload"][..],
        &["backends"][..],
        &["cache", "stats"][..],
        &["cache", "flush"][..],
    ] {
        let out = keygate(&config, args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(69), "{args:?}: {err}");
        assert!(err.contains("k.sock.ctl"), "{args:?}: {err}");
    }
}

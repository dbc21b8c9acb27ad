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
    // The socket is the test's own: an installed daemon's control socket
    // (/run/keygate/keygate.sock.ctl) is never asked.
    let good = file_config(dir.path(), &dir.path().join("k.sock"));
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nread_timeout = \"x\"\n").unwrap();
    for (config, args) in [
        (&good, &["check"][..]),
        (&bad, &["check"][..]),
        // No daemon runs: the message goes to the closed stderr.
        (&good, &["backends"][..]),
        (&good, &["cache", "stats"][..]),
        (&good, &["reload"][..]),
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

/// A store of 200 agents sharing one name and one address, plus 30
/// invalid lines: the text reports of `list`, `export` and `verify` show 10
/// lines of a kind and say how many more; `--json` keeps every one.
#[test]
fn reports_cap_repeated_lines_and_json_keeps_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut keys = String::new();
    for i in 1..=200 {
        keys.push_str(&format!("{i:03} twin-{} 10.0.0.{} k{i}\n", i % 2, i % 2));
    }
    for i in 201..=230 {
        keys.push_str(&format!("{i:03} bad! any k{i}\n"));
    }
    std::fs::write(dir.path().join("keys.txt"), &keys).unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket = \"{}\"\n[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"keys.txt\"\n",
            dir.path().join("k.sock").display()
        ),
    )
    .unwrap();
    let starting =
        |text: &str, prefix: &str| text.lines().filter(|l| l.starts_with(prefix)).count();

    let (_, list) = run(&config, &["list"]);
    assert_eq!(starting(&list, "  invalid: "), 10, "{list}");
    assert!(
        list.contains("  ... and 20 more (--json lists all)"),
        "{list}"
    );

    let export = keygate(&config, &["export", "-o"])
        .arg(dir.path().join("out.keys"))
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&export.stdout);
    assert_eq!(starting(&report, "not written: "), 10, "{report}");
    assert!(
        report.contains("... and 20 more (--json lists all)"),
        "{report}"
    );
    // Two names, two addresses: each shared by 100 agents, listed in full.
    assert_eq!(starting(&report, "duplicate name "), 2, "{report}");
    let json = keygate(&config, &["export", "--json", "-o"])
        .arg(dir.path().join("out.keys"))
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["invalid"].as_array().unwrap().len(), 30);

    let manager = dir.path().join("manager.keys");
    std::fs::write(&manager, "broken line\n".repeat(25)).unwrap();
    let (_, verify) = run(
        &config,
        &["verify", "--client-keys", manager.to_str().unwrap()],
    );
    assert_eq!(starting(&verify, "unreadable: client.keys"), 10, "{verify}");
    assert_eq!(starting(&verify, "unreadable: store"), 0, "{verify}");
    assert!(
        verify.contains("... and 45 more (--json lists all)"),
        "{verify}"
    );
    let (_, json) = run(
        &config,
        &[
            "verify",
            "--json",
            "--client-keys",
            manager.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["unreadable"].as_array().unwrap().len(), 55);
}

/// An error says each cause once: a password file that cannot be read
/// (its reason was printed twice: "No such file or directory: No such file
/// or directory (os error 2)").
#[test]
fn an_error_says_each_cause_once() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket = \"{}\"\n[[backend]]\nname = \"db\"\ntype = \"mysql\"\n\
             url = \"mysql://keygate@127.0.0.1:1/wazuh\"\npassword_file = \"/nonexistent/keygate.pass\"\n\
             query_by_id = \"SELECT id, name, ip, agent_key FROM agent WHERE id = ?\"\n\
             query_by_ip = \"SELECT id, name, ip, agent_key FROM agent WHERE ip = ?\"\n",
            dir.path().join("k.sock").display()
        ),
    )
    .unwrap();
    for args in [&["list"][..], &["export"][..]] {
        let out = keygate(&config, args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{args:?}: {err}");
        assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
        assert!(err.contains("password_file"), "{err}");
    }
}

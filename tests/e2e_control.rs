//! The control socket and its CLI: cache stats and flush, backends, reload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use keygate_testkit::daemon::{bin, Daemon};

fn keys_backend(path: &std::path::Path) -> String {
    format!(
        "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"{}\"\nreload_interval = \"1h\"\n",
        path.display()
    )
}

fn cli(d: &Daemon, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .args(args)
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stat(d: &Daemon, name: &str) -> u64 {
    let out = stdout(&cli(d, &["cache", "stats"]));
    out.lines()
        .find_map(|l| {
            l.strip_prefix(name)
                .map(|v| v.trim().parse::<u64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no {name} in {out}"))
}

/// Answers are cached (the file is gone, the cache still answers); flushing
/// one entry or all makes the backend be asked again.
#[test]
fn cache_serves_and_flush_one_and_all() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, "001 a 10.0.0.1 k1\n002 b 10.0.0.2 k2\n").unwrap();
    let d = Daemon::start(&keys_backend(&keys));
    assert_eq!(d.request("id:001")["error"], 0);
    assert_eq!(d.request("id:002")["error"], 0);
    assert_eq!(d.request("id:009")["error"], 4);
    assert_eq!(d.request("id:001")["error"], 0);
    assert_eq!(d.request("id:009")["error"], 4);
    assert_eq!(stat(&d, "hits"), 1);
    assert_eq!(stat(&d, "negative_hits"), 1);
    assert_eq!(stat(&d, "entries"), 3);

    let out = cli(&d, &["cache", "flush", "id:001"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("flushed id:001"));
    assert_eq!(stat(&d, "entries"), 2);
    let out = cli(&d, &["cache", "flush"]);
    assert!(out.status.success());
    assert_eq!(stat(&d, "entries"), 0);
    let out = cli(&d, &["cache", "flush", "id:x"]);
    assert!(!out.status.success());
}

/// Wazuh's socket never accepts admin commands; the control socket is 0600.
#[test]
fn admin_commands_only_on_the_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, "001 a 10.0.0.1 k1\n").unwrap();
    let d = Daemon::start(&keys_backend(&keys));
    for cmd in ["cache flush", "reload", "backends", "cache stats"] {
        assert_eq!(d.request(cmd)["error"], 3, "{cmd}");
    }
    let ctl = d.socket().with_extension("sock.ctl");
    assert_eq!(
        std::fs::metadata(&ctl).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

/// `keygate backends` lists each backend with its state and lookups.
#[test]
fn backends_command_reports_state() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, "001 a 10.0.0.1 k1\n").unwrap();
    let d = Daemon::start(&format!(
        "[cache]\nenabled = false\n{}[[backend]]\nname = \"gone\"\ntype = \"file\"\npath = \"{}\"\n",
        keys_backend(&keys),
        dir.path().join("missing").display()
    ));
    for _ in 0..4 {
        d.request("id:002");
    }
    let out = stdout(&cli(&d, &["backends"]));
    let keys_line = out.lines().find(|l| l.starts_with("keys ")).unwrap();
    assert!(
        keys_line.contains(" up ") && keys_line.contains(" 4 "),
        "{out}"
    );
    let gone_line = out.lines().find(|l| l.starts_with("gone ")).unwrap();
    assert!(
        gone_line.contains("tripped") || gone_line.contains("probing"),
        "{out}"
    );
    assert!(gone_line.contains("missing"), "{out}");
}

/// `keygate reload`: a valid config is applied and cache entries kept when
/// the backend list is unchanged; an invalid one prints every problem,
/// exits non-zero, and the old config keeps running.
#[test]
fn reload_command_valid_and_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, "001 a 10.0.0.1 k1\n").unwrap();
    let d = Daemon::start(&keys_backend(&keys));
    assert_eq!(d.request("id:001")["error"], 0);
    let original = std::fs::read_to_string(d.config()).unwrap();

    std::fs::write(
        d.config(),
        original.replace("level = \"debug\"", "level = \"info\""),
    )
    .unwrap();
    let out = cli(&d, &["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out).trim_end().ends_with("cache entries kept"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stat(&d, "entries"), 1);

    std::fs::write(
        d.config(),
        format!("{original}\n[cache]\nttl = \"forever\"\n[server2]\n"),
    )
    .unwrap();
    let out = cli(&d, &["reload"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server2"), "{err}");
    assert_eq!(d.request("id:001")["error"], 0);
    // The log is written by a background thread: give it a moment.
    let logged = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(20));
        d.log().contains("Reload refused")
    });
    assert!(logged, "{}", d.log());
}

/// `keygate reload` after the file backend's `path` was pointed at a store
/// with a rotated key for 001 (issue 24, point 8): the backend's cached
/// answers are dropped and the new key is served at once (before: "cache
/// entries kept", and the old key was served until its ttl). A reload that
/// only renames the backend keeps them.
#[test]
fn reload_drops_the_answers_of_a_backend_whose_config_changed() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    let rotated = dir.path().join("rotated.keys");
    std::fs::write(&keys, "001 a 10.0.0.1 old-key\n").unwrap();
    std::fs::write(&rotated, "001 a 10.0.0.1 new-key\n").unwrap();
    let d = Daemon::start(&keys_backend(&keys));
    assert_eq!(d.request("id:001")["data"]["key"], "old-key");
    let original = std::fs::read_to_string(d.config()).unwrap();

    std::fs::write(d.config(), original.replace("\"keys\"", "\"renamed\"")).unwrap();
    let out = cli(&d, &["reload"]);
    assert!(
        stdout(&out).trim_end().ends_with("cache entries kept"),
        "{out:?}"
    );
    assert_eq!(stat(&d, "entries"), 1);

    let pointed = original.replace(keys.to_str().unwrap(), rotated.to_str().unwrap());
    std::fs::write(d.config(), pointed).unwrap();
    let out = cli(&d, &["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout(&out).contains("cache entries dropped"), "{out:?}");
    assert_eq!(stat(&d, "entries"), 0);
    assert_eq!(d.request("id:001")["data"]["key"], "new-key");
}

/// With two backends, a reload that changes only the second one's config
/// keeps the first one's cached answers, and says so by name.
#[test]
fn reload_keeps_the_answers_of_the_backends_before_the_one_changed() {
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (
        dir.path().join("first.keys"),
        dir.path().join("second.keys"),
    );
    std::fs::write(&first, "001 a 10.0.0.1 k1\n").unwrap();
    std::fs::write(&second, "002 b 10.0.0.2 k2\n").unwrap();
    let backends = |interval: &str| {
        format!(
            "{}[[backend]]\nname = \"second\"\ntype = \"file\"\npath = \"{}\"\nreload_interval = \"{interval}\"\n",
            keys_backend(&first),
            second.display()
        )
    };
    let d = Daemon::start(&backends("1h"));
    assert_eq!(d.request("id:001")["error"], 0);
    let original = std::fs::read_to_string(d.config()).unwrap();
    std::fs::write(
        d.config(),
        original.replace(&backends("1h"), &backends("2h")),
    )
    .unwrap();
    let out = cli(&d, &["reload"]);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout(&out)
            .trim_end()
            .ends_with("cache entries kept for keys only (the config of a later backend changed)"),
        "{}",
        stdout(&out)
    );
    assert_eq!(stat(&d, "entries"), 1);
}

/// The control socket holds at most 16 connections (the Wazuh socket's
/// own, larger limit does not apply to it): with 16 open, a 17th is closed
/// at once, long before the read timeout (control connections are never
/// evicted as idle).
#[test]
fn the_control_socket_holds_at_most_16_connections() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, "001 a 10.0.0.1 k1\n").unwrap();
    let d = Daemon::start_with("read_timeout = \"50s\"", &keys_backend(&keys));
    let control = keygate_config::control_socket_for(d.socket());
    let connect = || std::os::unix::net::UnixStream::connect(&control).unwrap();
    let _held: Vec<_> = (0..16).map(|_| connect()).collect();
    let mut extra = connect();
    extra
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(extra.read(&mut buf).unwrap(), 0, "the 17th was held open");
}

/// `--json` gives scripts the same facts as the tables: `backends --json`
/// is an array of backends, `cache stats --json` an object of counters.
#[test]
fn backends_and_cache_stats_take_json() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("client.keys");
    std::fs::write(&keys, "001 a 10.0.0.1 k1\n").unwrap();
    let d = Daemon::start(&keys_backend(&keys));
    assert_eq!(d.request("id:001")["error"], 0);
    assert_eq!(d.request("id:001")["error"], 0);
    let out = cli(&d, &["backends", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["name"], "keys");
    assert_eq!(v[0]["state"], "up");
    assert_eq!(v[0]["lookups"], 1);
    assert!(v[0]["p50_ms"].as_f64().is_some(), "{v}");
    let out = cli(&d, &["cache", "stats", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["hits"].as_u64(), v["entries"].as_u64()),
        (Some(1), Some(1)),
        "{v}"
    );
    // The table puts every number in its own column.
    let table = stdout(&cli(&d, &["backends"]));
    let header = table.lines().next().unwrap();
    assert!(header.contains("LOOKUPS  SKIPPED"), "{table}");
}

/// With no daemon, an admin command exits 69 (EX_UNAVAILABLE) and says
/// which control socket it tried.
#[test]
fn admin_command_without_a_daemon_exits_69() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keygate.toml");
    std::fs::write(&config, "[server]\nsocket = \"k.sock\"\n").unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&config)
        .arg("backends")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}", dir.path().join("k.sock.ctl").display())),
        "{err}"
    );
}

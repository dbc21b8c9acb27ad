//! The socket front end, driven exactly as Wazuh drives it, against the real
//! binary serving the demo data of the default config.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{self, bin, Daemon, DemoConfig};
use keygate_testkit::repo_root as repo;

fn demo_backends() -> String {
    let demo = repo().join("config/demo");
    format!(
        "[[backend]]\nname = \"master-keys\"\ntype = \"file\"\npath = \"{}\"\n\n[[backend]]\nname = \"branch\"\ntype = \"file\"\nformat = \"csv\"\npath = \"{}\"\n",
        demo.join("client.keys").display(),
        demo.join("agents.csv").display()
    )
}

/// Wazuh's request (one send, no terminator) gets the whole record in one read.
#[test]
fn found_by_id_and_ip_in_one_read() {
    let d = Daemon::start(&demo_backends());
    let v = d.request("id:001");
    assert_eq!(v["error"], 0);
    assert_eq!(v["data"]["id"], "001");
    assert_eq!(v["data"]["name"], "web-01");
    assert_eq!(v["data"]["ip"], "192.168.1.100");
    assert_eq!(v["data"]["key"].as_str().unwrap().len(), 64);
    assert_eq!(d.request("ip:192.168.1.100")["data"]["id"], "001");
    // A CIDR agent answers for an address inside its network.
    assert_eq!(d.request("ip:10.20.99.1")["data"]["name"], "lab-net");
    // The second backend answers what the first does not have.
    assert_eq!(d.request("id:102")["data"]["name"], "branch-nas");
    assert_eq!(d.request("ip:2001:db8::6")["data"]["name"], "ipv6-host");
}

/// The reply is exactly the documented compact JSON, with string fields.
#[test]
fn reply_bytes_are_compact_json_with_string_fields() {
    let d = Daemon::start(&demo_backends());
    let raw = String::from_utf8(d.request_raw(b"id:002")).unwrap();
    assert!(
        raw.starts_with(r#"{"error":0,"data":{"id":"002","name":"db-01","ip":"any","key":""#),
        "{raw}"
    );
    assert!(!raw.contains('\n') && !raw.contains(' '), "{raw:?}");
    assert_eq!(
        String::from_utf8(d.request_raw(b"id:999")).unwrap(),
        r#"{"error":4,"message":"No agent key found"}"#
    );
}

/// Removed agents (name starting with '!') are not served.
#[test]
fn removed_agent_is_not_found() {
    let d = Daemon::start(&demo_backends());
    assert_eq!(d.request("id:004")["error"], 4);
    assert_eq!(d.request("ip:192.168.1.104")["error"], 4);
}

/// A person testing with socat/nc adds a newline: one \n or \r\n is accepted.
#[test]
fn trailing_newline_or_crlf_is_accepted() {
    let d = Daemon::start(&demo_backends());
    assert_eq!(d.request("id:001\n")["error"], 0);
    assert_eq!(d.request("id:001\r\n")["error"], 0);
}

/// Bad and incomplete requests get codes 3 and 1 with a message.
#[test]
fn bad_requests_get_codes_1_and_3() {
    let d = Daemon::start(&demo_backends());
    for (req, code) in [
        ("id:", 1),
        ("ip:", 1),
        ("\n", 1),
        ("foo:1", 3),
        ("id:abc", 3),
        ("id:001' OR '1'='1", 3),
        ("ip:10.0.0.1/24", 3),
        ("ip:*)(cn=*", 3),
        ("id:123456789", 3),
    ] {
        let v = d.request(req);
        assert_eq!(v["error"], code, "{req:?}: {v}");
        assert!(v["message"].as_str().unwrap().len() > 3, "{req:?}: {v}");
    }
}

/// 64 KiB of input gets an error reply, and the daemon keeps serving.
#[test]
fn oversized_input_gets_an_error_and_the_daemon_survives() {
    let d = Daemon::start(&demo_backends());
    let big = vec![b'A'; 64 * 1024];
    let v: serde_json::Value = serde_json::from_slice(&d.request_raw(&big)).unwrap();
    assert_eq!(v["error"], 3);
    let mut nul = b"id:001".to_vec();
    nul.push(0);
    let v: serde_json::Value = serde_json::from_slice(&d.request_raw(&nul)).unwrap();
    assert_eq!(v["error"], 3);
    assert_eq!(d.request("id:001")["error"], 0);
}

/// Connect-and-close (Wazuh 3.x's health check) is accepted silently.
#[test]
fn connect_and_close_health_check_is_silent() {
    let d = Daemon::start(&demo_backends());
    for _ in 0..20 {
        drop(UnixStream::connect(d.socket()).unwrap());
    }
    assert_eq!(d.request("id:001")["error"], 0);
    let log = d.log();
    // The one warning is the test's socket, away from where Wazuh looks.
    let log: Vec<&str> = log
        .lines()
        .filter(|l| !l.contains("problem=server.socket: is "))
        .collect();
    assert!(
        !log.iter()
            .any(|l| l.contains("ERROR") || l.contains("WARN")),
        "{log:#?}"
    );
}

/// A client that never sends gets code 1 after read_timeout, and others are
/// served meanwhile.
#[test]
fn idle_client_times_out_with_code_1() {
    let d = Daemon::start_with("read_timeout = \"500ms\"", &demo_backends());
    use std::io::Read;
    let mut idle = UnixStream::connect(d.socket()).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    assert_eq!(d.request("id:001")["error"], 0);
    let mut buf = vec![0u8; 1024];
    let n = idle.read(&mut buf).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert_eq!(v["error"], 1);
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// The socket gets socket_mode; SIGTERM stops the daemon cleanly and removes it.
#[test]
fn socket_mode_and_clean_shutdown() {
    let mut d = Daemon::start_with("socket_mode = \"0600\"", &demo_backends());
    let mode = std::fs::metadata(d.socket()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let status = d.stop();
    assert!(status.success(), "{status}");
    assert!(!d.socket().exists(), "socket file left behind");
}

/// A stale socket file from a crashed run is replaced; a live daemon is not.
#[test]
fn stale_socket_replaced_live_daemon_refused() {
    let mut d = Daemon::start(&demo_backends());
    // A second daemon on the same socket must refuse to start.
    let out = Command::new(bin())
        .arg("--config")
        .arg(d.config())
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already answering"), "{err}");
    assert_eq!(
        d.request("id:001")["error"],
        0,
        "the live daemon must be untouched"
    );

    // Kill -9 leaves the socket file behind: the next start replaces it.
    d.signal("KILL");
    std::thread::sleep(Duration::from_millis(200));
    assert!(d.socket().exists());
    d.spawn();
    assert_eq!(d.request("id:001")["error"], 0);
}

/// An invalid config: exit 78, every problem listed with its key path.
#[test]
fn invalid_config_exits_78_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[server]\nrequest_timeout = \"90s\"\nsokcet = \"x\"\n[[backend]]\nname = \"a\"\ntype = \"sqlite\"\npath = \"a.db\"\nquery_by_id = \"SELECT 1\"\nquery_by_ip = \"SELECT ?\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("server.sokcet"), "{err}");
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("server.sokcet: unknown key"), "{text}");
    let cfg2 = dir.path().join("bad2.toml");
    std::fs::write(&cfg2, "[server]\nrequest_timeout = \"90s\"\n[[backend]]\nname = \"a\"\ntype = \"sqlite\"\npath = \"a.db\"\nquery_by_id = \"SELECT 1\"\nquery_by_ip = \"SELECT ?\"\n").unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg2)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(text.contains("server.request_timeout"), "{text}");
    assert!(
        text.contains("backend[0].query_by_id: must have exactly one bind parameter"),
        "{text}"
    );
}

/// `check` probes each backend and fails when one cannot answer.
#[test]
fn check_prints_a_table_and_fails_on_a_broken_backend() {
    let demo = DemoConfig::new();
    let out = Command::new(bin())
        .arg("--config")
        .arg(demo.path())
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("master-keys") && text.contains(" ok "),
        "{text}"
    );

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("k.toml");
    std::fs::write(
        &cfg,
        "[[backend]]\nname = \"gone\"\ntype = \"file\"\npath = \"missing.keys\"\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .arg("--config")
        .arg(&cfg)
        .arg("check")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("gone") && text.contains("FAILED") && text.contains("missing.keys"),
        "{text}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1 backend(s) cannot answer"),
        "{out:?}"
    );
}

/// Many concurrent Wazuh-style clients all get correct answers.
#[test]
fn concurrent_clients_all_answered() {
    let d = Daemon::start(&demo_backends());
    let socket = d.socket().to_owned();
    let threads: Vec<_> = (0..32)
        .map(|i| {
            let s = socket.clone();
            std::thread::spawn(move || {
                for _ in 0..20 {
                    let req = if i % 2 == 0 { "id:001" } else { "id:101" };
                    let v: serde_json::Value =
                        serde_json::from_slice(&daemon::wazuh_request(&s, req.as_bytes())).unwrap();
                    assert_eq!(v["error"], 0);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// SIGHUP reloads a valid config and keeps the old one when the new is invalid.
#[test]
fn sighup_reload_swaps_valid_and_refuses_invalid_config() {
    let d = Daemon::start(&demo_backends());
    assert_eq!(d.request("id:101")["error"], 0);
    let original = std::fs::read_to_string(d.config()).unwrap();
    // Valid: only the client.keys backend remains, so 101 disappears.
    let cut = original
        .split("[[backend]]\nname = \"branch\"")
        .next()
        .unwrap()
        .to_owned();
    std::fs::write(d.config(), &cut).unwrap();
    d.signal("HUP");
    wait_until(|| d.request("id:101")["error"] == 4);
    assert_eq!(d.request("id:001")["error"], 0);
    // Invalid: refused, logged, and the running stack stays.
    std::fs::write(d.config(), format!("{cut}\nbogus_key = 1\n")).unwrap();
    d.signal("HUP");
    wait_until(|| d.log().contains("Reload refused"));
    assert_eq!(d.request("id:001")["error"], 0);
}

fn wait_until(mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("condition not met within 10s");
}

/// KEYGATE_ environment variables override config keys (`__` between
/// levels), and their problems are reported with the key path too.
#[test]
fn environment_overrides_config_keys() {
    let demo = DemoConfig::new();
    let cfg = demo.path();
    let out = Command::new(bin())
        .arg("--config")
        .arg(cfg)
        .arg("check")
        .env("KEYGATE_LOG__LEVEL", "loud")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("KEYGATE_LOG__LEVEL (log.level): must be one of"),
        "{out:?}"
    );
    let out = Command::new(bin())
        .arg("check")
        .env("KEYGATE_CONFIG", cfg)
        .env("KEYGATE_SERVER__REQUEST_TIMEOUT", "90s")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "KEYGATE_CONFIG names the file; the override applies"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("KEYGATE_SERVER__REQUEST_TIMEOUT (server.request_timeout)"),
        "{out:?}"
    );
}

/// `[server] worker_threads` sets the runtime's threads (the start line
/// says how many it has); without it the runtime has half the cores, at
/// least one.
#[test]
fn worker_threads_sets_the_runtime_and_defaults_to_half_the_cores() {
    let d = Daemon::start_with("worker_threads = 3", &demo_backends());
    assert!(d.log().contains("worker_threads=3"), "{}", d.log());
    let cores = std::thread::available_parallelism().unwrap().get();
    let d = Daemon::start(&demo_backends());
    let want = format!("worker_threads={}", (cores / 2).max(1));
    assert!(d.log().contains(&want), "want {want}: {}", d.log());
}

/// The quick start (keygate on the demo config of config/, run here on a
/// copy in a temp dir, file names unchanged) leaves nothing in `config/`
/// that git would show: the sockets while it runs and their lock files
/// after it stops are all ignored (.gitignore).
#[test]
fn the_quick_start_leaves_nothing_untracked_in_config() {
    let demo = DemoConfig::new();
    let before: Vec<_> = names(demo.dir());
    let mut child = Command::new(bin())
        .arg("--config")
        .arg(demo.path())
        .env_remove("KEYGATE_CONFIG")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let socket = demo.dir().join("keygate.sock");
    wait_until(|| UnixStream::connect(&socket).is_ok());
    let mut created = names(demo.dir());
    let term = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(term.success());
    assert!(child.wait().unwrap().success());
    created.extend(names(demo.dir()));
    created.retain(|n| !before.contains(n));
    created.sort();
    created.dedup();
    assert!(created.len() >= 2, "{created:?}");
    let root = repo();
    for name in &created {
        let status = Command::new("git")
            .current_dir(&root)
            .args(["check-ignore", "-q", "--no-index"])
            .arg(format!("config/{name}"))
            .status()
            .expect("git is needed to read .gitignore");
        assert!(
            status.success(),
            "the quick start leaves config/{name}, which git would show (.gitignore)"
        );
    }
}

fn names(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

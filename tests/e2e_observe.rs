//! Observing the real daemon: the Prometheus endpoint after real requests,
//! the audit trail (one event per answer, never a key), the log's format,
//! colour and reopening on SIGUSR1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{bin, exec, wazuh_request};
use keygate_testkit::{free_port, repo_root};

/// A daemon started from a whole config text (the harness's `Daemon` fixes
/// `[log]`, which these tests vary); stopped when dropped.
pub struct Observed {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub config: PathBuf,
}

impl Observed {
    /// Starts `keygate serve` on `sections` (everything but `[server]`);
    /// `{dir}` in the text is replaced by the temp dir.
    pub fn start(sections: &str) -> Self {
        Self::start_with("", sections)
    }

    /// Like [`Observed::start`], with extra `[server]` keys.
    pub fn start_with(server_extra: &str, sections: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("keygate.sock");
        let config = dir.path().join("keygate.toml");
        let text = format!(
            "[server]\nsocket = \"{}\"\n{server_extra}\n\n{}\n",
            socket.display(),
            sections.replace("{dir}", &dir.path().display().to_string())
        );
        std::fs::write(&config, text).unwrap();
        client_keys(dir.path());
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new(bin())
            .arg("--config")
            .arg(&config)
            .arg("serve")
            .env_remove("KEYGATE_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let start = Instant::now();
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "keygate exited with {status}: {}",
                    read(&dir.path().join("stderr.log"))
                );
            }
            assert!(start.elapsed() < Duration::from_secs(20), "no socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            dir,
            socket,
            config,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn request(&self, req: &str) -> serde_json::Value {
        serde_json::from_slice(&wazuh_request(&self.socket, req.as_bytes())).unwrap()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// One HTTP/1.0 GET; returns the status line and the body.
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

/// The value of the series written exactly as `series` in a scrape.
fn value(scrape: &str, series: &str) -> Option<f64> {
    scrape.lines().find_map(|l| {
        let (name, v) = l.rsplit_once(' ')?;
        (name == series).then(|| v.parse().unwrap())
    })
}

fn client_keys(dir: &Path) -> PathBuf {
    let path = dir.join("client.keys");
    std::fs::copy(repo_root().join("config/demo/client.keys"), &path).unwrap();
    path
}

fn file_backend(name: &str) -> String {
    format!("[[backend]]\nname = \"{name}\"\ntype = \"file\"\npath = \"client.keys\"\n")
}

/// The keys of the demo agents (what no log may ever show).
fn demo_keys() -> Vec<String> {
    read(&repo_root().join("config/demo/client.keys"))
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().nth(3).unwrap().to_owned())
        .collect()
}

fn audit_events(path: &Path) -> Vec<serde_json::Value> {
    read(path)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// Our own effective uid (the owner of /proc/self).
fn my_uid() -> u64 {
    u64::from(std::fs::metadata("/proc/self").unwrap().uid())
}

/// After real requests through the socket and the exec one-shot, a scrape
/// of `/metrics` counts each of them under its labels, with the cache's
/// and the backend's own counters, and reloads; other paths are 404.
#[test]
fn metrics_count_real_requests() {
    let port = free_port();
    let d = Observed::start(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
        file_backend("keys")
    ));
    let (status, before) = http_get(port, "/metrics");
    assert!(status.contains("200"), "{status}");
    assert!(
        before.contains(&format!(
            "keygate_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        )),
        "{before}"
    );

    assert_eq!(d.request("id:001")["error"], 0);
    assert_eq!(d.request("id:001")["error"], 0); // a cache hit
    assert_eq!(d.request("ip:192.168.1.100")["error"], 0);
    assert_eq!(d.request("id:999")["error"], 4);
    assert_eq!(d.request("id:999")["error"], 4); // a negative hit
    assert_eq!(d.request("bogus")["error"], 3);
    // The exec one-shot forwards to the daemon: counted as exec.
    assert_eq!(exec(&d.config, &["id", "002"]).json()["error"], 0);

    // One reload that works, one refused (the config is broken, then fixed).
    let reload = || {
        Command::new(bin())
            .arg("--config")
            .arg(&d.config)
            .arg("reload")
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(reload());
    let good = read(&d.config);
    std::fs::write(&d.config, format!("{good}\n[bogus]\n")).unwrap();
    assert!(!reload());
    std::fs::write(&d.config, good).unwrap();

    let (_, m) = http_get(port, "/metrics");
    let want = [
        (r#"keygate_config_reloads_total{result="ok"}"#, 1.0),
        (r#"keygate_config_reloads_total{result="failed"}"#, 1.0),
        (
            r#"keygate_requests_total{type="id",frontend="socket",code="0"}"#,
            2.0,
        ),
        (
            r#"keygate_requests_total{type="ip",frontend="socket",code="0"}"#,
            1.0,
        ),
        (
            r#"keygate_requests_total{type="id",frontend="socket",code="4"}"#,
            2.0,
        ),
        (
            r#"keygate_requests_total{type="none",frontend="socket",code="3"}"#,
            1.0,
        ),
        (
            r#"keygate_requests_total{type="id",frontend="exec",code="0"}"#,
            1.0,
        ),
        (r#"keygate_request_duration_seconds_count{type="id"}"#, 5.0),
        (
            r#"keygate_backend_lookups_total{backend="keys",outcome="found"}"#,
            3.0,
        ),
        (
            r#"keygate_backend_lookups_total{backend="keys",outcome="not_found"}"#,
            1.0,
        ),
        (
            r#"keygate_backend_lookups_total{backend="keys",outcome="skipped"}"#,
            0.0,
        ),
        (
            r#"keygate_backend_lookup_duration_seconds_count{backend="keys"}"#,
            4.0,
        ),
        (r#"keygate_backend_state{backend="keys",state="up"}"#, 1.0),
        (
            r#"keygate_backend_state{backend="keys",state="tripped"}"#,
            0.0,
        ),
        ("keygate_cache_hits_total", 1.0),
        ("keygate_cache_negative_hits_total", 1.0),
        ("keygate_cache_misses_total", 4.0),
        ("keygate_cache_stale_served_total", 0.0),
        ("keygate_cache_entries", 4.0),
    ];
    for (series, n) in want {
        assert_eq!(value(&m, series), Some(n), "{series} in:\n{m}");
    }
    assert!(m.contains("# TYPE keygate_request_duration_seconds histogram"));
    assert!(m.lines().all(|l| l.is_empty()
        || l.starts_with('#')
        || l.starts_with("keygate_")
        || l.starts_with("process_")));
    assert!(http_get(port, "/").0.contains("404"));
}

/// The connection series: open connections, and an idle one closed to
/// admit a new one because `max_connections` were open, counted under its
/// reason.
#[test]
fn metrics_count_open_and_refused_connections() {
    let port = free_port();
    let d = Observed::start_with(
        "max_connections = 2\nread_timeout = \"30s\"",
        &format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n{}",
            file_backend("keys")
        ),
    );
    let scrape_until = |series: &str, want: f64| keygate_testkit::scrape::until(port, series, want);
    scrape_until("keygate_connections_open", 0.0);
    let mut idle = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    scrape_until("keygate_connections_open", 1.0);
    let second = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    scrape_until("keygate_connections_open", 2.0);
    let third = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
    let mut buf = [0u8; 16];
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "the oldest idle one closed"
    );
    scrape_until(
        r#"keygate_connections_refused_total{reason="evicted_idle"}"#,
        1.0,
    );
    scrape_until(r#"keygate_connections_refused_total{reason="limit"}"#, 0.0);
    drop((second, third));
    scrape_until("keygate_connections_open", 0.0);
}

/// Whether process `pid` has a listening TCP socket (its socket inodes
/// against the kernel's LISTEN entries).
fn listens_on_tcp(pid: u32) -> bool {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            l.strip_prefix("socket:[")?
                .strip_suffix(']')
                .map(str::to_owned)
        })
        .collect();
    assert!(!inodes.is_empty(), "the daemon has its Unix sockets");
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        read(Path::new(table)).lines().skip(1).any(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // st 0A is LISTEN; field 9 is the inode.
            f[3] == "0A" && inodes.contains(f[9])
        })
    })
}

/// Without `[metrics]` the daemon listens on no TCP port at all (and the
/// check does see the listener when `[metrics]` is there).
#[test]
fn without_a_metrics_section_nothing_listens() {
    let d = Observed::start(&file_backend("keys"));
    assert_eq!(d.request("id:001")["error"], 0);
    assert!(!listens_on_tcp(d.child.id()));
    let with = Observed::start(&format!(
        "[metrics]\nlisten = \"127.0.0.1:{}\"\n\n{}",
        free_port(),
        file_backend("keys")
    ));
    assert!(listens_on_tcp(with.child.id()));
}

/// Each request, answered, cached or refused, is followed by exactly one
/// audit event in `audit_file`, with the peer's uid, gid and pid, the
/// code, what answered and the agent disclosed; never the key. The
/// diagnostic log holds none of them.
#[test]
fn every_answer_writes_one_audit_event_without_the_key() {
    let d = Observed::start(&format!(
        "[log]\nlevel = \"debug\"\nfile = \"{{dir}}/keygate.log\"\naudit_file = \"{{dir}}/audit.log\"\n\n{}",
        file_backend("keys")
    ));
    let audit = d.path("audit.log");
    let cases = [
        ("id:001", 0, "keys"),
        ("id:001", 0, "cache"),
        ("id:404", 4, "none"),
        ("id:001)(x", 3, "none"),
    ];
    for (i, (req, code, source)) in cases.iter().enumerate() {
        let mut s = std::os::unix::net::UnixStream::connect(&d.socket).unwrap();
        s.write_all(req.as_bytes()).unwrap();
        let mut buf = vec![0u8; 65536];
        let n = s.read(&mut buf).unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
        assert_eq!(reply["error"], *code, "{req}");
        // The event is written before the reply; the file writer is a
        // background thread, so allow it a moment.
        let start = Instant::now();
        while audit_events(&audit).len() <= i && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(10));
        }
        let events = audit_events(&audit);
        assert_eq!(events.len(), i + 1, "one event per request: {events:?}");
        let e = &events[i];
        assert_eq!(e["peer_uid"], my_uid());
        assert_eq!(
            e["peer_gid"],
            u64::from(std::fs::metadata("/proc/self").unwrap().gid())
        );
        assert_eq!(e["peer_pid"], std::process::id());
        assert_eq!(e["code"], *code);
        assert_eq!(e["answered_by"], *source, "{e}");
        assert_eq!(e["frontend"], "socket");
        if *code == 0 {
            assert_eq!(e["agent_id"], "001");
            assert_eq!(e["agent_name"], "web-01");
            assert_eq!(e["query"], "id:001");
        }
        assert!(e["latency_ms"].as_f64().unwrap() >= 0.0);
        assert!(e.get("key").is_none());
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(audit_events(&audit).len(), cases.len(), "no extra event");
    let log = read(&d.path("keygate.log"));
    assert!(!log.contains("Key request answered."), "{log}");
    for key in demo_keys() {
        assert!(!read(&audit).contains(&key) && !log.contains(&key));
    }
}

/// `audit = false` writes no audit event anywhere; without `audit_file`
/// the events go into the diagnostic log, even at level `warn`.
#[test]
fn audit_can_be_turned_off_or_kept_in_the_log() {
    let off = Observed::start(&format!(
        "[log]\nlevel = \"debug\"\nfile = \"{{dir}}/keygate.log\"\naudit = false\n\n{}",
        file_backend("keys")
    ));
    assert_eq!(off.request("id:001")["error"], 0);
    let in_log = Observed::start(&format!(
        "[log]\nlevel = \"warn\"\nformat = \"json\"\nfile = \"{{dir}}/keygate.log\"\n\n{}",
        file_backend("keys")
    ));
    assert_eq!(in_log.request("id:001")["error"], 0);
    std::thread::sleep(Duration::from_millis(300));
    let off_log = read(&off.path("keygate.log"));
    assert!(!off_log.is_empty());
    assert!(!off_log.contains("Key request answered."), "{off_log}");
    let mut events = audit_events(&in_log.path("keygate.log"));
    // Besides the warning that the test's socket is not where Wazuh looks.
    events.retain(|e| e["target"] != "keygate::preflight");
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["message"], "Key request answered.");
    assert_eq!(events[0]["target"], "keygate::audit");
}

/// The daemon's stderr, a pipe here, carries no ANSI escape; the exec
/// one-shot writes only its JSON line, even at trace level.
#[test]
fn stderr_to_a_pipe_has_no_colour_and_exec_writes_only_json() {
    let d = Observed::start(&format!(
        "[log]\nlevel = \"debug\"\n\n{}",
        file_backend("keys")
    ));
    assert_eq!(d.request("id:001")["error"], 0);
    let start = Instant::now();
    while !read(&d.path("stderr.log")).contains("Key request answered.") {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no audit line on stderr"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = std::fs::read(d.path("stderr.log")).unwrap();
    assert!(!stderr.contains(&0x1b), "ESC in stderr");

    // No daemon on this socket: the one-shot looks up by itself.
    let dir = tempfile::tempdir().unwrap();
    client_keys(dir.path());
    let config = dir.path().join("k.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket = \"{}/none.sock\"\n[log]\nlevel = \"trace\"\n\n{}",
            dir.path().display(),
            file_backend("keys")
        ),
    )
    .unwrap();
    let out = exec(&config, &["id", "001"]);
    assert_eq!(out.json()["error"], 0, "{}", out.output);
}

/// After logrotate renames the log and the audit file, SIGUSR1 makes the
/// daemon write new lines to new files at the configured paths.
#[test]
fn sigusr1_reopens_the_log_and_audit_files() {
    let d = Observed::start(&format!(
        "[log]\nlevel = \"debug\"\nfile = \"{{dir}}/keygate.log\"\naudit_file = \"{{dir}}/audit.log\"\n\n{}",
        file_backend("keys")
    ));
    assert_eq!(d.request("id:001")["error"], 0);
    let wait_for = |path: &Path, text: &str| {
        let start = Instant::now();
        while !read(path).contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{text:?} never reached {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(&d.path("audit.log"), "\"id:001\"");
    std::fs::rename(d.path("keygate.log"), d.path("keygate.log.1")).unwrap();
    std::fs::rename(d.path("audit.log"), d.path("audit.log.1")).unwrap();
    d.signal("USR1");
    wait_for(&d.path("keygate.log"), "Log file reopened.");
    assert_eq!(d.request("id:002")["error"], 0);
    wait_for(&d.path("audit.log"), "\"id:002\"");
    assert!(!read(&d.path("audit.log")).contains("\"id:001\""));
    assert!(!read(&d.path("audit.log.1")).contains("\"id:002\""));
    assert!(!read(&d.path("keygate.log.1")).is_empty());
    assert!(!read(&d.path("keygate.log.1")).contains("Log file reopened."));
    let mode = std::fs::metadata(d.path("audit.log")).unwrap().mode() & 0o777;
    assert_eq!(mode, 0o640);
}

/// `keygate check` says where metrics are served and where the audit
/// trail goes, for each way of configuring them.
#[test]
fn check_reports_the_metrics_listener_and_the_audit_destination() {
    let dir = tempfile::tempdir().unwrap();
    client_keys(dir.path());
    let check = |sections: &str| {
        let config = dir.path().join("k.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nsocket = \"{}/k.sock\"\n{sections}\n{}",
                dir.path().display(),
                file_backend("keys")
            ),
        )
        .unwrap();
        let out = Command::new(bin())
            .arg("--config")
            .arg(&config)
            .arg("check")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        text
    };
    let text = check("[metrics]\nlisten = \"127.0.0.1:9187\"\n[log]\naudit_file = \"/var/log/keygate/audit.log\"\n");
    assert!(
        text.contains("metrics: http://127.0.0.1:9187/metrics"),
        "{text}"
    );
    assert!(
        text.contains("audit:   /var/log/keygate/audit.log (JSON lines)"),
        "{text}"
    );
    let text = check("[log]\nfile = \"/var/log/keygate/keygate.log\"\n");
    assert!(
        text.contains("metrics: off (no [metrics] section)"),
        "{text}"
    );
    assert!(
        text.contains("audit:   into the log file /var/log/keygate/keygate.log"),
        "{text}"
    );
    let text = check("[log]\naudit = false\n");
    assert!(
        text.contains("audit:   off ([log] audit = false)"),
        "{text}"
    );
    let text = check("");
    assert!(
        text.contains("audit:   into the daemon's log on stderr"),
        "{text}"
    );
}

/// The shipped `config/logrotate/keygate`, run by the real logrotate on a
/// live daemon (paths and the signal pointed at this test's daemon): the
/// rotated log and audit files keep the old
/// lines, and after the postrotate SIGUSR1 new lines land in new files.
#[test]
fn shipped_logrotate_config_rotates_a_live_daemon() {
    let shipped = repo_root().join("config/logrotate/keygate");
    let text = read(&shipped);
    let logrotate = ["/usr/sbin/logrotate", "/usr/bin/logrotate"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("logrotate is not installed (tests/setup.sh installs it)");
    // The shipped file parses (debug mode changes nothing).
    let state = tempfile::tempdir().unwrap();
    let out = Command::new(logrotate)
        .arg("-d")
        .arg("-s")
        .arg(state.path().join("status"))
        .arg(&shipped)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && !said.contains("error"), "{said}");

    let d = Observed::start(&format!(
        "[log]\nlevel = \"info\"\nfile = \"{{dir}}/keygate.log\"\naudit_file = \"{{dir}}/audit.log\"\n\n{}",
        file_backend("keys")
    ));
    assert_eq!(d.request("id:001")["error"], 0);
    let wait_for = |path: &Path, text: &str| {
        let start = Instant::now();
        while !read(path).contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{text:?} never reached {}",
                path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for(&d.path("audit.log"), "\"id:001\"");
    let local = text
        .replace("/var/log/keygate", &d.dir.path().display().to_string())
        .replace(
            "systemctl kill --kill-whom=main --signal=SIGUSR1 keygate.service",
            &format!("kill -USR1 {}", d.child.id()),
        );
    assert_ne!(local, text, "the shipped file changed: update this test");
    let conf = state.path().join("keygate");
    std::fs::write(&conf, local).unwrap();
    let out = Command::new(logrotate)
        .arg("-f")
        .arg("-s")
        .arg(state.path().join("status"))
        .arg(&conf)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // delaycompress: the first rotation is kept as .1, uncompressed.
    assert!(read(&d.path("audit.log.1")).contains("\"id:001\""));
    wait_for(&d.path("keygate.log"), "Log file reopened.");
    assert_eq!(d.request("id:002")["error"], 0);
    wait_for(&d.path("audit.log"), "\"id:002\"");
    assert!(!read(&d.path("audit.log")).contains("\"id:001\""));
    assert!(!read(&d.path("audit.log.1")).contains("\"id:002\""));
}

/// The exec one-shot answering by itself (no daemon) writes its one audit
/// event to `audit_file`, with its parent's pid (here: this test), and
/// still nothing but the JSON line on its output.
#[test]
fn exec_one_shot_audits_with_its_parent_pid() {
    let dir = tempfile::tempdir().unwrap();
    client_keys(dir.path());
    let config = dir.path().join("k.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket = \"{d}/none.sock\"\n[log]\nlevel = \"trace\"\naudit_file = \"{d}/audit.log\"\n\n{}",
            file_backend("keys"),
            d = dir.path().display()
        ),
    )
    .unwrap();
    let out = exec(&config, &["id", "001"]);
    assert_eq!(out.json()["error"], 0, "{}", out.output);
    let events = audit_events(&dir.path().join("audit.log"));
    assert_eq!(events.len(), 1, "{events:?}");
    let e = &events[0];
    assert_eq!(e["frontend"], "exec");
    assert_eq!(e["parent_pid"], std::process::id());
    assert_eq!(e["answered_by"], "keys");
    assert_eq!(e["agent_id"], "001");
    assert!(e.get("peer_uid").is_none());
    assert!(!read(&dir.path().join("audit.log")).contains(&demo_keys()[0]));
}

//! The end-to-end harness: starts the real `keygate` binary on a config in
//! a temp dir and talks to it the way Wazuh does (one request per
//! connection on the socket; exec mode with stdout and stderr on one pipe).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon's log must stay unchanged for [`Daemon::log`] to
/// take it as complete: five times the daemon's longest batching delay.
pub const LOG_SETTLED: Duration = Duration::from_millis(50);

/// The binary under test. Cargo tells the root package's integration tests
/// where it is (`CARGO_BIN_EXE_keygate`, set when it runs them); a test
/// binary started by hand finds it beside its own directory
/// (`target/<profile>/keygate` for `target/<profile>/deps/<test>`).
pub fn bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CARGO_BIN_EXE_keygate") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("keygate"))
        .unwrap_or_default();
    assert!(
        path.is_file(),
        "the keygate binary is not at {}: run the test through `cargo test` in the repository root",
        path.display()
    );
    path
}

/// A running daemon; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Daemon {
    child: Option<Child>,
    dir: tempfile::TempDir,
    socket: PathBuf,
    config: PathBuf,
    /// Variables added to the daemon's environment.
    env: Vec<(String, String)>,
}

/// A daemon that exited before its socket answered ([`Daemon::try_start`]).
#[derive(Debug)]
pub struct Refused {
    /// Its exit status.
    pub status: ExitStatus,
    /// What it wrote to stderr.
    pub stderr: String,
    /// Its log file (`keygate.log` in its directory), if it wrote one.
    pub log: String,
}

impl Daemon {
    /// Starts a daemon serving `backends_toml` ([[backend]] tables only);
    /// the harness adds [server] with a socket in a temp dir and [log] at
    /// debug level into a file there. Waits until the socket answers.
    pub fn start(backends_toml: &str) -> Daemon {
        Self::start_with("", backends_toml)
    }

    /// Like [`Daemon::start`], with extra `[server]` keys (one per line).
    pub fn start_with(server_extra: &str, backends_toml: &str) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("keygate.sock");
        let config = dir.path().join("keygate.toml");
        let text = format!(
            "[server]\nsocket = \"{}\"\n{server_extra}\n\n[log]\nlevel = \"debug\"\nfile = \"{}\"\n\n{backends_toml}\n",
            socket.display(),
            dir.path().join("keygate.log").display()
        );
        std::fs::write(&config, text).unwrap();
        let mut d = Daemon {
            child: None,
            dir,
            socket,
            config,
            env: Vec::new(),
        };
        d.spawn();
        d
    }

    /// Starts a daemon on a config the test wrote itself (`config`, in
    /// `dir`; its socket at `socket`, its `[log] file` at `keygate.log` in
    /// `dir` for [`Daemon::log`]), with `env` added to its environment.
    /// Returns the daemon once its socket answers, or what it said when it
    /// exits before that (a refused config, an unsafe socket directory).
    pub fn try_start(
        dir: tempfile::TempDir,
        config: PathBuf,
        socket: PathBuf,
        env: &[(&str, &str)],
    ) -> Result<Daemon, Refused> {
        let mut d = Daemon {
            child: None,
            dir,
            socket,
            config,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        d.start_child();
        match d.wait_serving() {
            Ok(()) => Ok(d),
            Err(status) => {
                d.child = None;
                Err(Refused {
                    status,
                    stderr: d.stderr(),
                    log: std::fs::read_to_string(d.dir.path().join("keygate.log"))
                        .unwrap_or_default(),
                })
            }
        }
    }

    /// Starts the daemon process (again, after [`Daemon::stop`]).
    pub fn spawn(&mut self) {
        self.start_child();
        self.wait_ready();
    }

    fn start_child(&mut self) {
        let stderr = std::fs::File::create(self.dir.path().join("stderr.log")).unwrap();
        let child = Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .arg("serve")
            .env_remove("KEYGATE_CONFIG")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn wait_ready(&mut self) {
        if let Err(status) = self.wait_serving() {
            panic!(
                "keygate exited with {status} before serving\nstderr:\n{}\nlog:\n{}",
                self.stderr(),
                self.log()
            );
        }
    }

    /// Waits until the socket answers (`Ok`) or the process exits (its
    /// status); panics after 20 s of neither.
    fn wait_serving(&mut self) -> Result<(), ExitStatus> {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(20) {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Err(status);
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!(
            "keygate did not open its socket within 20s\nstderr:\n{}\nlog:\n{}",
            self.stderr(),
            self.log()
        );
    }

    /// One Wazuh-style request: one send without terminator, one recv.
    pub fn request(&self, req: &str) -> serde_json::Value {
        let raw = self.request_raw(req.as_bytes());
        serde_json::from_slice(&raw).unwrap_or_else(|e| {
            panic!(
                "reply to {req:?} is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&raw)
            )
        })
    }

    /// Sends raw bytes in one write, returns what one read brings back.
    pub fn request_raw(&self, bytes: &[u8]) -> Vec<u8> {
        wazuh_request(&self.socket, bytes)
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The config file path.
    pub fn config(&self) -> &Path {
        &self.config
    }

    /// The temp dir holding config, socket and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's log file, once it has settled: the daemon writes its
    /// log in batches (up to 10 ms apart), so this waits until the file
    /// stays the same for [`LOG_SETTLED`] (at most 10 s) before returning
    /// it, so that what was logged before the call is in it.
    pub fn log(&self) -> String {
        let path = self.dir.path().join("keygate.log");
        let read = || std::fs::read_to_string(&path).unwrap_or_default();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = read();
        loop {
            std::thread::sleep(LOG_SETTLED);
            let now = read();
            if now == last || Instant::now() > deadline {
                return now;
            }
            last = now;
        }
    }

    /// What the daemon wrote to stderr.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal (`TERM`, `HUP`, ...).
    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// SIGTERM, then waits for exit (SIGKILL after 10 s); returns the status.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("daemon not running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if start.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                return child.wait().unwrap();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop();
        }
    }
}

/// One request exactly as Wazuh's client makes it.
pub fn wazuh_request(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s =
        UnixStream::connect(socket).unwrap_or_else(|e| panic!("connect {}: {e}", socket.display()));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = vec![0u8; 65536];
    let n = s.read(&mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// Output of an exec-mode run: exit status and stdout+stderr, captured
/// through ONE pipe as Wazuh does.
pub struct ExecOutput {
    /// Exit status.
    pub status: ExitStatus,
    /// stdout and stderr, interleaved.
    pub output: String,
}

impl ExecOutput {
    /// The output parsed as one JSON line.
    pub fn json(&self) -> serde_json::Value {
        assert!(
            self.output.ends_with('\n') && self.output.matches('\n').count() == 1,
            "not one line: {:?}",
            self.output
        );
        serde_json::from_str(self.output.trim_end())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.output))
    }
}

/// Runs `keygate --config CONFIG ARGS...` as Wazuh's exec mode does: no
/// shell, stdin /dev/null, stdout and stderr on one pipe.
pub fn exec(config: &Path, args: &[&str]) -> ExecOutput {
    let mut cmd = Command::new(bin());
    cmd.arg("--config").arg(config).args(args);
    exec_cmd(cmd)
}

/// Runs a prepared command with stdout and stderr on one pipe.
pub fn exec_cmd(mut cmd: Command) -> ExecOutput {
    let (mut reader, writer) = std::io::pipe().unwrap();
    cmd.env_remove("KEYGATE_CONFIG")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap())
        .stderr(writer);
    let mut child = cmd.spawn().unwrap();
    drop(cmd); // closes our copies of the write end
    let mut output = String::new();
    reader.read_to_string(&mut output).unwrap();
    let status = child.wait().unwrap();
    ExecOutput { status, output }
}

/// The quick start's config (`config/keygate.toml` and its demo data in
/// `config/demo/`) copied into a temp dir, its socket moved there: a test
/// runs the default config without ever asking (or being answered by) a
/// daemon the quick start left running on `config/keygate.sock`.
pub struct DemoConfig {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl DemoConfig {
    /// Copies the config and the demo data; the socket becomes
    /// `<temp dir>/keygate.sock`.
    pub fn new() -> DemoConfig {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::repo_root().join("config");
        let text = std::fs::read_to_string(root.join("keygate.toml")).unwrap();
        let socket = dir.path().join("keygate.sock");
        let mut moved = 0;
        let text: String = text
            .lines()
            .map(|line| {
                if line.starts_with("socket = ") {
                    moved += 1;
                    format!("socket = \"{}\"\n", socket.display())
                } else {
                    format!("{line}\n")
                }
            })
            .collect();
        assert_eq!(moved, 1, "config/keygate.toml has no one `socket = ` line");
        let config = dir.path().join("keygate.toml");
        std::fs::write(&config, text).unwrap();
        std::fs::create_dir(dir.path().join("demo")).unwrap();
        for entry in std::fs::read_dir(root.join("demo")).unwrap() {
            let from = entry.unwrap().path();
            std::fs::copy(
                &from,
                dir.path().join("demo").join(from.file_name().unwrap()),
            )
            .unwrap();
        }
        DemoConfig { dir, config }
    }

    /// The copied config file.
    pub fn path(&self) -> &Path {
        &self.config
    }

    /// The temp dir holding it.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Default for DemoConfig {
    fn default() -> Self {
        Self::new()
    }
}

//! A private `redis-server` for one test, on a free loopback port, with a
//! password and `docker/redis/agents.redis` loaded; killed on drop (also
//! when the test panics). The shared Redis on 6379 is never touched.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{find_binary, fixture, free_port, kill, wait_for_port};

/// Password the test Redis requires (`requirepass`).
pub const REDIS_PASSWORD: &str = "redis-test-password";

/// A private `redis-server` with the fixture loaded and a password set.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port and loads `docker/redis/agents.redis`.
    pub fn start() -> Self {
        let mut s = Self {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
        };
        s.restart();
        s
    }

    /// `redis://127.0.0.1:PORT/0` (no password: tests use password_file).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A file holding the password, for `password_file`.
    pub fn password_file(&self) -> PathBuf {
        let p = self.dir.path().join("redis.pass");
        std::fs::write(&p, format!("{REDIS_PASSWORD}\n")).unwrap();
        p
    }

    /// Kills the server (its data is in memory only and goes with it).
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server again on the same port and reloads the fixture.
    pub fn restart(&mut self) {
        self.stop();
        let bin = find_binary(&["redis-server", "/usr/bin/redis-server"]);
        let log = self.dir.path().join("redis.log");
        let mut child = Command::new(bin)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--requirepass", REDIS_PASSWORD])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start redis-server");
        wait_for_port(self.port, &mut child, "redis-server", &log);
        self.child = Some(child);
        self.load(&fixture("docker/redis/agents.redis"));
    }

    /// Runs a command file through `redis-cli`, failing on any error reply.
    pub fn load(&self, file: &Path) {
        let cli = find_binary(&["redis-cli", "/usr/bin/redis-cli"]);
        let out = Command::new(cli)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-a", REDIS_PASSWORD, "--no-auth-warning"])
            .stdin(std::fs::File::open(file).unwrap())
            .output()
            .expect("cannot run redis-cli");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success()
                && !text
                    .lines()
                    .any(|l| l.starts_with("ERR") || l.starts_with("WRONG")),
            "loading {} failed: {text}{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

//! Private Redis and OpenLDAP servers for tests: each test starts its own
//! `redis-server` / `slapd` on a free loopback port, loaded from the same
//! fixture files `docker/compose.yaml` uses, and kills it on drop (also when
//! the test panics). The shared Redis on 6379 is never touched.
//!
//! Missing binaries fail the test loudly: `tests/setup.sh` installs them
//! (Debian's `redis-server`, `slapd`, `ldap-utils`).
//!
//! Used by `crates/keygate-backends/tests/redis_ldap.rs` and, through a
//! `#[path]` module, by the root `tests/redis_ldap.rs`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Password the test Redis requires (`requirepass`).
pub const REDIS_PASSWORD: &str = "redis-test-password";
/// DN and password of the LDAP fixture's service account.
pub const LDAP_BIND_DN: &str = "cn=keygate,ou=services,dc=example,dc=org";
pub const LDAP_PASSWORD: &str = "keygate-test-password";

/// The repository's root (the directory holding `docker/`).
pub fn repo_root() -> PathBuf {
    let mut dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    loop {
        if dir.join("docker/ldap/agents.ldif").exists() {
            return dir;
        }
        assert!(dir.pop(), "cannot find docker/ above CARGO_MANIFEST_DIR");
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn find_binary(candidates: &[&str]) -> PathBuf {
    for c in candidates {
        let p = Path::new(c);
        if p.is_absolute() && p.exists() {
            return p.to_owned();
        }
        if !p.is_absolute() {
            if let Ok(path) = std::env::var("PATH") {
                for dir in std::env::split_paths(&path) {
                    if dir.join(c).exists() {
                        return dir.join(c);
                    }
                }
            }
        }
    }
    panic!(
        "none of {candidates:?} is installed: run `bash tests/setup.sh` (installs Debian's redis-server, slapd and ldap-utils)"
    );
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "{what} exited with {status} before listening on {port}: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 15s");
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

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
        self.load(&repo_root().join("docker/redis/agents.redis"));
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

/// A private `slapd` with `docker/ldap/agents.ldif` loaded by `slapadd`.
pub struct Slapd {
    child: Option<Child>,
    port: u16,
    /// The ldaps:// port, when started with TLS.
    tls_port: Option<u16>,
    dir: tempfile::TempDir,
}

impl Slapd {
    /// Generates slapd.conf from `docker/ldap/slapd.conf.in`, loads the
    /// fixture and starts slapd on a free port.
    pub fn start() -> Self {
        Self::start_inner(false)
    }

    /// Like [`Slapd::start`], with a certificate for 127.0.0.1 signed by a
    /// fresh test CA (see [`Slapd::ca_file`]): StartTLS on the ldap:// port
    /// and TLS on a second, ldaps:// port. Needs the `openssl` command.
    pub fn start_with_tls() -> Self {
        Self::start_inner(true)
    }

    fn start_inner(tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = repo_root();
        let template = std::fs::read_to_string(root.join("docker/ldap/slapd.conf.in")).unwrap();
        let mut conf = template.replace("@DIR@", dir.path().to_str().unwrap());
        if tls {
            make_certificates(dir.path());
            let d = dir.path().display();
            // Global TLS settings must come before the first `database`.
            conf = conf.replacen(
                "\ndatabase",
                &format!(
                    "\nTLSCACertificateFile {d}/ca.pem\nTLSCertificateFile {d}/server.pem\nTLSCertificateKeyFile {d}/server.key\n\ndatabase"
                ),
                1,
            );
        }
        std::fs::write(dir.path().join("slapd.conf"), conf).unwrap();
        std::fs::create_dir(dir.path().join("db")).unwrap();
        let slapadd = find_binary(&["/usr/sbin/slapadd", "slapadd"]);
        let out = Command::new(slapadd)
            .arg("-f")
            .arg(dir.path().join("slapd.conf"))
            .arg("-l")
            .arg(root.join("docker/ldap/agents.ldif"))
            .output()
            .expect("cannot run slapadd");
        assert!(
            out.status.success(),
            "slapadd failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut s = Self {
            child: None,
            port: free_port(),
            tls_port: tls.then(free_port),
            dir,
        };
        s.restart();
        s
    }

    /// The test CA's certificate (PEM), for `ca_file`.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// `ldaps://127.0.0.1:TLS_PORT` (only after [`Slapd::start_with_tls`]).
    pub fn ldaps_url(&self) -> String {
        format!(
            "ldaps://127.0.0.1:{}",
            self.tls_port.expect("started without TLS")
        )
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A file holding the service account's password, for `password_file`.
    pub fn password_file(&self) -> PathBuf {
        let p = self.dir.path().join("ldap.pass");
        std::fs::write(&p, format!("{LDAP_PASSWORD}\n")).unwrap();
        p
    }

    /// Kills slapd; the database stays on disk for [`Slapd::restart`].
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts slapd (again) on the same port with the same database.
    pub fn restart(&mut self) {
        self.stop();
        let slapd = find_binary(&["/usr/sbin/slapd", "slapd"]);
        let log = self.dir.path().join("slapd.log");
        let mut urls = format!("ldap://127.0.0.1:{}/", self.port);
        if let Some(p) = self.tls_port {
            urls.push_str(&format!(" ldaps://127.0.0.1:{p}/"));
        }
        let mut child = Command::new(slapd)
            .arg("-f")
            .arg(self.dir.path().join("slapd.conf"))
            .arg("-h")
            .arg(urls)
            .args(["-d", "0"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::from(
                std::fs::File::create(self.dir.path().join("slapd.err")).unwrap(),
            ))
            .spawn()
            .expect("cannot start slapd");
        wait_for_port(
            self.port,
            &mut child,
            "slapd",
            &self.dir.path().join("slapd.err"),
        );
        self.child = Some(child);
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Writes `ca.pem`, `ca.key`, `server.pem` and `server.key` into `dir`: a
/// throwaway CA and a server certificate for 127.0.0.1/localhost it signs.
pub fn make_certificates(dir: &Path) {
    let openssl = find_binary(&["openssl", "/usr/bin/openssl"]);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName = IP:127.0.0.1, DNS:localhost\nbasicConstraints = CA:FALSE\n\
         keyUsage = digitalSignature, keyEncipherment\nextendedKeyUsage = serverAuth\n",
    )
    .unwrap();
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    for args in [
        &[
            "req",
            "-x509",
            "-days",
            "2",
            "-subj",
            "/CN=keygate test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ][..],
        &[
            "req",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ][..],
    ] {
        let out = Command::new(&openssl)
            .current_dir(dir)
            .args(&args[..1])
            .args(ec)
            .args(&args[1..])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = Command::new(&openssl)
        .current_dir(dir)
        .args([
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
        ])
        .args([
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.pem",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl x509: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

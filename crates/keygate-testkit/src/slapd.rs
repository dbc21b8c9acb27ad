//! A private OpenLDAP `slapd` for one test, on a free loopback port, with
//! `docker/ldap/agents.ldif` loaded by `slapadd` (optionally with TLS from
//! a throwaway CA); killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use crate::{find_binary, fixture, free_port, kill, wait_for_port};

/// DN of the LDAP fixture's service account.
pub const LDAP_BIND_DN: &str = "cn=keygate,ou=services,dc=example,dc=org";
/// Password of the LDAP fixture's service account.
pub const LDAP_PASSWORD: &str = "keygate-test-password";

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
        let template = std::fs::read_to_string(fixture("docker/ldap/slapd.conf.in")).unwrap();
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
            .arg(fixture("docker/ldap/agents.ldif"))
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

    /// The ldap:// port.
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

//! LDAP with several `urls`: when the first server dies, connections move
//! to the second; once the first has been healthy for `failback_after`,
//! they move back (keygate does not stay on a fallback forever), and
//! `keygate backends` shows which server is in use.
#![cfg(feature = "ldap")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keygate_testkit::daemon::{bin, Daemon};
use keygate_testkit::slapd::{Slapd, LDAP_BIND_DN};

/// Gives agent 001 another key on `server` (as the directory's root).
fn change_key(server: &Slapd, key: &str) {
    let mut child = Command::new("ldapmodify")
        .args([
            "-x",
            "-H",
            &server.url(),
            "-D",
            "cn=admin,dc=example,dc=org",
            "-w",
            "admin-test-password",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("ldapmodify (ldap-utils) is needed");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("dn: cn=web-01,ou=agents,dc=example,dc=org\nchangetype: modify\nreplace: description\ndescription: {key}\n").as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "ldapmodify failed");
}

#[test]
fn ldap_urls_fail_over_and_fail_back_after_failback_after() {
    let mut first = Slapd::start();
    let second = Slapd::start();
    change_key(&second, "key-from-the-second-server");
    let d = Daemon::start(&format!(
        "[cache]\nenabled = false\n\n[[backend]]\nname = \"directory\"\ntype = \"ldap\"\nurls = [\"{}\", \"{}\"]\n\
         bind_dn = \"{LDAP_BIND_DN}\"\npassword_file = \"{}\"\nbase_dn = \"ou=agents,dc=example,dc=org\"\n\
         timeout = \"2s\"\npool_size = 2\nfailback_after = \"1s\"\nmax_retry_interval = \"1s\"\n",
        first.url(),
        second.url(),
        first.password_file().display()
    ));
    let key = |d: &Daemon| {
        d.request("id:001")["data"]["key"]
            .as_str()
            .map(str::to_owned)
    };
    let backends = |d: &Daemon| {
        let out = Command::new(bin())
            .arg("--config")
            .arg(d.config())
            .arg("backends")
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let original = key(&d).expect("served by the first server");
    assert_ne!(original, "key-from-the-second-server");
    assert!(backends(&d).contains("host 1 of 2"));

    first.stop();
    let started = Instant::now();
    while key(&d).as_deref() != Some("key-from-the-second-server") {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no failover:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(backends(&d).contains("host 2 of 2"), "{}", backends(&d));

    first.restart();
    let restarted = Instant::now();
    while key(&d).as_deref() != Some(original.as_str()) {
        assert!(
            restarted.elapsed() < Duration::from_secs(20),
            "no failback:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        restarted.elapsed() >= Duration::from_secs(1),
        "moved back before failback_after"
    );
    assert!(d.log().contains("First host healthy again"), "{}", d.log());
    assert!(backends(&d).contains("host 1 of 2"), "{}", backends(&d));
}

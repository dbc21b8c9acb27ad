//! The Redis and LDAP backends end to end: the real `keygate serve` against
//! private `redis-server` and `slapd` instances loaded from the `docker/`
//! fixtures, asked exactly as Wazuh asks.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use keygate_testkit::daemon::Daemon;
use keygate_testkit::free_port;
use keygate_testkit::redis::{RedisServer, REDIS_PASSWORD};
use keygate_testkit::slapd::{Slapd, LDAP_BIND_DN, LDAP_PASSWORD};

fn redis_backend(server: &RedisServer) -> String {
    format!(
        "[[backend]]\nname = \"cache-tier\"\ntype = \"redis\"\nurl = \"{}\"\npassword_file = \"{}\"\ntimeout = \"1s\"\n",
        server.url(),
        server.password_file().display()
    )
}

fn ldap_backend(urls: &[String], server: &Slapd) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    format!(
        "[[backend]]\nname = \"directory\"\ntype = \"ldap\"\nurls = [{}]\nbind_dn = \"{LDAP_BIND_DN}\"\n\
         password_file = \"{}\"\nbase_dn = \"ou=agents,dc=example,dc=org\"\nscope = \"sub\"\n\
         timeout = \"1s\"\npool_size = 2\n\
         filter_by_id = \"(&(objectClass=device)(serialNumber={{id}}))\"\n\
         filter_by_ip = \"(&(objectClass=ipHost)(ipHostNumber={{ip}}))\"\n\
         [backend.attributes]\nid = \"serialNumber\"\nname = \"cn\"\nip = \"ipHostNumber\"\nkey = \"description\"\n",
        urls.join(", "),
        server.password_file().display()
    )
}

/// A daemon without the answer cache: every request reaches the backend,
/// so outages show as 2 instead of being answered from stale entries.
fn start(backends: &str) -> Daemon {
    Daemon::start(&format!("[cache]\nenabled = false\n\n{backends}"))
}

fn error(d: &Daemon, req: &str) -> i64 {
    d.request(req)["error"].as_i64().unwrap()
}

/// What both backends must answer for the shared fixture data.
fn assert_fixture_answers(d: &Daemon, bad: &[&str]) {
    let r = d.request("id:001");
    assert_eq!(r["error"], 0, "{r}");
    assert_eq!(r["data"]["name"], "web-01");
    assert_eq!(r["data"]["ip"], "10.0.0.1");
    assert_eq!(d.request("ip:10.0.0.1")["data"]["id"], "001");
    assert_eq!(d.request("id:010")["data"]["ip"], "10.1.0.0/24");
    assert_eq!(d.request("ip:2001:db8::11")["data"]["name"], "v6-host");
    assert_eq!(error(d, "id:099"), 4);
    for req in bad {
        let r = d.request(req);
        assert_eq!(r["error"], 5, "{req}: {r}");
    }
    // Filter or Redis metacharacters never get past the request parser.
    for req in [
        "id:*)(cn=*",
        "ip:*)(uid=*",
        "id:001)(x=1",
        "ip:10.0.0.1*",
        "id:*",
    ] {
        assert_eq!(error(d, req), 3, "{req}");
    }
    let log = d.log();
    for secret in [
        REDIS_PASSWORD,
        LDAP_PASSWORD,
        "0b9d9f06cc8cf44765a12c0aa01a6e2217130979f4dfeda24e22b0af7e8d237e",
    ] {
        assert!(!log.contains(secret), "the log shows a secret");
    }
}

#[test]
fn redis_lookups_bad_entries_and_hostile_requests() {
    let server = RedisServer::start();
    let d = start(&redis_backend(&server));
    assert_fixture_answers(
        &d,
        &[
            "id:002",
            "id:003",
            "id:004",
            "ip:10.0.0.9",
            "id:007",
            "ip:10.0.0.66",
            "ip:10.0.0.77",
            "id:008",
        ],
    );
    assert_eq!(d.request("ip:10.1.0.7")["data"]["id"], "010");
}

#[test]
fn ldap_lookups_bad_entries_and_hostile_requests() {
    let server = Slapd::start();
    let d = start(&ldap_backend(&[server.url()], &server));
    assert_fixture_answers(
        &d,
        &[
            "id:002",
            "id:003",
            "id:004",
            "ip:10.0.0.9",
            "id:007",
            "id:008",
        ],
    );
}

#[test]
fn ldap_first_url_dead_the_second_answers() {
    let server = Slapd::start();
    let dead = format!("ldap://127.0.0.1:{}", free_port());
    let d = start(&ldap_backend(&[dead, server.url()], &server));
    for _ in 0..4 {
        assert_eq!(error(&d, "id:001"), 0);
    }
}

/// Asks `req` until it answers 0 (within 15 s); returns the codes seen.
fn until_found(d: &Daemon, req: &str) -> Vec<i64> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let e = error(d, req);
        seen.push(e);
        if e == 0 {
            return seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "no recovery: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn redis_killed_and_restarted_the_same_daemon_recovers() {
    let mut server = RedisServer::start();
    let d = start(&redis_backend(&server));
    assert_eq!(error(&d, "id:001"), 0);
    server.stop();
    for _ in 0..3 {
        assert_eq!(error(&d, "id:001"), 2);
    }
    server.restart();
    let seen = until_found(&d, "ip:10.0.0.1");
    assert!(seen.iter().all(|&e| e == 0 || e == 2), "{seen:?}");
    assert_eq!(error(&d, "id:001"), 0);
}

/// `urls` end to end, with the password inside both URLs: the first Redis
/// killed, the daemon answers from the second (which holds another name for
/// agent 001); restarted, traffic goes back to the first after
/// `failback_after`. Both switches are logged with the backend's name and
/// the host's index, and the log never shows a URL or the password.
#[test]
fn redis_urls_fail_over_and_back_and_log_the_switches_without_the_password() {
    let mut first = RedisServer::start();
    let second = RedisServer::start();
    let extra = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(extra.path(), "HSET wazuh:agent:001 name web-01-b\n").unwrap();
    second.load(extra.path());
    let with_password =
        |s: &RedisServer| format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}/0", s.port());
    let d = start(&format!(
        "[[backend]]\nname = \"cache-tier\"\ntype = \"redis\"\nurls = [\"{}\", \"{}\"]\n\
         failback_after = \"1s\"\ntimeout = \"1s\"\n",
        with_password(&first),
        with_password(&second)
    ));
    let name = |d: &Daemon| {
        let r = d.request("id:001");
        assert_eq!(r["error"], 0, "{r}");
        r["data"]["name"].as_str().unwrap().to_owned()
    };
    assert_eq!(name(&d), "web-01");
    first.stop();
    for _ in 0..3 {
        assert_eq!(name(&d), "web-01-b");
    }
    first.restart();
    let started = Instant::now();
    while name(&d) != "web-01" {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "traffic never went back to the first host"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = d.log();
    assert!(
        log.contains("Host failed; moving on to the next one. backend=cache-tier failed_host=1 active_host=2"),
        "{log}"
    );
    assert!(log.contains("First host healthy again"), "{log}");
    assert!(!log.contains(REDIS_PASSWORD), "the log shows the password");
    assert!(!log.contains("redis://"), "the log shows a URL: {log}");
}

#[test]
fn slapd_killed_and_restarted_the_same_daemon_recovers() {
    let mut server = Slapd::start();
    let d = start(&ldap_backend(&[server.url()], &server));
    assert_eq!(error(&d, "id:001"), 0);
    assert_eq!(error(&d, "id:001"), 0);
    server.stop();
    for _ in 0..3 {
        assert_eq!(error(&d, "id:001"), 2);
    }
    server.restart();
    let seen = until_found(&d, "id:001");
    assert!(seen.iter().all(|&e| e == 0 || e == 2), "{seen:?}");
    for _ in 0..4 {
        assert_eq!(error(&d, "ip:10.0.0.1"), 0);
    }
}

fn burst(d: &Daemon) {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..50)
            .map(|i| {
                s.spawn(move || {
                    let req = if i % 2 == 0 { "id:001" } else { "ip:10.0.0.1" };
                    (req, d.request(req))
                })
            })
            .collect();
        for h in handles {
            let (req, r) = h.join().unwrap();
            assert_eq!(r["error"], 0, "{req}: {r}");
        }
    });
}

#[test]
fn redis_and_ldap_answer_a_50_way_concurrent_burst_without_errors() {
    let redis = RedisServer::start();
    let slapd = Slapd::start();
    burst(&start(&redis_backend(&redis)));
    burst(&start(&ldap_backend(&[slapd.url()], &slapd)));
}

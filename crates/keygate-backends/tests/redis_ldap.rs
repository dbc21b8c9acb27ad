//! The Redis and LDAP backends against real, private servers (started by
//! keygate-testkit from the `docker/` fixtures): lookups, every bad
//! entry answering 5, outages answering 2, recovery after a restart on the
//! same port, and a concurrent burst.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use keygate_backends::ldap::LdapConfig;
use keygate_backends::redis::RedisConfig;
use keygate_backends::{BackendSpec, Problems};
use keygate_core::{AgentRecord, BackendError, ErrorCode, KeyBackend};
use keygate_testkit::redis::{RedisServer, REDIS_PASSWORD};
use keygate_testkit::slapd::{self, Slapd, LDAP_BIND_DN, LDAP_PASSWORD};
use keygate_testkit::{free_port, q};

async fn found(b: &dyn KeyBackend, req: &str) -> AgentRecord {
    match b.lookup(&q(req)).await {
        Ok(Some(r)) => {
            r.check_matches(&q(req)).unwrap();
            r
        }
        other => panic!("{req}: expected a record, got {other:?}"),
    }
}

/// The code a request answers with once the chain's own check (the record
/// must match the request) is applied, as the daemon does.
async fn code(b: &dyn KeyBackend, req: &str) -> ErrorCode {
    match b.lookup(&q(req)).await {
        Ok(Some(r)) => match r.check_matches(&q(req)) {
            Ok(()) => ErrorCode::Found,
            Err(e) => BackendError::from(e).code(),
        },
        Ok(None) => ErrorCode::NotFound,
        Err(e) => e.code(),
    }
}

fn validated<S: BackendSpec>(spec: &S) {
    let mut list = Vec::new();
    spec.validate(&mut Problems::new("backend[0]", &mut list));
    assert!(list.is_empty(), "{list:?}");
}

// --- Redis -------------------------------------------------------------------

fn redis_config(server: &RedisServer) -> RedisConfig {
    let c: RedisConfig = serde_json::from_value(serde_json::json!({
        "url": server.url(),
        "password_file": server.password_file(),
    }))
    .unwrap();
    validated(&c);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_finds_agents_by_id_and_by_ip_including_cidr_and_ipv6() {
    let server = RedisServer::start();
    let b = redis_config(&server).build("cache").await.unwrap();
    let r = found(&*b, "id:001").await;
    assert_eq!((r.name.as_str(), r.ip.as_str()), ("web-01", "10.0.0.1"));
    assert_eq!(found(&*b, "ip:10.0.0.1").await.id.as_str(), "001");
    assert_eq!(found(&*b, "id:010").await.ip.as_str(), "10.1.0.0/24");
    assert_eq!(found(&*b, "ip:10.1.0.7").await.name.as_str(), "branch-net");
    assert_eq!(found(&*b, "ip:2001:DB8:0::11").await.id.as_str(), "011");
    assert_eq!(found(&*b, "id:012").await.ip.as_str(), "any");
    assert!(b.lookup(&q("id:099")).await.unwrap().is_none());
    assert!(b.lookup(&q("ip:10.9.9.9")).await.unwrap().is_none());
    b.health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bad_entries_answer_5() {
    let server = RedisServer::start();
    let b = redis_config(&server).build("cache").await.unwrap();
    for req in [
        "id:002",       // name with a space
        "ip:10.0.0.2",  // same, through the address index
        "id:003",       // invalid ip
        "id:004",       // hash carries another id
        "ip:10.0.0.9",  // index names an agent with another address
        "id:007",       // no key field
        "ip:10.0.0.66", // index names an id with no hash
        "ip:10.0.0.77", // index holds something that is not an id
        "id:008",       // a string where the hash should be
    ] {
        assert_eq!(code(&*b, req).await, ErrorCode::InvalidRecord, "{req}");
    }
}

/// `key_by_id`, `key_by_ip` and `[backend.fields]` select another layout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_custom_key_templates_and_field_names() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("extra.redis");
    std::fs::write(
        &extra,
        "HSET site:a:021 agent_id 021 agent_name lab-21 agent_ip 10.3.0.21 agent_key k21\n\
         SET site:by-ip:10.3.0.21 021\n",
    )
    .unwrap();
    server.load(&extra);
    let c: RedisConfig = serde_json::from_value(serde_json::json!({
        "url": server.url(),
        "password_file": server.password_file(),
        "key_by_id": "site:a:{id}",
        "key_by_ip": "site:by-ip:{ip}",
        "fields": {"id": "agent_id", "name": "agent_name", "ip": "agent_ip", "key": "agent_key"},
    }))
    .unwrap();
    validated(&c);
    let b = c.build("cache").await.unwrap();
    assert_eq!(found(&*b, "ip:10.3.0.21").await.name.as_str(), "lab-21");
    assert_eq!(found(&*b, "id:021").await.key.expose(), "k21");
}

/// A wrong or missing password is a refused login: a configuration error
/// (6, not an outage, served stale by the cache) that names no secret, and
/// it does not hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_wrong_password_is_reported_without_the_password() {
    let server = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "not-the-password\n").unwrap();
    let c: RedisConfig = serde_json::from_value(serde_json::json!({
        "url": format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}/0", server.port()),
        "password_file": pw,
    }))
    .unwrap();
    assert!(!format!("{c:?}").contains(REDIS_PASSWORD));
    let b = c.build("cache").await.unwrap();
    let e = b.lookup(&q("id:001")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.is_login_refused(), "{e}");
    let text = e.to_string();
    assert!(
        !text.contains("not-the-password") && !text.contains(REDIS_PASSWORD),
        "{text}"
    );
    let mut anonymous = redis_config(&server);
    anonymous.hosts.password_file = None;
    let e = anonymous
        .build("cache")
        .await
        .unwrap()
        .lookup(&q("id:001"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.is_login_refused(), "{e}");
}

/// Retries `req` until it answers (0) or `limit` passes; returns the codes
/// seen on the way.
async fn until_found(b: &dyn KeyBackend, req: &str, limit: Duration) -> Vec<ErrorCode> {
    let start = Instant::now();
    let mut seen = Vec::new();
    loop {
        let c = code(b, req).await;
        seen.push(c);
        if c == ErrorCode::Found {
            return seen;
        }
        assert!(start.elapsed() < limit, "{req} did not recover: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_answers_2_and_the_same_backend_recovers_after_a_restart() {
    let mut server = RedisServer::start();
    let b = redis_config(&server).build("cache").await.unwrap();
    found(&*b, "id:001").await;
    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(code(&*b, "id:001").await, ErrorCode::Unavailable);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an outage must not hang"
        );
    }
    server.restart();
    let seen = until_found(&*b, "ip:10.0.0.1", Duration::from_secs(10)).await;
    assert!(
        seen.iter()
            .all(|c| matches!(c, ErrorCode::Found | ErrorCode::Unavailable)),
        "{seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_starts_while_down_and_connects_when_the_server_appears() {
    let mut server = RedisServer::start();
    server.stop();
    let b = redis_config(&server).build("cache").await.unwrap();
    assert_eq!(code(&*b, "id:001").await, ErrorCode::Unavailable);
    server.restart();
    until_found(&*b, "id:001", Duration::from_secs(10)).await;
}

/// Two private servers for `urls`: the second holds another name for agent
/// 001 (`web-01-b`), so each answer shows which host gave it.
fn redis_pair() -> (RedisServer, RedisServer) {
    let first = RedisServer::start();
    let second = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let extra = dir.path().join("second.redis");
    std::fs::write(&extra, "HSET wazuh:agent:001 name web-01-b\n").unwrap();
    second.load(&extra);
    (first, second)
}

/// `urls` with one `password_file` (applied to every host) and `failback_after`.
fn redis_urls_config(first: &RedisServer, second: &RedisServer, failback: &str) -> RedisConfig {
    let c: RedisConfig = serde_json::from_value(serde_json::json!({
        "urls": [first.url(), second.url()],
        "password_file": first.password_file(),
        "failback_after": failback,
    }))
    .unwrap();
    validated(&c);
    c
}

async fn name_of(b: &dyn KeyBackend, req: &str) -> String {
    found(b, req).await.name.as_str().to_owned()
}

/// The first host killed: the very next lookups (by id and by ip) answer
/// from the second host within the same request, quickly; the first host
/// restarted: traffic goes back to it, but only after `failback_after`
/// (1s) of health, and every answer on the way is a good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_urls_fail_over_to_the_second_host_and_fail_back_after_failback_after() {
    let (mut first, second) = redis_pair();
    let b = redis_urls_config(&first, &second, "1s")
        .build("cache")
        .await
        .unwrap();
    assert_eq!(name_of(&*b, "id:001").await, "web-01");
    first.stop();
    for req in ["id:001", "ip:10.0.0.1", "id:001"] {
        let started = Instant::now();
        assert_eq!(name_of(&*b, req).await, "web-01-b", "{req}");
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{req} took {:?}",
            started.elapsed()
        );
    }
    b.health().await.unwrap();
    // Stays on the second host while the first is down.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(name_of(&*b, "id:001").await, "web-01-b");

    let restarted = Instant::now();
    first.restart();
    let mut seen = Vec::new();
    loop {
        let name = name_of(&*b, "id:001").await;
        if name == "web-01" {
            break;
        }
        assert_eq!(name, "web-01-b");
        seen.push(name);
        assert!(
            restarted.elapsed() < Duration::from_secs(15),
            "traffic never went back to the first host"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        restarted.elapsed() >= Duration::from_secs(1),
        "failed back after {:?}, before failback_after",
        restarted.elapsed()
    );
    assert!(
        !seen.is_empty(),
        "the second host never answered after the restart"
    );
    // And it stays there.
    for _ in 0..5 {
        assert_eq!(name_of(&*b, "id:001").await, "web-01");
    }
}

/// A first host that is down when keygate starts is skipped at once; with
/// both down the lookup answers 2 without hanging, and a single `url`
/// keeps working as one host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_urls_skip_a_host_down_at_start_and_answer_2_when_all_are_down() {
    let (mut first, mut second) = redis_pair();
    first.stop();
    let b = redis_urls_config(&first, &second, "5m")
        .build("cache")
        .await
        .unwrap();
    assert_eq!(name_of(&*b, "id:001").await, "web-01-b");
    assert_eq!(found(&*b, "ip:10.0.0.1").await.id.as_str(), "001");
    second.stop();
    let started = Instant::now();
    assert_eq!(code(&*b, "id:001").await, ErrorCode::Unavailable);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "an outage must not hang"
    );
    second.restart();
    until_found(&*b, "id:001", Duration::from_secs(10)).await;
}

/// A refused connection is the fastest failure there is: the FIRST
/// request to a backend whose first host refuses connections is answered
/// by the second host, inside the 2 s lookup deadline keygate puts around
/// every backend, and the second host is the active one from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refused_first_host_is_skipped_within_the_first_request() {
    let server = RedisServer::start();
    let c: RedisConfig = serde_json::from_value(serde_json::json!({
        "urls": ["redis://127.0.0.1:1/0", server.url()],
        "password_file": server.password_file(),
    }))
    .unwrap();
    let b =
        keygate_core::TimeoutLayer::new(c.build("cache").await.unwrap(), Duration::from_secs(2));
    assert_eq!(found(&b, "id:001").await.name.as_str(), "web-01");
    let host = b.current_host().unwrap();
    assert!(
        host.starts_with("host 2 of 2: redis://127.0.0.1:"),
        "{host}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_answers_a_50_way_concurrent_burst_without_errors() {
    let server = RedisServer::start();
    let b: Arc<dyn KeyBackend> = redis_config(&server).build("cache").await.unwrap();
    burst(b).await;
}

async fn burst(b: Arc<dyn KeyBackend>) {
    let reqs = [
        "id:001",
        "ip:10.0.0.1",
        "id:010",
        "ip:2001:db8::11",
        "id:099",
    ];
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let b = b.clone();
            let req = reqs[i % reqs.len()];
            tokio::spawn(async move { (req, code(&*b, req).await) })
        })
        .collect();
    for t in tasks {
        let (req, c) = t.await.unwrap();
        let want = if req == "id:099" {
            ErrorCode::NotFound
        } else {
            ErrorCode::Found
        };
        assert_eq!(c, want, "{req}");
    }
}

// --- LDAP ----------------------------------------------------------------------

fn ldap_config(urls: Vec<String>, server: &Slapd) -> LdapConfig {
    let c: LdapConfig = serde_json::from_value(serde_json::json!({
        "urls": urls,
        "bind_dn": LDAP_BIND_DN,
        "password_file": server.password_file(),
        "base_dn": "ou=agents,dc=example,dc=org",
        "pool_size": 2,
    }))
    .unwrap();
    validated(&c);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_finds_agents_by_id_and_by_ip_with_the_default_mapping() {
    let server = Slapd::start();
    let b = ldap_config(vec![server.url()], &server)
        .build("dir")
        .await
        .unwrap();
    let r = found(&*b, "id:001").await;
    assert_eq!((r.name.as_str(), r.ip.as_str()), ("web-01", "10.0.0.1"));
    assert_eq!(found(&*b, "ip:10.0.0.1").await.id.as_str(), "001");
    assert_eq!(found(&*b, "id:010").await.ip.as_str(), "10.1.0.0/24");
    assert_eq!(found(&*b, "ip:2001:db8::11").await.name.as_str(), "v6-host");
    assert_eq!(found(&*b, "id:012").await.ip.as_str(), "any");
    assert!(b.lookup(&q("id:099")).await.unwrap().is_none());
    assert!(b.lookup(&q("ip:10.9.9.9")).await.unwrap().is_none());
    b.health().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_bad_entries_answer_5() {
    let server = Slapd::start();
    let b = ldap_config(vec![server.url()], &server)
        .build("dir")
        .await
        .unwrap();
    for req in [
        "id:002",      // name with a space
        "ip:10.0.0.2", // same, by address
        "id:003",      // invalid ip
        "id:004",      // two entries for one id
        "ip:10.0.0.9", // two entries for one ip
        "id:007",      // no key attribute
        "id:008",      // two different keys
    ] {
        assert_eq!(code(&*b, req).await, ErrorCode::InvalidRecord, "{req}");
    }
    assert!(matches!(
        b.lookup(&q("id:004")).await,
        Err(BackendError::Ambiguous)
    ));
}

/// The alternative, inetOrgPerson-style mapping documented in README.md.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_inetorgperson_mapping() {
    let server = Slapd::start();
    let c: LdapConfig = serde_json::from_value(serde_json::json!({
        "urls": [server.url()],
        "bind_dn": LDAP_BIND_DN,
        "password_file": server.password_file(),
        "base_dn": "ou=agent-people,dc=example,dc=org",
        "scope": "one",
        "filter_by_id": "(&(objectClass=inetOrgPerson)(employeeNumber={id}))",
        "filter_by_ip": "(&(objectClass=inetOrgPerson)(ipHostNumber={ip}))",
        "attributes": {"id": "employeeNumber", "name": "uid", "ip": "ipHostNumber", "key": "description"},
    }))
    .unwrap();
    validated(&c);
    let b = c.build("people").await.unwrap();
    assert_eq!(found(&*b, "id:101").await.name.as_str(), "db-01");
    assert_eq!(found(&*b, "ip:10.2.0.1").await.id.as_str(), "101");
    assert_eq!(found(&*b, "id:102").await.ip.as_str(), "10.2.1.0/24");
    assert_eq!(code(&*b, "id:103").await, ErrorCode::InvalidRecord);
    // Agents of the other subtree are out of scope here.
    assert!(b.lookup(&q("id:001")).await.unwrap().is_none());
}

/// The fixture's ACL lets only the service account read agents: an
/// anonymous search is a configuration error (6), not a "not found".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_anonymous_search_cannot_read_agents() {
    let server = Slapd::start();
    let mut c = ldap_config(vec![server.url()], &server);
    c.bind_dn = None;
    c.hosts.password_file = None;
    let b = c.build("dir").await.unwrap();
    let e = b.lookup(&q("id:001")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_wrong_password_is_reported_without_the_password() {
    let server = Slapd::start();
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "wrong-secret\n").unwrap();
    let mut c = ldap_config(vec![server.url()], &server);
    c.hosts.password_file = Some(pw);
    let b = c.build("dir").await.unwrap();
    let e = b.lookup(&q("id:001")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal, "{e}");
    assert!(e.is_login_refused() && !e.is_outage(), "{e}");
    let text = format!("{e} {e:?}");
    assert!(
        !text.contains("wrong-secret") && !text.contains(LDAP_PASSWORD),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_first_url_dead_the_second_answers() {
    let server = Slapd::start();
    let dead = format!("ldap://127.0.0.1:{}", free_port());
    let b = ldap_config(vec![dead, server.url()], &server)
        .build("dir")
        .await
        .unwrap();
    assert_eq!(found(&*b, "id:001").await.name.as_str(), "web-01");
    assert_eq!(found(&*b, "ip:10.0.0.1").await.id.as_str(), "001");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_outage_answers_2_and_the_pool_reconnects_and_rebinds_after_a_restart() {
    let mut server = Slapd::start();
    let b = ldap_config(vec![server.url()], &server)
        .build("dir")
        .await
        .unwrap();
    // Both pool slots connected and bound.
    found(&*b, "id:001").await;
    found(&*b, "id:001").await;
    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(code(&*b, "id:001").await, ErrorCode::Unavailable);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "an outage must not hang"
        );
    }
    server.restart();
    until_found(&*b, "id:001", Duration::from_secs(10)).await;
    // Every slot works again (the fixture's ACL proves each one rebound).
    for _ in 0..4 {
        found(&*b, "ip:10.0.0.1").await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ldap_answers_a_50_way_concurrent_burst_without_errors() {
    let server = Slapd::start();
    let b: Arc<dyn KeyBackend> = ldap_config(vec![server.url()], &server)
        .build("dir")
        .await
        .unwrap();
    burst(b).await;
}

/// StartTLS and ldaps:// both verify the server against `ca_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_starttls_and_ldaps_verify_the_server_against_ca_file() {
    let server = Slapd::start_with_tls();
    let mut c = ldap_config(vec![server.url()], &server);
    c.starttls = true;
    c.ca_file = Some(server.ca_file());
    validated(&c);
    let b = c.build("dir").await.unwrap();
    assert_eq!(found(&*b, "id:001").await.name.as_str(), "web-01");
    let mut c = ldap_config(vec![server.ldaps_url()], &server);
    c.ca_file = Some(server.ca_file());
    let b = c.build("dir").await.unwrap();
    assert_eq!(found(&*b, "ip:10.0.0.1").await.id.as_str(), "001");
}

/// A certificate no trusted CA signed is refused (2), with the system's
/// store and with another CA in `ca_file`; nothing falls back to plain text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_tls_refuses_an_untrusted_certificate() {
    let server = Slapd::start_with_tls();
    let other = tempfile::tempdir().unwrap();
    slapd::make_certificates(other.path());
    for ca_file in [None, Some(other.path().join("ca.pem"))] {
        for (url, starttls) in [(server.url(), true), (server.ldaps_url(), false)] {
            let mut c = ldap_config(vec![url.clone()], &server);
            c.starttls = starttls;
            c.ca_file = ca_file.clone();
            let b = c.build("dir").await.unwrap();
            let e = b.lookup(&q("id:001")).await.unwrap_err();
            assert_eq!(e.code(), ErrorCode::Unavailable, "{url} {ca_file:?}: {e}");
            assert!(e.to_string().contains("certificate"), "{e}");
        }
    }
}

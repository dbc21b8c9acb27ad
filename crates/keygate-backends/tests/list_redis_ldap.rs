//! Listing every agent of the Redis and LDAP backends against private
//! servers started by keygate-testkit from the `docker/` fixtures: the
//! valid entries are listed, each bad one is reported with where it is
//! and why (never its key).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use futures_util::StreamExt;
use keygate_backends::ldap::LdapConfig;
use keygate_backends::redis::RedisConfig;
use keygate_backends::{BackendSpec, Problems};
use keygate_core::{KeyBackend, Listed};
use keygate_testkit::redis::RedisServer;
use keygate_testkit::slapd::{Slapd, LDAP_BIND_DN};

/// Lists `b` completely: `id -> name` of every record (in order of
/// arrival, duplicates as `id#2`), and each invalid entry as `at: reason`,
/// sorted.
async fn list(b: &dyn KeyBackend) -> (BTreeMap<String, String>, Vec<String>) {
    let (mut records, mut bad) = (BTreeMap::new(), Vec::new());
    let mut stream = b.list();
    while let Some(entry) = stream.next().await {
        match entry.unwrap() {
            Listed::Record(r) => {
                let mut id = r.id.as_str().to_owned();
                while records.contains_key(&id) {
                    id.push_str("#2");
                }
                records.insert(id, r.name.as_str().to_owned());
            }
            Listed::Invalid { at, reason } => bad.push(format!("{at}: {reason}")),
        }
    }
    bad.sort();
    (records, bad)
}

fn validate<S: BackendSpec>(spec: &S) -> Vec<String> {
    let mut list = Vec::new();
    spec.validate(&mut Problems::new("backend[0]", &mut list));
    list.iter().map(ToString::to_string).collect()
}

fn redis_config(server: &RedisServer, extra: serde_json::Value) -> RedisConfig {
    let mut json = serde_json::json!({
        "url": server.url(),
        "password_file": server.password_file(),
    });
    json.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let c: RedisConfig = serde_json::from_value(json).unwrap();
    assert_eq!(validate(&c), Vec::<String>::new());
    c
}

/// SCAN over `wazuh:agent:*`: the good hashes are listed (the address
/// index keys are not agents); a bad name, a bad ip, a hash carrying
/// another id, a missing key field and a string in place of a hash are
/// reported by their Redis key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lists_valid_hashes_and_reports_bad_ones() {
    let server = RedisServer::start();
    let b = redis_config(&server, serde_json::json!({}))
        .build("cache")
        .await
        .unwrap();
    let (records, bad) = list(&*b).await;
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        ["001", "005", "006", "010", "011", "012"]
    );
    assert_eq!(records["010"], "branch-net");
    assert_eq!(
        bad,
        [
            "wazuh:agent:002: field 'name' is invalid: only letters, digits, '-', '_' and '.' are allowed",
            "wazuh:agent:003: field 'ip' is invalid: not an IP address, address/prefix or 'any'",
            "wazuh:agent:004: record found for id:004 carries a different id",
            "wazuh:agent:007: field 'key' is missing or NULL",
            "wazuh:agent:008: malformed record: the agent key is not a hash",
        ]
    );
}

/// Keys of the pattern that cannot hold an agent id are reported; keys
/// of the address index that share the prefix are not agents; glob
/// characters in `key_by_id` are matched literally; 2,000 agents come
/// through several SCAN steps exactly once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_scan_matches_the_template_literally_and_lists_each_agent_once() {
    let server = RedisServer::start();
    let c = redis_config(
        &server,
        serde_json::json!({"key_by_id": "k[1]:{id}", "key_by_ip": "k[1]:ip:{ip}"}),
    );
    let b = c.build("cache").await.unwrap();
    let mut conn = redis::Client::open(format!(
        "redis://:{}@127.0.0.1:{}/0",
        keygate_testkit::redis::REDIS_PASSWORD,
        server.port()
    ))
    .unwrap()
    .get_multiplexed_async_connection()
    .await
    .unwrap();
    let mut pipe = redis::pipe();
    for n in 1..=2000u32 {
        pipe.cmd("HSET")
            .arg(format!("k[1]:{n:04}"))
            .arg(&[
                "id",
                &format!("{n:04}"),
                "name",
                &format!("a-{n}"),
                "ip",
                "any",
                "key",
                "k0",
            ])
            .ignore();
    }
    pipe.cmd("SET").arg("k[1]:ip:10.0.0.1").arg("0001").ignore();
    pipe.cmd("SET").arg("k[1]:x7").arg("0001").ignore();
    pipe.cmd("HSET")
        .arg("k1:0009")
        .arg(&["id", "0009"])
        .ignore();
    pipe.query_async::<()>(&mut conn).await.unwrap();

    let (records, bad) = list(&*b).await;
    assert_eq!(records.len(), 2000);
    assert!(records.keys().all(|id| !id.contains('#')));
    assert_eq!(
        bad,
        ["k[1]:x7: the key holds no agent id: field 'id' is invalid: must be digits only"]
    );
}

fn ldap_config(server: &Slapd, extra: serde_json::Value) -> LdapConfig {
    let mut json = serde_json::json!({
        "url": server.url(),
        "bind_dn": LDAP_BIND_DN,
        "password_file": server.password_file(),
        "base_dn": "ou=agents,dc=example,dc=org",
    });
    json.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    let c: LdapConfig = serde_json::from_value(json).unwrap();
    assert_eq!(validate(&c), Vec::<String>::new());
    c
}

/// A paged search with the default `filter_all` (`filter_by_id` with
/// `{id}` as `*`): the good entries are listed (both entries of id 004:
/// duplicates are for `export` and `sync` to report); a bad name, a bad
/// ip, a missing key and two different keys are reported by DN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_lists_valid_entries_and_reports_bad_ones_by_dn() {
    let server = Slapd::start();
    let b = ldap_config(&server, serde_json::json!({}))
        .build("dir")
        .await
        .unwrap();
    let (records, bad) = list(&*b).await;
    assert_eq!(
        records.keys().collect::<Vec<_>>(),
        ["001", "004", "004#2", "005", "006", "010", "011", "012"]
    );
    assert_eq!(
        bad,
        [
            "cn=bad-ip,ou=agents,dc=example,dc=org: field 'ip' is invalid: not an IP address, address/prefix or 'any'",
            "cn=has space,ou=agents,dc=example,dc=org: field 'name' is invalid: only letters, digits, '-', '_' and '.' are allowed",
            "cn=no-key,ou=agents,dc=example,dc=org: field 'key' is missing or NULL",
            "cn=two-keys,ou=agents,dc=example,dc=org: field 'key' is invalid: attribute has more than one different value",
        ]
    );
}

/// A connection to `server` bound as its administrator, to add entries.
async fn admin(server: &Slapd) -> ldap3::Ldap {
    let (conn, mut ldap) = ldap3::LdapConnAsync::new(&server.url()).await.unwrap();
    ldap3::drive!(conn);
    ldap.simple_bind("cn=admin,dc=example,dc=org", "admin-test-password")
        .await
        .unwrap()
        .success()
        .unwrap();
    ldap
}

/// Paging: with a page size of 400, 1,000 entries added under the base
/// come through several pages, each once; an explicit `filter_all`
/// selects only what it names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_paged_search_lists_more_entries_than_one_page() {
    let server = Slapd::start();
    let mut ldap = admin(&server).await;
    for n in 1..=1000u32 {
        let (cn, id, ip, key) = (
            format!("bulk-{n}"),
            format!("{}", n + 100_000),
            format!("10.50.{}.{}", n / 256, n % 256),
            format!("k{n}"),
        );
        let set = |v: &str| std::collections::HashSet::from([v.to_owned()]);
        let attr = |a: &str| a.to_owned();
        ldap.add(
            &format!("cn={cn},ou=agents,dc=example,dc=org"),
            vec![
                (
                    attr("objectClass"),
                    std::collections::HashSet::from(["device".to_owned(), "ipHost".to_owned()]),
                ),
                (attr("cn"), set(&cn)),
                (attr("serialNumber"), set(&id)),
                (attr("ipHostNumber"), set(&ip)),
                (attr("description"), set(&key)),
            ],
        )
        .await
        .unwrap()
        .success()
        .unwrap();
    }
    ldap.unbind().await.unwrap();
    let b = ldap_config(&server, serde_json::json!({}))
        .build("dir")
        .await
        .unwrap();
    let (records, _) = list(&*b).await;
    assert_eq!(records.len(), 1008);
    let only_bulk = ldap_config(
        &server,
        serde_json::json!({"filter_all": "(&(objectClass=device)(cn=bulk-*))"}),
    )
    .build("dir")
    .await
    .unwrap();
    let (records, bad) = list(&*only_bulk).await;
    assert_eq!((records.len(), bad.len()), (1000, 0));
}

/// A referral under the base (part of the tree held by another server,
/// which keygate does not ask) fails the listing: its agents would be
/// missing, and a listing that silently lacks them must never look
/// complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ldap_a_referral_fails_the_listing() {
    let server = Slapd::start();
    let mut ldap = admin(&server).await;
    let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
    ldap.add(
        "ou=elsewhere,ou=agents,dc=example,dc=org",
        vec![
            (
                "objectClass".to_owned(),
                set(&["referral", "extensibleObject"]),
            ),
            ("ou".to_owned(), set(&["elsewhere"])),
            (
                "ref".to_owned(),
                set(&["ldap://ldap.example.net/ou=elsewhere,dc=example,dc=org"]),
            ),
        ],
    )
    .await
    .unwrap()
    .success()
    .unwrap();
    ldap.unbind().await.unwrap();
    let b = ldap_config(&server, serde_json::json!({}))
        .build("dir")
        .await
        .unwrap();
    let items: Vec<_> = b.list().collect().await;
    let last = items.last().unwrap();
    let e = last
        .as_ref()
        .expect_err("the listing must fail")
        .to_string();
    assert!(e.contains("referred part of the search"), "{e}");
    assert!(e.contains("incomplete"), "{e}");
}

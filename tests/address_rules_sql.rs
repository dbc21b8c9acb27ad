//! The address rules hold for a backend that matches networks in its own
//! query: PostgreSQL with an inet column and `ip >>= $1::inet` (most
//! specific first), through the real daemon. A `0.0.0.0/0` row is `any`: it is never handed out for an
//! `ip:` request (5, the row is refused, not forwarded), and an IPv4-mapped
//! request is asked as IPv4.
#![cfg(feature = "postgres")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keygate_testkit::daemon::Daemon;
use keygate_testkit::sql::{run_sql, Kind, TestDb};

#[test]
fn postgres_network_query_never_hands_out_a_slash_zero_row() {
    let db = TestDb::postgres();
    run_sql(
        Kind::Postgres,
        db.url(),
        "INSERT INTO agent_inet VALUES ('504', 'everywhere', '0.0.0.0/0', encode(sha256('key-inet-504'), 'hex'))",
    );
    let d = Daemon::start(&format!(
        r#"[cache]
enabled = false

[[backend]]
name = "inet"
type = "postgres"
url = "{}"
query_by_id = "SELECT id, name, ip, agent_key FROM agent_inet WHERE id = $1"
query_by_ip = "SELECT id, name, ip, agent_key FROM agent_inet WHERE ip >>= $1::inet ORDER BY masklen(ip) DESC LIMIT 1"
"#,
        db.url()
    ));
    // Before: agent 504 and its key, for any address at all.
    let v = d.request("ip:8.8.8.8");
    assert_eq!(v["error"], 5, "{v}");
    assert!(v.get("data").is_none(), "{v}");
    // Still found by id, with its address as stored.
    let v = d.request("id:504");
    assert_eq!(v["data"]["ip"], "0.0.0.0/0", "{v}");
    // Before: 4, PostgreSQL was asked for ::ffff:10.50.0.1.
    let v = d.request("ip:::ffff:10.50.0.1");
    assert_eq!(v["error"], 0, "{v}");
    assert_eq!(v["data"]["id"], "501");
}

//! The http backend against a local HTTPS inventory started by each test
//! (keygate-wazuh-standin's `inventory`, with a CA it generates): lookups,
//! not found, the answers that are errors, the breaker and the deadline
//! around it, the encoding of values as the server receives them, the
//! credentials, redirects, failover, TLS verification and listing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use keygate_backends::http::{fill, HttpConfig};
use keygate_backends::{BackendSpec, Problems};
use keygate_core::{
    BackendError, Breaker, BreakerSettings, ErrorCode, KeyBackend, Listed, TimeoutLayer,
};
use keygate_testkit::{free_port, q};
use keygate_wazuh_standin::inventory::{cmdb, Answer, Inventory, Seen};
use serde_json::{json, Value};

const KEY_1: &str = "0b9d9f06cc8cf44765a12c0aa01a6e2217130979f4dfeda24e22b0af7e8d237e";
const KEY_2: &str = "abbac1bcd1f31ca84918948f5e33b85c26133b5062e03933b554cdffbf9d9c14";
const TOKEN: &str = "tok-9f8e7d6c5b4a";

const AGENTS: &[(&str, &str, &str, &str)] = &[
    ("001", "web-01", "10.0.0.1", KEY_1),
    ("002", "db-01", "2001:db8::2", KEY_2),
    ("003", "twin-a", "10.0.0.9", KEY_1),
    ("004", "twin-b", "10.0.0.9", KEY_2),
];

/// A test's inventory and the files its config names.
struct Setup {
    inventory: Inventory,
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(inventory: Inventory) -> Self {
        let dir = tempfile::tempdir().unwrap();
        inventory.write_ca(&dir.path().join("ca.pem"));
        std::fs::write(dir.path().join("token"), format!("{TOKEN}\n")).unwrap();
        std::fs::write(dir.path().join("password"), "hunter2\n").unwrap();
        Self { inventory, dir }
    }

    fn cmdb() -> Self {
        Self::new(Inventory::cmdb(AGENTS))
    }

    /// The example's config against this inventory, with `extra` keys.
    fn config(&self, extra: Value) -> HttpConfig {
        let url = self.inventory.url();
        let mut v = json!({
            "url_by_id": format!("{url}/api/agents/{{id}}"),
            "url_by_ip": format!("{url}/api/agents?ip={{ip}}"),
            "ca_file": self.dir.path().join("ca.pem"),
            "token_file": self.dir.path().join("token"),
            "fields": {"id": "/data/0/agent_id", "name": "/data/0/hostname",
                       "ip": "/data/0/ip", "key": "/data/0/wazuh_key"}
        });
        for (k, x) in extra.as_object().unwrap() {
            if x.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = x.clone();
            }
        }
        let c: HttpConfig = serde_json::from_value(v).unwrap();
        let mut problems = Vec::new();
        c.validate(&mut Problems::new("backend[0]", &mut problems));
        assert!(problems.is_empty(), "{problems:?}");
        c
    }

    async fn backend(&self, extra: Value) -> Arc<dyn KeyBackend> {
        self.config(extra).build("cmdb").await.unwrap()
    }
}

/// The code a request answers with, the record checked against the
/// request as the chain does.
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

async fn error(b: &dyn KeyBackend, req: &str) -> BackendError {
    match b.lookup(&q(req)).await {
        Err(e) => e,
        other => panic!("{req}: expected an error, got {other:?}"),
    }
}

/// Found by id and by address (IPv6 too), over one kept-alive connection;
/// 404 and an empty list are not found; two agents for one address are
/// ambiguous.
#[tokio::test]
async fn lookups_by_id_and_ip_not_found_and_ambiguous() {
    let s = Setup::cmdb();
    let b = s.backend(json!({})).await;
    let r = b.lookup(&q("id:001")).await.unwrap().unwrap();
    assert_eq!(
        (r.name.as_str(), r.ip.as_str(), r.key.expose()),
        ("web-01", "10.0.0.1", KEY_1)
    );
    assert_eq!(code(&*b, "ip:10.0.0.1").await, ErrorCode::Found);
    assert_eq!(code(&*b, "ip:2001:db8::2").await, ErrorCode::Found);
    assert_eq!(code(&*b, "id:999").await, ErrorCode::NotFound);
    assert_eq!(code(&*b, "ip:10.9.9.9").await, ErrorCode::NotFound);
    assert!(matches!(
        error(&*b, "ip:10.0.0.9").await,
        BackendError::Ambiguous
    ));
    for _ in 0..10 {
        assert_eq!(code(&*b, "id:002").await, ErrorCode::Found);
    }
    let targets: Vec<String> = s
        .inventory
        .seen()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(targets[0], "/api/agents/001");
    assert_eq!(targets[2], "/api/agents?ip=2001%3Adb8%3A%3A2");
    assert_eq!(s.inventory.requests(), 16);
    assert_eq!(
        s.inventory.connections(),
        1,
        "keep-alive reuses one connection"
    );
}

/// The raw request the server receives: whatever a value holds (`?`,
/// `/`, `#`, `%`, spaces, `&`), it stays inside its one path segment or
/// query value.
#[tokio::test]
async fn values_never_change_the_path_or_the_query() {
    let s = Setup::new(Inventory::start(|_| Answer::json(404, "{}")));
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(
            reqwest::Certificate::from_pem(s.inventory.ca_pem().as_bytes()).unwrap(),
        )
        .build()
        .unwrap();
    let hostile = [
        "001?admin=1",
        "../../etc/passwd",
        "001#frag",
        "%2e%2e/%00",
        "a b&ip=10.0.0.1",
        "0/../002",
    ];
    for value in hostile {
        let url = fill(
            &s.inventory.url(),
            "/api/agents/{id}?ip={id}&format=json",
            &[("id", value)],
        )
        .unwrap();
        client.get(url).send().await.unwrap();
        let seen = s.inventory.seen().pop().unwrap();
        let path = seen.path().to_owned();
        let segment = path.strip_prefix("/api/agents/").unwrap();
        assert!(!segment.contains(['/', '?', '#', ' ']), "{value}: {path}");
        assert_eq!(
            seen.target.split_once('?').unwrap().1,
            format!("ip={segment}&format=json"),
            "{value}"
        );
        assert_eq!(seen.param("ip").as_deref(), Some(value));
        assert_eq!(seen.param("format").as_deref(), Some("json"));
    }
}

/// A server error is an outage (2) and the breaker counts it: after
/// `failures_to_trip` of them the backend is skipped, and the server no
/// longer asked.
#[tokio::test]
async fn server_errors_are_outages_that_trip_the_breaker() {
    let s = Setup::new(Inventory::start(|_| {
        Answer::json(500, r#"{"error":"db down"}"#)
    }));
    let b = s.backend(json!({})).await;
    let e = error(&*b, "id:001").await;
    assert_eq!(
        e.to_string(),
        "unavailable: the inventory answered HTTP 500"
    );
    let breaker = Breaker::new(
        b,
        BreakerSettings {
            failures_to_trip: 3,
            initial_retry_interval: Duration::from_secs(3600),
            max_retry_interval: Duration::from_secs(3600),
        },
    );
    for _ in 0..3 {
        assert_eq!(code(&breaker, "id:001").await, ErrorCode::Unavailable);
    }
    assert_eq!(breaker.state(), keygate_core::BreakerState::Tripped);
    assert_eq!(code(&breaker, "id:001").await, ErrorCode::Unavailable);
    // One lookup before the breaker, three through it: the fourth through
    // it never reached the server.
    assert_eq!(s.inventory.requests(), 4);
}

/// A slow inventory ends at the backend's deadline, as an outage.
#[tokio::test]
async fn a_slow_answer_times_out() {
    let s = Setup::new(Inventory::start(|seen| {
        cmdb(AGENTS)(seen).delayed(Duration::from_secs(30))
    }));
    let b = TimeoutLayer::new(s.backend(json!({})).await, Duration::from_millis(300));
    let e = error(&b, "id:001").await;
    assert!(matches!(e, BackendError::Timeout(_)), "{e:?}");
    assert_eq!(e.code(), ErrorCode::Unavailable);
}

/// Bodies that are not the expected JSON: clear errors, never quoting the
/// body (it may hold keys).
#[tokio::test]
async fn malformed_or_mistyped_answers_are_clear_errors() {
    let s = Setup::new(Inventory::start(|seen| {
        let agent = |id: Value, name: Value| {
            json!({"data": [{"agent_id": id, "hostname": name, "ip": "10.0.0.1", "wazuh_key": KEY_1}]})
                .to_string()
        };
        match seen.path() {
            "/api/agents/001" => Answer::json(200, format!("<html>{KEY_1}</html>")),
            "/api/agents/002" => Answer::json(200, agent(json!("002"), json!(42))),
            "/api/agents/007" => Answer::json(200, agent(json!(7), json!("n"))),
            "/api/agents/004" => {
                Answer::json(200, json!({"data": [{"agent_id": "004"}]}).to_string())
            }
            "/api/agents/005" => Answer::json(200, json!({"items": []}).to_string()),
            "/api/agents/006" => Answer::json(200, agent(json!("007"), json!("n"))),
            _ => Answer::json(404, ""),
        }
    }));
    let b = s.backend(json!({})).await;
    let e = error(&*b, "id:001").await;
    assert_eq!(e.code(), ErrorCode::Internal);
    assert!(
        e.to_string()
            .contains("is not JSON: expected value at line 1 column 1"),
        "{e}"
    );
    assert!(!e.to_string().contains(KEY_1));
    let e = error(&*b, "id:002").await;
    assert_eq!(
        e.to_string(),
        "invalid record: field 'name' is invalid: must be a JSON string"
    );
    // An integer id is zero-padded, like the SQL backends' INT ids.
    assert_eq!(code(&*b, "id:007").await, ErrorCode::Found);
    let e = error(&*b, "id:004").await;
    assert_eq!(e.code(), ErrorCode::InvalidRecord);
    assert!(
        e.to_string().contains(
            "field 'name' is invalid: the response has nothing at its [backend.fields] pointer"
        ),
        "{e}"
    );
    let e = error(&*b, "id:005").await;
    assert!(e.to_string().contains("has nothing at \"/data\""), "{e}");
    // A record for another id answers 5 once checked against the request.
    assert_eq!(code(&*b, "id:006").await, ErrorCode::InvalidRecord);
}

/// `not_found_status` decides which statuses are not found; other 4xx
/// and a refused login (401, 403) are misconfigurations (6; the refused
/// login served stale by the cache), 429 an outage.
#[tokio::test]
async fn statuses_map_to_answers() {
    let s = Setup::new(Inventory::start(|seen| match seen.path() {
        "/api/agents/001" => Answer::json(410, ""),
        "/api/agents/002" => Answer::json(401, ""),
        "/api/agents/003" => Answer::json(400, ""),
        "/api/agents/004" => Answer::json(429, ""),
        _ => Answer::json(404, ""),
    }));
    let b = s.backend(json!({"not_found_status": [404, 410]})).await;
    assert_eq!(code(&*b, "id:001").await, ErrorCode::NotFound);
    assert_eq!(code(&*b, "id:005").await, ErrorCode::NotFound);
    let e = error(&*b, "id:002").await;
    assert_eq!(
        e.to_string(),
        "login refused: the inventory refused keygate's credentials (HTTP 401)"
    );
    assert!(e.is_login_refused() && e.serves_stale(), "{e}");
    assert_eq!(code(&*b, "id:003").await, ErrorCode::Internal);
    assert_eq!(code(&*b, "id:004").await, ErrorCode::Unavailable);
    let only_410 = s.backend(json!({"not_found_status": [410]})).await;
    assert_eq!(code(&*only_410, "id:005").await, ErrorCode::Internal);
}

/// The token is sent as a bearer header and appears in no error, no
/// `Debug` output, no log line (every level, reqwest's and hyper's
/// included).
#[tokio::test]
async fn the_bearer_token_is_sent_and_never_shown() {
    let s = Setup::new(Inventory::start(|seen| {
        if seen.path() == "/api/agents/002" {
            Answer::json(401, "")
        } else {
            cmdb(AGENTS)(seen)
        }
    }));
    let config = s.config(json!({}));
    let ((b, e), logs) = keygate_testkit::logs_of(async {
        let b = config.build("cmdb").await.unwrap();
        assert_eq!(code(&*b, "id:001").await, ErrorCode::Found);
        let e = error(&*b, "id:002").await;
        b.health().await.unwrap();
        (b, e)
    })
    .await;
    let seen = s.inventory.seen();
    assert!(seen
        .iter()
        .all(|r| r.authorization.as_deref() == Some(&*format!("Bearer {TOKEN}"))));
    for text in [
        e.to_string(),
        format!("{config:?}"),
        b.current_host().unwrap_or_default(),
        logs,
    ] {
        assert!(!text.contains(TOKEN), "{text}");
    }
}

#[tokio::test]
async fn basic_authentication_sends_user_and_password() {
    let s = Setup::cmdb();
    let b = s
        .backend(json!({
            "token_file": null,
            "basic_user": "keygate",
            "password_file": s.dir.path().join("password"),
        }))
        .await;
    assert_eq!(code(&*b, "id:001").await, ErrorCode::Found);
    // base64("keygate:hunter2")
    assert_eq!(
        s.inventory.seen()[0].authorization.as_deref(),
        Some("Basic a2V5Z2F0ZTpodW50ZXIy")
    );
}

/// A redirect to another host is not followed (the other host is never
/// asked, the answer is 6); one on the same host is.
#[tokio::test]
async fn redirects_are_followed_only_on_the_same_host() {
    let elsewhere = Inventory::cmdb(AGENTS);
    let other = format!("https://127.0.0.1:{}/api/agents/001", elsewhere.port());
    let s = Setup::new(Inventory::start(move |seen| match seen.path() {
        "/api/agents/001" => Answer::redirect(other.clone()),
        "/api/agents/002" => Answer::redirect("/v2/agents/002"),
        "/v2/agents/002" => cmdb(AGENTS)(&keygate_wazuh_standin::inventory::Seen {
            target: "/api/agents/002".into(),
            ..seen.clone()
        }),
        _ => Answer::json(404, ""),
    }));
    let b = s.backend(json!({})).await;
    let e = error(&*b, "id:001").await;
    assert_eq!(e.code(), ErrorCode::Internal);
    assert!(
        e.to_string()
            .contains("redirect (HTTP 302) to another host"),
        "{e}"
    );
    assert_eq!(elsewhere.requests(), 0);
    assert_eq!(code(&*b, "id:002").await, ErrorCode::Found);
}

/// With `urls`, a host that refuses connections is skipped within the
/// same lookup; `keygate backends` shows the host in use.
#[tokio::test]
async fn a_dead_first_host_fails_over_to_the_second() {
    let s = Setup::cmdb();
    let dead = format!("https://localhost:{}", free_port());
    let b = s
        .backend(json!({
            "urls": [dead, s.inventory.url()],
            "url_by_id": "/api/agents/{id}",
            "url_by_ip": "/api/agents?ip={ip}",
        }))
        .await;
    assert_eq!(code(&*b, "id:001").await, ErrorCode::Found);
    assert_eq!(
        b.current_host().unwrap(),
        format!("host 2 of 2: {}", s.inventory.url())
    );
    b.health().await.unwrap();
}

/// The inventory's certificate is verified: refused against the system's
/// roots, accepted with `ca_file`, accepted unverified with `insecure`.
#[tokio::test]
async fn tls_is_verified_unless_insecure() {
    let s = Setup::cmdb();
    let system_roots = s.backend(json!({"ca_file": null})).await;
    let e = error(&*system_roots, "id:001").await;
    assert_eq!(e.code(), ErrorCode::Unavailable);
    assert!(e.to_string().contains("certificate"), "{e}");
    assert!(system_roots.health().await.is_err());
    assert_eq!(s.inventory.requests(), 0);
    let with_ca = s.backend(json!({})).await;
    assert_eq!(code(&*with_ca, "id:001").await, ErrorCode::Found);
    let insecure = s.backend(json!({"ca_file": null, "insecure": true})).await;
    assert_eq!(code(&*insecure, "id:001").await, ErrorCode::Found);
}

/// `keygate check`'s probe: a HEAD of the base URL; a server error or a
/// refused login fails it.
#[tokio::test]
async fn health_is_a_head_of_the_base_url() {
    let s = Setup::cmdb();
    let b = s.backend(json!({})).await;
    b.health().await.unwrap();
    let seen = s.inventory.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].target.as_str()),
        ("HEAD", "/")
    );
    s.inventory.set_handler(|_| Answer::json(503, ""));
    assert_eq!(b.health().await.unwrap_err().code(), ErrorCode::Unavailable);
    s.inventory.set_handler(|_| Answer::json(403, ""));
    let e = b.health().await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Internal);
    assert!(e.is_login_refused(), "{e}");
    assert_eq!(code(&*b, "id:001").await, ErrorCode::Internal);
}

/// Listing pages through `url_all`: every valid agent once, a bad entry
/// reported with its place and id (never its key), a failure as an
/// `Err` item; without `url_all` a clear error.
#[tokio::test]
async fn listing_pages_through_url_all() {
    let mut agents: Vec<(String, String, String, String)> = (1..=7)
        .map(|i| {
            (
                format!("{i:03}"),
                format!("a{i}"),
                format!("10.1.0.{i}"),
                KEY_1.to_owned(),
            )
        })
        .collect();
    agents[3].3 = "short key".into();
    let refs: Vec<(&str, &str, &str, &str)> = agents
        .iter()
        .map(|a| (a.0.as_str(), a.1.as_str(), a.2.as_str(), a.3.as_str()))
        .collect();
    let s = Setup::new(Inventory::cmdb(&refs));
    let url = s.inventory.url();
    let b = s
        .backend(json!({
            "url_all": format!("{url}/api/agents?offset={{offset}}&limit={{limit}}"),
            "page_size": 3,
        }))
        .await;
    let items: Vec<_> = b.list().collect().await;
    let mut ids = Vec::new();
    let mut invalid = Vec::new();
    for item in items {
        match item.unwrap() {
            Listed::Record(r) => ids.push(r.id.as_str().to_owned()),
            Listed::Invalid { at, reason } => invalid.push(format!("{at}: {reason}")),
        }
    }
    assert_eq!(ids, ["001", "002", "003", "005", "006", "007"]);
    assert_eq!(invalid.len(), 1);
    assert!(
        invalid[0].starts_with("entry 4 (id 004): field 'key' is invalid"),
        "{invalid:?}"
    );
    let pages: Vec<String> = s
        .inventory
        .seen()
        .iter()
        .map(|r| r.target.clone())
        .collect();
    assert_eq!(
        pages,
        [
            "/api/agents?offset=0&limit=3",
            "/api/agents?offset=3&limit=3",
            "/api/agents?offset=6&limit=3",
            // A short page is not the end: only an empty one is.
            "/api/agents?offset=7&limit=3"
        ]
    );
    s.inventory.set_handler(|_| Answer::json(503, ""));
    let items: Vec<_> = b.list().collect().await;
    assert_eq!(items.len(), 1);
    assert!(items[0].is_err());
    let no_url_all = s.backend(json!({})).await;
    let items: Vec<_> = no_url_all.list().collect().await;
    let e = items[0].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("cannot list its agents: url_all is not set"),
        "{e}"
    );
}

/// An inventory of `n` agents that answers at most `cap` per page,
/// whatever `{limit}` asks (as many REST APIs do, silently), and with
/// `total` its count at `/total`. `ignore_offset`: every page starts at 0.
fn capped(n: usize, cap: usize, total: bool, ignore_offset: bool) -> impl Fn(&Seen) -> Answer {
    move |seen: &Seen| {
        if seen.method == "HEAD" {
            return Answer::json(200, "");
        }
        let number = |name: &str| seen.param(name).and_then(|v| v.parse::<usize>().ok());
        let offset = if ignore_offset {
            0
        } else {
            number("offset").unwrap_or(0)
        };
        let limit = number("limit").unwrap_or(n).min(cap);
        let data: Vec<Value> = (offset..n)
            .take(limit)
            .map(|i| {
                json!({"agent_id": format!("{:03}", i + 1), "hostname": format!("a{}", i + 1),
                       "ip": "any", "wazuh_key": KEY_1})
            })
            .collect();
        let mut doc = json!({ "data": data });
        if total {
            doc["total"] = n.into();
        }
        Answer::json(200, doc.to_string())
    }
}

/// The listing of `b`: the ids in order, or the error it ended with.
async fn listed(b: &dyn KeyBackend) -> (Vec<String>, Option<BackendError>) {
    let mut ids = Vec::new();
    let mut items = b.list();
    while let Some(item) = items.next().await {
        match item {
            Ok(Listed::Record(r)) => ids.push(r.id.as_str().to_owned()),
            Ok(Listed::Invalid { at, reason }) => panic!("invalid {at}: {reason}"),
            Err(e) => return (ids, Some(e)),
        }
    }
    (ids, None)
}

fn offsets(inventory: &Inventory) -> Vec<String> {
    inventory
        .seen()
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.param("offset").unwrap_or_default())
        .collect()
}

fn paged(url: &str) -> Value {
    json!({
        "url_all": format!("{url}/api/agents?offset={{offset}}&limit={{limit}}"),
        "fields": {"id": "/data/0/agent_id", "name": "/data/0/hostname",
                   "ip": "/data/0/ip", "key": "/data/0/wazuh_key"},
    })
}

/// The issue's inventory: 300 agents, at most 100 a page, `page_size`
/// 500. A short page is not the end: every agent is listed, the next
/// offset being what was received (0, 100, 200, then the empty page at
/// 300). With `[backend.fields] total` the listing ends at 300 without
/// asking for the empty page.
#[tokio::test]
async fn a_page_capped_below_limit_is_not_the_end() {
    let s = Setup::new(Inventory::start(capped(300, 100, false, false)));
    let b = s.backend(paged(&s.inventory.url())).await;
    let (ids, error) = listed(&*b).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(ids.len(), 300);
    assert_eq!(ids.last().unwrap(), "300");
    assert_eq!(offsets(&s.inventory), ["0", "100", "200", "300"]);

    let s = Setup::new(Inventory::start(capped(300, 100, true, false)));
    let mut extra = paged(&s.inventory.url());
    extra["fields"]["total"] = "/total".into();
    let b = s.backend(extra).await;
    let (ids, error) = listed(&*b).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(ids.len(), 300);
    assert_eq!(offsets(&s.inventory), ["0", "100", "200"]);
}

/// An inventory that ignores `{offset}` sends the same page again: the
/// listing fails saying so (it neither loops nor looks complete); one
/// whose pages end before its `total` fails too.
#[tokio::test]
async fn an_inventory_that_ignores_offset_fails_the_listing() {
    let s = Setup::new(Inventory::start(capped(300, 100, false, true)));
    let b = s.backend(paged(&s.inventory.url())).await;
    let (ids, error) = listed(&*b).await;
    let e = error.expect("the listing must fail").to_string();
    assert!(e.contains("ignore {offset}"), "{e}");
    assert_eq!(ids.len(), 100);
    assert_eq!(offsets(&s.inventory), ["0", "100"]);

    // Pages that end early (offset read as a page number, say) while the
    // inventory's total says there are more.
    let s = Setup::new(Inventory::start(|seen: &Seen| {
        let offset = seen.param("offset").unwrap_or_default();
        let data: Vec<Value> = if offset == "0" {
            (1..=100)
                .map(|i| {
                    json!({"agent_id": format!("{i:03}"), "hostname": format!("a{i}"),
                           "ip": "any", "wazuh_key": KEY_1})
                })
                .collect()
        } else {
            Vec::new()
        };
        Answer::json(
            200,
            json!({"data": data, "meta": {"count": "300"}}).to_string(),
        )
    }));
    let mut extra = paged(&s.inventory.url());
    extra["fields"]["total"] = "/meta/count".into();
    let b = s.backend(extra).await;
    let (ids, error) = listed(&*b).await;
    let e = error.expect("the listing must fail").to_string();
    assert!(
        e.contains("total is 300 but its pages ended after 100 entries"),
        "{e}"
    );
    assert_eq!(ids.len(), 100);
}

/// With `urls`, every page comes from one host: the first host fails after
/// its first page, and the listing restarts from offset 0 on the second
/// (never page 2 of one host after page 1 of another); each agent is
/// listed once.
#[tokio::test]
async fn a_failover_during_a_listing_restarts_it_on_the_next_host() {
    let full = capped(300, 100, false, false);
    let first = Inventory::start(move |seen: &Seen| {
        if seen.method == "GET" && seen.param("offset").as_deref() != Some("0") {
            return Answer::json(503, "");
        }
        full(seen)
    });
    let second = Inventory::start(capped(300, 100, false, false));
    let s = Setup::new(first);
    let bundle = format!("{}{}", s.inventory.ca_pem(), second.ca_pem());
    std::fs::write(s.dir.path().join("ca.pem"), bundle).unwrap();
    let mut extra = paged("");
    extra["urls"] = json!([s.inventory.url(), second.url()]);
    extra["url_by_id"] = "/api/agents/{id}".into();
    extra["url_by_ip"] = "/api/agents?ip={ip}".into();
    extra["url_all"] = "/api/agents?offset={offset}&limit={limit}".into();
    extra["page_size"] = 100.into();
    let b = s.backend(extra).await;
    let (ids, error) = listed(&*b).await;
    assert!(error.is_none(), "{error:?}");
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((ids.len(), unique.len()), (300, 300));
    assert_eq!(offsets(&s.inventory), ["0", "100"]);
    assert_eq!(offsets(&second), ["0", "100", "200", "300"]);
}

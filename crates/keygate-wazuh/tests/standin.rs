//! The client and the sync engine against the Wazuh API stand-in
//! (`keygate-wazuh-standin`: a real manager cannot be installed on these
//! machines; the stand-in implements the endpoints from the public API
//! specification).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use keygate_core::{AgentRecord, BackendError, KeyBackend, Listed};
use keygate_testkit::Fake;
use keygate_wazuh::sync::{self, Action, Options, Quiet};
use keygate_wazuh::{Error, Retry, Settings, Wazuh};
use keygate_wazuh_standin::StandIn;
use zeroize::Zeroizing;

const PASSWORD: &str = "S3cret-api-pass";

fn key(n: u32) -> String {
    format!("{n:064}")
}

fn record(id: &str, name: &str, ip: &str, key: &str) -> AgentRecord {
    AgentRecord::parse(id, name, ip, key).unwrap()
}

fn client(standin: &StandIn, password: &str) -> (Wazuh, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    standin.write_ca(&ca);
    let wazuh = Wazuh::new(Settings {
        url: standin.url(),
        user: "keygate".into(),
        password: Zeroizing::new(password.into()),
        ca_file: Some(ca),
        insecure: false,
        concurrency: 4,
        timeout: Duration::from_secs(10),
        retry: Retry {
            attempts: 4,
            base: Duration::from_millis(10),
            max: Duration::from_millis(50),
        },
    })
    .unwrap();
    (wazuh, dir)
}

fn options(apply: bool, prune: bool) -> Options {
    Options {
        apply,
        prune,
        batch: 3,
        concurrency: 4,
    }
}

/// A wrong password is an `Auth` error naming the user, never the password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_password_is_a_clear_auth_error() {
    let standin = StandIn::start("keygate", PASSWORD);
    let (wazuh, _dir) = client(&standin, "wrong-password");
    let e = wazuh.login().await.unwrap_err();
    assert!(matches!(e, Error::Auth { .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("'keygate'") && text.contains("HTTP 401"),
        "{text}"
    );
    assert!(!text.contains("wrong-password"), "{text}");
}

/// Without the stand-in's CA the certificate is refused: verification is on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_ca_is_refused() {
    let standin = StandIn::start("keygate", PASSWORD);
    let wazuh = Wazuh::new(Settings {
        url: standin.url(),
        user: "keygate".into(),
        password: Zeroizing::new(PASSWORD.into()),
        ca_file: None,
        insecure: false,
        concurrency: 1,
        timeout: Duration::from_secs(5),
        retry: Retry::default(),
    })
    .unwrap();
    let e = wazuh.login().await.unwrap_err().to_string();
    assert!(
        e.contains("certificate") || e.contains("UnknownIssuer"),
        "{e}"
    );
}

/// HTTP 429 answers are retried with backoff and the call succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_429_is_retried() {
    let standin = StandIn::start("keygate", PASSWORD);
    let (wazuh, _dir) = client(&standin, PASSWORD);
    standin.fail_next_with_429(3);
    let page = wazuh.agents_page(0, 10).await.unwrap();
    assert_eq!(page.affected_items[0].id, "000");
    assert_eq!(standin.state().served_429, 3);
    // More 429s than attempts: a clear error, not a hang.
    standin.fail_next_with_429(10);
    let e = wazuh.agents_page(0, 10).await.unwrap_err().to_string();
    assert!(
        e.contains("HTTP 429") && e.contains("after 4 attempts"),
        "{e}"
    );
}

/// An expired token (401) makes the client log in again once, and the call
/// succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_token_logs_in_again() {
    let standin = StandIn::start("keygate", PASSWORD);
    let (wazuh, _dir) = client(&standin, PASSWORD);
    wazuh.agents_page(0, 1).await.unwrap();
    standin.expire_tokens();
    wazuh.agents_page(0, 1).await.unwrap();
    assert_eq!(standin.state().logins, 2);
}

/// Paging reads every agent whatever the page size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_reads_every_agent() {
    let standin = StandIn::start("keygate", PASSWORD);
    for i in 1..=10 {
        standin.put(&format!("{i:03}"), &format!("a{i}"), "any", &key(i));
    }
    let (wazuh, _dir) = client(&standin, PASSWORD);
    let pages: Vec<_> = wazuh.all_agents(3).collect().await;
    let ids: Vec<String> = pages
        .into_iter()
        .flat_map(|p| p.unwrap())
        .map(|a| a.id)
        .collect();
    assert_eq!(ids.len(), 11);
    assert_eq!(ids[0], "000");
}

fn fake_store() -> Fake {
    Fake::empty("store")
        .and(record("001", "web-01", "10.0.0.1", &key(1)))
        .and(record("002", "web-02", "any", &key(2)))
        .and(record("003", "db-01", "10.0.0.3", &key(3)))
        .and(record("004", "db-02", "10.0.0.4", &key(4)))
        .and(record("005", "short-key", "any", "abc123"))
}

/// Dry run writes nothing and plans insert, replace (name, ip or key
/// differs) and, with prune, delete; `000` is never planned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_and_writes_nothing() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.put("001", "web-01", "10.0.0.1", &key(1)); // unchanged
    standin.put("002", "web-02", "any", &key(99)); // key differs
    standin.put("003", "db-old", "10.0.0.3", &key(3)); // name differs
    standin.put("009", "gone", "any", &key(9)); // not in the store
    let (wazuh, _dir) = client(&standin, PASSWORD);
    let store = fake_store();
    let report = sync::run(&wazuh, store.list(), &options(false, true), &Quiet)
        .await
        .unwrap();
    assert!(!report.applied);
    assert_eq!(report.inserted, ["004"]);
    assert_eq!(report.replaced, ["002", "003"]);
    assert_eq!(report.deleted, ["009"]);
    assert_eq!(report.unchanged, 1);
    assert_eq!(report.failed.len(), 1);
    assert_eq!(report.failed[0].id, "005");
    assert_eq!(standin.state().writes, 0);
    assert!(standin
        .state()
        .log
        .iter()
        .all(|l| l.starts_with("GET ") || l.starts_with("POST /security")));
}

/// Apply converges (a second run plans nothing), prune deletes only agents
/// absent from the store and never `000`, and a key of the wrong length is
/// reported while the rest is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_converges_prunes_and_reports_bad_keys() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.put("002", "web-02", "any", &key(99));
    standin.put("003", "db-old", "10.0.0.3", &key(3));
    standin.put("009", "gone", "any", &key(9));
    let (wazuh, _dir) = client(&standin, PASSWORD);
    let store = fake_store();
    let report = sync::run(&wazuh, store.list(), &options(true, true), &Quiet)
        .await
        .unwrap();
    assert!(report.applied);
    assert_eq!(report.inserted, ["001", "004"]);
    assert_eq!(report.replaced, ["002", "003"]);
    assert_eq!(report.deleted, ["009"]);
    assert_eq!(report.failed.len(), 1, "{:?}", report.failed);
    assert_eq!(report.failed[0].action, Action::Insert);
    assert!(
        report.failed[0].reason.contains("64"),
        "{:?}",
        report.failed
    );
    let agents = standin.agents();
    assert_eq!(
        agents.keys().cloned().collect::<Vec<_>>(),
        ["001", "002", "003", "004"]
    );
    assert_eq!(agents["002"].2, key(2));
    assert_eq!(agents["003"].0, "db-01");
    assert!(standin
        .state()
        .log
        .iter()
        .all(|l| !(l.starts_with("DELETE") && l.contains("000"))));

    let again = sync::run(&wazuh, store.list(), &options(true, true), &Quiet)
        .await
        .unwrap();
    assert!(!again.has_changes(), "{again:?}");
    assert_eq!(again.unchanged, 4);
}

/// A store that fails mid-listing ends the run with nothing written, and
/// prune is skipped when the store has invalid entries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failures_never_lead_to_deletes() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.put("009", "gone", "any", &key(9));
    let (wazuh, _dir) = client(&standin, PASSWORD);
    let broken = stream::iter(vec![
        Ok(Listed::Record(record("001", "a", "any", &key(1)))),
        Err(BackendError::Unavailable("connection reset".into())),
    ]);
    let e = sync::run(&wazuh, broken, &options(true, true), &Quiet)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot read the store"), "{e}");
    assert_eq!(standin.state().writes, 0);

    let with_invalid = stream::iter(vec![
        Ok(Listed::Record(record("001", "a", "any", &key(1)))),
        Ok(Listed::Invalid {
            at: "line 2".into(),
            reason: "field 'ip' is invalid".into(),
        }),
    ])
    .boxed();
    let report = sync::run(&wazuh, with_invalid, &options(true, true), &Quiet)
        .await
        .unwrap();
    assert_eq!(report.inserted, ["001"]);
    assert!(report.deleted.is_empty());
    assert!(report.prune_skipped.is_some());
    assert!(standin.agents().contains_key("009"));
}

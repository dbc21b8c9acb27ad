//! The client and the sync engine against the Wazuh API stand-in
//! (`keygate-wazuh-standin`: a real manager cannot be installed on these
//! machines; the stand-in implements the endpoints from the public API
//! specification).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use keygate_core::{AgentRecord, BackendError, KeyBackend, Listed};
use keygate_testkit::Fake;
use keygate_wazuh::sync::{self, Action, Backups, Options, Progress, Quiet};
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
    (client_of(standin.url(), ca, password), dir)
}

/// A client of the API at `url` trusting the CA in `ca`, with quick
/// retries and no pace to speak of.
fn client_of(url: String, ca: std::path::PathBuf, password: &str) -> Wazuh {
    Wazuh::new(Settings {
        url,
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
            throttled_attempts: 4,
            throttled_max: Duration::from_millis(50),
        },
        max_requests_per_minute: 100_000,
    })
    .unwrap()
}

fn options(apply: bool, prune: bool, dir: &tempfile::TempDir) -> Options {
    Options {
        apply,
        prune,
        max_delete: None,
        batch: 3,
        concurrency: 4,
        manager_keys: None,
        backups: Backups {
            dir: dir.path().join("backups"),
            kept: 5,
        },
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
        max_requests_per_minute: 100,
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
    // Each 429 is counted as throttled (here the login's: the first call
    // logs in), and every call sent as a call, authentication excepted.
    assert_eq!(wazuh.stats().throttled, 3);
    assert_eq!(wazuh.stats().calls, 1);
    standin.fail_next_with_429(2);
    wazuh.agents_page(0, 10).await.unwrap();
    assert_eq!(wazuh.stats().throttled, 5);
    assert_eq!(wazuh.stats().calls, 4, "the retries are calls");
    assert_eq!(wazuh.stats().calls, standin.api_calls() as u64);
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
    let registry = wazuh.registry().await.unwrap();
    assert_eq!(registry.len(), 10);
    assert!(!registry.contains_key("000"));
    assert_eq!(registry["007"].name, "a7");
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
    let (wazuh, dir) = client(&standin, PASSWORD);
    let store = fake_store();
    let report = sync::run(&wazuh, store.list(), &options(false, true, &dir), &Quiet)
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
    let (wazuh, dir) = client(&standin, PASSWORD);
    let store = fake_store();
    let report = sync::run(&wazuh, store.list(), &options(true, true, &dir), &Quiet)
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

    let again = sync::run(&wazuh, store.list(), &options(true, true, &dir), &Quiet)
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
    let (wazuh, dir) = client(&standin, PASSWORD);
    let broken = stream::iter(vec![
        Ok(Listed::Record(record("001", "ab", "any", &key(1)))),
        Err(BackendError::Unavailable("connection reset".into())),
    ]);
    let e = sync::run(&wazuh, broken, &options(true, true, &dir), &Quiet)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("cannot read the store"), "{e}");
    assert_eq!(standin.state().writes, 0);

    let with_invalid = stream::iter(vec![
        Ok(Listed::Record(record("001", "ab", "any", &key(1)))),
        Ok(Listed::Invalid {
            at: "line 2".into(),
            reason: "field 'ip' is invalid".into(),
        }),
    ])
    .boxed();
    let report = sync::run(&wazuh, with_invalid, &options(true, true, &dir), &Quiet)
        .await
        .unwrap();
    assert_eq!(report.inserted, ["001"]);
    assert!(report.deleted.is_empty());
    assert!(report.prune_skipped.is_some());
    assert!(standin.agents().contains_key("009"));
}

/// Changes the stand-in's registry with `change` once the first batch of
/// deletes is done, as an operator or the dashboard would while sync
/// applies.
struct ChangeAfterFirstDelete<'a> {
    standin: &'a StandIn,
    change: fn(&StandIn),
    deleting: std::sync::atomic::AtomicBool,
    done: std::sync::atomic::AtomicBool,
}

impl<'a> ChangeAfterFirstDelete<'a> {
    fn new(standin: &'a StandIn, change: fn(&StandIn)) -> Self {
        Self {
            standin,
            change,
            deleting: false.into(),
            done: false.into(),
        }
    }
}

impl Progress for ChangeAfterFirstDelete<'_> {
    fn stage(&self, name: &str, _: Option<u64>) {
        use std::sync::atomic::Ordering;
        self.deleting
            .store(name.starts_with("deleting"), Ordering::SeqCst);
    }
    fn advance(&self, _: u64) {
        use std::sync::atomic::Ordering;
        if self.deleting.load(Ordering::SeqCst) && !self.done.swap(true, Ordering::SeqCst) {
            (self.change)(self.standin);
        }
    }
}

/// Applies a store of agent 001 alone, with prune, to a manager holding
/// 010 to 016, making `change` to the registry once the first batch of
/// deletes is done. The directory holds the backup.
async fn apply_while_the_registry_changes(
    change: fn(&StandIn),
) -> (StandIn, sync::Report, tempfile::TempDir) {
    let standin = StandIn::start("keygate", PASSWORD);
    for i in 10..=16 {
        standin.put(&format!("{i:03}"), &format!("old-{i}"), "any", &key(i));
    }
    let (wazuh, dir) = client(&standin, PASSWORD);
    let store = Fake::empty("store").and(record("001", "web-01", "any", &key(1)));
    let mut opts = options(true, true, &dir);
    opts.max_delete = Some(10);
    let progress = ChangeAfterFirstDelete::new(&standin, change);
    let report = sync::run(&wazuh, store.list(), &opts, &progress)
        .await
        .unwrap();
    (standin, report, dir)
}

/// Deletes come from the plan's snapshot: when the registry changes while
/// applying (an agent to delete re-enrolled under another name), the rest
/// of the deletes is skipped and reported, and the run fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_that_changes_while_applying_stops_the_deletes() {
    // Agent 015 re-enrolls under another name.
    let (standin, report, _dir) =
        apply_while_the_registry_changes(|s| s.put("015", "new-box", "any", &key(15))).await;
    assert_eq!(report.deleted, ["010", "011", "012"]);
    assert_eq!(report.deletes_skipped.len(), 4, "{report:?}");
    assert!(report.is_failure());
    assert!(
        report
            .deletes_skipped_reason
            .as_deref()
            .unwrap()
            .contains("015"),
        "{report:?}"
    );
    let agents = standin.agents();
    assert_eq!(agents["015"].0, "new-box");
    assert!(agents.contains_key("013") && agents.contains_key("016"));
    // Inserts still ran after the deletes, and the backup holds all 7.
    assert_eq!(report.inserted, ["001"]);
    let backup = std::fs::read_to_string(report.backup.unwrap()).unwrap();
    assert_eq!(backup.lines().count(), 7);
}

/// Two records of the store with the same name are a conflict, not a
/// replace that deletes the other; a rename onto a name another agent gives
/// up in the same run is no conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_duplicates_conflict_and_a_name_given_up_is_free() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.put("001", "alpha", "any", &key(1));
    standin.put("002", "beta", "any", &key(2));
    standin.put("003", "gamma", "any", &key(3));
    let (wazuh, dir) = client(&standin, PASSWORD);
    // 001 takes beta, which 002 gives up for delta; 003 takes alpha...
    // which 001 gives up. 004 is new and wants gamma, which 003 gives up.
    let store = Fake::empty("store")
        .and(record("001", "beta", "any", &key(1)))
        .and(record("002", "delta", "any", &key(2)))
        .and(record("003", "alpha", "any", &key(3)))
        .and(record("004", "gamma", "any", &key(4)));
    let report = sync::run(&wazuh, store.list(), &options(true, false, &dir), &Quiet)
        .await
        .unwrap();
    assert!(report.conflicts.is_empty(), "{report:?}");
    assert_eq!(report.replaced, ["001", "002", "003"]);
    assert_eq!(report.inserted, ["004"]);
    let names: Vec<String> = standin.agents().values().map(|a| a.0.clone()).collect();
    assert_eq!(names, ["beta", "delta", "alpha", "gamma"]);

    let dup = Fake::empty("store")
        .and(record("001", "beta", "any", &key(1)))
        .and(record("002", "delta", "any", &key(2)))
        .and(record("003", "alpha", "any", &key(3)))
        .and(record("004", "beta", "any", &key(44)));
    let report = sync::run(&wazuh, dup.list(), &options(true, false, &dir), &Quiet)
        .await
        .unwrap();
    assert_eq!(report.conflicts.len(), 1, "{report:?}");
    assert_eq!(report.conflicts[0].id, "004");
    assert!(report.conflicts[0].reason.contains("001"), "{report:?}");
    assert_eq!(standin.agents()["004"].2, key(4));
}

/// A change counts as done only when the API's answer names it: an API
/// that answers 200 to an insert naming another id, and to a delete with
/// no `affected_items`, gets both reported as failed, nothing as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_the_answer_does_not_name_is_a_failure() {
    use base64::Engine;
    use keygate_wazuh_standin::inventory::{Answer, Inventory};
    let line = base64::engine::general_purpose::STANDARD.encode(format!("050 old any {}", key(50)));
    let api = Inventory::start(move |seen| {
        let agent = r#"{"id":"050","name":"old","ip":"any","registerIP":"any"}"#;
        let items = |list: &str, n: u32| {
            format!(
                r#"{{"data":{{"affected_items":[{list}],"total_affected_items":{n},"failed_items":[],"total_failed_items":0}},"error":0}}"#
            )
        };
        let body = match (seen.method.as_str(), seen.path()) {
            ("POST", "/security/user/authenticate") => r#"{"data":{"token":"t"},"error":0}"#.into(),
            ("GET", "/agents") => items(agent, 1),
            ("GET", "/agents/050/key") => items(&format!(r#"{{"id":"050","key":"{line}"}}"#), 1),
            ("POST", "/agents/insert") => r#"{"data":{"id":"999","key":"x"},"error":0}"#.into(),
            ("DELETE", "/agents") => items("", 0),
            _ => return Answer::json(404, r#"{"title":"Not Found"}"#),
        };
        Answer::json(200, body)
    });
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    api.write_ca(&ca);
    let wazuh = client_of(api.url(), ca, PASSWORD);
    let store = Fake::empty("store").and(record("001", "web-01", "any", &key(1)));
    let report = sync::run(&wazuh, store.list(), &options(true, true, &dir), &Quiet)
        .await
        .unwrap();
    assert!(
        report.inserted.is_empty() && report.deleted.is_empty(),
        "{report:?}"
    );
    let failed: Vec<(&str, Action, &str)> = report
        .failed
        .iter()
        .map(|f| (f.id.as_str(), f.action, f.reason.as_str()))
        .collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert_eq!((failed[0].0, failed[0].1), ("001", Action::Insert));
    assert!(
        failed[0].2.contains("did not confirm agent 001"),
        "{failed:?}"
    );
    assert_eq!((failed[1].0, failed[1].1), ("050", Action::Delete));
    assert!(failed[1].2.contains("does not name it"), "{failed:?}");
    // The deleted agent's line was backed up first.
    let backup = std::fs::read_to_string(report.backup.unwrap()).unwrap();
    assert_eq!(backup, format!("050 old any {}\n", key(50)));
}

/// Records the names of the stages.
#[derive(Default)]
struct Stages(std::sync::Mutex<Vec<String>>);

impl Progress for Stages {
    fn stage(&self, name: &str, _: Option<u64>) {
        self.0.lock().unwrap().push(name.to_owned());
    }
    fn advance(&self, _: u64) {}
}

/// The plan says how many API calls applying it takes (the budget shown
/// before a run and while it applies), and that is what applying makes:
/// backup key reads, a look and a delete per batch of deletes, a call per
/// replace and insert; with the manager's client.keys, no key is read
/// through the API at all. The report names the client.keys compared.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_planned_api_calls_are_the_calls_applying_makes() {
    for with_client_keys in [false, true] {
        let standin = StandIn::start("keygate", PASSWORD);
        standin.put("001", "web-01", "10.0.0.1", &key(1)); // unchanged
        standin.put("002", "web-02", "any", &key(99)); // key differs
        standin.put("003", "db-old", "10.0.0.3", &key(3)); // name differs
        for i in 9..=15 {
            let id = format!("{i:03}");
            standin.put(&id, &format!("gone-{id}"), "any", &key(9)); // deleted: 3 batches of 3
        }
        let dir = tempfile::tempdir().unwrap();
        let keys_file = dir.path().join("client.keys");
        let options = |apply| Options {
            max_delete: Some(10),
            manager_keys: with_client_keys.then(|| sync::ManagerKeys {
                path: keys_file.clone(),
                lines: standin
                    .agents()
                    .into_iter()
                    .map(|(id, (name, ip, key))| {
                        let r = record(&id, &name, &ip, &key);
                        (id, r)
                    })
                    .collect(),
            }),
            ..options(apply, true, &dir)
        };
        let (planner, _ca) = client(&standin, PASSWORD);
        let dry = sync::run(&planner, fake_store().list(), &options(false), &Quiet)
            .await
            .unwrap();
        assert_eq!(dry.deleted.len(), 7, "{dry:?}");
        // 3 batches of deletes (a look and a delete each), 3 replaces and
        // inserts, and without client.keys the backup key reads.
        let expected = dry.apply_calls;
        if with_client_keys {
            assert_eq!(expected, 2 * 3 + 3);
        } else {
            assert!(expected > 2 * 3 + 3, "{expected}");
        }
        assert_eq!(
            dry.client_keys.as_deref(),
            with_client_keys.then_some(keys_file.as_path())
        );

        let (applier, _ca) = client(&standin, PASSWORD);
        let stages = Stages::default();
        let applied = sync::run(&applier, fake_store().list(), &options(true), &stages)
            .await
            .unwrap();
        assert!(applied.applied && applied.failed.len() == 1, "{applied:?}");
        assert_eq!(
            applied.api_calls - dry.api_calls,
            dry.apply_calls,
            "client.keys: {with_client_keys}"
        );
        let stages = stages.0.into_inner().unwrap();
        assert!(
            stages.iter().any(|s| s.starts_with("deleting (applying: ")
                && s.contains(&format!("{expected} API calls"))
                && s.ends_with("at 100000/min)")),
            "{stages:?}"
        );
    }
}

/// An agent to delete that somebody else removed after the plan was made
/// is a registry that changed under the run: the remaining deletes are
/// skipped and the reason names the agent that left (not an API error).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_gone_while_applying_stops_the_deletes_and_is_named() {
    let (standin, report, _dir) = apply_while_the_registry_changes(|s| {
        s.state().agents.remove("014");
    })
    .await;
    assert_eq!(report.deleted, ["010", "011", "012"], "{report:?}");
    assert!(report.is_failure());
    let reason = report.deletes_skipped_reason.as_deref().unwrap();
    assert!(
        reason.contains("agent 014 left the manager after the plan was made"),
        "{reason}"
    );
    assert!(standin.agents().contains_key("015"));
}

/// With the manager's client.keys, keys are compared against its lines and
/// none of them is read through the API; a line whose name or address no
/// longer matches the registry (a stale file) is not trusted and that key
/// is read through the API instead. A name or an address that differs is a
/// replace whatever the key; the backup holds the file's lines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_compared_against_the_managers_client_keys() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.put("001", "web-01", "10.0.0.1", &key(1)); // unchanged
    standin.put("002", "web-02", "any", &key(99)); // key differs
    standin.put("003", "db-old", "10.0.0.3", &key(3)); // name differs, same key
    standin.put("004", "db-02", "10.0.0.4", &key(4)); // unchanged; the file's line is stale
    standin.put("005", "app-01", "10.0.0.9", &key(5)); // address differs, same key
    standin.put("009", "gone", "any", &key(9)); // deleted
    let mut lines: std::collections::HashMap<String, AgentRecord> = standin
        .agents()
        .into_iter()
        .map(|(id, (name, ip, key))| {
            let r = record(&id, &name, &ip, &key);
            (id, r)
        })
        .collect();
    lines.insert(
        "004".into(),
        record("004", "db-renamed", "10.0.0.4", &key(77)),
    );
    let store = Fake::empty("store")
        .and(record("001", "web-01", "10.0.0.1", &key(1)))
        .and(record("002", "web-02", "any", &key(2)))
        .and(record("003", "db-01", "10.0.0.3", &key(3)))
        .and(record("004", "db-02", "10.0.0.4", &key(4)))
        .and(record("005", "app-01", "10.0.0.5", &key(5)));
    let (wazuh, dir) = client(&standin, PASSWORD);
    let options = Options {
        max_delete: Some(10),
        manager_keys: Some(sync::ManagerKeys {
            path: dir.path().join("client.keys"),
            lines,
        }),
        ..options(true, true, &dir)
    };
    let report = sync::run(&wazuh, store.list(), &options, &Quiet)
        .await
        .unwrap();
    assert_eq!(report.unchanged, 2, "{report:?}");
    assert_eq!(report.replaced, ["002", "003", "005"], "{report:?}");
    assert_eq!(report.deleted, ["009"], "{report:?}");
    let key_reads: Vec<String> = standin
        .state()
        .log
        .iter()
        .filter(|l| l.starts_with("GET /agents/") && l.ends_with("/key"))
        .cloned()
        .collect();
    assert_eq!(key_reads, ["GET /agents/004/key"]);
    let backup = std::fs::read_to_string(report.backup.unwrap()).unwrap();
    assert_eq!(
        backup,
        format!(
            "002 web-02 any {}\n003 db-old 10.0.0.3 {}\n005 app-01 10.0.0.9 {}\n009 gone any {}\n",
            key(99),
            key(3),
            key(5),
            key(9)
        )
    );
    assert_eq!(standin.agents()["002"].2, key(2));
}

/// Without `--max-delete`, one run deletes at most 10 % of the manager's
/// agents: of 30, 3 deletes are made and 4 are refused, nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_run_deletes_at_most_a_tenth_of_the_agents() {
    for (kept, allowed) in [(27u32, true), (26, false)] {
        let standin = StandIn::start("keygate", PASSWORD);
        let mut store = Fake::empty("store");
        for i in 1..=30 {
            let (id, name) = (format!("{i:03}"), format!("host-{i}"));
            standin.put(&id, &name, "any", &key(i));
            if i <= kept {
                store = store.and(record(&id, &name, "any", &key(i)));
            }
        }
        let (wazuh, dir) = client(&standin, PASSWORD);
        let report = sync::run(&wazuh, store.list(), &options(true, true, &dir), &Quiet)
            .await
            .unwrap();
        assert_eq!(report.max_delete, 3);
        if allowed {
            assert_eq!(report.deleted, ["028", "029", "030"], "{report:?}");
            assert_eq!(standin.agents().len(), 27);
        } else {
            let refused = report.refused.as_deref().unwrap();
            assert!(
                refused.contains("would delete 4 of the manager's 30 agents")
                    && refused.contains("(the default: 10 % of the manager's agents)"),
                "{refused}"
            );
            assert!(!report.applied, "{report:?}");
            assert_eq!(standin.agents().len(), 30);
        }
    }
}

/// The conflicts of `report`, as `id: reason`.
fn conflicts(report: &sync::Report) -> Vec<String> {
    report
        .conflicts
        .iter()
        .map(|c| format!("{}: {}", c.id, c.reason))
        .collect()
}

/// Two changes that claim one name, or one address, where one of them
/// keeps it in the manager, both conflict, each naming the other agent of
/// the store: neither is a "gives it up" that the other may take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_claiming_a_name_or_address_another_change_keeps_conflict() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.put("001", "alpha", "any", &key(1));
    standin.put("002", "beta", "any", &key(2));
    standin.put("003", "gamma", "10.0.0.3", &key(3));
    standin.put("004", "delta", "10.0.0.4", &key(4));
    let store = Fake::empty("store")
        // 001 takes the name beta, which 002 keeps (only its key changes).
        .and(record("001", "beta", "any", &key(1)))
        .and(record("002", "beta", "any", &key(22)))
        // 003 takes 10.0.0.4, which 004 keeps (only its name changes).
        .and(record("003", "gamma", "10.0.0.4", &key(3)))
        .and(record("004", "epsilon", "10.0.0.4", &key(4)));
    let (wazuh, dir) = client(&standin, PASSWORD);
    let report = sync::run(&wazuh, store.list(), &options(true, false, &dir), &Quiet)
        .await
        .unwrap();
    assert_eq!(
        conflicts(&report),
        [
            "001: the store gives agent 002 the same name beta",
            "002: the store gives agent 001 the same name 'beta'",
            "003: the store gives agent 004 the same address 10.0.0.4",
            "004: the store gives agent 003 the same address 10.0.0.4",
        ],
        "{report:?}"
    );
    assert!(
        report.replaced.is_empty() && report.is_failure(),
        "{report:?}"
    );
    assert_eq!(standin.agents()["001"].0, "alpha");
}

/// A change that takes one agent's name and another's address, neither in
/// the store, displaces both (with prune): both are listed as displaced by
/// it, and deleted before it is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_displacing_two_agents_lists_both() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.put("001", "alpha", "10.0.0.1", &key(1));
    standin.put("008", "beta", "10.0.0.8", &key(8));
    standin.put("009", "gamma", "10.0.0.9", &key(9));
    let store = Fake::empty("store").and(record("001", "beta", "10.0.0.9", &key(1)));
    let (wazuh, dir) = client(&standin, PASSWORD);
    let mut opts = options(false, true, &dir);
    opts.max_delete = Some(2);
    let report = sync::run(&wazuh, store.list(), &opts, &Quiet)
        .await
        .unwrap();
    assert!(report.has_changes() && !report.is_failure(), "{report:?}");
    let displaced: Vec<(String, String)> = report
        .displaced
        .iter()
        .map(|d| (d.id.clone(), d.by.clone()))
        .collect();
    assert_eq!(
        displaced,
        [("008".into(), "001".into()), ("009".into(), "001".into())],
        "{report:?}"
    );
    assert_eq!(report.deleted, ["008", "009"]);
    assert_eq!(report.replaced, ["001"]);
}

/// A redirect is never followed, whatever the call: the answer is an error
/// that names the status and the host it points to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_an_error_naming_where_it_points() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.redirect("/agents", "https://elsewhere.example:8443/agents");
    let (wazuh, _dir) = client(&standin, PASSWORD);
    match wazuh.agents_page(0, 10).await {
        Err(Error::Redirect {
            status, location, ..
        }) => {
            assert_eq!(status, 308);
            assert_eq!(location, "elsewhere.example:8443");
        }
        other => panic!("{other:?}"),
    }
}

/// The pace is the configured rate's: 100,000 calls a minute is one every
/// 600 microseconds.
#[tokio::test]
async fn the_pace_is_the_configured_rate() {
    let standin = StandIn::start("keygate", PASSWORD);
    let (wazuh, _dir) = client(&standin, PASSWORD);
    assert_eq!(wazuh.pace(), Duration::from_micros(600));
}

/// A token the API keeps refusing is renewed `attempts` times (4), then
/// the call fails with the API's 401: five logins, never a loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_always_refused_is_renewed_four_times_then_fails() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.expire_tokens_after(0);
    let (wazuh, _dir) = client(&standin, PASSWORD);
    let answer = tokio::time::timeout(Duration::from_secs(20), wazuh.agents_page(0, 10));
    match answer.await.expect("the client logs in again and again") {
        Err(Error::Api { status, .. }) => assert_eq!(status, 401),
        other => panic!("{other:?}"),
    }
    assert_eq!(standin.state().logins, 5);
}

/// Forwards every TCP connection on `listener` to `to`, both ways.
fn forward(listener: std::net::TcpListener, to: std::net::SocketAddr) {
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { return };
            let Ok(server) = std::net::TcpStream::connect(to) else {
                return;
            };
            for (mut from, mut into) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut from, &mut into);
                    let _ = into.shutdown(std::net::Shutdown::Write);
                });
            }
        }
    });
}

/// A refused connection is retried with backoff (a manager restarting):
/// the API that starts listening 150 ms after the first attempt is
/// reached. A port that stays closed is a transport error after the
/// attempts, not a hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_until_the_api_listens() {
    let standin = StandIn::start("keygate", PASSWORD);
    let api_port: u16 = standin.url().rsplit(':').next().unwrap().parse().unwrap();
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], api_port));
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    standin.write_ca(&ca);
    let wazuh = Wazuh::new(Settings {
        url: format!("https://localhost:{port}"),
        user: "keygate".into(),
        password: Zeroizing::new(PASSWORD.into()),
        ca_file: Some(ca),
        insecure: false,
        concurrency: 1,
        timeout: Duration::from_secs(10),
        retry: Retry {
            attempts: 4,
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
            throttled_attempts: 4,
            throttled_max: Duration::from_secs(1),
        },
        max_requests_per_minute: 100_000,
    })
    .unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(20), wazuh.agents_page(0, 1))
        .await
        .expect("a closed port is retried forever")
        .unwrap_err();
    assert!(matches!(closed, Error::Transport { .. }), "{closed:?}");
    let opening = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        forward(
            std::net::TcpListener::bind(("127.0.0.1", port)).unwrap(),
            api,
        );
    });
    let page = wazuh.agents_page(0, 1).await.unwrap();
    assert_eq!(page.affected_items[0].id, "000");
    opening.join().unwrap();
}

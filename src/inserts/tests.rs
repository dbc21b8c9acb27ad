//! The insert watch against a client.keys the test writes (the agent is
//! confirmed) or leaves alone (it is reported not inserted), under tokio's
//! paused clock: the deadline passes without waiting for it.

use super::*;
use keygate_core::{gateway, Reply};
use keygate_testkit::Fake;

const WITHIN: Duration = Duration::from_secs(30);

fn record(id: &str, name: &str, ip: &str, key: &str) -> AgentRecord {
    AgentRecord::parse(id, name, ip, key).unwrap()
}

fn client_keys(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.keys");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn index(text: &str) -> Index {
    let (_dir, path) = client_keys(text);
    Index::of(&ClientKeysFile::read(&path).unwrap())
}

/// Waits (on the paused clock, which jumps ahead whenever nothing else can
/// run) until `done`; fails after 20 s of real time.
async fn wait_until(what: &str, done: impl Fn() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never happened: {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each duplicate Wazuh refuses is named with the agent that holds it, in
/// the order Wazuh checks; removed agents and `any` addresses hold nothing;
/// an agent already there exactly as served is no conflict.
#[test]
fn conflicts_name_the_other_agent_and_the_reason_wazuh_gives() {
    let index = index(
        "012 web-01 10.0.0.12 k12\n013 !old-web 10.0.0.13 k13\n014 db-01 any k14\n015 lab 10.9.0.0/16 k15\n",
    );
    let conflict = |r: &AgentRecord| index.conflict(r, Some("manager-1"));
    assert_eq!(
        conflict(&record("001", "web-01", "any", "k1")).as_deref(),
        Some("Duplicate name: agent 012 holds 'web-01'; Wazuh refuses it unless <force> allows replacing")
    );
    assert_eq!(
        conflict(&record("001", "web-02", "10.0.0.12", "k1")).as_deref(),
        Some("Duplicate IP: agent 012 holds 10.0.0.12; Wazuh refuses it unless <force> allows replacing")
    );
    assert_eq!(
        conflict(&record("002", "lab-2", "10.9.0.0/16", "k2")).as_deref(),
        Some("Duplicate IP: agent 015 holds 10.9.0.0/16; Wazuh refuses it unless <force> allows replacing")
    );
    assert_eq!(
        conflict(&record("012", "web-01", "10.0.0.12", "new-key")).as_deref(),
        Some("Duplicate ID: agent 012 is in client.keys as 'web-01' with another registration; Wazuh refuses it unless <force> allows replacing")
    );
    assert_eq!(
        conflict(&record("003", "manager-1", "any", "k3")).as_deref(),
        Some("Invalid agent name: 'manager-1' is the manager's hostname; Wazuh refuses it")
    );
    // Removed agents hold nothing; `any` is never a duplicate ip.
    assert_eq!(conflict(&record("004", "old-web", "10.0.0.13", "k4")), None);
    assert_eq!(conflict(&record("005", "new-db", "any", "k5")), None);
    // Already registered exactly as served.
    assert_eq!(conflict(&record("012", "web-01", "10.0.0.12", "k12")), None);
    assert!(index.holds(&record("012", "web-01", "10.0.0.12", "k12")));
    assert!(!index.holds(&record("012", "web-01", "10.0.0.12", "other")));
}

/// Served, then written to client.keys by "Wazuh": confirmed, and never
/// reported as not inserted.
#[tokio::test(start_paused = true)]
async fn an_agent_written_to_client_keys_is_confirmed() {
    let (_dir, path) = client_keys("012 web-01 10.0.0.12 k12\n");
    let watch = InsertWatch::start_with(&path, WITHIN, None).await.unwrap();
    let store = Fake::empty("store").and(record("001", "db-01", "any", "key-001"));
    let stack = watch.wrap(Arc::new(store));
    let reply = gateway::answer(stack.as_ref(), b"id:001", Duration::from_secs(5)).await;
    assert!(matches!(reply, Reply::Found(_)), "{reply:?}");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("001 db-01 any key-001\n");
    std::fs::write(&path, text).unwrap();
    wait_until("confirmed", || {
        watch.counts.confirmed.load(Ordering::Relaxed) == 1
    })
    .await;
    tokio::time::sleep(WITHIN * 2).await;
    assert_eq!(watch.counts.not_inserted.load(Ordering::Relaxed), 0);
    assert_eq!(watch.counts.confirmed.load(Ordering::Relaxed), 1);
}

/// Served and left out of client.keys (another agent holds its name):
/// reported not inserted once the deadline has passed, not before; an
/// agent written with another key is not a confirmation either.
#[tokio::test(start_paused = true)]
async fn an_agent_left_out_of_client_keys_is_reported_after_the_deadline() {
    let (_dir, path) = client_keys("012 web-01 10.0.0.12 k12\n");
    let watch = InsertWatch::start_with(&path, WITHIN, None).await.unwrap();
    let store = Fake::empty("store")
        .and(record("001", "web-01", "any", "key-001"))
        .and(record("002", "db-02", "any", "key-002"));
    let stack = watch.wrap(Arc::new(store));
    let answered = Instant::now();
    for request in ["id:001", "id:002"] {
        let reply =
            gateway::answer(stack.as_ref(), request.as_bytes(), Duration::from_secs(5)).await;
        assert!(matches!(reply, Reply::Found(_)), "{reply:?}");
    }
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("002 db-02 any some-other-key\n");
    std::fs::write(&path, text).unwrap();
    wait_until("both reported", || {
        watch.counts.not_inserted.load(Ordering::Relaxed) == 2
    })
    .await;
    assert!(answered.elapsed() >= WITHIN, "reported before the deadline");
    assert_eq!(watch.counts.confirmed.load(Ordering::Relaxed), 0);
}

/// Asked again and again before Wazuh writes it (Wazuh retries): watched
/// once, confirmed once.
#[tokio::test(start_paused = true)]
async fn repeated_answers_for_one_agent_are_watched_once() {
    let (_dir, path) = client_keys("");
    let watch = InsertWatch::start_with(&path, WITHIN, None).await.unwrap();
    let stack = watch.wrap(Arc::new(
        Fake::empty("store").and(record("001", "db-01", "any", "key-001")),
    ));
    for _ in 0..5 {
        gateway::answer(stack.as_ref(), b"id:001", Duration::from_secs(5)).await;
    }
    std::fs::write(&path, "001 db-01 any key-001\n").unwrap();
    wait_until("confirmed", || {
        watch.counts.confirmed.load(Ordering::Relaxed) >= 1
    })
    .await;
    tokio::time::sleep(WITHIN * 2).await;
    assert_eq!(watch.counts.confirmed.load(Ordering::Relaxed), 1);
    assert_eq!(watch.counts.not_inserted.load(Ordering::Relaxed), 0);
}

/// No readable client.keys: no watch.
#[tokio::test]
async fn an_unreadable_client_keys_turns_the_watch_off() {
    let dir = tempfile::tempdir().unwrap();
    assert!(InsertWatch::start(&dir.path().join("client.keys"), WITHIN)
        .await
        .is_none());
}

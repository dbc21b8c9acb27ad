//! The exec backend running the seed document's own example: the Python 3
//! port of Wazuh's documented MySQL key script
//! (crates/keygate-bench/seed/seed_script.py), against a fresh MariaDB
//! database loaded with the fixture table. Needs python3 with
//! mysql-connector-python (`bash tests/setup.sh` installs it); fails, never
//! skips, without it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use keygate_backends::exec::ExecConfig;
use keygate_backends::BackendSpec;
use keygate_core::{ErrorCode, KeyBackend, Request, TimeoutLayer};
use keygate_testkit::repo_root;
use keygate_testkit::sql::TestDb;

fn require_connector() {
    let ok = Command::new("python3")
        .args(["-c", "import mysql.connector"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "python3 with mysql-connector-python is needed: run `bash tests/setup.sh` \
         (or `python3 -m pip install mysql-connector-python`)"
    );
}

async fn seed_backend(database: &str) -> TimeoutLayer<Arc<dyn KeyBackend>> {
    let script = repo_root().join("crates/keygate-bench/seed/seed_script.py");
    let config = ExecConfig {
        command: vec!["python3".into(), script.display().to_string()],
        max_concurrent: 4,
        env: BTreeMap::from([
            ("SEED_DB_HOST".to_owned(), "127.0.0.1".to_owned()),
            ("SEED_DB_USER".to_owned(), "root".to_owned()),
            ("SEED_DB_NAME".to_owned(), database.to_owned()),
        ]),
    };
    let inner = config.build("legacy").await.unwrap();
    inner.health().await.unwrap();
    TimeoutLayer::new(inner, Duration::from_secs(30))
}

fn q(text: &str) -> Request {
    Request::parse(text.as_bytes()).unwrap()
}

/// The documented script answers found (by id and by ip), not found
/// (its error 4), and its bad rows are refused by keygate's validation.
#[tokio::test]
async fn the_documented_script_answers_through_the_exec_backend() {
    require_connector();
    let db = TestDb::mysql();
    let b = seed_backend(db.name()).await;
    let r = b.lookup(&q("id:001")).await.unwrap().unwrap();
    assert_eq!(
        (r.id.as_str(), r.name.as_str(), r.ip.as_str()),
        ("001", "agent-00001", "10.0.0.1")
    );
    assert_eq!(r.key.expose().len(), 64);
    let r = b.lookup(&q("ip:10.0.0.1")).await.unwrap().unwrap();
    assert_eq!(r.id.as_str(), "001");
    assert!(b.lookup(&q("id:99999")).await.unwrap().is_none());
    for bad in ["id:20001", "id:20002", "id:20003", "id:20004"] {
        let e = b.lookup(&q(bad)).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRecord, "{bad}: {e}");
    }
}

/// The script's "cannot connect" (error 2, here an unknown database) is an
/// outage, not a not-found.
#[tokio::test]
async fn the_scripts_connect_failure_is_an_outage() {
    require_connector();
    let b = seed_backend("keygate_no_such_database").await;
    let e = b.lookup(&q("id:001")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable, "{e}");
    assert!(e.to_string().contains("error 2"), "{e}");
}

//! Property tests of the file backend's two parsers (issue 10, "Proof"),
//! through its public entry point (`FileBackend::open` on a file, then
//! lookups): arbitrary bytes never panic, and a valid client.keys or CSV
//! file serves every record it holds, unchanged, by id and by address.
#![cfg(feature = "file")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use keygate_backends::file::{FileBackend, FileConfig, FileFormat};
use keygate_core::{AgentRecord, KeyBackend, Request};
use proptest::prelude::*;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Opens `bytes` as a file of `format` and asks `queries`; returns the
/// answers (Ok(Some), Ok(None) or the error's code).
fn serve(
    bytes: &[u8],
    format: FileFormat,
    queries: &[Request],
) -> Vec<Result<Option<AgentRecord>, u8>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents");
    std::fs::write(&path, bytes).unwrap();
    runtime().block_on(async {
        let backend = FileBackend::open(
            "props",
            FileConfig {
                path,
                format,
                reload_interval: Duration::from_secs(3600),
            },
        )
        .await;
        let mut out = Vec::new();
        for q in queries {
            out.push(backend.lookup(q).await.map_err(|e| e.code().as_u8()));
        }
        out
    })
}

fn q(s: &str) -> Request {
    Request::parse(s.as_bytes()).unwrap()
}

/// Bytes that look a little like agent files, and arbitrary bytes.
fn file_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..400),
        "(#?[0-9]{0,4}[ ,][!-~]{0,8}[ ,\"]{0,2}[0-9.:/a-f]{0,12}[ ,]\\PC{0,8}\r?\n){0,8}"
            .prop_map(String::into_bytes),
        "(id,name,ip,key\n)?([0-9]{3},[a-z]{1,3},10\\.0\\.0\\.[0-9],[\"a-z, \n]{0,6}\n){0,6}"
            .prop_map(String::into_bytes),
    ]
}

/// Up to 12 valid agents with distinct ids and host addresses.
fn agents() -> impl Strategy<Value = Vec<AgentRecord>> {
    proptest::collection::vec(
        (
            3usize..=8,
            "[A-Za-z0-9._-]{1,127}",
            any::<u8>(),
            "[!-~]{1,127}",
        ),
        1..12,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(i, (width, name, net, key))| {
                let id = format!("{:0width$}", i + 1);
                let ip = format!("10.{net}.{}.{}", i / 256, i % 256);
                AgentRecord::parse(&id, &name, &ip, &key).unwrap()
            })
            .collect()
    })
}

fn client_keys(agents: &[AgentRecord]) -> Vec<u8> {
    let mut out = b"# written by the property test\n".to_vec();
    for r in agents {
        out.extend(
            format!(
                "{} {} {} {}\n",
                r.id.as_str(),
                r.name.as_str(),
                r.ip.as_str(),
                r.key.expose()
            )
            .as_bytes(),
        );
    }
    out
}

fn csv_quoted(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn csv(agents: &[AgentRecord]) -> Vec<u8> {
    let mut out = b"id,name,ip,key\n".to_vec();
    for r in agents {
        out.extend(
            format!(
                "{},{},{},{}\n",
                r.id.as_str(),
                csv_quoted(r.name.as_str()),
                r.ip.as_str(),
                // As the format says: a cell starting with `'` and one of
                // `=+-@'` (only a key can) gets one more `'` in front.
                csv_quoted(&keygate_backends::file::cell::escape(r.key.expose()))
            )
            .as_bytes(),
        );
    }
    out
}

fn every_query(agents: &[AgentRecord]) -> Vec<Request> {
    agents
        .iter()
        .flat_map(|r| {
            [
                q(&format!("id:{}", r.id.as_str())),
                q(&format!("ip:{}", r.ip.as_str())),
            ]
        })
        .collect()
}

/// 64 cases, the seeds of failing ones saved under the target directory
/// (proptest's default writes them into the source tree).
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 64,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::Direct(concat!(
                env!("CARGO_TARGET_TMPDIR"),
                "/proptest-regressions/keygate-backends-file_properties.txt"
            )),
        )),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Neither parser panics on any bytes; lookups answer or fail cleanly.
    #[test]
    fn parsers_never_panic(bytes in file_bytes()) {
        let queries = [q("id:001"), q("id:0001"), q("ip:10.0.0.1"), q("ip:::1")];
        for format in [FileFormat::ClientKeys, FileFormat::Csv] {
            for answer in serve(&bytes, format, &queries) {
                if let Err(code) = answer {
                    prop_assert!((2..=6).contains(&code), "code {code}");
                }
            }
        }
    }

    /// A valid client.keys file serves each record unchanged, by id and ip.
    #[test]
    fn client_keys_round_trip(agents in agents()) {
        let answers = serve(&client_keys(&agents), FileFormat::ClientKeys, &every_query(&agents));
        for (i, answer) in answers.into_iter().enumerate() {
            prop_assert_eq!(answer, Ok(Some(agents[i / 2].clone())));
        }
    }

    /// A valid CSV file (quoted fields, `"` doubled, cells escaped against
    /// spreadsheet formulas as `export` writes them) serves each record
    /// unchanged, by id and ip.
    #[test]
    fn csv_round_trip(agents in agents()) {
        let answers = serve(&csv(&agents), FileFormat::Csv, &every_query(&agents));
        for (i, answer) in answers.into_iter().enumerate() {
            prop_assert_eq!(answer, Ok(Some(agents[i / 2].clone())));
        }
    }
}

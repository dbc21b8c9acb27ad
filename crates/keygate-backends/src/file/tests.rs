//! The file backend's tests: both parsers (through the index a lookup
//! reads), reloading, and listing.

use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use keygate_core::{ErrorCode, KeyBackend, Listed};
use keygate_testkit::q;

use super::index::Snapshot;
use super::parse;
use super::{FileBackend, FileConfig, FileFormat};

const KEYS: &str = "\
001 web-01 10.0.0.1 a1b2c3
002 db-01 any d4e5f6
# 003 comment 10.0.0.3 zzz
 004 leading-space 10.0.0.4 zzz
005 !removed 10.0.0.5 zzz
006 #removed 10.0.0.6 zzz
007 lab-net 10.9.0.0/16 k007
008 bad\tname 10.0.0.8 k008
009 dup-a 10.0.0.99 k009
010 dup-b 10.0.0.99 k010
011 short 10.0.0.11
012 v6 2001:db8::12 k012\r
013 twice 10.0.0.13 k013
013 twice-again 10.0.0.14 k013b
014 badip 10.0.0.300 k014
";

fn keys(text: &[u8]) -> Snapshot {
    parse::client_keys(text, text.len() as u64).unwrap()
}

fn code(s: &Snapshot, req: &str) -> ErrorCode {
    s.find(&q(req)).unwrap_err().code()
}

#[test]
fn client_keys_lookups_by_id_and_ip() {
    let s = keys(KEYS.as_bytes());
    let r = s.find(&q("id:001")).unwrap().unwrap();
    assert_eq!(
        (r.name.as_str(), r.ip.as_str(), r.key.expose()),
        ("web-01", "10.0.0.1", "a1b2c3")
    );
    assert_eq!(
        s.find(&q("ip:10.0.0.1")).unwrap().unwrap().id.as_str(),
        "001"
    );
    assert_eq!(s.find(&q("id:002")).unwrap().unwrap().ip.as_str(), "any");
    assert_eq!(
        s.find(&q("ip:2001:db8::12")).unwrap().unwrap().key.expose(),
        "k012"
    );
}

#[test]
fn client_keys_skips_what_wazuh_skips() {
    let s = keys(KEYS.as_bytes());
    for id in ["id:003", "id:004", "id:005", "id:006"] {
        assert!(s.find(&q(id)).unwrap().is_none(), "{id}");
    }
    assert!(s.find(&q("ip:10.0.0.5")).unwrap().is_none());
}

#[test]
fn cidr_agents_answer_addresses_inside_their_network() {
    let s = keys(KEYS.as_bytes());
    assert_eq!(
        s.find(&q("ip:10.9.200.1")).unwrap().unwrap().id.as_str(),
        "007"
    );
    assert!(s.find(&q("ip:10.10.0.1")).unwrap().is_none());
}

/// Bad, duplicate and short entries answer 5; two lines sharing an id
/// (013) answer 5 by the id and by each one's own address (before: by
/// address, each was served).
#[test]
fn bad_duplicate_and_short_entries_answer_5() {
    let s = keys(KEYS.as_bytes());
    for req in [
        "id:008",
        "ip:10.0.0.8",
        "ip:10.0.0.99",
        "id:011",
        "id:013",
        "ip:10.0.0.13",
        "ip:10.0.0.14",
        "id:014",
    ] {
        assert_eq!(code(&s, req), ErrorCode::InvalidRecord, "{req}");
    }
    assert!(s.find(&q("id:009")).unwrap().is_some());
}

/// A Latin-1 `ü` (byte 0xFC, not UTF-8) in a comment line is skipped like
/// any comment; in an agent line it makes that one line invalid (5); every
/// other agent is served. (Before, the whole file failed to load: code 2.)
#[test]
fn a_non_utf8_byte_costs_one_line_not_the_file() {
    let text = b"# M\xfcnchen office\n001 web-01 10.0.0.1 k1\n002 m\xfcnchen 10.0.0.2 k2\n003 db-01 10.0.0.3 k\xfc3\n005 !gel\xf6scht any k5\n004 last 10.0.0.4 k4\n";
    let s = keys(text);
    assert_eq!(
        s.find(&q("id:001")).unwrap().unwrap().name.as_str(),
        "web-01"
    );
    assert_eq!(
        s.find(&q("ip:10.0.0.4")).unwrap().unwrap().id.as_str(),
        "004"
    );
    for req in ["id:002", "ip:10.0.0.2", "id:003", "ip:10.0.0.3"] {
        assert_eq!(code(&s, req), ErrorCode::InvalidRecord, "{req}");
    }
    assert!(s.find(&q("id:005")).unwrap().is_none());
    assert_eq!(s.counts(), (2, 2));
    let lines: Vec<u32> = s.entries().iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 3, 4, 6]);
    let reason = s.entries()[1].record.as_ref().unwrap_err().to_string();
    assert_eq!(reason, "field 'name' is invalid: not UTF-8 text");
    let reason = s.entries()[2].record.as_ref().unwrap_err().to_string();
    assert_eq!(reason, "field 'key' is invalid: not UTF-8 text");
}

#[test]
fn csv_with_header_in_any_order() {
    let text = "name,id,key,ip\nweb-01,001,k1,10.0.0.1\n\"has space\",002,k2,10.0.0.2\nweb-03,003,,10.0.0.3\nonly,004\n";
    let s = parse::csv(text.as_bytes(), 0).unwrap();
    assert_eq!(
        s.find(&q("ip:10.0.0.1")).unwrap().unwrap().name.as_str(),
        "web-01"
    );
    for req in ["id:002", "id:003", "id:004", "ip:10.0.0.2"] {
        assert_eq!(code(&s, req), ErrorCode::InvalidRecord, "{req}");
    }
    assert!(parse::csv(&b"id,name,address,key\n"[..], 0)
        .err()
        .unwrap()
        .contains("'ip'"));
}

/// CSV is read on bytes too: a non-UTF-8 row is invalid, the rest served,
/// and the line numbers count quoted line breaks as the file has them.
#[test]
fn csv_non_utf8_row_is_invalid_and_the_rest_served() {
    let text = b"id,name,ip,key\n001,web-01,10.0.0.1,k1\n002,m\xfcnchen,10.0.0.2,k2\n003,\"two\nlines\",10.0.0.3,k3\n004,last,10.0.0.4,k4\n";
    let s = parse::csv(&text[..], 0).unwrap();
    assert!(s.find(&q("id:001")).unwrap().is_some());
    assert!(s.find(&q("id:004")).unwrap().is_some());
    assert_eq!(code(&s, "id:002"), ErrorCode::InvalidRecord);
    assert_eq!(code(&s, "id:003"), ErrorCode::InvalidRecord);
    let lines: Vec<u32> = s.entries().iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 3, 4, 6]);
}

fn config(path: &Path, format: FileFormat) -> FileConfig {
    FileConfig {
        path: path.to_owned(),
        format,
        reload_interval: Duration::from_millis(20),
    }
}

async fn eventually(b: &FileBackend, req: &str, want: Option<&str>) {
    for _ in 0..200 {
        let got = b
            .lookup(&q(req))
            .await
            .ok()
            .flatten()
            .map(|r| r.name.as_str().to_owned());
        if got.as_deref() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{req} never became {want:?}");
}

#[tokio::test]
async fn reloads_on_change_and_keeps_last_good_data_on_a_bad_reload() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.csv");
    std::fs::write(&path, "id,name,ip,key\n001,first,10.0.0.1,k1\n").unwrap();
    let b = FileBackend::open("f", config(&path, FileFormat::Csv)).await;
    eventually(&b, "id:001", Some("first")).await;

    // Replaced atomically, as Wazuh's tools do.
    let tmp = dir.path().join("agents.tmp");
    std::fs::write(&tmp, "id,name,ip,key\n001,second,10.0.0.1,k1\n").unwrap();
    std::fs::rename(&tmp, &path).unwrap();
    eventually(&b, "id:001", Some("second")).await;

    // A broken header fails the reload; the old data keeps answering.
    std::fs::write(&path, "garbage\n001,third,10.0.0.1,k1\n").unwrap();
    for _ in 0..200 {
        if b.health().await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let e = b.health().await.unwrap_err().to_string();
    assert!(e.contains("serving the last good data"), "{e}");
    assert_eq!(
        b.lookup(&q("id:001")).await.unwrap().unwrap().name.as_str(),
        "second"
    );

    std::fs::write(&path, "id,name,ip,key\n001,fourth,10.0.0.1,k1\n").unwrap();
    eventually(&b, "id:001", Some("fourth")).await;
    assert!(b.health().await.is_ok());
}

#[tokio::test]
async fn missing_file_is_an_outage_until_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.keys");
    let b = FileBackend::open("f", config(&path, FileFormat::ClientKeys)).await;
    let e = b.lookup(&q("id:001")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Unavailable);
    assert!(b.health().await.is_err());
    let listed: Vec<_> = b.list().collect().await;
    assert!(
        matches!(listed.as_slice(), [Err(e)] if e.code() == ErrorCode::Unavailable),
        "{listed:?}"
    );
    std::fs::write(&path, "001 late 10.0.0.1 k1\n").unwrap();
    eventually(&b, "id:001", Some("late")).await;
}

/// What a listing shows: valid entries as records, invalid ones as
/// `line N` with the reason, without the key; no comment or removed line.
fn summary(listed: Vec<Result<Listed, keygate_core::BackendError>>) -> Vec<String> {
    listed
        .into_iter()
        .map(|l| match l.unwrap() {
            Listed::Record(r) => format!("{} {}", r.id.as_str(), r.name.as_str()),
            Listed::Invalid { at, reason } => format!("{at}: {reason}"),
        })
        .collect()
}

/// Every entry listed once: records, invalid lines by number and reason,
/// lines sharing an id as one item naming both lines (before: both were
/// listed as records, and `export` wrote one of them); no key anywhere.
#[tokio::test]
async fn client_keys_listing_has_every_entry_and_invalid_lines_with_their_number() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.keys");
    std::fs::write(&path, KEYS).unwrap();
    let b = FileBackend::open("f", config(&path, FileFormat::ClientKeys)).await;
    let got = summary(b.list().collect().await);
    assert_eq!(
        got,
        [
            "001 web-01",
            "002 db-01",
            "007 lab-net",
            "line 8: field 'name' is invalid: only letters, digits, '-', '_' and '.' are allowed",
            "009 dup-a",
            "010 dup-b",
            "line 11: malformed record: a client.keys line needs exactly 4 space-separated fields",
            "012 v6",
            "lines 13, 14: id 013 is on 2 lines; none of them is served",
            "line 15: field 'ip' is invalid: not an IP address, address/prefix or 'any'",
        ]
    );
    for line in &got {
        for key in ["k008", "k014", "zzz"] {
            assert!(!line.contains(key), "{line}");
        }
    }
}

#[tokio::test]
async fn csv_listing_reports_invalid_rows_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.csv");
    std::fs::write(
        &path,
        b"id,name,ip,key\n001,web-01,10.0.0.1,k1\n002,m\xfcnchen,10.0.0.2,secret-k2\n003,db,10.0.0.3\n",
    )
    .unwrap();
    let b = FileBackend::open("f", config(&path, FileFormat::Csv)).await;
    let got = summary(b.list().collect().await);
    assert_eq!(got.len(), 3, "{got:?}");
    assert_eq!(got[0], "001 web-01");
    assert_eq!(got[1], "line 3: field 'name' is invalid: not UTF-8 text");
    assert!(got[2].starts_with("line 4: malformed record"), "{got:?}");
    assert!(!got.concat().contains("secret-k2"));
}

/// CSV rows sharing an id (also with a third, invalid row claiming it)
/// are refused by id, by each address and in the listing, reported once
/// with every line; other rows are served.
#[tokio::test]
async fn csv_rows_sharing_an_id_are_refused_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agents.csv");
    std::fs::write(
        &path,
        "id,name,ip,key\n001,web-01,10.0.0.1,k1\n002,db-a,10.0.0.2,k2a\n003,ok,10.0.0.3,k3\n002,db-b,10.0.0.22,k2b\n002,bad name,10.0.0.23,k2c\n",
    )
    .unwrap();
    let b = FileBackend::open("f", config(&path, FileFormat::Csv)).await;
    for req in ["id:002", "ip:10.0.0.2", "ip:10.0.0.22", "ip:10.0.0.23"] {
        let e = b.lookup(&q(req)).await.unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRecord, "{req}");
    }
    assert!(b.lookup(&q("ip:10.0.0.3")).await.unwrap().is_some());
    let got = summary(b.list().collect().await);
    assert_eq!(
        got,
        [
            "001 web-01",
            "lines 3, 5, 6: id 002 is on 3 lines; none of them is served",
            "003 ok",
        ]
    );
    assert!(!got.concat().contains("k2"), "{got:?}");
}

/// Line `i` of a generated client.keys, for agent `id`: its own address
/// and key.
fn agent_line(id: u32, i: u32) -> String {
    format!(
        "{id:03} agent-{i} 10.{}.{}.{} {:064x}\n",
        i >> 16,
        (i >> 8) & 255,
        i & 255,
        i
    )
}

/// A large file is indexed on two threads (ids on one): an id shared by
/// lines in distant chunks is still refused by each address and counted.
#[test]
fn ids_shared_across_chunks_of_a_large_file_are_refused() {
    let mut text = String::new();
    for i in 1..=20_000u32 {
        text.push_str(&agent_line(if i == 19_000 { 12 } else { i }, i));
    }
    assert!(text.len() > 1 << 20, "big enough to be loaded in chunks");
    let s = keys(text.as_bytes());
    assert_eq!(s.counts(), (19_998, 2));
    for req in ["id:012", "ip:10.0.0.12", "ip:10.0.74.56"] {
        assert_eq!(code(&s, req), ErrorCode::InvalidRecord, "{req}");
    }
    let shared = s.shared_ids();
    assert_eq!(shared.groups.len(), 1);
    assert_eq!(s.lines(&shared.groups[0]), "12, 19000");
}

/// A reload of the file drops the cache's not-found answers: an agent
/// added to the file is found at once, not after `negative_ttl` (before:
/// the cached 4 stood for its 30 s).
#[tokio::test]
async fn an_agent_added_to_the_file_is_found_at_once_through_the_cache() {
    use keygate_core::{CacheLayer, CacheSettings};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.keys");
    std::fs::write(&path, "001 first 10.0.0.1 k1\n").unwrap();
    let b = FileBackend::open("f", config(&path, FileFormat::ClientKeys)).await;
    let cache = CacheLayer::new(b.clone(), CacheSettings::default());
    assert!(cache.lookup(&q("id:002")).await.unwrap().is_none());
    assert!(cache.lookup(&q("id:002")).await.unwrap().is_none());
    assert_eq!(cache.stats().negative_hits, 1, "the not-found is cached");
    std::fs::write(&path, "001 first 10.0.0.1 k1\n002 added 10.0.0.2 k2\n").unwrap();
    eventually(&b, "id:002", Some("added")).await;
    let r = cache.lookup(&q("id:002")).await.unwrap();
    assert_eq!(
        r.map(|r| r.name.as_str().to_owned()).as_deref(),
        Some("added")
    );
    assert!(cache.lookup(&q("id:001")).await.unwrap().is_some());
}

#[test]
fn loads_a_large_file_in_chunks_with_exact_line_numbers() {
    let mut text = String::new();
    for i in 1..=20_000u32 {
        if i == 15_000 {
            text.push_str("# a comment in the last chunk\n");
            text.push_str("15000 bad name 10.0.0.1 k\n");
            continue;
        }
        text.push_str(&agent_line(i, i));
    }
    assert!(text.len() > 1 << 20, "big enough to be loaded in chunks");
    let s = keys(text.as_bytes());
    assert_eq!(s.counts(), (19_999, 1));
    assert_eq!(
        s.find(&q("id:12345")).unwrap().unwrap().name.as_str(),
        "agent-12345"
    );
    let bad: Vec<u32> = s
        .entries()
        .iter()
        .filter(|e| e.record.is_err())
        .map(|e| e.line)
        .collect();
    assert_eq!(bad, [15_001]);
}

/// `ClientKeysFile::unique_records` (what `keygate sync` compares keys
/// against) keeps the
/// valid lines of a manager's client.keys: removed agents, invalid lines
/// and an id on two lines are left out.
#[test]
fn read_client_keys_keeps_only_valid_unique_lines() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("client.keys");
    let k = |n: u32| format!("{n:064}");
    std::fs::write(
        &path,
        format!(
            "001 web any {}\n002 !gone any {}\n003 bad name any {}\n004 db 10.0.0.4 {}\n005 x any {}\n005 y any {}\n",
            k(1), k(2), k(3), k(4), k(5), k(6)
        ),
    )
    .unwrap();
    let records = super::client_keys::ClientKeysFile::read(&path)
        .unwrap()
        .unique_records();
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["001", "004"]);
    assert_eq!(records[1].key.expose(), k(4));
    let e = super::client_keys::ClientKeysFile::read(&dir.path().join("missing"))
        .err()
        .unwrap();
    assert!(e.contains("cannot read"), "{e}");
}

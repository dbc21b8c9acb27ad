//! `type = "file"`: Wazuh's own client.keys, or a CSV file, held in memory.
//!
//! The file is parsed once into an index by id and by address and re-read
//! when it changes (size, mtime or inode; checked every `reload_interval`,
//! which also catches the atomic rename Wazuh's tools do). A reload that
//! fails keeps serving the last good data and logs why. Entries that fail
//! validation are indexed too, so asking for them answers 5 rather than a
//! misleading 4; two entries for one id or one address answer 5 as well.
//!
//! Polling was chosen over inotify (the `notify` crate) because it survives
//! the file being replaced, its directory being re-mounted or living on
//! NFS, at the cost of one `stat` per interval.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use ipnet::IpNet;
use keygate_core::record::AddressKind;
use keygate_core::{AgentRecord, BackendError, KeyBackend, Query, RecordError};
use serde::Deserialize;

use crate::{BackendSpec, Problems};

/// `[[backend]] type = "file"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file to serve. Relative paths are resolved against the config
    /// file's directory.
    pub path: PathBuf,
    /// `client_keys`: Wazuh's `ID NAME IP KEY` lines (default). `csv`: a
    /// header naming the columns `id,name,ip,key` (any order), one agent a row.
    #[serde(default)]
    pub format: FileFormat,
    /// How often the file is checked for changes (default `"1s"`).
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// The layout of an agent file.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Wazuh's client.keys.
    #[default]
    ClientKeys,
    /// CSV with a header `id,name,ip,key`.
    Csv,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(1)
}

#[async_trait]
impl BackendSpec for FileConfig {
    const TYPE: &'static str = "file";

    fn resolve_paths(&mut self, base: &Path) {
        crate::resolve(base, &mut self.path);
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        if self.path.as_os_str().is_empty() {
            problems.push("path", "must not be empty");
        }
        if self.reload_interval < Duration::from_millis(10) {
            problems.push("reload_interval", "must be at least 10ms");
        }
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BackendError> {
        Ok(FileBackend::open(name, self.clone()).await)
    }
}

/// Where an id or address points in the entry list.
#[derive(Clone, Copy, Debug)]
enum Slot {
    One(u32),
    Many,
}

type Entry = Result<AgentRecord, RecordError>;

/// One parsed version of the file.
/// The indexes use foldhash rather than SipHash: they are filled from the
/// operator's own file (no hash flooding from outside: requests only read),
/// and hashing was a third of the load time of a 1,000,000-line file.
type Index<K> = HashMap<K, Slot, foldhash::fast::RandomState>;

#[derive(Default)]
struct Snapshot {
    entries: Vec<Entry>,
    by_id: Index<u64>,
    by_ip: Index<IpAddr>,
    nets: Vec<(IpNet, u32)>,
}

impl Snapshot {
    /// An empty snapshot with room for `n` entries.
    fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
            by_id: Index::with_capacity_and_hasher(n, Default::default()),
            by_ip: Index::with_capacity_and_hasher(n, Default::default()),
            nets: Vec::new(),
        }
    }

    fn add(&mut self, id: &str, ip: Option<&str>, entry: Entry) {
        let Ok(index) = u32::try_from(self.entries.len()) else {
            return;
        };
        let (host, net) = match &entry {
            Ok(r) => match r.ip.kind() {
                AddressKind::Host(h) => (Some(h), None),
                AddressKind::Net(n) => (None, Some(n)),
                AddressKind::Any => (None, None),
            },
            // A bad entry is still findable by what it claims, so asking
            // for it answers "invalid", not "not found".
            Err(_) => (ip.and_then(|s| s.parse::<IpAddr>().ok()), None),
        };
        self.entries.push(entry);
        // Only ids a request can carry (1 to 8 digits) need indexing.
        if let Some(key) = id_key(id) {
            insert(&mut self.by_id, key, index);
        }
        if let Some(h) = host {
            insert(&mut self.by_ip, h, index);
        }
        if let Some(n) = net {
            self.nets.push((n, index));
        }
    }

    fn find(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let slot = match query {
            Query::Id(id) => id_key(id.as_str()).and_then(|k| self.by_id.get(&k).copied()),
            Query::Ip(ip) => match self.by_ip.get(ip).copied() {
                Some(slot) => Some(slot),
                None => {
                    let mut hits = self.nets.iter().filter(|(n, _)| n.contains(ip));
                    match (hits.next(), hits.next()) {
                        (None, _) => None,
                        (Some((_, i)), None) => Some(Slot::One(*i)),
                        (Some(_), Some(_)) => Some(Slot::Many),
                    }
                }
            },
        };
        match slot {
            None => Ok(None),
            Some(Slot::Many) => Err(BackendError::Ambiguous),
            Some(Slot::One(i)) => match self.entries.get(i as usize) {
                Some(Ok(record)) => Ok(Some(record.clone())),
                Some(Err(e)) => Err(BackendError::InvalidRecord(e.clone())),
                None => Err(BackendError::Internal("file index out of range".into())),
            },
        }
    }

    fn counts(&self) -> (usize, usize) {
        let bad = self.entries.iter().filter(|e| e.is_err()).count();
        (self.entries.len() - bad, bad)
    }
}

/// An id as an integer key without allocating: its value and its length
/// (so `001` and `1` stay distinct). `None` for anything but 1 to 8 digits.
fn id_key(id: &str) -> Option<u64> {
    if id.is_empty() || id.len() > 8 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value = id.bytes().fold(0u64, |n, b| n * 10 + u64::from(b - b'0'));
    Some(value | (id.len() as u64) << 32)
}

fn insert<K: std::hash::Hash + Eq>(map: &mut Index<K>, key: K, index: u32) {
    map.entry(key)
        .and_modify(|s| *s = Slot::Many)
        .or_insert(Slot::One(index));
}

/// Parses client.keys text. Lines starting with `#` or a space are skipped,
/// as Wazuh skips them, and so are removed agents (name starting with `!`
/// or `#`).
fn parse_client_keys(text: &str) -> Result<Snapshot, String> {
    // Validating records is most of the work: do it on every core, in
    // chunks cut at line ends, then index the results in file order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 8);
    let chunks = split_lines(text, if text.len() < 1 << 20 { 1 } else { threads });
    let parsed: Vec<Vec<(&str, Option<&str>, Entry)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| scope.spawn(move || parse_client_keys_chunk(chunk)))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| "a loader thread failed".to_owned()))
            .collect::<Result<Vec<_>, String>>()
    })?;
    let mut snap = Snapshot::with_capacity(parsed.iter().map(Vec::len).sum());
    for (id, ip, entry) in parsed.into_iter().flatten() {
        snap.add(id, ip, entry);
    }
    Ok(snap)
}

/// Cuts `text` into about `n` pieces, each ending at a line end.
fn split_lines(text: &str, n: usize) -> Vec<&str> {
    let mut pieces = Vec::with_capacity(n);
    let mut rest = text;
    for i in (1..n).rev() {
        let target = rest.len() / (i + 1);
        match rest
            .as_bytes()
            .iter()
            .skip(target)
            .position(|&b| b == b'\n')
        {
            Some(p) => {
                let (head, tail) = rest.split_at(target + p + 1);
                pieces.push(head);
                rest = tail;
            }
            None => break,
        }
    }
    pieces.push(rest);
    pieces
}

fn parse_client_keys_chunk(text: &str) -> Vec<(&str, Option<&str>, Entry)> {
    let mut out = Vec::with_capacity(text.len() / 100 + 1);
    for line in text.lines() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') || line.starts_with(' ') {
            continue;
        }
        let mut fields = line.split(' ');
        let id = fields.next().unwrap_or("");
        let name = fields.next().unwrap_or("");
        let ip = fields.next();
        let key = fields.next();
        if name.starts_with('!') || name.starts_with('#') {
            continue;
        }
        let entry = match (ip, key, fields.next()) {
            (Some(ip), Some(key), None) => AgentRecord::parse(id, name, ip, key),
            _ => Err(RecordError::Malformed(
                "a client.keys line needs exactly 4 space-separated fields",
            )),
        };
        out.push((id, ip, entry));
    }
    out
}

/// Parses CSV text whose header names `id`, `name`, `ip` and `key`.
fn parse_csv(text: &str) -> Result<Snapshot, String> {
    let mut reader = csv::ReaderBuilder::new()
        .flexible(true)
        .trim(csv::Trim::None)
        .from_reader(text.as_bytes());
    let headers = reader
        .headers()
        .map_err(|e| format!("cannot read the CSV header: {e}"))?
        .clone();
    let column = |want: &str| {
        headers
            .iter()
            .position(|h| h.trim().eq_ignore_ascii_case(want))
            .ok_or_else(|| {
                format!("the CSV header has no '{want}' column (expected id,name,ip,key)")
            })
    };
    let cols = [
        column("id")?,
        column("name")?,
        column("ip")?,
        column("key")?,
    ];
    let mut snap = Snapshot::with_capacity(text.bytes().filter(|&b| b == b'\n').count());
    for row in reader.records() {
        let row = row.map_err(|e| format!("cannot read CSV row: {e}"))?;
        let get = |i: usize| row.get(cols[i]);
        let entry = if row.len() != headers.len() {
            Err(RecordError::Malformed(
                "a CSV row has a different number of fields than the header",
            ))
        } else {
            AgentRecord::from_options(get(0), get(1), get(2), get(3))
        };
        snap.add(get(0).unwrap_or(""), get(2), entry);
    }
    Ok(snap)
}

/// What identifies one version of the file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

fn load(path: &Path, format: FileFormat) -> Result<(Stamp, Snapshot), String> {
    let before = stamp(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let text =
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))?;
    let snap = match format {
        FileFormat::ClientKeys => parse_client_keys(&text)?,
        FileFormat::Csv => parse_csv(&text)?,
    };
    Ok((before, snap))
}

/// The file backend. Lookups read the current snapshot without locking.
pub struct FileBackend {
    name: String,
    config: FileConfig,
    data: ArcSwap<Snapshot>,
    /// Set once a load has succeeded; until then lookups are outages.
    loaded: ArcSwapOption<Stamp>,
    /// Why the last load failed, if it did.
    last_error: ArcSwapOption<String>,
}

impl FileBackend {
    /// Loads the file and starts watching it. A file that cannot be read
    /// yet is not fatal: lookups answer "unavailable" until it can.
    pub async fn open(name: &str, config: FileConfig) -> Arc<Self> {
        let backend = Arc::new(Self {
            name: name.to_owned(),
            config,
            data: ArcSwap::from_pointee(Snapshot::default()),
            loaded: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
        });
        backend.reload().await;
        tokio::spawn(watch(Arc::downgrade(&backend)));
        backend
    }

    /// Re-reads the file now; keeps the old data if that fails.
    async fn reload(&self) {
        let (path, format) = (self.config.path.clone(), self.config.format);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || load(&path, format))
            .await
            .unwrap_or_else(|e| Err(format!("loader task failed: {e}")));
        match result {
            Ok((stamp, snap)) => {
                let (good, bad) = snap.counts();
                tracing::info!(
                    backend = %self.name,
                    path = %self.config.path.display(),
                    agents = good,
                    invalid = bad,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Loaded agent file."
                );
                if bad > 0 {
                    tracing::warn!(backend = %self.name, invalid = bad, "Agent file has invalid entries; they answer 5.");
                }
                self.data.store(Arc::new(snap));
                self.loaded.store(Some(Arc::new(stamp)));
                self.last_error.store(None);
            }
            Err(error) => {
                let serving = self.loaded.load().is_some();
                tracing::warn!(backend = %self.name, %error, serving_last_good = serving, "Agent file reload failed.");
                self.last_error.store(Some(Arc::new(error)));
            }
        }
    }

    fn changed(&self) -> bool {
        let on_disk = stamp(&self.config.path).ok();
        let loaded = self.loaded.load();
        match (on_disk, loaded.as_deref()) {
            (Some(now), Some(then)) => now != *then,
            // Never loaded: retry every interval until it works.
            (_, None) => true,
            // Gone: keep serving what we have; it will be re-read when it
            // comes back with a different stamp.
            (None, Some(_)) => false,
        }
    }
}

async fn watch(backend: Weak<FileBackend>) {
    let interval = match backend.upgrade() {
        Some(b) => b.config.reload_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(b) = backend.upgrade() else { return };
        if b.changed() {
            b.reload().await;
        }
    }
}

#[async_trait]
impl KeyBackend for FileBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        if self.loaded.load().is_none() {
            let why = self.last_error.load();
            return Err(BackendError::Unavailable(
                why.as_deref()
                    .cloned()
                    .unwrap_or_else(|| "file not loaded yet".into()),
            ));
        }
        self.data.load().find(query)
    }

    async fn health(&self) -> Result<(), BackendError> {
        match (self.loaded.load().is_some(), self.last_error.load_full()) {
            (true, None) => Ok(()),
            (true, Some(e)) => Err(BackendError::Unavailable(format!(
                "serving the last good data; reload failed: {e}"
            ))),
            (false, e) => Err(BackendError::Unavailable(
                e.as_deref()
                    .cloned()
                    .unwrap_or_else(|| "file not loaded yet".into()),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::ErrorCode;
    use keygate_testkit::q;

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

    #[test]
    fn client_keys_lookups_by_id_and_ip() {
        let s = parse_client_keys(KEYS).unwrap();
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
        let s = parse_client_keys(KEYS).unwrap();
        for id in ["id:003", "id:004", "id:005", "id:006"] {
            assert!(s.find(&q(id)).unwrap().is_none(), "{id}");
        }
        assert!(s.find(&q("ip:10.0.0.5")).unwrap().is_none());
    }

    #[test]
    fn cidr_agents_answer_addresses_inside_their_network() {
        let s = parse_client_keys(KEYS).unwrap();
        assert_eq!(
            s.find(&q("ip:10.9.200.1")).unwrap().unwrap().id.as_str(),
            "007"
        );
        assert!(s.find(&q("ip:10.10.0.1")).unwrap().is_none());
    }

    #[test]
    fn bad_duplicate_and_short_entries_answer_5() {
        let s = parse_client_keys(KEYS).unwrap();
        for req in [
            "id:008",
            "ip:10.0.0.8",
            "ip:10.0.0.99",
            "id:011",
            "id:013",
            "id:014",
        ] {
            let e = s.find(&q(req)).unwrap_err();
            assert_eq!(e.code(), ErrorCode::InvalidRecord, "{req}: {e}");
        }
        assert!(s.find(&q("id:009")).unwrap().is_some());
    }

    #[test]
    fn csv_with_header_in_any_order() {
        let text = "name,id,key,ip\nweb-01,001,k1,10.0.0.1\n\"has space\",002,k2,10.0.0.2\nweb-03,003,,10.0.0.3\nonly,004\n";
        let s = parse_csv(text).unwrap();
        assert_eq!(
            s.find(&q("ip:10.0.0.1")).unwrap().unwrap().name.as_str(),
            "web-01"
        );
        for req in ["id:002", "id:003", "id:004", "ip:10.0.0.2"] {
            assert_eq!(
                s.find(&q(req)).unwrap_err().code(),
                ErrorCode::InvalidRecord,
                "{req}"
            );
        }
        assert!(parse_csv("id,name,address,key\n")
            .err()
            .unwrap()
            .contains("'ip'"));
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
        std::fs::write(&path, "001 late 10.0.0.1 k1\n").unwrap();
        eventually(&b, "id:001", Some("late")).await;
    }

    #[test]
    fn split_lines_cuts_at_line_ends_and_loses_nothing() {
        let text = "001 a 10.0.0.1 k\n002 b 10.0.0.2 k\n003 c 10.0.0.3 k\n004 d any k";
        for n in 1..6 {
            let pieces = split_lines(text, n);
            assert_eq!(pieces.concat(), text, "{n}");
            assert!(
                pieces
                    .iter()
                    .take(pieces.len() - 1)
                    .all(|p| p.ends_with('\n')),
                "{n}: {pieces:?}"
            );
        }
    }

    #[test]
    fn id_keys_keep_leading_zeros_apart() {
        assert_ne!(id_key("001"), id_key("1"));
        assert_eq!(id_key("12345678"), Some(12_345_678 | 8 << 32));
        assert_eq!(id_key("123456789"), None);
        assert_eq!(id_key("00a"), None);
        assert_eq!(id_key(""), None);
    }

    #[test]
    fn loads_a_large_file() {
        let mut text = String::new();
        for i in 1..=20_000u32 {
            text.push_str(&format!(
                "{i:03} agent-{i} 10.{}.{}.{} {:064x}\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255,
                i
            ));
        }
        let s = parse_client_keys(&text).unwrap();
        assert_eq!(s.counts(), (20_000, 0));
        assert_eq!(
            s.find(&q("id:12345")).unwrap().unwrap().name.as_str(),
            "agent-12345"
        );
    }
}

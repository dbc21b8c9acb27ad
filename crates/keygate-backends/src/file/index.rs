//! One loaded version of the agent file: every entry in file order, with
//! its line number, and the indexes a lookup reads.
//!
//! Entries that failed validation are indexed too, by the id and address
//! they claim, so asking for them answers 5 rather than a misleading 4. Two
//! entries for one id or one host address answer 5 (ambiguous). Entries
//! sharing an id are refused on every path: by id, by address (each copy's
//! own), and in the listing, where the group is reported once with every
//! line number. Among networks containing an address the most specific
//! (longest prefix) answers, and two of the same length answer 5. `any`,
//! `0.0.0.0/0` and `::/0` are never indexed by address.

use std::collections::hash_map::Entry as Occupancy;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;

use ipnet::IpNet;
use keygate_core::record::{canonical, AddressKind};
use keygate_core::{AgentAddress, AgentRecord, BackendError, Listed, Query, RecordError};

/// Where an id or address points in the entry list: an entry's index, or
/// [`MANY`] when more than one entry claims it (ambiguous, answers 5).
type Slot = u32;

/// The slot of a key claimed by more than one entry. No entry has this
/// index: [`Snapshot::add`] stops at `u32::MAX - 1` entries.
const MANY: Slot = u32::MAX;

/// One agent line of the file: where it is, and the record or why it is
/// not one.
pub(super) struct Entry {
    /// 1-based line number in the file.
    pub line: u32,
    /// The validated record, or the rule it broke (boxed: invalid lines are
    /// rare, and a valid entry then takes 24 bytes instead of 40).
    pub record: Result<AgentRecord, Box<RecordError>>,
}

impl Entry {
    /// The entry as [`KeyBackend::list`](keygate_core::KeyBackend::list)
    /// reports it: the record, or `line N` and the reason (never a value).
    pub fn listed(&self) -> Listed {
        match &self.record {
            Ok(r) => Listed::Record(r.clone()),
            Err(e) => Listed::Invalid {
                at: format!("line {}", self.line),
                reason: e.to_string(),
            },
        }
    }
}

/// The indexes use foldhash rather than SipHash: they are filled from the
/// operator's own file (no hash flooding from outside: requests only read),
/// and hashing was a third of the load time of a 1,000,000-line file. Keys
/// and slots are plain integers (8 bytes a bucket for ids and IPv4 hosts):
/// at 1,000,000 agents the indexes take 36 MB instead of 92 MB.
type Index<K> = HashMap<K, Slot, foldhash::fast::RandomState>;

/// What an entry is indexed by, worked out where it was parsed (on a loader
/// thread): its id key and its address.
#[derive(Clone, Copy, Debug)]
pub(super) struct Keys {
    /// [`id_key`] of the id the line claims.
    pub id: Option<u32>,
    /// The address the line claims, valid or not.
    pub address: Option<AddressKind>,
}

impl Keys {
    /// The keys of an entry: from its record, or (for an invalid entry)
    /// from the raw fields it claims, so asking for it answers 5.
    pub fn of(
        id: &[u8],
        ip: Option<&[u8]>,
        record: &Result<AgentRecord, Box<RecordError>>,
    ) -> Self {
        let address = match record {
            Ok(r) => Some(r.ip.kind()),
            Err(_) => ip
                .and_then(|b| std::str::from_utf8(b).ok())
                .and_then(|s| AgentAddress::parse(s).ok())
                .map(|a| a.kind()),
        };
        Self {
            id: id_key(id),
            address,
        }
    }
}

/// One parsed version of the file.
#[derive(Default)]
pub(super) struct Snapshot {
    entries: Vec<Entry>,
    by_id: Index<u32>,
    by_v4: Index<u32>,
    by_v6: Index<u128>,
    nets: Vec<(IpNet, Slot)>,
    /// The entries whose id another entry also claims, each with the
    /// [`id_key`] of that id: none of them is served (usually empty).
    shared_ids: HashMap<Slot, u32, foldhash::fast::RandomState>,
}

impl Snapshot {
    /// An empty snapshot with room for `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            entries: Vec::with_capacity(n),
            by_id: Index::with_capacity_and_hasher(n, Default::default()),
            by_v4: Index::with_capacity_and_hasher(n, Default::default()),
            by_v6: Index::default(),
            nets: Vec::new(),
            shared_ids: HashMap::default(),
        }
    }

    /// Adds the entry of line `line`. `id` and `ip` are the raw fields, used
    /// to index an entry that failed validation by what it claims.
    pub fn add(
        &mut self,
        line: u32,
        id: &[u8],
        ip: Option<&[u8]>,
        record: Result<AgentRecord, Box<RecordError>>,
    ) {
        let keys = Keys::of(id, ip, &record);
        self.add_keyed(line, keys, record);
    }

    /// Adds the entry of line `line`, indexed by `keys`.
    pub fn add_keyed(
        &mut self,
        line: u32,
        keys: Keys,
        record: Result<AgentRecord, Box<RecordError>>,
    ) {
        let index = match u32::try_from(self.entries.len()) {
            Ok(i) if i != MANY => i,
            _ => return,
        };
        self.entries.push(Entry { line, record });
        if let Some(key) = keys.id {
            if let Some(first) = insert(&mut self.by_id, key, index) {
                self.note_shared_id(key, [first, index]);
            }
        }
        match keys.address {
            Some(AddressKind::Host(IpAddr::V4(h))) => {
                insert(&mut self.by_v4, u32::from(h), index);
            }
            Some(AddressKind::Host(IpAddr::V6(h))) => {
                insert(&mut self.by_v6, u128::from(h), index);
            }
            Some(AddressKind::Net(n)) => self.nets.push((n, index)),
            Some(AddressKind::Any) | None => {}
        }
    }

    /// Adds the entry of line `line` like [`Snapshot::add_keyed`], but its
    /// id and IPv4 host are only noted in `pending`: [`Snapshot::index`]
    /// inserts them all at once, in the order of the table's buckets.
    pub fn add_pending(
        &mut self,
        line: u32,
        keys: Keys,
        record: Result<AgentRecord, Box<RecordError>>,
        pending: &mut Pending,
    ) {
        let index = match u32::try_from(self.entries.len()) {
            Ok(i) if i != MANY => i,
            _ => return,
        };
        self.entries.push(Entry { line, record });
        if let Some(key) = keys.id {
            pending.ids.push((key, index));
        }
        match keys.address {
            Some(AddressKind::Host(IpAddr::V4(h))) => pending.v4.push((u32::from(h), index)),
            Some(AddressKind::Host(IpAddr::V6(h))) => {
                insert(&mut self.by_v6, u128::from(h), index);
            }
            Some(AddressKind::Net(n)) => self.nets.push((n, index)),
            Some(AddressKind::Any) | None => {}
        }
    }

    /// Inserts the keys noted by [`Snapshot::add_pending`], the id index on
    /// another thread while this one fills the IPv4 index.
    pub fn index(&mut self, pending: Pending) {
        let Pending { ids, v4 } = pending;
        let by_id = &mut self.by_id;
        let shared = std::thread::scope(|scope| {
            let ids = scope.spawn(|| insert_all(by_id, ids));
            insert_all(&mut self.by_v4, v4);
            ids.join()
        });
        // The indexing thread cannot panic (no code of it can); should it,
        // every id it had not inserted yet is simply not found (4).
        for (key, slots) in shared.unwrap_or_default() {
            self.note_shared_id(key, slots);
        }
    }

    /// Notes that the entries `slots` claim the id of `key` (one of them
    /// may be [`MANY`], the mark of an id already noted).
    fn note_shared_id(&mut self, key: u32, slots: [Slot; 2]) {
        for slot in slots.into_iter().filter(|&s| s != MANY) {
            self.shared_ids.insert(slot, key);
        }
    }

    /// The entry answering `query`, validated.
    pub fn find(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let slot = match query {
            Query::Id(id) => {
                id_key(id.as_str().as_bytes()).and_then(|k| self.by_id.get(&k).copied())
            }
            Query::Ip(ip) => {
                let ip = canonical(*ip);
                let host = match ip {
                    IpAddr::V4(v4) => self.by_v4.get(&u32::from(v4)),
                    IpAddr::V6(v6) => self.by_v6.get(&u128::from(v6)),
                };
                host.copied().or_else(|| self.most_specific_net(&ip))
            }
        };
        match slot {
            None => Ok(None),
            Some(MANY) => Err(BackendError::Ambiguous),
            // Found by its address, but another entry claims its id.
            Some(i) if self.shared_ids.contains_key(&i) => Err(BackendError::Ambiguous),
            Some(i) => match self.entries.get(i as usize).map(|e| &e.record) {
                Some(Ok(record)) => Ok(Some(record.clone())),
                Some(Err(e)) => Err(BackendError::InvalidRecord(RecordError::clone(e))),
                None => Err(BackendError::Internal("file index out of range".into())),
            },
        }
    }

    /// The network with the longest prefix containing `ip`; [`MANY`] when
    /// two networks share that longest prefix.
    fn most_specific_net(&self, ip: &IpAddr) -> Option<Slot> {
        let mut best: Option<(u8, Slot)> = None;
        for (net, index) in self.nets.iter().filter(|(n, _)| n.contains(ip)) {
            let len = net.prefix_len();
            best = match best {
                Some((b, _)) if b > len => best,
                Some((b, _)) if b == len => Some((len, MANY)),
                _ => Some((len, *index)),
            };
        }
        best.map(|(_, slot)| slot)
    }

    /// Every entry, in file order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// How many entries are served and how many are not (invalid, or
    /// sharing an id).
    pub fn counts(&self) -> (usize, usize) {
        let bad = self
            .entries
            .iter()
            .enumerate()
            .filter(|(i, e)| e.record.is_err() || self.shared_ids.contains_key(&(*i as Slot)))
            .count();
        (self.entries.len() - bad, bad)
    }

    /// Every id claimed by more than one entry: its text and the entries
    /// claiming it, in file order; ids in the order of their first entry.
    pub fn shared_ids(&self) -> SharedIds {
        let mut groups: HashMap<u32, Vec<Slot>> = HashMap::new();
        for (&slot, &key) in &self.shared_ids {
            groups.entry(key).or_default().push(slot);
        }
        let mut groups: Vec<Vec<Slot>> = groups
            .into_values()
            .map(|mut slots| {
                slots.sort_unstable();
                slots
            })
            .collect();
        groups.sort_unstable();
        SharedIds {
            first: groups
                .iter()
                .enumerate()
                .filter_map(|(g, slots)| Some((*slots.first()?, g)))
                .collect(),
            groups,
        }
    }

    /// Entry `i` as [`KeyBackend::list`](keygate_core::KeyBackend::list)
    /// reports it: [`Entry::listed`], except that entries sharing an id
    /// are one invalid item, at the first of them, naming every line.
    pub fn listed(&self, i: usize, shared: &SharedIds) -> Option<Listed> {
        let entry = self.entries.get(i)?;
        let slot = i as Slot;
        if !self.shared_ids.contains_key(&slot) {
            return Some(entry.listed());
        }
        let group = shared.groups.get(*shared.first.get(&slot)?)?;
        let lines = self.lines(group);
        Some(Listed::Invalid {
            at: format!("lines {lines}"),
            reason: format!(
                "id {} is on {} lines; none of them is served",
                self.id_of(slot),
                group.len()
            ),
        })
    }

    /// The line numbers of `slots`, as `3, 7`.
    pub fn lines(&self, slots: &[Slot]) -> String {
        slots
            .iter()
            .filter_map(|&s| self.entries.get(s as usize))
            .map(|e| e.line.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The id entry `slot` claims, as written, if it shares it.
    pub fn id_of(&self, slot: Slot) -> String {
        self.shared_ids.get(&slot).map_or_else(String::new, |&key| {
            let (value, len) = (key & ((1 << 27) - 1), (key >> 27) as usize);
            format!("{value:0len$}")
        })
    }
}

/// The ids claimed by more than one entry ([`Snapshot::shared_ids`]).
#[derive(Default)]
pub(super) struct SharedIds {
    /// Each group's entries, in file order; groups in file order.
    pub groups: Vec<Vec<Slot>>,
    /// The first entry of each group, with the group's index.
    first: HashMap<Slot, usize>,
}

/// An id as an integer key without allocating: its value and its length
/// (so `001` and `1` stay distinct). `None` for anything but 1 to 8 digits.
/// The value is below 10^8 < 2^27, the length at most 8: it fits a `u32`.
fn id_key(id: &[u8]) -> Option<u32> {
    if id.is_empty() || id.len() > 8 || !id.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = id.iter().fold(0u32, |n, b| n * 10 + u32::from(b - b'0'));
    Some(value | (id.len() as u32) << 27)
}

/// Indexes `key` at `index`; a key already there becomes [`MANY`], and
/// what it pointed at is returned.
fn insert<K: std::hash::Hash + Eq>(map: &mut Index<K>, key: K, index: Slot) -> Option<Slot> {
    match map.entry(key) {
        Occupancy::Occupied(mut o) => Some(o.insert(MANY)),
        Occupancy::Vacant(v) => {
            v.insert(index);
            None
        }
    }
}

/// Keys noted while loading, for [`Snapshot::index`].
#[derive(Default)]
pub(super) struct Pending {
    ids: Vec<(u32, Slot)>,
    v4: Vec<(u32, Slot)>,
}

impl Pending {
    /// Room for the keys of `n` entries.
    pub fn with_capacity(n: usize) -> Self {
        Self {
            ids: Vec::with_capacity(n),
            v4: Vec::with_capacity(n),
        }
    }
}

/// How many buckets of a table one pass of [`insert_all`] fills at a time:
/// 1024 buckets of 8 bytes and their control bytes stay in the L1 cache.
const BUCKETS_PER_PASS: usize = 1024;

/// Inserts `pairs` into `map`. Inserted in file order, every key lands in
/// a random bucket of a table of tens of MB: at 1,000,000 lines, two cache
/// misses a key made indexing a third of the load. The pairs are first
/// grouped by the range of buckets their key hashes to (a counting sort:
/// two sequential passes), so the inserts walk the table in order. The
/// bucket of a hash is its low bits in hashbrown (std's `HashMap`); were
/// that to change, only the speed would. The result is the same in any
/// order: a key inserted twice is [`MANY`] either way. Returns each key
/// inserted more than once with the entries claiming it (as
/// [`Snapshot::note_shared_id`] takes them).
fn insert_all(map: &mut Index<u32>, pairs: Vec<(u32, Slot)>) -> Vec<(u32, [Slot; 2])> {
    let mut shared = Vec::new();
    let mut add = |map: &mut Index<u32>, key: u32, index: Slot| {
        if let Some(first) = insert(map, key, index) {
            shared.push((key, [first, index]));
        }
    };
    map.reserve(pairs.len());
    // hashbrown keeps 7/8 of a power-of-two number of buckets usable.
    let buckets = (map.capacity() / 7 * 8).next_power_of_two();
    let groups = buckets / BUCKETS_PER_PASS;
    if groups <= 1 {
        for (key, index) in pairs {
            add(map, key, index);
        }
        return shared;
    }
    let hasher = map.hasher().clone();
    let group = |key: &u32| (hasher.hash_one(key) as usize & (buckets - 1)) / BUCKETS_PER_PASS;
    let mut starts = vec![0usize; groups + 1];
    for (key, _) in &pairs {
        if let Some(n) = starts.get_mut(group(key) + 1) {
            *n += 1;
        }
    }
    for g in 1..starts.len() {
        starts[g] += starts[g - 1];
    }
    let mut sorted = vec![(0u32, 0 as Slot); pairs.len()];
    for (key, index) in pairs {
        if let Some(at) = starts.get_mut(group(&key)) {
            if let Some(slot) = sorted.get_mut(*at) {
                *slot = (key, index);
            }
            *at += 1;
        }
    }
    for (key, index) in sorted {
        add(map, key, index);
    }
    shared
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::ErrorCode;
    use keygate_testkit::q;

    fn snapshot(lines: &[(&str, &str, &str)]) -> Snapshot {
        let mut s = Snapshot::default();
        for (n, (id, name, ip)) in lines.iter().enumerate() {
            let record = AgentRecord::parse(id, name, ip, "k").map_err(Box::new);
            s.add(n as u32 + 1, id.as_bytes(), Some(ip.as_bytes()), record);
        }
        s
    }

    fn id_for(s: &Snapshot, req: &str) -> Result<Option<String>, ErrorCode> {
        s.find(&q(req))
            .map(|r| r.map(|r| r.id.as_str().to_owned()))
            .map_err(|e| e.code())
    }

    #[test]
    fn id_keys_keep_leading_zeros_apart() {
        assert_ne!(id_key(b"001"), id_key(b"1"));
        assert_eq!(id_key(b"12345678"), Some(12_345_678 | 8 << 27));
        assert_eq!(id_key(b"99999999"), Some(99_999_999 | 8 << 27));
        assert_ne!(id_key(b"99999999"), id_key(b"0000000"));
        assert_eq!(id_key(b"123456789"), None);
        assert_eq!(id_key(b"00a"), None);
        assert_eq!(id_key(b""), None);
    }

    /// `0.0.0.0/0` and `::/0` are `any`: `ip:8.8.8.8` finds nothing (4),
    /// not the agent holding them; they are still found by id.
    #[test]
    fn networks_of_every_address_answer_no_ip() {
        let s = snapshot(&[
            ("001", "web", "10.0.0.1"),
            ("002", "all-v4", "0.0.0.0/0"),
            ("003", "all-v6", "::/0"),
        ]);
        assert_eq!(id_for(&s, "ip:8.8.8.8"), Ok(None));
        assert_eq!(id_for(&s, "ip:2001:db8::1"), Ok(None));
        assert_eq!(id_for(&s, "ip:10.0.0.1"), Ok(Some("001".into())));
        assert_eq!(id_for(&s, "id:002"), Ok(Some("002".into())));
    }

    /// Overlapping networks: the longest prefix answers; two of the same
    /// length answer 5; a host beats every network.
    #[test]
    fn the_most_specific_network_wins_and_ties_are_ambiguous() {
        let s = snapshot(&[
            ("001", "wide", "10.0.0.0/8"),
            ("002", "narrow", "10.1.0.0/16"),
            ("003", "narrower", "10.1.2.0/24"),
            ("004", "host", "10.1.2.3"),
            ("005", "tie-a", "172.16.0.0/12"),
            ("006", "tie-b", "172.16.0.0/12"),
            ("007", "tie-narrow", "172.16.5.0/24"),
        ]);
        assert_eq!(id_for(&s, "ip:10.9.9.9"), Ok(Some("001".into())));
        assert_eq!(id_for(&s, "ip:10.1.9.9"), Ok(Some("002".into())));
        assert_eq!(id_for(&s, "ip:10.1.2.9"), Ok(Some("003".into())));
        assert_eq!(id_for(&s, "ip:10.1.2.3"), Ok(Some("004".into())));
        assert_eq!(id_for(&s, "ip:172.17.0.1"), Err(ErrorCode::InvalidRecord));
        assert_eq!(id_for(&s, "ip:172.16.5.1"), Ok(Some("007".into())));
    }

    /// An invalid entry claiming a narrower network answers 5 for addresses
    /// inside it, rather than letting a wider valid network answer.
    #[test]
    fn an_invalid_narrower_network_is_not_skipped() {
        let s = snapshot(&[
            ("001", "wide", "10.0.0.0/8"),
            ("002", "bad name", "10.1.0.0/16"),
        ]);
        assert_eq!(id_for(&s, "ip:10.1.0.1"), Err(ErrorCode::InvalidRecord));
        assert_eq!(id_for(&s, "ip:10.2.0.1"), Ok(Some("001".into())));
    }

    /// Keys inserted in bucket order give the same index as keys inserted
    /// one by one in file order, duplicates ([`MANY`]) included, with
    /// enough keys for many passes.
    #[test]
    fn bucket_order_inserts_equal_file_order_inserts() {
        let pairs: Vec<(u32, Slot)> = (0..50_000u32)
            .map(|i| (i.wrapping_mul(7919) % 40_000, i))
            .collect();
        let mut one_by_one = Index::<u32>::default();
        for &(key, index) in &pairs {
            insert(&mut one_by_one, key, index);
        }
        let mut grouped = Index::<u32>::with_capacity_and_hasher(50_000, Default::default());
        insert_all(&mut grouped, pairs);
        assert!(grouped.capacity() / 7 * 8 / BUCKETS_PER_PASS > 1);
        assert_eq!(grouped, one_by_one);
        assert_eq!(grouped.values().filter(|&&s| s == MANY).count(), 10_000);
    }

    /// `ip:::ffff:192.168.1.100` finds the record `192.168.1.100`, and a
    /// record written in the mapped form is found by its IPv4 address.
    #[test]
    fn ipv4_mapped_addresses_find_ipv4_records() {
        let s = snapshot(&[
            ("001", "plain", "192.168.1.100"),
            ("002", "mapped", "::ffff:192.168.1.101"),
            ("003", "mapped-net", "::ffff:10.5.0.0/112"),
        ]);
        assert_eq!(
            id_for(&s, "ip:::ffff:192.168.1.100"),
            Ok(Some("001".into()))
        );
        assert_eq!(id_for(&s, "ip:192.168.1.101"), Ok(Some("002".into())));
        assert_eq!(id_for(&s, "ip:10.5.3.4"), Ok(Some("003".into())));
        // A query built without Request::parse is canonicalised too.
        let raw = Query::Ip("::ffff:192.168.1.100".parse().unwrap());
        assert_eq!(s.find(&raw).unwrap().unwrap().id.as_str(), "001");
    }
}

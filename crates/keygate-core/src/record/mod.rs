//! A validated agent registration: the only thing keygate ever sends back.
//!
//! What keygate answers becomes a line of Wazuh's `client.keys`
//! (`ID NAME IP KEY`, space separated), and with `force_insert` it replaces
//! any agent with the same id, name or ip. Every field is therefore a newtype
//! that can only be built by parsing against client.keys' rules, and a record
//! found for a request must match that request ([`AgentRecord::check_matches`]).
//!
//! Error texts describe the rule that failed, never the value: a value may be
//! a key, or contain bytes that do not belong in a log.

mod address;

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use zeroize::Zeroize;

pub use address::{canonical, AddressKind, AgentAddress};

use crate::Query;

/// Most bytes an agent name may have. Wazuh reads client.keys back field
/// by field into 128-byte buffers, copying at most 127 bytes of each
/// (`KEYSIZE - 1`): a longer name or key is written whole by authd and
/// read back cut by remoted and the agent, which then disagree.
pub const MAX_NAME_LEN: usize = 127;
/// Most bytes an agent key may have (see [`MAX_NAME_LEN`]).
pub const MAX_KEY_LEN: usize = 127;

/// The rule a name or key over [`MAX_NAME_LEN`] bytes breaks.
const TOO_LONG: &str =
    "longer than 127 bytes (Wazuh reads back at most 127 bytes of each client.keys field)";

/// Which field of a record failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    /// The agent id.
    Id,
    /// The agent name.
    Name,
    /// The agent address.
    Ip,
    /// The agent key.
    Key,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Id => "id",
            Self::Name => "name",
            Self::Ip => "ip",
            Self::Key => "key",
        })
    }
}

/// Why a record may not be forwarded to Wazuh (reply code 5).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// A field is absent or NULL.
    #[error("field '{0}' is missing or NULL")]
    Missing(Field),
    /// A field breaks a client.keys rule; the text names the rule.
    #[error("field '{field}' is invalid: {rule}")]
    Invalid {
        /// The field that failed.
        field: Field,
        /// The rule it broke.
        rule: &'static str,
    },
    /// The source entry cannot be read as a record at all (wrong number of
    /// fields, more than one row); the text says how.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// A record found by id carries another id.
    #[error("record found for id:{asked} carries a different id")]
    IdMismatch {
        /// The id that was asked for.
        asked: String,
    },
    /// A valid record the Wazuh version keygate serves cannot take (an IPv6
    /// ip before 4.4, which ends wazuh-authd): refused like a bad record.
    #[error("Wazuh {version} {why}")]
    NotForWazuh {
        /// The version served.
        version: crate::WazuhVersion,
        /// What it cannot take and what would happen.
        why: &'static str,
    },
    /// A record found by ip carries an address that does not contain it.
    #[error("record found for ip:{asked} carries an address that does not contain it")]
    IpMismatch {
        /// The address that was asked for.
        asked: IpAddr,
    },
}

fn invalid(field: Field, rule: &'static str) -> RecordError {
    RecordError::Invalid { field, rule }
}

/// An agent id: 3 to 8 ASCII digits, not `000` (the manager itself).
///
/// Held inline (no allocation): a record's id, and a copy of it, cost no
/// trip to the allocator.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AgentId {
    len: u8,
    digits: [u8; MAX_ID_LEN],
}

/// Most digits an agent id may have.
const MAX_ID_LEN: usize = 8;

impl AgentId {
    /// Parses an id.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        if s.is_empty() {
            return Err(RecordError::Missing(Field::Id));
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(Field::Id, "must be digits only"));
        }
        if !(3..=MAX_ID_LEN).contains(&s.len()) {
            return Err(invalid(Field::Id, "must have 3 to 8 digits"));
        }
        if s.bytes().all(|b| b == b'0') {
            return Err(invalid(Field::Id, "000 is the manager itself"));
        }
        let mut digits = [0u8; MAX_ID_LEN];
        digits[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Self {
            len: s.len() as u8,
            digits,
        })
    }

    /// Renders an integer id the way Wazuh writes ids: zero-padded to at
    /// least 3 digits (`7` becomes `007`).
    pub fn from_integer(n: i64) -> Result<Self, RecordError> {
        if n < 0 {
            return Err(invalid(Field::Id, "must not be negative"));
        }
        Self::parse(&format!("{n:03}"))
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored, so this never fails.
        std::str::from_utf8(self.digits.get(..usize::from(self.len)).unwrap_or_default())
            .unwrap_or_default()
    }
}

impl fmt::Debug for AgentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("AgentId").field(&self.as_str()).finish()
    }
}

/// Most bytes [`Text`] keeps inline.
const INLINE_TEXT: usize = 22;

/// A short immutable string kept inline (up to [`INLINE_TEXT`] bytes: every
/// IPv4 address, most names) or, when longer, in its own heap buffer. A
/// record's name and address then usually live inside the record's one
/// allocation instead of two more. Not for keys: an inline value is copied
/// when it moves, and a key must stay in one buffer that is wiped once.
#[derive(Clone)]
pub(crate) enum Text {
    Inline { len: u8, bytes: [u8; INLINE_TEXT] },
    Heap(Box<str>),
}

impl Text {
    pub(crate) fn new(s: &str) -> Self {
        match s.as_bytes() {
            b if b.len() <= INLINE_TEXT => {
                let mut bytes = [0u8; INLINE_TEXT];
                bytes[..b.len()].copy_from_slice(b);
                Self::Inline {
                    len: b.len() as u8,
                    bytes,
                }
            }
            _ => Self::Heap(s.into()),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Built from a `&str` cut at its own length: always valid UTF-8.
            Self::Inline { len, bytes } => {
                std::str::from_utf8(bytes.get(..usize::from(*len)).unwrap_or_default())
                    .unwrap_or_default()
            }
            Self::Heap(s) => s,
        }
    }
}

impl PartialEq for Text {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Text {}

impl std::hash::Hash for Text {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// An agent name: ASCII letters, digits, `-`, `_` and `.`, 1 to 127 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentName(Text);

impl AgentName {
    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        if s.is_empty() {
            return Err(RecordError::Missing(Field::Name));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(invalid(Field::Name, TOO_LONG));
        }
        // `fold`, not `all`: without the early exit the check runs on many
        // bytes at once (names and keys are checked for every line of a
        // client.keys load).
        if !s.bytes().fold(true, |ok, b| {
            ok & (b.is_ascii_alphanumeric() | matches!(b, b'-' | b'_' | b'.'))
        }) {
            return Err(invalid(
                Field::Name,
                "only letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        Ok(Self(Text::new(s)))
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The rule of Wazuh's own `OS_IsValidName` (addagent/validate.c) this
    /// name breaks, if any: 2 to 128 characters of `[A-Za-z0-9._-]`, not
    /// starting with `.`. Wazuh's key-request path does not apply it (a
    /// served agent is inserted anyway), but its API (`POST /agents/insert`)
    /// and an agent's own enrollment do.
    pub fn wazuh_name_rule(&self) -> Option<&'static str> {
        let s = self.as_str();
        if s.len() < 2 {
            Some("Wazuh requires at least 2 characters")
        } else if s.starts_with('.') {
            Some("Wazuh refuses a name starting with '.'")
        } else {
            None
        }
    }
}

/// An agent key: printable ASCII without whitespace, 1 to 127 bytes.
///
/// The bytes are wiped when the value is dropped, and `Debug` never shows
/// them.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey(Box<str>);

impl AgentKey {
    /// Parses a key.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        if s.is_empty() {
            return Err(RecordError::Missing(Field::Key));
        }
        if s.len() > MAX_KEY_LEN {
            return Err(invalid(Field::Key, TOO_LONG));
        }
        if !s.bytes().fold(true, |ok, b| ok & b.is_ascii_graphic()) {
            return Err(invalid(
                Field::Key,
                "only printable ASCII without whitespace is allowed",
            ));
        }
        Ok(Self(s.into()))
    }

    /// The key text. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for AgentKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for AgentKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AgentKey(<redacted>)")
    }
}

/// One agent's registration, every field valid.
///
/// The fields live behind one shared, immutable allocation: cloning a record
/// (a cache hit, a lookup in an in-memory backend, a listing) copies a
/// pointer, never the fields, and the cache and the backend that loaded a
/// record hold the same copy. The fields read as before (`record.id`,
/// `record.key.expose()`), through [`Deref`](std::ops::Deref) to
/// [`RecordFields`]. The key is wiped when the last clone is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentRecord(Arc<RecordFields>);

/// The four validated fields of an [`AgentRecord`].
#[derive(Debug, PartialEq, Eq)]
pub struct RecordFields {
    /// The agent id.
    pub id: AgentId,
    /// The agent name.
    pub name: AgentName,
    /// The agent address.
    pub ip: AgentAddress,
    /// The agent key.
    pub key: AgentKey,
}

impl std::ops::Deref for AgentRecord {
    type Target = RecordFields;

    fn deref(&self) -> &RecordFields {
        &self.0
    }
}

impl From<RecordFields> for AgentRecord {
    fn from(fields: RecordFields) -> Self {
        Self(Arc::new(fields))
    }
}

impl fmt::Debug for AgentRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentRecord")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("ip", &self.ip)
            .field("key", &self.key)
            .finish()
    }
}

impl AgentRecord {
    /// A record of four fields that are each valid already.
    pub fn new(id: AgentId, name: AgentName, ip: AgentAddress, key: AgentKey) -> Self {
        Self(Arc::new(RecordFields { id, name, ip, key }))
    }

    /// Validates four text fields into a record. The first failing field,
    /// in id, name, ip, key order, is reported.
    pub fn parse(id: &str, name: &str, ip: &str, key: &str) -> Result<Self, RecordError> {
        Ok(Self::new(
            AgentId::parse(id)?,
            AgentName::parse(name)?,
            AgentAddress::parse(ip)?,
            AgentKey::parse(key)?,
        ))
    }

    /// Whether `self` and `other` are the same shared copy (not merely
    /// equal): what a cache hit hands out.
    pub fn shares(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Validates four optional fields, as they come from a row where any
    /// column may be NULL.
    pub fn from_options(
        id: Option<&str>,
        name: Option<&str>,
        ip: Option<&str>,
        key: Option<&str>,
    ) -> Result<Self, RecordError> {
        Self::parse(
            id.ok_or(RecordError::Missing(Field::Id))?,
            name.ok_or(RecordError::Missing(Field::Name))?,
            ip.ok_or(RecordError::Missing(Field::Ip))?,
            key.ok_or(RecordError::Missing(Field::Key))?,
        )
    }

    /// Checks that this record answers `query`: a record found by id must
    /// carry exactly that id; one found by ip must carry that address or a
    /// network containing it.
    pub fn check_matches(&self, query: &Query) -> Result<(), RecordError> {
        match query {
            Query::Id(asked) if asked.as_str() != self.id.as_str() => {
                Err(RecordError::IdMismatch {
                    asked: asked.as_str().to_owned(),
                })
            }
            Query::Ip(asked) if !self.ip.contains(asked) => {
                Err(RecordError::IpMismatch { asked: *asked })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;

    const KEY: &str = "ac57f6a5e1d9b0c2e5a1d6f7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50c71";

    #[test]
    fn valid_record_parses() {
        let r = AgentRecord::parse("001", "my_agent-1.lab", "192.168.1.100", KEY).unwrap();
        assert_eq!(r.id.as_str(), "001");
        assert_eq!(r.ip.as_str(), "192.168.1.100");
        assert!(AgentRecord::parse("12345678", "a", "any", "k").is_ok());
        assert!(AgentRecord::parse("100", "a", "10.0.0.0/24", "k").is_ok());
        assert!(AgentRecord::parse("100", "a", "2001:db8::/64", "k").is_ok());
        assert!(AgentRecord::parse("100", "a", "2001:db8::7", "k").is_ok());
    }

    #[test]
    fn ids_follow_client_keys_rules() {
        for bad in [
            "",
            "1",
            "01",
            "000",
            "00000000",
            "123456789",
            "00a",
            "0 1",
            "-01",
            "١٢٣",
        ] {
            assert!(AgentId::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(AgentId::from_integer(7).unwrap().as_str(), "007");
        assert_eq!(AgentId::from_integer(1234).unwrap().as_str(), "1234");
        assert!(AgentId::from_integer(0).is_err());
        assert!(AgentId::from_integer(-7).is_err());
        assert!(AgentId::from_integer(123_456_789).is_err());
    }

    #[test]
    fn names_refuse_separators_quotes_and_non_ascii() {
        let long = "a".repeat(128);
        for bad in [
            "",
            "my agent",
            "a\tb",
            "a\nb",
            "a'b",
            "a\"b",
            "a%b",
            "a\0b",
            "agént",
            "a/b",
            "!removed",
            long.as_str(),
        ] {
            assert!(AgentName::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AgentName::parse(&"a".repeat(127)).is_ok());
    }

    /// Names and keys of 128 bytes are refused (Wazuh would read them back
    /// cut to 127); 127 bytes pass.
    #[test]
    fn names_and_keys_of_128_bytes_are_refused() {
        let rule =
            "longer than 127 bytes (Wazuh reads back at most 127 bytes of each client.keys field)";
        let name = "n".repeat(128);
        let key = "k".repeat(128);
        assert_eq!(
            AgentRecord::parse("001", &name, "any", "k"),
            Err(RecordError::Invalid {
                field: Field::Name,
                rule
            })
        );
        assert_eq!(
            AgentRecord::parse("001", "web", "any", &key),
            Err(RecordError::Invalid {
                field: Field::Key,
                rule
            })
        );
        let ok = AgentRecord::parse("001", &name[..127], "any", &key[..127]).unwrap();
        assert_eq!((ok.name.as_str().len(), ok.key.expose().len()), (127, 127));
    }

    #[test]
    fn keys_are_printable_without_whitespace() {
        let long = "k".repeat(128);
        for bad in ["", "a b", "a\tb", "a\nb", "a\0b", "ké", long.as_str()] {
            assert!(AgentKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AgentKey::parse(&"k".repeat(127)).is_ok());
        assert!(AgentKey::parse("a\"b\\c'%").is_ok());
    }

    #[test]
    fn errors_and_debug_never_show_the_key() {
        let r = AgentRecord::parse("001", "a", "any", KEY).unwrap();
        assert!(!format!("{r:?}").contains(KEY));
        let e = AgentRecord::parse("001", "a", "any", "secret with space").unwrap_err();
        assert!(!e.to_string().contains("secret"));
        assert_eq!(
            e,
            RecordError::Invalid {
                field: Field::Key,
                rule: "only printable ASCII without whitespace is allowed"
            }
        );
    }

    #[test]
    fn record_must_match_the_request() {
        let r = AgentRecord::parse("001", "a", "10.0.0.0/24", "k").unwrap();
        assert!(r.check_matches(&Request::parse(b"id:001").unwrap()).is_ok());
        assert!(r
            .check_matches(&Request::parse(b"id:0001").unwrap())
            .is_err());
        assert!(r
            .check_matches(&Request::parse(b"id:002").unwrap())
            .is_err());
        assert!(r
            .check_matches(&Request::parse(b"ip:10.0.0.7").unwrap())
            .is_ok());
        assert!(r
            .check_matches(&Request::parse(b"ip:10.0.1.7").unwrap())
            .is_err());
        let any = AgentRecord::parse("001", "a", "any", "k").unwrap();
        assert!(any
            .check_matches(&Request::parse(b"ip:10.0.0.7").unwrap())
            .is_err());
        let v6 = AgentRecord::parse("001", "a", "2001:db8::1", "k").unwrap();
        assert!(v6
            .check_matches(&Request::parse(b"ip:2001:DB8:0::1").unwrap())
            .is_ok());
    }

    /// A clone is the same copy (what a cache hit hands out); two parses
    /// of the same text are equal but apart.
    #[test]
    fn clones_share_one_copy() {
        let r = AgentRecord::parse("001", "a", "10.0.0.1", KEY).unwrap();
        let c = r.clone();
        assert!(c.shares(&r));
        assert_eq!(c.key.expose(), KEY);
        let other = AgentRecord::parse("001", "a", "10.0.0.1", KEY).unwrap();
        assert_eq!(other, r);
        assert!(!other.shares(&r));
    }

    /// Names and addresses round-trip at every length, on both sides of
    /// the inline limit, and ids at every allowed length.
    #[test]
    fn fields_round_trip_at_every_length() {
        for len in 1..=MAX_NAME_LEN {
            let name: String = "abcdefghij".chars().cycle().take(len).collect();
            let parsed = AgentName::parse(&name).unwrap();
            assert_eq!(parsed.as_str(), name);
            assert_eq!(parsed, AgentName::parse(&name).unwrap());
        }
        for ip in [
            "1.2.3.4",
            "255.255.255.255/32",
            "2001:db8::1",
            "2001:db8:1234:5678:9abc:def0:1234:5678",
            "2001:db8:1234:5678:9abc:def0:1234:5678/128",
            "0000:0000:0000:0000:0000:ffff:10.0.0.1",
        ] {
            assert_eq!(AgentAddress::parse(ip).unwrap().as_str(), ip);
        }
        for id in ["001", "0012", "12345678"] {
            let parsed = AgentId::parse(id).unwrap();
            assert_eq!(parsed.as_str(), id);
            assert_eq!(format!("{parsed:?}"), format!("AgentId({id:?})"));
        }
        assert_ne!(
            AgentId::parse("001").unwrap(),
            AgentId::parse("0001").unwrap()
        );
    }

    #[test]
    fn missing_fields_are_reported_by_name() {
        let e = AgentRecord::from_options(Some("001"), Some("a"), Some("any"), None).unwrap_err();
        assert_eq!(e, RecordError::Missing(Field::Key));
        assert_eq!(e.to_string(), "field 'key' is missing or NULL");
    }

    /// Names Wazuh's `OS_IsValidName` refuses are still valid records (the
    /// key-request path inserts them), but the rule they break is known.
    #[test]
    fn wazuh_name_rule_is_os_is_valid_name() {
        let rule = |n: &str| AgentName::parse(n).unwrap().wazuh_name_rule();
        assert_eq!(rule("a"), Some("Wazuh requires at least 2 characters"));
        assert_eq!(rule(".web"), Some("Wazuh refuses a name starting with '.'"));
        for ok in ["ab", "web-01", "a.b_c-d", "-x", "_x", "x."] {
            assert_eq!(rule(ok), None, "{ok}");
        }
    }
}

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

use zeroize::Zeroizing;

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
            ok & matches!(b, b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.')
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
    /// name breaks, if any: 2 to 128 characters of `[A-Za-z0-9._-]`. keygate
    /// already refuses the characters and the length, so what is left is
    /// the minimum of 2. Wazuh's key-request path does not apply it (a
    /// served agent is inserted anyway), but manual registration and the
    /// agent's own enrollment do. (The issue that asked for this also named
    /// "not starting with '.'": neither `OS_IsValidName` nor the API's
    /// `names` format has such a rule, so keygate does not report one.)
    pub fn wazuh_name_rule(&self) -> Option<&'static str> {
        (self.as_str().len() < 2).then_some("Wazuh requires at least 2 characters")
    }
}

/// An agent key: printable ASCII without whitespace, 1 to 127 bytes.
///
/// The bytes are wiped when the value is dropped (zeroize's `Zeroizing`),
/// and `Debug` never shows them.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey(Zeroizing<Box<str>>);

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
        Ok(Self(Zeroizing::new(s.into())))
    }

    /// The key text. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
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
mod tests;

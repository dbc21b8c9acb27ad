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

use zeroize::Zeroize;

pub use address::{canonical, AddressKind, AgentAddress};

use crate::Query;

/// Most bytes an agent name may have.
pub const MAX_NAME_LEN: usize = 128;
/// Most bytes an agent key may have.
pub const MAX_KEY_LEN: usize = 128;

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
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentId(String);

impl AgentId {
    /// Parses an id.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        if s.is_empty() {
            return Err(RecordError::Missing(Field::Id));
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(Field::Id, "must be digits only"));
        }
        if !(3..=8).contains(&s.len()) {
            return Err(invalid(Field::Id, "must have 3 to 8 digits"));
        }
        if s.bytes().all(|b| b == b'0') {
            return Err(invalid(Field::Id, "000 is the manager itself"));
        }
        Ok(Self(s.to_owned()))
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
        &self.0
    }
}

/// An agent name: ASCII letters, digits, `-`, `_` and `.`, 1 to 128 bytes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AgentName(String);

impl AgentName {
    /// Parses a name.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        if s.is_empty() {
            return Err(RecordError::Missing(Field::Name));
        }
        if s.len() > MAX_NAME_LEN {
            return Err(invalid(Field::Name, "longer than 128 bytes"));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(invalid(
                Field::Name,
                "only letters, digits, '-', '_' and '.' are allowed",
            ));
        }
        Ok(Self(s.to_owned()))
    }

    /// The name text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An agent key: printable ASCII without whitespace, 1 to 128 bytes.
///
/// The bytes are wiped when the value is dropped, and `Debug` never shows
/// them.
#[derive(Clone, PartialEq, Eq)]
pub struct AgentKey(String);

impl AgentKey {
    /// Parses a key.
    pub fn parse(s: &str) -> Result<Self, RecordError> {
        if s.is_empty() {
            return Err(RecordError::Missing(Field::Key));
        }
        if s.len() > MAX_KEY_LEN {
            return Err(invalid(Field::Key, "longer than 128 bytes"));
        }
        if !s.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                Field::Key,
                "only printable ASCII without whitespace is allowed",
            ));
        }
        Ok(Self(s.to_owned()))
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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentRecord {
    /// The agent id.
    pub id: AgentId,
    /// The agent name.
    pub name: AgentName,
    /// The agent address.
    pub ip: AgentAddress,
    /// The agent key.
    pub key: AgentKey,
}

impl AgentRecord {
    /// Validates four text fields into a record. The first failing field,
    /// in id, name, ip, key order, is reported.
    pub fn parse(id: &str, name: &str, ip: &str, key: &str) -> Result<Self, RecordError> {
        Ok(Self {
            id: AgentId::parse(id)?,
            name: AgentName::parse(name)?,
            ip: AgentAddress::parse(ip)?,
            key: AgentKey::parse(key)?,
        })
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
        let long = "a".repeat(129);
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
        assert!(AgentName::parse(&"a".repeat(128)).is_ok());
    }

    #[test]
    fn keys_are_printable_without_whitespace() {
        let long = "k".repeat(129);
        for bad in ["", "a b", "a\tb", "a\nb", "a\0b", "ké", long.as_str()] {
            assert!(AgentKey::parse(bad).is_err(), "{bad:?}");
        }
        assert!(AgentKey::parse(&"k".repeat(128)).is_ok());
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

    #[test]
    fn missing_fields_are_reported_by_name() {
        let e = AgentRecord::from_options(Some("001"), Some("a"), Some("any"), None).unwrap_err();
        assert_eq!(e, RecordError::Missing(Field::Key));
        assert_eq!(e.to_string(), "field 'key' is missing or NULL");
    }
}

//! Parsing of the request line Wazuh sends: `id:<digits>` or `ip:<address>`.
//!
//! Wazuh sends the request in one `send()` with no terminator; people testing
//! with `socat`/`nc` add `\n` or `\r\n`, so exactly one of those is accepted.
//! Everything else is refused before it can reach a backend, which is what
//! makes it safe to bind (or escape) the value downstream.

use std::fmt;
use std::net::IpAddr;

/// Longest request accepted, in bytes (`ip:` plus the longest IPv6 text and
/// a `\r\n`, with room to spare). Longer input is answered with an error.
pub const MAX_REQUEST_LEN: usize = 128;

/// Longest agent id a request may carry (Wazuh's client drops longer ones).
pub const MAX_QUERY_ID_LEN: usize = 8;

/// A parsed, valid key request. This is also what backends are asked
/// ([`Query`]): its values contain only digits, or only an address that
/// parsed, so they cannot carry SQL, LDAP filter or Redis syntax.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// `id:001`: 3 to 8 ASCII digits, not `000`, kept as sent (leading
    /// zeros matter).
    Id(QueryId),
    /// `ip:10.0.0.1`: an IPv4 or IPv6 host address, without a prefix.
    Ip(IpAddr),
}

/// What backends are asked: the same thing as a parsed [`Request`].
pub type Query = Request;

/// The digits of an `id:` request: 3 to 8 of them and not `000`, the rule
/// every stored agent id follows, so an id no record can have is refused
/// as a bad request (3) before any backend is asked.
///
/// Held inline: parsing a request, and copying it as a cache key, never
/// allocates.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct QueryId {
    len: u8,
    digits: [u8; MAX_QUERY_ID_LEN],
}

/// Fewest digits of an agent id (Wazuh writes ids as `001` at least).
pub const MIN_QUERY_ID_LEN: usize = 3;

impl QueryId {
    /// Parses 3 to 8 ASCII digits other than `000`.
    pub fn parse(s: &str) -> Result<Self, RequestError> {
        if s.is_empty() {
            return Err(RequestError::Incomplete("id"));
        }
        if !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(RequestError::Bad("agent id must be digits only"));
        }
        if s.len() > MAX_QUERY_ID_LEN {
            return Err(RequestError::Bad("agent id is longer than 8 digits"));
        }
        if s.len() < MIN_QUERY_ID_LEN {
            return Err(RequestError::Bad("agent id is shorter than 3 digits"));
        }
        if s.bytes().all(|b| b == b'0') {
            return Err(RequestError::Bad("agent id 000 is the manager itself"));
        }
        let mut digits = [0u8; MAX_QUERY_ID_LEN];
        digits[..s.len()].copy_from_slice(s.as_bytes());
        Ok(Self {
            len: s.len() as u8,
            digits,
        })
    }

    /// The digits as sent.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits are ever stored, so this never fails.
        std::str::from_utf8(self.digits.get(..usize::from(self.len)).unwrap_or_default())
            .unwrap_or_default()
    }
}

impl fmt::Display for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for QueryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("QueryId").field(&self.as_str()).finish()
    }
}

/// Why a request was refused. [`RequestError::code`] maps it to the reply
/// code: 1 for empty or incomplete input, 3 for anything malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Nothing but (at most) a line terminator was sent.
    #[error("empty request")]
    Empty,
    /// `id:` or `ip:` with no value, or a type with no `:` at all.
    #[error("incomplete request: no value after '{0}:'")]
    Incomplete(&'static str),
    /// The type before `:` is neither `id` nor `ip`.
    #[error("unknown request type (expected 'id:' or 'ip:')")]
    UnknownType,
    /// The input is longer than [`MAX_REQUEST_LEN`] bytes.
    #[error("request is longer than {MAX_REQUEST_LEN} bytes")]
    TooLong,
    /// The value is malformed; the text says how.
    #[error("bad request: {0}")]
    Bad(&'static str),
}

impl RequestError {
    /// The reply code for this error.
    pub fn code(&self) -> crate::ErrorCode {
        match self {
            Self::Empty | Self::Incomplete(_) => crate::ErrorCode::Incomplete,
            Self::UnknownType | Self::TooLong | Self::Bad(_) => crate::ErrorCode::BadRequest,
        }
    }
}

impl Request {
    /// Parses the raw bytes of one request.
    pub fn parse(raw: &[u8]) -> Result<Self, RequestError> {
        if raw.len() > MAX_REQUEST_LEN {
            return Err(RequestError::TooLong);
        }
        let raw = strip_terminator(raw);
        if raw.is_empty() {
            return Err(RequestError::Empty);
        }
        let text =
            std::str::from_utf8(raw).map_err(|_| RequestError::Bad("request is not ASCII text"))?;
        let (kind, value) = match text.split_once(':') {
            Some(parts) => parts,
            None => {
                return Err(match text {
                    "id" => RequestError::Incomplete("id"),
                    "ip" => RequestError::Incomplete("ip"),
                    _ => RequestError::UnknownType,
                })
            }
        };
        Self::from_parts(kind, value)
    }

    /// Builds a request from its type word and value, as exec mode receives
    /// them (`keygate id 001`).
    pub fn from_parts(kind: &str, value: &str) -> Result<Self, RequestError> {
        match kind {
            "id" => Ok(Self::Id(QueryId::parse(value)?)),
            "ip" => parse_ip(value).map(Self::Ip),
            _ => Err(RequestError::UnknownType),
        }
    }

    /// The request type word: `id` or `ip`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Id(_) => "id",
            Self::Ip(_) => "ip",
        }
    }

    /// The value as it is handed to backends: the id digits as sent, or the
    /// address in its canonical text form.
    pub fn value(&self) -> String {
        match self {
            Self::Id(id) => id.as_str().to_owned(),
            Self::Ip(ip) => ip.to_string(),
        }
    }
}

fn parse_ip(value: &str) -> Result<IpAddr, RequestError> {
    if value.is_empty() {
        return Err(RequestError::Incomplete("ip"));
    }
    // Only the characters an address can contain; rules out zone ids,
    // whitespace and anything a backend could interpret.
    if !value
        .bytes()
        .all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':')
    {
        return Err(RequestError::Bad("invalid IP address"));
    }
    // An IPv4-mapped address (`::ffff:10.0.0.1`, as a dual-stack socket
    // reports an IPv4 peer) is the IPv4 host: every backend is asked for it.
    value
        .parse::<IpAddr>()
        .map(crate::record::canonical)
        .map_err(|_| RequestError::Bad("invalid IP address"))
}

fn strip_terminator(raw: &[u8]) -> &[u8] {
    if let Some(rest) = raw.strip_suffix(b"\r\n") {
        rest
    } else if let Some(rest) = raw.strip_suffix(b"\n") {
        rest
    } else {
        raw
    }
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Id(id) => write!(f, "id:{id}"),
            Self::Ip(ip) => write!(f, "ip:{ip}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorCode;

    fn code(raw: &[u8]) -> ErrorCode {
        match Request::parse(raw) {
            Ok(r) => panic!("{raw:?} parsed as {r:?}"),
            Err(e) => e.code(),
        }
    }

    #[test]
    fn parses_wazuh_requests_without_terminator() {
        assert_eq!(
            Request::parse(b"id:001").unwrap(),
            Request::Id(QueryId::parse("001").unwrap())
        );
        let id = Request::parse(b"id:12345678").unwrap();
        assert_eq!(id.to_string(), "id:12345678");
        assert_eq!(format!("{id:?}"), "Id(QueryId(\"12345678\"))");
        assert_ne!(
            Request::parse(b"id:001").unwrap(),
            Request::parse(b"id:0001").unwrap()
        );
        assert_eq!(
            Request::parse(b"ip:10.0.0.1").unwrap(),
            Request::Ip("10.0.0.1".parse().unwrap())
        );
        assert_eq!(
            Request::parse(b"ip:fe80::1").unwrap(),
            Request::Ip("fe80::1".parse().unwrap())
        );
        assert_eq!(
            Request::parse(b"id:12345678").unwrap().to_string(),
            "id:12345678"
        );
    }

    #[test]
    fn accepts_exactly_one_trailing_newline_or_crlf() {
        assert!(Request::parse(b"id:001\n").is_ok());
        assert!(Request::parse(b"id:001\r\n").is_ok());
        assert_eq!(code(b"id:001\n\n"), ErrorCode::BadRequest);
        assert_eq!(code(b"id:001\r"), ErrorCode::BadRequest);
        assert_eq!(code(b"id:001 "), ErrorCode::BadRequest);
    }

    #[test]
    fn empty_and_incomplete_requests_are_code_1() {
        for raw in [
            &b""[..],
            b"\n",
            b"\r\n",
            b"id:",
            b"ip:",
            b"id",
            b"ip\n",
            b"id:\n",
        ] {
            assert_eq!(code(raw), ErrorCode::Incomplete, "{raw:?}");
        }
    }

    #[test]
    fn malformed_requests_are_code_3() {
        for raw in [
            &b"foo:1"[..],
            b"ID:001",
            b"id:123456789",
            b"id:0x1",
            b"id:-1",
            b"id:+1",
            b"id: 001",
            b"ip:10.0.0.256",
            b"ip:10.0.0.0/24",
            b"ip:010.0.0.1",
            b"ip:fe80::1%eth0",
            b"ip:any",
            b"name:agent",
            b":",
            b"id:001:002",
        ] {
            assert_eq!(code(raw), ErrorCode::BadRequest, "{raw:?}");
        }
    }

    /// Ids no agent can have (fewer than 3 digits, all zeros, more than 8)
    /// are bad requests (3), not lookups that answer 4 or 5.
    #[test]
    fn out_of_range_ids_are_code_3() {
        for raw in [
            &b"id:1"[..],
            b"id:12",
            b"id:000",
            b"id:0000",
            b"id:00000000",
            b"id:123456789",
        ] {
            assert_eq!(code(raw), ErrorCode::BadRequest, "{raw:?}");
        }
        for ok in [&b"id:001"[..], b"id:100", b"id:0001", b"id:12345678"] {
            assert!(Request::parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn hostile_input_is_refused_without_panicking() {
        let hostile: Vec<Vec<u8>> = vec![
            b"id:001' OR '1'='1".to_vec(),
            b"id:001\"".to_vec(),
            b"id:%00".to_vec(),
            b"id:00\x001".to_vec(),
            b"ip:10.0.0.1\x00".to_vec(),
            b"ip:*)(uid=*".to_vec(),
            b"id:*".to_vec(),
            "id:\u{0661}\u{0662}\u{0663}".as_bytes().to_vec(), // Arabic-Indic digits
            "ip:\u{ff11}0.0.0.1".as_bytes().to_vec(),
            b"id:\xff\xfe".to_vec(),
            b"\x00\x00\x00".to_vec(),
            b"id:%s%s%n".to_vec(),
        ];
        for raw in hostile {
            assert_eq!(code(&raw), ErrorCode::BadRequest, "{raw:?}");
        }
    }

    #[test]
    fn oversized_input_is_refused() {
        let big = vec![b'1'; 64 * 1024];
        assert_eq!(Request::parse(&big), Err(RequestError::TooLong));
        let mut id = b"id:".to_vec();
        id.extend(std::iter::repeat_n(b'0', 200));
        assert_eq!(Request::parse(&id), Err(RequestError::TooLong));
    }

    /// `ip:::ffff:192.168.1.100` asks every backend for `192.168.1.100`.
    #[test]
    fn ipv4_mapped_addresses_are_asked_as_ipv4() {
        let r = Request::parse(b"ip:::ffff:192.168.1.100").unwrap();
        assert_eq!(r, Request::Ip("192.168.1.100".parse().unwrap()));
        assert_eq!(r.value(), "192.168.1.100");
        let r = Request::from_parts("ip", "::FFFF:c0a8:164").unwrap();
        assert_eq!(r.value(), "192.168.1.100");
        // Only the mapped form: IPv4-compatible and NAT64 addresses stay IPv6.
        assert_eq!(
            Request::parse(b"ip:::c0a8:164").unwrap().value(),
            "::c0a8:164"
        );
    }

    #[test]
    fn ipv6_is_canonicalised_for_backends() {
        let r = Request::parse(b"ip:FE80:0:0:0:0:0:0:1").unwrap();
        assert_eq!(r.value(), "fe80::1");
    }
}

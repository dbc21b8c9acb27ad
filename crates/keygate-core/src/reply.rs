//! The reply Wazuh reads: one object of compact JSON.
//!
//! `{"error":0,"data":{"id":"001","name":"a","ip":"10.0.0.1","key":"..."}}`
//! or `{"error":4,"message":"No agent key found"}`. The four data fields are
//! always JSON strings (a number makes Wazuh 3.x drop the field and 4.4+
//! crash), and the codes are stable: see [`ErrorCode`].

use std::fmt;

use crate::AgentRecord;

/// The `error` value of a reply. These numbers are a public contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ErrorCode {
    /// 0: the agent was found; `data` holds it.
    Found = 0,
    /// 1: empty or incomplete request, or too few arguments.
    Incomplete = 1,
    /// 2: no backend could answer (unreachable, timed out).
    Unavailable = 2,
    /// 3: bad request (unknown type, invalid id or ip).
    BadRequest = 3,
    /// 4: not found in any backend.
    NotFound = 4,
    /// 5: a backend returned a record that fails validation, or more than
    /// one; it is never forwarded.
    InvalidRecord = 5,
    /// 6: internal error.
    Internal = 6,
}

impl ErrorCode {
    /// The number sent on the wire.
    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// The code for a number, if it is one of ours.
    pub fn from_u8(n: u8) -> Option<Self> {
        Some(match n {
            0 => Self::Found,
            1 => Self::Incomplete,
            2 => Self::Unavailable,
            3 => Self::BadRequest,
            4 => Self::NotFound,
            5 => Self::InvalidRecord,
            6 => Self::Internal,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_u8())
    }
}

/// The message of a not-found reply, as Wazuh's documentation shows it.
pub const NOT_FOUND_MESSAGE: &str = "No agent key found";

/// One answer to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// The agent, validated.
    Found(AgentRecord),
    /// A failure: a non-zero code and a message naming the problem (and the
    /// backend). The message must never hold a key, password or URL.
    Error {
        /// The code; never [`ErrorCode::Found`].
        code: ErrorCode,
        /// What went wrong.
        message: String,
    },
}

impl Reply {
    /// A failure reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Error {
            code,
            message: message.into(),
        }
    }

    /// The not-found reply (code 4).
    pub fn not_found() -> Self {
        Self::error(ErrorCode::NotFound, NOT_FOUND_MESSAGE)
    }

    /// The reply's code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Found(_) => ErrorCode::Found,
            Self::Error { code, .. } => *code,
        }
    }

    /// Appends the JSON object, without a newline, to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Self::Found(r) => {
                out.extend_from_slice(b"{\"error\":0,\"data\":{\"id\":");
                push_str(out, r.id.as_str());
                out.extend_from_slice(b",\"name\":");
                push_str(out, r.name.as_str());
                out.extend_from_slice(b",\"ip\":");
                push_str(out, r.ip.as_str());
                out.extend_from_slice(b",\"key\":");
                push_str(out, r.key.expose());
                out.extend_from_slice(b"}}");
            }
            Self::Error { code, message } => {
                out.extend_from_slice(b"{\"error\":");
                out.extend_from_slice(code.to_string().as_bytes());
                out.extend_from_slice(b",\"message\":");
                push_str(out, message);
                out.push(b'}');
            }
        }
    }

    /// The JSON object as bytes, without a newline (socket mode).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_into(&mut out);
        out
    }
}

/// Why bytes that claim to be a reply were not accepted ([`Reply::decode`]).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not exactly one JSON object of the reply's shape (trailing bytes,
    /// unknown or duplicate fields, a number where a string belongs).
    #[error("not a reply: {0}")]
    Shape(String),
    /// `error` is not one of the codes 0 to 6.
    #[error("unknown error code {0}")]
    UnknownCode(u64),
    /// Code 0 without `data`, or a non-zero code without `message` (or with
    /// `data`).
    #[error("code {0} with the wrong fields")]
    Fields(u64),
    /// The record fails validation or does not answer the query.
    #[error("{0}")]
    Record(#[from] crate::RecordError),
}

/// The reply as it travels, read strictly: our own encoder's shape only.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    error: u64,
    data: Option<WireData>,
    message: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WireData {
    id: String,
    name: String,
    ip: String,
    key: String,
}

impl Reply {
    /// Reads a reply another keygate sent for `query` (exec mode asking the
    /// daemon), under the rules the socket path applies to a backend's
    /// answer: exactly one JSON object (a trailing newline is tolerated),
    /// every record field valid, and the record must answer `query`. The
    /// error never carries the bytes read (they may hold a key).
    pub fn decode(raw: &[u8], query: &crate::Query) -> Result<Self, DecodeError> {
        let wire: Wire =
            serde_json::from_slice(raw).map_err(|e| DecodeError::Shape(describe(&e)))?;
        let code =
            ErrorCode::try_from_u64(wire.error).ok_or(DecodeError::UnknownCode(wire.error))?;
        match (code, wire.data, wire.message) {
            (ErrorCode::Found, Some(d), None) => {
                let record = AgentRecord::parse(&d.id, &d.name, &d.ip, &d.key)?;
                record.check_matches(query)?;
                Ok(Self::Found(record))
            }
            (ErrorCode::Found, _, _) => Err(DecodeError::Fields(wire.error)),
            (code, None, Some(message)) => Ok(Self::Error { code, message }),
            (_, _, _) => Err(DecodeError::Fields(wire.error)),
        }
    }
}

impl ErrorCode {
    fn try_from_u64(n: u64) -> Option<Self> {
        u8::try_from(n).ok().and_then(Self::from_u8)
    }
}

/// serde_json's error, described by category and position only: its full
/// text may quote the input, and the input may hold a key.
fn describe(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        serde_json::error::Category::Io => "I/O error",
        serde_json::error::Category::Syntax => "invalid JSON or trailing bytes",
        serde_json::error::Category::Data => "unexpected fields or types",
        serde_json::error::Category::Eof => "truncated",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Writes `s` as a JSON string. Validated record fields need no escaping
/// except `"` and `\` in keys; messages may need more, which serde_json
/// handles.
fn push_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' || b == b' ')
    {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a &str into a Vec cannot fail; fall back to an empty
        // string rather than panic if it ever did.
        if serde_json::to_writer(&mut *out, s).is_err() {
            out.extend_from_slice(b"\"\"");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_reply_matches_the_protocol_byte_for_byte() {
        let r = AgentRecord::parse("001", "my_agent", "192.168.1.100", "ac57").unwrap();
        assert_eq!(
            String::from_utf8(Reply::Found(r).encode()).unwrap(),
            r#"{"error":0,"data":{"id":"001","name":"my_agent","ip":"192.168.1.100","key":"ac57"}}"#
        );
    }

    #[test]
    fn error_reply_matches_the_protocol() {
        assert_eq!(
            String::from_utf8(Reply::not_found().encode()).unwrap(),
            r#"{"error":4,"message":"No agent key found"}"#
        );
    }

    #[test]
    fn keys_and_messages_with_json_metacharacters_are_escaped() {
        let r = AgentRecord::parse("001", "a", "any", r#"k"\{}"#).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&Reply::Found(r).encode()).unwrap();
        assert_eq!(v["data"]["key"], r#"k"\{}"#);
        let e = Reply::error(ErrorCode::Internal, "line\nbreak \"quoted\" \u{1}");
        let v: serde_json::Value = serde_json::from_slice(&e.encode()).unwrap();
        assert_eq!(v["error"], 6);
        assert_eq!(v["message"], "line\nbreak \"quoted\" \u{1}");
        assert!(!e.encode().contains(&b'\n'));
    }

    #[test]
    fn data_fields_are_always_strings() {
        let r = AgentRecord::parse("123", "456", "any", "789").unwrap();
        let v: serde_json::Value = serde_json::from_slice(&Reply::Found(r).encode()).unwrap();
        for f in ["id", "name", "ip", "key"] {
            assert!(v["data"][f].is_string(), "{f}");
        }
    }

    fn q(s: &str) -> crate::Query {
        crate::Request::parse(s.as_bytes()).unwrap()
    }

    /// What our encoder writes, `decode` reads back to the same reply.
    #[test]
    fn decode_reads_what_encode_writes() {
        let r =
            Reply::Found(AgentRecord::parse("001", "web-01", "10.0.0.0/24", r#"k"\x"#).unwrap());
        assert_eq!(Reply::decode(&r.encode(), &q("id:001")).unwrap(), r);
        assert_eq!(Reply::decode(&r.encode(), &q("ip:10.0.0.7")).unwrap(), r);
        let e = Reply::error(ErrorCode::Unavailable, "backend 'db' timed out");
        assert_eq!(Reply::decode(&e.encode(), &q("id:001")).unwrap(), e);
        let mut line = e.encode();
        line.push(b'\n');
        assert_eq!(Reply::decode(&line, &q("id:001")).unwrap(), e);
    }

    /// A forged or confused daemon's reply is refused: a record for another
    /// agent, a second line, extra or missing fields, numbers for strings, an
    /// unknown code, an invalid record.
    #[test]
    fn decode_refuses_anything_but_one_valid_answer_to_the_query() {
        let query = q("id:001");
        for raw in [
            &br#"{"error":0,"data":{"id":"999","name":"evil","ip":"any","key":"k"}}"#[..],
            br#"{"error":0,"data":{"id":"001","name":"a","ip":"any","key":"k"}}
{"x":1}"#,
            br#"{"error":0,"data":{"id":"001","name":"a","ip":"any","key":"k"}}{}"#,
            br#"{"error":0,"data":{"id":"001","name":"evil name","ip":"any","key":"k"}}"#,
            br#"{"error":0,"data":{"id":"001","name":"a","ip":"any","key":"k","x":1}}"#,
            br#"{"error":0,"data":{"id":1,"name":"a","ip":"any","key":"k"}}"#,
            br#"{"error":0,"data":{"id":"001","name":"a","ip":"any"}}"#,
            br#"{"error":0,"message":"x"}"#,
            br#"{"error":0,"data":{"id":"001","name":"a","ip":"any","key":"k"},"message":"x"}"#,
            br#"{"error":4}"#,
            br#"{"error":9,"message":"x"}"#,
            br#"{"error":-1,"message":"x"}"#,
            br#"{"error":"4","message":"x"}"#,
            br#"{"error":4,"message":"x","error":0}"#,
            br#"{"error":4,"message":"x","data":{"id":"001","name":"a","ip":"any","key":"k"}}"#,
            br#"[]"#,
            b"",
            b"\xff",
        ] {
            assert!(
                Reply::decode(raw, &query).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let err = Reply::decode(
            br#"{"error":0,"data":{"id":"001","name":"a","ip":"any","key":"secret-key"}} x"#,
            &query,
        )
        .unwrap_err();
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn codes_round_trip() {
        for n in 0..=6 {
            assert_eq!(ErrorCode::from_u8(n).unwrap().as_u8(), n);
        }
        assert_eq!(ErrorCode::from_u8(7), None);
    }
}

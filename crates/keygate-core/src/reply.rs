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

    #[test]
    fn codes_round_trip() {
        for n in 0..=6 {
            assert_eq!(ErrorCode::from_u8(n).unwrap().as_u8(), n);
        }
        assert_eq!(ErrorCode::from_u8(7), None);
    }
}

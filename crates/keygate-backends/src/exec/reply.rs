//! The reply of a Wazuh key script, read the way Wazuh reads it: one JSON
//! object, `error` an integer, `message` with a failure, `data` with the
//! record; field names matched ignoring case, the first duplicate winning,
//! extra fields ignored.

use std::fmt;

use keygate_core::record::Field;
use keygate_core::{AgentId, AgentRecord, BackendError, RecordError};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::Value;

/// The `error` the documented scripts answer when the agent is not in the
/// database (`{"error": 4, "message": "No agent key found"}`).
pub const NOT_FOUND: i64 = 4;
/// The `error` the documented scripts answer when they cannot connect to
/// their database.
pub const CANNOT_CONNECT: i64 = 2;

/// A JSON object's members in the order written, duplicates kept, so a
/// lookup can take the first one as Wazuh's cJSON does (serde_json's own map
/// keeps the last).
#[derive(Debug)]
struct Members(Vec<(String, Member)>);

/// One member's value: a nested object keeps its duplicates too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Member {
    Object(Members),
    Other(Value),
}

impl<'de> Deserialize<'de> for Members {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Members;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Members, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Member>()? {
                    out.push((k, v));
                }
                Ok(Members(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Members {
    /// The first member named `name`, ignoring ASCII case.
    fn get(&self, name: &str) -> Option<&Member> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

fn not_a_reply(why: impl fmt::Display) -> BackendError {
    BackendError::Internal(format!("the script's output is not a Wazuh reply: {why}"))
}

/// What a script answered, before it becomes a lookup result.
#[derive(Debug)]
pub enum Reply {
    /// `error` 0 with a valid record.
    Found(AgentRecord),
    /// `error` 4: the agent is not in the script's database.
    NotFound,
    /// Any other non-zero `error`, with its `message` (possibly empty).
    Failed {
        /// The script's error number.
        code: i64,
        /// The script's message, as written.
        message: String,
    },
}

/// Parses a script's whole stdout. Exactly one JSON object (whitespace
/// around it allowed); anything else is refused, including a second object.
pub fn parse(stdout: &[u8]) -> Result<Reply, BackendError> {
    if stdout.iter().all(u8::is_ascii_whitespace) {
        return Err(not_a_reply("it printed nothing"));
    }
    let top: Members = serde_json::from_slice(stdout).map_err(|e| {
        // A syntax error's text says what and where (`trailing characters
        // at line 2 column 1`) without quoting the input; a type error's
        // text would quote it (it may hold a key), so it is not used.
        if e.classify() == serde_json::error::Category::Data {
            not_a_reply("it is not a JSON object")
        } else {
            not_a_reply(e)
        }
    })?;
    let code = match top.get("error") {
        None => return Err(not_a_reply("no 'error' field")),
        Some(Member::Other(v)) => v
            .as_i64()
            .ok_or_else(|| not_a_reply("'error' is not an integer"))?,
        Some(Member::Object(_)) => return Err(not_a_reply("'error' is not an integer")),
    };
    if code != 0 {
        if code == NOT_FOUND {
            return Ok(Reply::NotFound);
        }
        let message = match top.get("message") {
            Some(Member::Other(Value::String(s))) => s.clone(),
            _ => String::new(),
        };
        return Ok(Reply::Failed { code, message });
    }
    let data = match top.get("data") {
        Some(Member::Object(data)) => data,
        None | Some(Member::Other(Value::Null)) => {
            return Err(RecordError::Malformed("'error' is 0 but there is no 'data'").into())
        }
        Some(_) => return Err(RecordError::Malformed("'data' is not an object").into()),
    };
    Ok(Reply::Found(record(data)?))
}

/// The record in `data`. Every field must be a JSON string, as Wazuh needs;
/// only an integer `id` is converted (zero-padded like the SQL backends'
/// integer ids), since that is how a script reading an INT column prints it.
fn record(data: &Members) -> Result<AgentRecord, RecordError> {
    let id = match data.get("id") {
        Some(Member::Other(Value::Number(n))) => {
            let n = n.as_i64().ok_or(RecordError::Invalid {
                field: Field::Id,
                rule: "a number that is not an integer",
            })?;
            Some(AgentId::from_integer(n)?.as_str().to_owned())
        }
        other => text(other, Field::Id)?.map(str::to_owned),
    };
    AgentRecord::from_options(
        id.as_deref(),
        text(data.get("name"), Field::Name)?,
        text(data.get("ip"), Field::Ip)?,
        text(data.get("key"), Field::Key)?,
    )
}

fn text(v: Option<&Member>, field: Field) -> Result<Option<&str>, RecordError> {
    match v {
        None | Some(Member::Other(Value::Null)) => Ok(None),
        Some(Member::Other(Value::String(s))) => Ok(Some(s)),
        Some(_) => Err(RecordError::Invalid {
            field,
            rule: "must be a JSON string",
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ac57f6a5e1d9b0c2e5a1d6f7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50c71";

    fn found(text: &str) -> AgentRecord {
        match parse(text.as_bytes()) {
            Ok(Reply::Found(r)) => r,
            other => panic!("{text}: {other:?}"),
        }
    }

    fn err(text: &str) -> String {
        parse(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn the_documented_reply_is_a_record() {
        let r = found(&format!(
            r#"{{"error":0,"data":{{"id":"001","name":"my_agent","ip":"192.168.1.100","key":"{KEY}"}}}}"#
        ));
        assert_eq!(r.id.as_str(), "001");
        assert_eq!(r.ip.as_str(), "192.168.1.100");
    }

    /// Like Wazuh: names in any case, the first duplicate wins, extra
    /// fields are ignored, a trailing newline is fine.
    #[test]
    fn names_ignore_case_and_the_first_duplicate_wins() {
        let r = found(&format!(
            "{{\"ERROR\":0,\"Data\":{{\"ID\":\"002\",\"id\":\"003\",\"Name\":\"a\",\"IP\":\"any\",\"KEY\":\"{KEY}\",\"extra\":1}},\"Error\":3}}\n"
        ));
        assert_eq!(r.id.as_str(), "002");
    }

    /// Error 4 is the documented scripts' "No agent key found"; other
    /// codes are failures that carry their message.
    #[test]
    fn error_4_is_not_found_and_others_are_failures() {
        assert!(matches!(
            parse(br#"{"error":4,"message":"No agent key found"}"#),
            Ok(Reply::NotFound)
        ));
        match parse(br#"{"error":2,"message":"Could not connect"}"#) {
            Ok(Reply::Failed { code: 2, message }) => assert_eq!(message, "Could not connect"),
            other => panic!("{other:?}"),
        }
    }

    /// A number is converted only for `id`; other fields must be strings.
    #[test]
    fn only_an_integer_id_is_converted() {
        let r = found(&format!(
            r#"{{"error":0,"data":{{"id":7,"name":"a","ip":"10.0.0.7","key":"{KEY}"}}}}"#
        ));
        assert_eq!(r.id.as_str(), "007");
        let e = err(&format!(
            r#"{{"error":0,"data":{{"id":"007","name":5,"ip":"10.0.0.7","key":"{KEY}"}}}}"#
        ));
        assert_eq!(
            e,
            "invalid record: field 'name' is invalid: must be a JSON string"
        );
        let e = err(r#"{"error":0,"data":{"id":"007","name":"a","ip":"10.0.0.7"}}"#);
        assert_eq!(e, "invalid record: field 'key' is missing or NULL");
    }

    /// Garbage, two objects, an empty output, a non-integer error or a
    /// missing data are refused with a message that says which, and that
    /// never quotes the output (it may hold a key).
    #[test]
    fn anything_but_one_reply_object_is_refused() {
        let two = format!(
            "{{\"error\":0,\"data\":{{\"id\":\"001\",\"name\":\"a\",\"ip\":\"any\",\"key\":\"{KEY}\"}}}}\n{{\"error\":4}}"
        );
        for (text, want) in [
            ("Traceback (most recent call last):", "expected value"),
            (two.as_str(), "trailing characters"),
            ("", "printed nothing"),
            ("  \n", "printed nothing"),
            ("[1,2]", "not a JSON object"),
            ("\"secret-key-text\"", "not a JSON object"),
            (r#"{"error":"0"}"#, "'error' is not an integer"),
            (r#"{"message":"x"}"#, "no 'error' field"),
            (r#"{"error":0}"#, "there is no 'data'"),
            (r#"{"error":0,"data":[1]}"#, "'data' is not an object"),
        ] {
            let e = err(text);
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(!e.contains(KEY) && !e.contains("secret"), "{e}");
        }
    }
}

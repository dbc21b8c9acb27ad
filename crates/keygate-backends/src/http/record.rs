//! From a JSON response to a record, through the `[backend.fields]`
//! pointers (RFC 6901, `serde_json::Value::pointer`).
//!
//! Pointers that go through an array index `0` (`/data/0/agent_id`) name a
//! result list (`/data`): an empty list is not found, a list of more than
//! one agent is ambiguous (5, like two rows of an SQL query), and listing
//! reads every entry of it with the rest of each pointer (`/agent_id`).

use keygate_core::record::Field;
use keygate_core::{AgentId, AgentRecord, BackendError, RecordError};
use serde_json::Value;

use super::config::HttpFields;

/// Splits a pointer at its first `0` token: `/data/0/agent_id` is
/// `(Some("/data"), "/agent_id")`, `/0/id` is `(Some(""), "/id")`, and a
/// pointer without one is `(None, pointer)`.
pub fn split_list(pointer: &str) -> (Option<&str>, &str) {
    let mut start = 0;
    while start < pointer.len() {
        let end = pointer[start + 1..]
            .find('/')
            .map_or(pointer.len(), |i| start + 1 + i);
        if &pointer[start + 1..end] == "0" {
            return (Some(&pointer[..start]), &pointer[end..]);
        }
        start = end;
    }
    (None, pointer)
}

/// The pointers, split at their result list (validation made sure all
/// four go through the same one, or none does).
#[derive(Clone, Debug)]
pub struct Pointers {
    /// The result list, if the pointers go through one.
    list: Option<String>,
    /// id, name, ip, key: relative to one entry of the list, or to the
    /// whole response.
    fields: [String; 4],
}

const PARTS: [Field; 4] = [Field::Id, Field::Name, Field::Ip, Field::Key];

fn bad_response(why: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(format!("the inventory's response {why}"))
}

impl Pointers {
    /// The pointers of `[backend.fields]`.
    pub fn new(fields: &HttpFields) -> Self {
        let all = fields.all();
        let list = split_list(all[0]).0.map(str::to_owned);
        let fields = all.map(|p| match &list {
            Some(_) => split_list(p).1.to_owned(),
            None => p.to_owned(),
        });
        Self { list, fields }
    }

    /// Whether the pointers go through a result list (listing needs one).
    pub fn has_list(&self) -> bool {
        self.list.is_some()
    }

    /// The entries of the result list in `doc`.
    pub fn entries<'d>(&self, doc: &'d Value) -> Result<&'d [Value], BackendError> {
        let Some(list) = &self.list else {
            return Ok(std::slice::from_ref(doc));
        };
        match doc.pointer(list) {
            None => Err(bad_response(format_args!(
                "has nothing at {list:?}, where [backend.fields] expects the result list"
            ))),
            Some(Value::Array(entries)) => Ok(entries),
            Some(_) => Err(bad_response(format_args!(
                "has no list (JSON array) at {list:?}, where [backend.fields] expects the \
                 result list"
            ))),
        }
    }

    /// The one agent in a lookup's response: `None` for an empty result
    /// list, [`BackendError::Ambiguous`] for more than one entry.
    pub fn lookup(&self, doc: &Value) -> Result<Option<AgentRecord>, BackendError> {
        match self.entries(doc)? {
            [] => Ok(None),
            [entry] => Ok(Some(self.record(entry)?)),
            _ => Err(BackendError::Ambiguous),
        }
    }

    /// The record of one entry. Every part must be a JSON string; only an
    /// integer `id` is converted (zero-padded, like the SQL backends' INT
    /// ids). A pointer that leads nowhere is a bad record, as a missing
    /// column would be.
    pub fn record(&self, entry: &Value) -> Result<AgentRecord, RecordError> {
        let mut parts: [Option<String>; 4] = Default::default();
        for ((slot, pointer), field) in parts.iter_mut().zip(&self.fields).zip(PARTS) {
            *slot = match entry.pointer(pointer) {
                None => {
                    return Err(RecordError::Invalid {
                        field,
                        rule: "the response has nothing at its [backend.fields] pointer",
                    })
                }
                Some(Value::Null) => None,
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) if field == Field::Id => {
                    let n = n.as_i64().ok_or(RecordError::Invalid {
                        field,
                        rule: "a number that is not an integer",
                    })?;
                    Some(AgentId::from_integer(n)?.as_str().to_owned())
                }
                Some(_) => {
                    return Err(RecordError::Invalid {
                        field,
                        rule: "must be a JSON string",
                    })
                }
            };
        }
        let [id, name, ip, key] = &parts;
        AgentRecord::from_options(
            id.as_deref(),
            name.as_deref(),
            ip.as_deref(),
            key.as_deref(),
        )
    }

    /// The id of an entry, for reporting a bad one (`None` when it has no
    /// usable id).
    pub fn id_of(&self, entry: &Value) -> Option<String> {
        match entry.pointer(&self.fields[0])? {
            Value::String(s) => AgentId::parse(s).ok().map(|id| id.as_str().to_owned()),
            Value::Number(n) => n
                .as_i64()
                .and_then(|n| AgentId::from_integer(n).ok())
                .map(|id| id.as_str().to_owned()),
            _ => None,
        }
    }
}

/// Parses a response body as JSON; the message says where it breaks,
/// never what it holds.
pub fn parse(body: &[u8]) -> Result<Value, BackendError> {
    serde_json::from_slice(body).map_err(|e| bad_response(format_args!("is not JSON: {e}")))
}

//! `[backend.fields]` of an http backend: the JSON pointers (RFC 6901) to
//! each part of a record, and to the count of agents in a page of
//! `url_all` (`total`).

use serde::Deserialize;

use crate::endpoint::{FieldDefaults, FieldNames};

/// The default pointers: the response is the agent object itself.
#[derive(Debug)]
pub struct HttpFieldDefaults;

impl FieldDefaults for HttpFieldDefaults {
    const ID: &'static str = "/id";
    const NAME: &'static str = "/name";
    const IP: &'static str = "/ip";
    const KEY: &'static str = "/key";
}

/// `[backend.fields]`: the JSON pointer to each part of a record and, for
/// a paged `url_all`, to the count of agents the inventory reports.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "RawHttpFields")]
pub struct HttpFields {
    /// `id`, `name`, `ip`, `key` (defaults `/id`, `/name`, `/ip`, `/key`).
    pub parts: FieldNames<HttpFieldDefaults>,
    /// Where each page of `url_all` holds the number of agents the
    /// inventory has (a JSON number or a string of digits), from the page's
    /// root, not through the result list (`/total`, `/meta/count`; default
    /// none). With it, the listing ends once that many were read and fails
    /// if the pages end before, or the count changes between pages.
    pub total: Option<String>,
}

impl HttpFields {
    /// The pointers in id, name, ip, key order.
    pub fn all(&self) -> [&str; 4] {
        self.parts.all()
    }
}

/// `[backend.fields]` as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpFields {
    /// JSON pointer to the agent id (default `/id`).
    id: Option<String>,
    /// JSON pointer to the agent name (default `/name`).
    name: Option<String>,
    /// JSON pointer to the agent address (default `/ip`).
    ip: Option<String>,
    /// JSON pointer to the agent key (default `/key`).
    key: Option<String>,
    /// JSON pointer to the count of agents in a page of `url_all` (default
    /// none).
    total: Option<String>,
}

impl From<RawHttpFields> for HttpFields {
    fn from(raw: RawHttpFields) -> Self {
        let mut parts = FieldNames::<HttpFieldDefaults>::default();
        for (slot, value) in [
            (&mut parts.id, raw.id),
            (&mut parts.name, raw.name),
            (&mut parts.ip, raw.ip),
            (&mut parts.key, raw.key),
        ] {
            if let Some(value) = value {
                *slot = value;
            }
        }
        Self {
            parts,
            total: raw.total,
        }
    }
}

//! Requests and responses of the Wazuh API, as its published OpenAPI
//! specification (`api/api/spec/spec.yaml` in wazuh/wazuh) names them.
//!
//! Only the endpoints keygate uses are modelled:
//! - `POST /security/user/authenticate` (basic auth) → [`Envelope`]`<`[`Token`]`>`;
//! - `GET /agents` → [`Envelope`]`<`[`Items`]`<`[`Agent`]`>>`, paged with
//!   `offset`/`limit`, filtered with `agents_list`, fields chosen with `select`;
//! - `GET /agents/{agent_id}/key` → [`Envelope`]`<`[`Items`]`<`[`AgentKey`]`>>`;
//! - `POST /agents/insert` with [`InsertAgent`] → [`Envelope`]`<`[`Inserted`]`>`;
//! - `DELETE /agents` → [`Envelope`]`<`[`Items`]`<String>>` (the ids deleted).
//!
//! Errors come as [`ApiError`] with an HTTP 4xx/5xx status, or as
//! [`FailedItem`]s inside a 200 answer.

use serde::{Deserialize, Serialize};

/// Every successful answer: `{"data": ..., "message": "...", "error": 0}`.
/// `error` is 0 when every item succeeded, 1 when some failed, 2 when all did.
#[derive(Debug, Deserialize)]
pub struct Envelope<D> {
    /// The payload.
    pub data: D,
    /// A human summary ("All selected agents information was returned").
    #[serde(default)]
    pub message: Option<String>,
    /// 0, 1 (some items failed) or 2 (every item failed).
    #[serde(default)]
    pub error: i64,
}

/// `data` of `POST /security/user/authenticate`.
#[derive(Deserialize)]
pub struct Token {
    /// The JWT to send as `Authorization: Bearer <token>`.
    pub token: String,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// `AllItemsResponse`: what list and bulk endpoints answer.
#[derive(Debug, Deserialize)]
pub struct Items<T> {
    /// The items the call applied to (listed, deleted).
    pub affected_items: Vec<T>,
    /// How many items match in all, over every page.
    pub total_affected_items: u64,
    /// Items the call refused, grouped by error.
    #[serde(default)]
    pub failed_items: Vec<FailedItem>,
    /// How many ids are in `failed_items`.
    #[serde(default)]
    pub total_failed_items: u64,
}

/// One group of refused ids, all with the same error.
#[derive(Clone, Debug, Deserialize)]
pub struct FailedItem {
    /// Why.
    pub error: ItemError,
    /// The ids concerned.
    pub id: Vec<String>,
}

/// `error` of a [`FailedItem`].
#[derive(Clone, Debug, Deserialize)]
pub struct ItemError {
    /// Wazuh's error code (1701: the agent does not exist).
    pub code: i64,
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    #[serde(default)]
    pub remediation: Option<String>,
}

/// Wazuh's code for "Agent does not exist".
pub const AGENT_DOES_NOT_EXIST: i64 = 1701;

/// An agent of `GET /agents`, with the fields keygate selects
/// (`select=id,name,ip,registerIP`). `registerIP` is the address written in
/// client.keys; `ip` is the one the agent last connected from.
#[derive(Clone, Debug, Deserialize)]
pub struct Agent {
    /// The id, three digits or more; `000` is the manager.
    pub id: String,
    /// The agent name.
    #[serde(default)]
    pub name: Option<String>,
    /// The address the agent last connected from.
    #[serde(default)]
    pub ip: Option<String>,
    /// The address it was registered with (`any`, an address or a network).
    #[serde(default, rename = "registerIP")]
    pub register_ip: Option<String>,
}

impl Agent {
    /// The registered address, what client.keys holds.
    pub fn registered_ip(&self) -> Option<&str> {
        self.register_ip.as_deref().or(self.ip.as_deref())
    }
}

/// An item of `GET /agents/{agent_id}/key`.
#[derive(Deserialize)]
pub struct AgentKey {
    /// The agent id.
    pub id: String,
    /// Base64 of the client.keys line `ID NAME IP KEY`.
    pub key: String,
}

/// The body of `POST /agents/insert`.
#[derive(Serialize)]
pub struct InsertAgent<'a> {
    /// The id to register (three digits or more).
    pub id: &'a str,
    /// The agent name.
    pub name: &'a str,
    /// `any`, an address or a network.
    pub ip: &'a str,
    /// Exactly 64 alphanumeric characters.
    pub key: &'a str,
    /// What to do with an existing agent with the same id, name or ip.
    pub force: Force,
}

impl std::fmt::Debug for InsertAgent<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InsertAgent")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("ip", &self.ip)
            .field("force", &self.force)
            .finish_non_exhaustive()
    }
}

/// `AgentInsertForce`. The API's defaults are `enabled: true`,
/// `disconnected_time: {enabled: true, value: "1h"}`,
/// `after_registration_time: "1h"`, so keygate always sends every field.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Force {
    /// Replace an existing agent with the same id, name or ip.
    pub enabled: bool,
    /// Only replace agents disconnected for longer than `value`.
    pub disconnected_time: DisconnectedTime,
    /// Only replace agents registered longer ago than this.
    pub after_registration_time: String,
}

/// `disconnected_time` of [`Force`].
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DisconnectedTime {
    /// Whether the condition applies.
    pub enabled: bool,
    /// How long.
    pub value: String,
}

impl Force {
    /// Never replace: an insert that clashes with an existing id, name or
    /// ip fails.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            disconnected_time: DisconnectedTime {
                enabled: false,
                value: "0s".into(),
            },
            after_registration_time: "0s".into(),
        }
    }

    /// Replace unconditionally: the store is the truth.
    pub fn replace() -> Self {
        Self {
            enabled: true,
            ..Self::disabled()
        }
    }
}

/// `data` of `POST /agents/insert`.
#[derive(Deserialize)]
pub struct Inserted {
    /// The id registered.
    pub id: String,
}

/// The body of an HTTP 4xx/5xx answer (`ApiError` in the specification).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ApiError {
    /// Short description ("Unauthorized", "Too Many Requests").
    #[serde(default)]
    pub title: String,
    /// Details.
    #[serde(default)]
    pub detail: String,
    /// Wazuh's error code, when there is one.
    #[serde(default)]
    pub error: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bodies as the specification's examples give them parse into these
    /// types, and the insert body carries every force field.
    #[test]
    fn spec_examples_parse_and_insert_body_is_complete() {
        let list: Envelope<Items<Agent>> = serde_json::from_str(
            r#"{"data":{"affected_items":[{"id":"000","name":"wazuh","ip":"127.0.0.1","registerIP":"127.0.0.1"},{"id":"001","name":"web","ip":"10.0.0.7","registerIP":"any"}],"total_affected_items":2,"total_failed_items":1,"failed_items":[{"error":{"code":1701,"message":"Agent does not exist","remediation":"Please, use `GET /agents?select=id,name` to find all available agents"},"id":["009"]}]},"message":"Some agents information was not returned","error":1}"#,
        )
        .unwrap();
        assert_eq!(list.error, 1);
        assert_eq!(list.data.affected_items[1].registered_ip(), Some("any"));
        assert_eq!(list.data.failed_items[0].error.code, AGENT_DOES_NOT_EXIST);
        let body = serde_json::to_value(InsertAgent {
            id: "001",
            name: "web",
            ip: "any",
            key: "k",
            force: Force::disabled(),
        })
        .unwrap();
        assert_eq!(
            body["force"],
            serde_json::json!({"enabled":false,"disconnected_time":{"enabled":false,"value":"0s"},"after_registration_time":"0s"})
        );
        assert_eq!(Force::replace().after_registration_time, "0s");
        assert!(Force::replace().enabled && !Force::replace().disconnected_time.enabled);
    }
}

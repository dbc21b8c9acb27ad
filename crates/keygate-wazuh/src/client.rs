//! The calls keygate makes, typed: list agents (paged or by id), read an
//! agent's key, insert, delete.

use base64::Engine;
use futures_util::stream::{self, Stream};
use keygate_core::AgentRecord;
use reqwest::Method;
use zeroize::Zeroizing;

use crate::api::{Agent, AgentKey, Envelope, FailedItem, Force, InsertAgent, Inserted, Items};
use crate::http::{Call, Http};
use crate::{Error, Settings};

/// Fields asked of `GET /agents`.
const SELECT: &str = "id,name,ip,registerIP";
/// The manager's own id: never inserted, replaced or deleted.
pub const MANAGER_ID: &str = "000";

/// A Wazuh manager's API.
pub struct Wazuh {
    http: Http,
}

/// An agent's client.keys line as `GET /agents/{id}/key` returns it.
pub struct KeyLine {
    /// The id.
    pub id: String,
    /// The name.
    pub name: String,
    /// The registered address.
    pub ip: String,
    /// The key.
    pub key: Zeroizing<String>,
}

impl Wazuh {
    /// A client; nothing is sent until the first call.
    pub fn new(settings: Settings) -> Result<Self, Error> {
        Ok(Self {
            http: Http::new(settings)?,
        })
    }

    /// Logs in now, so a bad password is reported before any work.
    pub async fn login(&self) -> Result<(), Error> {
        self.http.login(None).await.map(|_| ())
    }

    /// One page of `GET /agents` (every agent, the manager `000` included).
    pub async fn agents_page(&self, offset: u64, limit: u64) -> Result<Items<Agent>, Error> {
        let (offset, limit) = (offset.to_string(), limit.to_string());
        self.get_agents(&[("offset", &offset), ("limit", &limit), ("sort", "+id")])
            .await
    }

    /// `GET /agents` with `query` and the fields sync reads (`select`).
    async fn get_agents(&self, query: &[(&str, &str)]) -> Result<Items<Agent>, Error> {
        let mut query = query.to_vec();
        query.push(("select", SELECT));
        let envelope: Envelope<Items<Agent>> = self
            .http
            .call(Call::<()> {
                method: Method::GET,
                path: &["agents"],
                query: &query,
                body: None,
            })
            .await?;
        Ok(envelope.data)
    }

    /// Every agent, page by page (`page` agents a call).
    pub fn all_agents(&self, page: u64) -> impl Stream<Item = Result<Vec<Agent>, Error>> + '_ {
        stream::try_unfold(Some(0u64), move |offset| async move {
            let Some(offset) = offset else {
                return Ok(None);
            };
            let items = self.agents_page(offset, page).await?;
            let got = items.affected_items.len() as u64;
            let next = offset + got;
            let more = got > 0 && next < items.total_affected_items;
            Ok(Some((items.affected_items, more.then_some(next))))
        })
    }

    /// `GET /agents?agents_list=...`: the agents among `ids` that exist
    /// and the failed items (code 1701 for ids that do not).
    pub async fn agents(&self, ids: &[&str]) -> Result<(Vec<Agent>, Vec<FailedItem>), Error> {
        let list = ids.join(",");
        let limit = ids.len().max(1).to_string();
        let items = self
            .get_agents(&[("agents_list", &list), ("limit", &limit)])
            .await?;
        Ok((items.affected_items, items.failed_items))
    }

    /// `GET /agents/{id}/key`, decoded.
    pub async fn key(&self, id: &str) -> Result<KeyLine, Error> {
        let what = format!("GET /agents/{id}/key");
        let envelope: Envelope<Items<AgentKey>> = self
            .http
            .call(Call::<()> {
                method: Method::GET,
                path: &["agents", id, "key"],
                query: &[],
                body: None,
            })
            .await?;
        let bad = |reason: &str| Error::Decode {
            call: what.clone(),
            reason: reason.to_owned(),
        };
        let item = envelope
            .data
            .affected_items
            .into_iter()
            .next()
            .ok_or_else(|| bad("no key returned"))?;
        let raw = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(item.key.trim())
                .map_err(|_| bad("the key is not base64"))?,
        );
        let line = std::str::from_utf8(&raw).map_err(|_| bad("the key line is not UTF-8"))?;
        let mut parts = line.trim_end().split(' ');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some(lid), Some(name), Some(ip), Some(key), None) if lid == id => Ok(KeyLine {
                id: lid.to_owned(),
                name: name.to_owned(),
                ip: ip.to_owned(),
                key: Zeroizing::new(key.to_owned()),
            }),
            _ => Err(bad("the key line is not 'ID NAME IP KEY' for this id")),
        }
    }

    /// `POST /agents/insert` with the record and `force`.
    pub async fn insert(&self, record: &AgentRecord, force: Force) -> Result<(), Error> {
        let body = InsertAgent {
            id: record.id.as_str(),
            name: record.name.as_str(),
            ip: record.ip.as_str(),
            key: record.key.expose(),
            force,
        };
        let _: Envelope<Inserted> = self
            .http
            .call(Call {
                method: Method::POST,
                path: &["agents", "insert"],
                query: &[],
                body: Some(&body),
            })
            .await?;
        Ok(())
    }

    /// `DELETE /agents?agents_list=...&status=all&older_than=0s`: the ids
    /// deleted and the failed items. `000` is never sent.
    pub async fn delete(&self, ids: &[&str]) -> Result<Items<String>, Error> {
        let ids: Vec<&str> = ids.iter().copied().filter(|i| *i != MANAGER_ID).collect();
        if ids.is_empty() {
            return Ok(Items {
                affected_items: Vec::new(),
                total_affected_items: 0,
                failed_items: Vec::new(),
                total_failed_items: 0,
            });
        }
        let list = ids.join(",");
        let envelope: Envelope<Items<String>> = self
            .http
            .call(Call::<()> {
                method: Method::DELETE,
                path: &["agents"],
                query: &[
                    ("agents_list", &list),
                    ("status", "all"),
                    ("older_than", "0s"),
                ],
                body: None,
            })
            .await?;
        Ok(envelope.data)
    }
}

//! The calls keygate makes, typed: read the registry (every agent, paged,
//! complete or an error), list agents by id, read an agent's key, insert,
//! delete; and what the transport counted.

use std::collections::HashMap;

use base64::Engine;
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
/// Agents per page of `GET /agents` (the API's recommended limit).
pub const PAGE: u64 = 500;
/// How many times a listing that the registry changed under is restarted.
const LISTING_TRIES: u32 = 3;

/// An agent of the registry: what client.keys holds but the key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registered {
    /// The name.
    pub name: String,
    /// The registered address (`any`, an address or a network).
    pub ip: String,
}

/// The manager's registry at one moment, the manager `000` excepted.
pub type Registry = HashMap<String, Registered>;

/// What the transport counted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Calls sent, authentication excepted (retries included).
    pub calls: u64,
    /// HTTP 429 answers met (each retried).
    pub throttled: u64,
}

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

impl KeyLine {
    /// The line as client.keys holds it, `ID NAME IP KEY`.
    pub fn text(&self) -> Zeroizing<String> {
        Zeroizing::new(format!(
            "{} {} {} {}",
            self.id,
            self.name,
            self.ip,
            self.key.as_str()
        ))
    }
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

    /// What the transport counted so far.
    pub fn stats(&self) -> Stats {
        let (calls, throttled) = self.http.counts();
        Stats { calls, throttled }
    }

    /// The time between two calls at the configured pace.
    pub fn pace(&self) -> std::time::Duration {
        self.http.pace()
    }

    /// One page of `GET /agents` (every agent, the manager `000` included).
    pub async fn agents_page(&self, offset: u64, limit: u64) -> Result<Items<Agent>, Error> {
        let (offset, limit) = (offset.to_string(), limit.to_string());
        self.get_agents(&[("offset", &offset), ("limit", &limit), ("sort", "+id")])
            .await
    }

    /// The whole registry but `000`, read in pages of [`PAGE`] with
    /// `q=id!=000` (so N agents take ceil(N/500) calls). A listing ends only
    /// when it holds `total_affected_items` distinct agents; one whose total
    /// changes, or that repeats an agent, met a registry that changed under
    /// it and is restarted (at most 3 times); a page that comes back empty
    /// early is an error. Never a partial registry.
    pub async fn registry(&self) -> Result<Registry, Error> {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.registry_once().await? {
                Some(registry) => return Ok(registry),
                None if tries < LISTING_TRIES => {
                    tracing::debug!(tries, "The registry changed while it was listed; listing again.");
                }
                None => {
                    return Err(Error::Decode {
                        call: "GET /agents".into(),
                        reason: format!(
                            "the registry changed during each of {LISTING_TRIES} listings; try again when it is quiet"
                        ),
                    })
                }
            }
        }
    }

    /// One listing: `None` when the registry changed under it.
    async fn registry_once(&self) -> Result<Option<Registry>, Error> {
        let mut registry = Registry::new();
        let mut total: Option<u64> = None;
        let limit = PAGE.to_string();
        loop {
            let offset = registry.len().to_string();
            let page = self
                .get_agents(&[
                    ("offset", &offset),
                    ("limit", &limit),
                    ("sort", "+id"),
                    ("q", "id!=000"),
                ])
                .await?;
            let expected = *total.get_or_insert(page.total_affected_items);
            if page.total_affected_items != expected {
                return Ok(None);
            }
            if page.affected_items.is_empty() && (registry.len() as u64) < expected {
                return Err(Error::Decode {
                    call: "GET /agents".into(),
                    reason: format!(
                        "the listing ended after {} of {expected} agents",
                        registry.len()
                    ),
                });
            }
            for agent in page.affected_items {
                if agent.id == MANAGER_ID {
                    continue;
                }
                let entry = Registered {
                    name: agent.name.clone().unwrap_or_default(),
                    ip: agent.registered_ip().unwrap_or_default().to_owned(),
                };
                if registry.insert(agent.id, entry).is_some() {
                    return Ok(None);
                }
            }
            if registry.len() as u64 >= expected {
                return Ok(Some(registry));
            }
        }
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

    /// `POST /agents/insert` with the record and `force`; done only when
    /// the API's answer names the agent.
    pub async fn insert(&self, record: &AgentRecord, force: Force) -> Result<(), Error> {
        let body = InsertAgent {
            id: record.id.as_str(),
            name: record.name.as_str(),
            ip: record.ip.as_str(),
            key: record.key.expose(),
            force,
        };
        let answer: Envelope<Inserted> = self
            .http
            .call(Call {
                method: Method::POST,
                path: &["agents", "insert"],
                query: &[],
                body: Some(&body),
            })
            .await?;
        if answer.data.id != record.id.as_str() {
            return Err(Error::Decode {
                call: "POST /agents/insert".into(),
                reason: format!(
                    "the API did not confirm agent {} (its answer names '{}')",
                    record.id.as_str(),
                    answer.data.id
                ),
            });
        }
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

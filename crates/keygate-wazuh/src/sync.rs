//! `keygate sync`: the plan that makes a manager's registry equal to the
//! store, and its application.
//!
//! 1. The store is read once, as a stream, in batches. Each batch is asked
//!    of the manager with `GET /agents?agents_list=...`; an agent missing
//!    there is an insert, one whose name or registered address differs is a
//!    replace, and the others have their client.keys line read with
//!    `GET /agents/{id}/key` (bounded concurrency) to compare the key.
//! 2. With `prune`, every manager agent is listed (paged) and those absent
//!    from the store are deleted, never `000`. Prune is skipped when the
//!    store reported invalid entries: an agent whose record is broken is
//!    still the operator's, and deleting it would be worse than keeping it.
//! 3. Nothing is written before the whole plan is known; a failure while
//!    planning (store or API) ends the run with nothing changed. With
//!    `apply`: deletes first (so names and addresses they free can be
//!    taken), then replaces (`force` enabled, unconditional), then inserts
//!    (`force` disabled). A change the API refuses is reported with its
//!    reason and the rest goes on.
//!
//! Only changed records are held in memory (and the store's ids, for
//! prune); keys never appear in the report.

use std::collections::HashSet;

use futures_util::stream::{self, Stream, StreamExt};
use keygate_core::{AgentRecord, BackendError, Listed};
use serde::Serialize;

use crate::api::{Agent, Force, AGENT_DOES_NOT_EXIST};
use crate::client::MANAGER_ID;
use crate::{Error, Wazuh};

/// What to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Write the changes (otherwise only plan them).
    pub apply: bool,
    /// Delete manager agents absent from the store.
    pub prune: bool,
    /// Ids per `agents_list` and per delete call.
    pub batch: usize,
    /// Key reads and inserts in flight at once.
    pub concurrency: usize,
}

/// A change to the manager.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// `POST /agents/insert`, force disabled.
    Insert,
    /// `POST /agents/insert`, force enabled.
    Replace,
    /// `DELETE /agents`.
    Delete,
}

/// A change that failed (or, in a plan, cannot be made).
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// The agent id.
    pub id: String,
    /// What was attempted.
    pub action: Action,
    /// Why it failed; never a key.
    pub reason: String,
}

/// A store entry that failed validation.
#[derive(Clone, Debug, Serialize)]
pub struct Invalid {
    /// Where it is in its backend.
    pub at: String,
    /// Why it was refused.
    pub reason: String,
}

/// What a run did (or, without `apply`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Whether the changes were written.
    pub applied: bool,
    /// Ids inserted (planned to be, in a dry run).
    pub inserted: Vec<String>,
    /// Ids replaced.
    pub replaced: Vec<String>,
    /// Ids deleted.
    pub deleted: Vec<String>,
    /// How many agents were already equal.
    pub unchanged: u64,
    /// Changes that failed or cannot be made, with reasons.
    pub failed: Vec<Failure>,
    /// Store entries that failed validation.
    pub invalid: Vec<Invalid>,
    /// Why prune was skipped, if it was.
    pub prune_skipped: Option<String>,
}

impl Report {
    /// Whether anything is (or was) to be changed.
    pub fn has_changes(&self) -> bool {
        !(self.inserted.is_empty() && self.replaced.is_empty() && self.deleted.is_empty())
    }
}

/// A failure that ends the run before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store could not be read completely.
    #[error("cannot read the store: {0}")]
    Store(BackendError),
    /// The API could not be asked.
    #[error("{0}")]
    Api(#[from] Error),
}

/// Progress callbacks (a bar on a terminal, nothing otherwise).
pub trait Progress: Send + Sync {
    /// A new stage begins; `total` if known.
    fn stage(&self, name: &str, total: Option<u64>);
    /// `n` more units of the current stage are done.
    fn advance(&self, n: u64);
}

/// No progress display.
pub struct Quiet;

impl Progress for Quiet {
    fn stage(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
}

/// Why the API would refuse this record, if it would: `POST /agents/insert`
/// wants a key of exactly 64 alphanumeric characters and an id of at least
/// 3 digits.
pub fn api_refusal(record: &AgentRecord) -> Option<&'static str> {
    let key = record.key.expose();
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Some("the Wazuh API takes only keys of exactly 64 letters and digits");
    }
    if record.id.as_str().len() < 3 {
        return Some("the Wazuh API takes only ids of at least 3 digits");
    }
    None
}

/// Plans, and with `options.apply` applies, the changes that make the
/// manager equal to `store` (already merged: one record per id).
pub async fn run<S>(
    wazuh: &Wazuh,
    store: S,
    options: &Options,
    progress: &dyn Progress,
) -> Result<Report, SyncError>
where
    S: Stream<Item = Result<Listed, BackendError>> + Send,
{
    wazuh.login().await?;
    let mut report = Report::default();
    let mut changes: Vec<(Action, AgentRecord)> = Vec::new();
    let mut store_ids: HashSet<String> = HashSet::new();

    progress.stage("comparing", None);
    let mut batches = std::pin::pin!(store.chunks(options.batch.max(1)));
    while let Some(batch) = batches.next().await {
        let mut records = Vec::with_capacity(batch.len());
        for item in batch {
            match item.map_err(SyncError::Store)? {
                Listed::Record(r) => records.push(r),
                Listed::Invalid { at, reason } => report.invalid.push(Invalid { at, reason }),
            }
        }
        if options.prune {
            store_ids.extend(records.iter().map(|r| r.id.as_str().to_owned()));
        }
        let n = records.len() as u64;
        compare(wazuh, records, options, &mut report, &mut changes).await?;
        progress.advance(n);
    }

    let mut deletes = Vec::new();
    if options.prune {
        if report.invalid.is_empty() {
            let mut pages = std::pin::pin!(wazuh.all_agents(1000));
            while let Some(page) = pages.next().await {
                deletes.extend(
                    page?
                        .into_iter()
                        .map(|a| a.id)
                        .filter(|id| id != MANAGER_ID && !store_ids.contains(id)),
                );
            }
        } else {
            report.prune_skipped = Some(format!(
                "the store has {} invalid entr{}; nothing is deleted until they are fixed",
                report.invalid.len(),
                if report.invalid.len() == 1 {
                    "y"
                } else {
                    "ies"
                }
            ));
        }
    }
    drop(store_ids);

    if !options.apply {
        for (action, record) in &changes {
            let id = record.id.as_str().to_owned();
            match api_refusal(record) {
                Some(reason) => report.failed.push(Failure {
                    id,
                    action: *action,
                    reason: reason.into(),
                }),
                None if *action == Action::Insert => report.inserted.push(id),
                None => report.replaced.push(id),
            }
        }
        report.deleted = deletes;
        return Ok(sorted(report));
    }

    report.applied = true;
    progress.stage("applying", Some((changes.len() + deletes.len()) as u64));
    for chunk in deletes.chunks(options.batch.max(1)) {
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        match wazuh.delete(&ids).await {
            Ok(items) => {
                report.deleted.extend(items.affected_items);
                for failed in items.failed_items {
                    for id in failed.id {
                        report.failed.push(Failure {
                            id,
                            action: Action::Delete,
                            reason: failed.error.message.clone(),
                        });
                    }
                }
            }
            Err(e) => report.failed.extend(chunk.iter().map(|id| Failure {
                id: id.clone(),
                action: Action::Delete,
                reason: e.to_string(),
            })),
        }
        progress.advance(chunk.len() as u64);
    }
    // Replaces before inserts: a replace can free a name or an address an
    // insert needs.
    changes.sort_by_key(|(action, _)| *action != Action::Replace);
    let results: Vec<(Action, String, Result<(), String>)> = stream::iter(changes)
        .map(|(action, record)| async move {
            let id = record.id.as_str().to_owned();
            if let Some(reason) = api_refusal(&record) {
                return (action, id, Err(reason.to_owned()));
            }
            let force = match action {
                Action::Replace => Force::replace(),
                _ => Force::disabled(),
            };
            let result = wazuh
                .insert(&record, force)
                .await
                .map_err(|e| e.to_string());
            progress.advance(1);
            (action, id, result)
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    for (action, id, result) in results {
        match result {
            Ok(()) if action == Action::Replace => report.replaced.push(id),
            Ok(()) => report.inserted.push(id),
            Err(reason) => report.failed.push(Failure { id, action, reason }),
        }
    }
    Ok(sorted(report))
}

fn sorted(mut report: Report) -> Report {
    for list in [
        &mut report.inserted,
        &mut report.replaced,
        &mut report.deleted,
    ] {
        list.sort();
    }
    report.failed.sort_by(|a, b| a.id.cmp(&b.id));
    report
}

/// Classifies one batch of store records against the manager.
async fn compare(
    wazuh: &Wazuh,
    records: Vec<AgentRecord>,
    options: &Options,
    report: &mut Report,
    changes: &mut Vec<(Action, AgentRecord)>,
) -> Result<(), SyncError> {
    if records.is_empty() {
        return Ok(());
    }
    let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
    let (found, failed) = wazuh.agents(&ids).await?;
    if let Some(other) = failed.iter().find(|f| f.error.code != AGENT_DOES_NOT_EXIST) {
        return Err(SyncError::Api(Error::Decode {
            call: "GET /agents".into(),
            reason: format!(
                "agents {} refused: {}",
                other.id.join(","),
                other.error.message
            ),
        }));
    }
    let found: std::collections::HashMap<String, Agent> =
        found.into_iter().map(|a| (a.id.clone(), a)).collect();
    let mut to_check = Vec::new();
    for record in records {
        match found.get(record.id.as_str()) {
            None => changes.push((Action::Insert, record)),
            Some(agent)
                if agent.name.as_deref() != Some(record.name.as_str())
                    || agent.registered_ip() != Some(record.ip.as_str()) =>
            {
                changes.push((Action::Replace, record))
            }
            Some(_) => to_check.push(record),
        }
    }
    let checked: Vec<Result<(AgentRecord, bool), Error>> = stream::iter(to_check)
        .map(|record| async move {
            let line = wazuh.key(record.id.as_str()).await?;
            let same = line.name == record.name.as_str()
                && line.ip == record.ip.as_str()
                && line.key.as_str() == record.key.expose();
            Ok((record, same))
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    for result in checked {
        let (record, same) = result?;
        if same {
            report.unchanged += 1;
        } else {
            changes.push((Action::Replace, record));
        }
    }
    Ok(())
}

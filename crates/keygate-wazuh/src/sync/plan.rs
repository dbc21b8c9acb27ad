//! The plan: the store compared against one snapshot of the manager's
//! registry, and the guards that decide what of it may be applied.
//!
//! - The registry is read once, whole ([`Wazuh::registry`]); inserts,
//!   replaces and deletes all come from that snapshot.
//! - Keys are compared against the manager's client.keys when it was read
//!   (no API call), else read with `GET /agents/{id}/key` for the agents
//!   whose name and address already match.
//! - A record the API would refuse (key, id, Wazuh's name rule) fails here,
//!   before any call for it.
//! - A replace or insert that would make the manager remove another agent
//!   (same name, or same address other than `any`) is that agent's deletion:
//!   with prune it is one (the agent is absent from the store), without it
//!   the change is a conflict and is not applied. An agent the store keeps
//!   is never removed that way.
//! - Prune never runs on a store that lists no agent or has invalid
//!   entries, and a plan deleting more than `max_delete` agents is refused
//!   whole.

use std::collections::{HashMap, HashSet};

use futures_util::stream::{self, Stream, StreamExt};
use keygate_core::{AgentRecord, BackendError, Listed};
use zeroize::Zeroizing;

use super::report::{Action, Displaced, Failure, Invalid, Report};
use super::{api_refusal, Options, Progress, SyncError};
use crate::{Registered, Registry, Wazuh};

/// A replace or an insert.
pub(crate) struct Change {
    pub action: Action,
    pub record: AgentRecord,
}

/// What the run will do, from one snapshot of the registry.
pub(crate) struct Plan {
    /// The registry when planned.
    pub registry: Registry,
    /// Replaces and inserts that may be applied.
    pub changes: Vec<Change>,
    /// Agents to delete (empty without prune).
    pub deletes: Vec<String>,
    /// The manager's client.keys lines already known, by id (read from its
    /// client.keys or through the API while comparing).
    pub known_lines: HashMap<String, Zeroizing<String>>,
}

/// `ID NAME IP KEY`, as client.keys holds it.
pub(crate) fn line_of(record: &AgentRecord) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "{} {} {} {}",
        record.id.as_str(),
        record.name.as_str(),
        record.ip.as_str(),
        record.key.expose()
    ))
}

/// The manager's client.keys line for `id`, when it was read and agrees
/// with the registry's name and address (a stale file is not trusted).
pub(crate) fn manager_line<'a>(
    options: &'a Options,
    id: &str,
    registered: &Registered,
) -> Option<&'a AgentRecord> {
    let keys = options.manager_keys.as_ref()?;
    keys.lines
        .get(id)
        .filter(|r| r.name.as_str() == registered.name && r.ip.as_str() == registered.ip)
}

/// Compares the store with the registry and applies the guards.
pub(crate) async fn plan<S>(
    wazuh: &Wazuh,
    store: S,
    options: &Options,
    report: &mut Report,
    progress: &dyn Progress,
) -> Result<Plan, SyncError>
where
    S: Stream<Item = Result<Listed, BackendError>> + Send,
{
    progress.stage("reading the manager's registry", None);
    let registry = wazuh.registry().await?;
    report.manager_agents = registry.len() as u64;

    progress.stage("comparing", None);
    let mut store_ids: HashSet<String> = HashSet::new();
    let mut changes: Vec<Change> = Vec::new();
    let mut known_lines = HashMap::new();
    let mut batches = std::pin::pin!(store.chunks(options.batch.max(1)));
    while let Some(batch) = batches.next().await {
        let count = batch.len() as u64;
        let mut to_read = Vec::new();
        for item in batch {
            let record = match item.map_err(SyncError::Store)? {
                Listed::Record(r) => r,
                Listed::Invalid { at, reason } => {
                    report.invalid.push(Invalid { at, reason });
                    continue;
                }
            };
            store_ids.insert(record.id.as_str().to_owned());
            let Some(registered) = registry.get(record.id.as_str()) else {
                changes.push(Change {
                    action: Action::Insert,
                    record,
                });
                continue;
            };
            let line = manager_line(options, record.id.as_str(), registered);
            if registered.name != record.name.as_str() || registered.ip != record.ip.as_str() {
                if let Some(line) = line {
                    known_lines.insert(record.id.as_str().to_owned(), line_of(line));
                }
                changes.push(Change {
                    action: Action::Replace,
                    record,
                });
            } else if let Some(line) = line {
                if line.key.expose() == record.key.expose() {
                    report.unchanged += 1;
                } else {
                    known_lines.insert(record.id.as_str().to_owned(), line_of(line));
                    changes.push(Change {
                        action: Action::Replace,
                        record,
                    });
                }
            } else {
                to_read.push(record);
            }
        }
        let read: Vec<_> = stream::iter(to_read)
            .map(|record| async move {
                let line = wazuh.key(record.id.as_str()).await;
                (record, line)
            })
            .buffer_unordered(options.concurrency.max(1))
            .collect()
            .await;
        for (record, line) in read {
            let line = line?;
            if line.name == record.name.as_str()
                && line.ip == record.ip.as_str()
                && line.key.as_str() == record.key.expose()
            {
                report.unchanged += 1;
            } else {
                known_lines.insert(line.id.clone(), line.text());
                changes.push(Change {
                    action: Action::Replace,
                    record,
                });
            }
        }
        progress.advance(count);
    }

    changes.retain(|c| match api_refusal(&c.record) {
        Some(reason) => {
            report.failed.push(Failure {
                id: c.record.id.as_str().to_owned(),
                action: c.action,
                reason,
            });
            false
        }
        None => true,
    });
    let prune = options.prune && prune_allowed(&store_ids, report);
    resolve_conflicts(&registry, &store_ids, &mut changes, prune, report);
    let mut deletes: Vec<String> = if prune {
        registry
            .keys()
            .filter(|id| !store_ids.contains(*id))
            .cloned()
            .collect()
    } else {
        Vec::new()
    };
    deletes.sort();
    let limit = options
        .max_delete
        .unwrap_or_else(|| (registry.len() as u64 / 10).max(1));
    report.max_delete = limit;
    if deletes.len() as u64 > limit {
        report.refused = Some(format!(
            "the plan would delete {} of the manager's {} agents, more than --max-delete {limit}{}; \
             nothing was changed. If the store is right, run again with --max-delete {}",
            deletes.len(),
            registry.len(),
            if options.max_delete.is_none() {
                " (the default: 10 % of the manager's agents)"
            } else {
                ""
            },
            deletes.len()
        ));
    }
    Ok(Plan {
        registry,
        changes,
        deletes,
        known_lines,
    })
}

/// Whether prune may run; the reason in the report when not.
fn prune_allowed(store_ids: &HashSet<String>, report: &mut Report) -> bool {
    let invalid = report.invalid.len();
    report.prune_skipped = if invalid > 0 {
        Some(format!(
            "the store has {invalid} invalid entr{}; nothing is deleted until they are fixed",
            if invalid == 1 { "y" } else { "ies" }
        ))
    } else if store_ids.is_empty() {
        Some(
            "the store lists no agent; prune never empties a manager (check the store's \
             backend: an empty store is more likely broken than right)"
                .into(),
        )
    } else {
        None
    };
    report.prune_skipped.is_none()
}

/// Drops (as conflicts) the changes that would make the manager remove an
/// agent the plan does not delete, and records the agents a change
/// displaces (deleted by prune). Repeated until stable: a dropped change
/// can leave another one clashing with the agent it would have moved.
fn resolve_conflicts(
    registry: &Registry,
    store_ids: &HashSet<String>,
    changes: &mut Vec<Change>,
    prune: bool,
    report: &mut Report,
) {
    let mut by_name: HashMap<&str, Vec<&str>> = HashMap::new();
    let mut by_ip: HashMap<&str, Vec<&str>> = HashMap::new();
    for (id, agent) in registry {
        by_name.entry(agent.name.as_str()).or_default().push(id);
        if agent.ip != "any" {
            by_ip.entry(agent.ip.as_str()).or_default().push(id);
        }
    }
    changes.sort_by(|a, b| a.record.id.as_str().cmp(b.record.id.as_str()));
    loop {
        let verdicts = verdicts(&by_name, &by_ip, store_ids, changes, prune);
        if verdicts.iter().all(Result::is_ok) {
            for displaced in verdicts.into_iter().flatten() {
                report.displaced.extend(displaced);
            }
            return;
        }
        let mut verdicts = verdicts.into_iter();
        changes.retain(|c| match verdicts.next() {
            Some(Err(reason)) => {
                report.conflicts.push(Failure {
                    id: c.record.id.as_str().to_owned(),
                    action: c.action,
                    reason,
                });
                false
            }
            _ => true,
        });
    }
}

/// For each change, in order: the agents it displaces, or why it conflicts.
fn verdicts(
    by_name: &HashMap<&str, Vec<&str>>,
    by_ip: &HashMap<&str, Vec<&str>>,
    store_ids: &HashSet<String>,
    changes: &[Change],
    prune: bool,
) -> Vec<Result<Vec<Displaced>, String>> {
    let changing: HashMap<&str, &AgentRecord> = changes
        .iter()
        .map(|c| (c.record.id.as_str(), &c.record))
        .collect();
    let mut claimed_name: HashMap<&str, &str> = HashMap::new();
    let mut claimed_ip: HashMap<&str, &str> = HashMap::new();
    let mut verdicts: Vec<Result<Vec<Displaced>, String>> = Vec::new();
    for change in changes.iter() {
        let (id, name, ip) = (
            change.record.id.as_str(),
            change.record.name.as_str(),
            change.record.ip.as_str(),
        );
        let mut verdict = Ok(Vec::new());
        if let Some(other) = claimed_name.insert(name, id) {
            verdict = Err(format!(
                "the store gives agent {other} the same name '{name}'"
            ));
        } else if ip != "any" {
            if let Some(other) = claimed_ip.insert(ip, id) {
                verdict = Err(format!(
                    "the store gives agent {other} the same address {ip}"
                ));
            }
        }
        let holders = by_name
            .get(name)
            .into_iter()
            .flatten()
            .map(|x| (*x, "name", name));
        let ip_holders = by_ip
            .get(ip)
            .into_iter()
            .flatten()
            .map(|x| (*x, "address", ip));
        for (holder, what, value) in holders.chain(ip_holders) {
            let Ok(displaced) = &mut verdict else { break };
            if holder == id || displaced.iter().any(|d: &Displaced| d.id == holder) {
                continue;
            }
            if store_ids.contains(holder) {
                match changing.get(holder) {
                    // It gives the name or address up in this run.
                    Some(r) if r.name.as_str() != name && (ip == "any" || r.ip.as_str() != ip) => {}
                    Some(_) => {
                        verdict = Err(format!(
                            "the store gives agent {holder} the same {what} {value}"
                        ))
                    }
                    None => {
                        verdict = Err(format!(
                            "agent {holder} holds the same {what} {value} in the manager, \
                                 and the store keeps it"
                        ))
                    }
                }
            } else if prune {
                displaced.push(Displaced {
                    id: holder.to_owned(),
                    by: id.to_owned(),
                });
            } else {
                verdict = Err(format!(
                    "the manager would remove agent {holder} (it holds the same {what} {value}), \
                         which is not in the store: --prune deletes it, counted against \
                         --max-delete and backed up first"
                ));
            }
        }
        verdicts.push(verdict);
    }
    verdicts
}

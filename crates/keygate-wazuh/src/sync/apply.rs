//! Applying a plan, in strict phases: the backup, then every delete, then
//! every replace, then every insert; a phase starts only when the one
//! before has finished.
//!
//! - The backup holds the manager's line for every agent to be replaced or
//!   deleted; lines not known from planning are read through the API now.
//!   If any cannot be had, or the file cannot be written, nothing changes.
//! - Each batch of deletes is preceded by a look at those agents
//!   (`GET /agents?agents_list=...`): if one is gone or no longer has the
//!   name and address of the snapshot, the registry changed under the plan,
//!   and the remaining deletes are skipped and reported.
//! - A change is done only when the API's answer names it (`affected_items`
//!   of a delete, `data.id` of an insert).

use std::collections::HashMap;

use futures_util::stream::{self, StreamExt};
use keygate_core::AgentRecord;
use zeroize::Zeroizing;

use super::plan::{line_of, manager_line, Change, Plan};
use super::report::{Action, Failure, Report};
use super::{Options, Progress, SyncError};
use crate::api::{Force, AGENT_DOES_NOT_EXIST};
use crate::Wazuh;

/// A progress display whose stage names carry what applying costs (the
/// calls and the time at the pace), so the bar shows it.
pub(crate) struct WithBudget<'a> {
    pub inner: &'a dyn Progress,
    pub budget: String,
}

impl Progress for WithBudget<'_> {
    fn stage(&self, name: &str, total: Option<u64>) {
        self.inner
            .stage(&format!("{name} (applying: {})", self.budget), total);
    }

    fn advance(&self, n: u64) {
        self.inner.advance(n);
    }
}

/// The API calls applying `plan` takes: backup key reads, a look and a
/// delete per batch of deletes, one call per replace and insert.
pub(crate) fn calls(plan: &Plan, options: &Options) -> u64 {
    let unknown = backup_ids(plan)
        .iter()
        .filter(|id| {
            !plan.known_lines.contains_key(*id) && known_in_file(plan, options, id).is_none()
        })
        .count() as u64;
    let batches = plan.deletes.len().div_ceil(options.batch.max(1)) as u64;
    unknown + 2 * batches + plan.changes.len() as u64
}

/// The ids whose current lines go into the backup, sorted.
fn backup_ids(plan: &Plan) -> Vec<String> {
    let mut ids: Vec<String> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Replace)
        .map(|c| c.record.id.as_str().to_owned())
        .chain(plan.deletes.iter().cloned())
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

fn known_in_file<'a>(plan: &Plan, options: &'a Options, id: &str) -> Option<&'a AgentRecord> {
    manager_line(options, id, plan.registry.get(id)?)
}

/// Applies `plan`, filling `report`.
pub(crate) async fn apply(
    wazuh: &Wazuh,
    plan: Plan,
    options: &Options,
    report: &mut Report,
    progress: &dyn Progress,
) -> Result<(), SyncError> {
    let ids = backup_ids(&plan);
    if !ids.is_empty() {
        progress.stage("backing up", Some(ids.len() as u64));
        let lines = backup_lines(wazuh, &plan, options, &ids, progress).await?;
        let path = options.backups.write(&lines).map_err(SyncError::Backup)?;
        tracing::info!(path = %path.display(), agents = lines.len(), "Wrote the sync backup.");
        report.backup = Some(path);
        options.backups.remove_old();
    }
    let Plan {
        registry,
        changes,
        deletes,
        ..
    } = plan;

    progress.stage("deleting", Some(deletes.len() as u64));
    let batches: Vec<&[String]> = deletes.chunks(options.batch.max(1)).collect();
    for (n, chunk) in batches.iter().enumerate() {
        let ids: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let check = changed_under_us(wazuh, &registry, &ids)
            .await
            .unwrap_or_else(|e| {
                Some(format!(
                    "cannot look at the agents before deleting them ({e}); the remaining deletes \
                     were not made"
                ))
            });
        if let Some(reason) = check {
            report.deletes_skipped = batches[n..]
                .iter()
                .flat_map(|c| c.iter().cloned())
                .collect();
            report.deletes_skipped_reason = Some(reason);
            break;
        }
        match wazuh.delete(&ids).await {
            Ok(items) => {
                let mut refused: HashMap<String, String> = HashMap::new();
                for failed in items.failed_items {
                    for id in failed.id {
                        refused.insert(id, failed.error.message.clone());
                    }
                }
                for id in chunk.iter() {
                    if items.affected_items.contains(id) {
                        report.deleted.push(id.clone());
                    } else {
                        let reason = refused.remove(id).unwrap_or_else(|| {
                            "the API's answer does not name it among the agents deleted".into()
                        });
                        report.failed.push(Failure {
                            id: id.clone(),
                            action: Action::Delete,
                            reason,
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

    let (replaces, inserts): (Vec<Change>, Vec<Change>) = changes
        .into_iter()
        .partition(|c| c.action == Action::Replace);
    for (stage, phase) in [("replacing", replaces), ("inserting", inserts)] {
        progress.stage(stage, Some(phase.len() as u64));
        let results: Vec<(Action, String, Result<(), String>)> = stream::iter(phase)
            .map(|Change { action, record }| async move {
                let force = match action {
                    Action::Replace => Force::replace(),
                    _ => Force::disabled(),
                };
                let result = wazuh
                    .insert(&record, force)
                    .await
                    .map_err(|e| e.to_string());
                progress.advance(1);
                (action, record.id.as_str().to_owned(), result)
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
    }
    Ok(())
}

/// The backup's lines: known ones, then the rest read through the API.
async fn backup_lines(
    wazuh: &Wazuh,
    plan: &Plan,
    options: &Options,
    ids: &[String],
    progress: &dyn Progress,
) -> Result<Vec<Zeroizing<String>>, SyncError> {
    let mut lines: Vec<(String, Zeroizing<String>)> = Vec::with_capacity(ids.len());
    let mut to_read = Vec::new();
    for id in ids {
        if let Some(line) = plan.known_lines.get(id) {
            lines.push((id.clone(), line.clone()));
        } else if let Some(record) = known_in_file(plan, options, id) {
            lines.push((id.clone(), line_of(record)));
        } else {
            to_read.push(id.as_str());
        }
    }
    progress.advance(lines.len() as u64);
    let read: Vec<_> = stream::iter(to_read)
        .map(|id| async move {
            let line = wazuh.key(id).await;
            progress.advance(1);
            (id, line)
        })
        .buffer_unordered(options.concurrency.max(1))
        .collect()
        .await;
    for (id, line) in read {
        let line = line.map_err(|e| {
            SyncError::Backup(format!(
                "cannot read agent {id}'s line for the backup: {e}; nothing was changed"
            ))
        })?;
        lines.push((id.to_owned(), line.text()));
    }
    lines.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(lines.into_iter().map(|(_, l)| l).collect())
}

/// Why the registry no longer matches the snapshot for `ids`, if it does
/// not: one call, `GET /agents?agents_list=...`.
async fn changed_under_us(
    wazuh: &Wazuh,
    registry: &crate::Registry,
    ids: &[&str],
) -> Result<Option<String>, crate::Error> {
    let (found, failed) = wazuh.agents(ids).await?;
    if let Some(f) = failed.iter().find(|f| f.error.code != AGENT_DOES_NOT_EXIST) {
        return Err(crate::Error::Decode {
            call: "GET /agents".into(),
            reason: format!("agents {} refused: {}", f.id.join(","), f.error.message),
        });
    }
    if let Some(gone) = failed.iter().flat_map(|f| f.id.iter()).next() {
        return Ok(Some(format!(
            "agent {gone} left the manager after the plan was made; the registry changed while \
             applying, so the remaining deletes were not made (run sync again to plan afresh)"
        )));
    }
    for agent in found {
        let Some(planned) = registry.get(&agent.id) else {
            continue;
        };
        if agent.name.as_deref() != Some(planned.name.as_str())
            || agent.registered_ip() != Some(planned.ip.as_str())
        {
            return Ok(Some(format!(
                "agent {} changed in the manager after the plan was made; the registry changed \
                 while applying, so the remaining deletes were not made (run sync again to plan \
                 afresh)",
                agent.id
            )));
        }
    }
    Ok(None)
}

//! `keygate sync`: the plan that makes a manager's registry equal to the
//! store, its guards, and its application. Like Terraform's plan and apply,
//! the run plans everything from one snapshot before it writes anything;
//! like rsync's `--max-delete`, an implausible plan is refused whole.
//!
//! 1. [`plan`]: the registry is read once, in pages (`GET /agents`,
//!    500 a call); the store is read once, as a stream, and compared with
//!    it (keys against the manager's client.keys when it was read, else
//!    through `GET /agents/{id}/key`). Records the API would refuse fail
//!    here; changes that would make the manager remove another agent are
//!    conflicts or, with prune, that agent's deletion; prune is skipped for
//!    a store with no agent or with invalid entries, and a plan deleting
//!    more than `max_delete` agents is refused. A failure while planning
//!    (the store's listing or the API) ends the run with nothing changed.
//! 2. [`apply`] (with `apply` and a plan not refused): the backup of every
//!    line to be replaced or deleted, then deletes, replaces, inserts, each
//!    phase finished before the next starts.
//!
//! Keys never appear in the report; every API call but authentication is
//! paced (`[wazuh] max_requests_per_minute`) and counted.

mod apply;
mod backup;
mod plan;
mod report;

use std::collections::HashMap;
use std::path::PathBuf;

use futures_util::stream::Stream;
use keygate_core::{AgentRecord, BackendError, Listed};

pub use backup::Backups;
pub use report::{Action, Displaced, Failure, Invalid, Report};

use crate::{Error, Wazuh};

/// The manager's client.keys as read for comparing keys: its valid lines
/// by id.
#[derive(Clone)]
pub struct ManagerKeys {
    /// Where it was read.
    pub path: PathBuf,
    /// Its records by id (removed and invalid lines left out).
    pub lines: HashMap<String, AgentRecord>,
}

impl std::fmt::Debug for ManagerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManagerKeys")
            .field("path", &self.path)
            .field("lines", &self.lines.len())
            .finish()
    }
}

/// What to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// Write the changes (otherwise only plan them).
    pub apply: bool,
    /// Delete manager agents absent from the store.
    pub prune: bool,
    /// The most agents one run may delete (`None`: 10 % of the manager's
    /// agents, at least 1).
    pub max_delete: Option<u64>,
    /// Ids per delete call, and store records compared at a time.
    pub batch: usize,
    /// Key reads and inserts in flight at once.
    pub concurrency: usize,
    /// The manager's client.keys, when readable: keys are compared against
    /// it and none is read through the API.
    pub manager_keys: Option<ManagerKeys>,
    /// Where the backup goes.
    pub backups: Backups,
}

/// A failure that ends the run before anything is written.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The store could not be read completely.
    #[error("cannot read the store: {0}; nothing was changed")]
    Store(BackendError),
    /// The API could not be asked.
    #[error("{0}")]
    Api(#[from] Error),
    /// The backup could not be written: nothing was changed.
    #[error("{0}")]
    Backup(String),
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

/// Why the API (or Wazuh's own name rule) would refuse this record, if it
/// would: `POST /agents/insert` wants a key of exactly 64 alphanumeric
/// characters, and Wazuh's `OS_IsValidName` refuses some names keygate's
/// own rules let through. (It also wants an id of at least 3 digits, which
/// every [`AgentId`](keygate_core::AgentId) has.)
pub fn api_refusal(record: &AgentRecord) -> Option<String> {
    let key = record.key.expose();
    if key.len() != 64 || !key.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Some("the Wazuh API takes only keys of exactly 64 letters and digits".into());
    }
    record
        .name
        .wazuh_name_rule()
        .map(|rule| format!("the name breaks Wazuh's name rule (OS_IsValidName): {rule}"))
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
    let mut report = Report {
        client_keys: options.manager_keys.as_ref().map(|k| k.path.clone()),
        ..Report::default()
    };
    let plan = plan::plan(wazuh, store, options, &mut report, progress).await?;
    report.apply_calls = apply::calls(&plan, options);
    report.apply_seconds =
        (wazuh.pace() * u32::try_from(report.apply_calls).unwrap_or(u32::MAX)).as_secs();
    if options.apply && report.refused.is_none() {
        report.applied = true;
        let per_minute = 60_000_000 / wazuh.pace().as_micros().max(1);
        let budget = format!(
            "{} API calls, about {} at {per_minute}/min",
            report.apply_calls,
            humantime::format_duration(std::time::Duration::from_secs(report.apply_seconds))
        );
        let progress = apply::WithBudget {
            inner: progress,
            budget,
        };
        apply::apply(wazuh, plan, options, &mut report, &progress).await?;
    } else {
        for change in plan.changes {
            let id = change.record.id.as_str().to_owned();
            match change.action {
                Action::Insert => report.inserted.push(id),
                _ => report.replaced.push(id),
            }
        }
        report.deleted = plan.deletes;
    }
    let stats = wazuh.stats();
    report.api_calls = stats.calls;
    report.throttled = stats.throttled;
    report.sort();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, name: &str, key: &str) -> AgentRecord {
        AgentRecord::parse(id, name, "any", key).unwrap()
    }

    /// What sync refuses before calling the API: a key that is not 64
    /// letters and digits, a name Wazuh's rule refuses; ids of 3 to 8
    /// digits and valid names pass.
    #[test]
    fn the_api_refusals_are_the_apis_own_rules() {
        let key = "a".repeat(64);
        for id in ["001", "1234", "12345678"] {
            assert_eq!(api_refusal(&record(id, "web-1", &key)), None, "{id}");
        }
        for bad in [
            "a".repeat(63),
            "a".repeat(65),
            format!("{}-", "a".repeat(63)),
        ] {
            assert_eq!(
                api_refusal(&record("001", "web-1", &bad)).as_deref(),
                Some("the Wazuh API takes only keys of exactly 64 letters and digits"),
                "{bad}"
            );
        }
        let refusal = api_refusal(&record("001", "w", &key)).unwrap();
        assert!(refusal.contains("OS_IsValidName"), "{refusal}");
    }

    /// A manager's client.keys prints as its path and size, never a key.
    #[test]
    fn manager_keys_print_their_path_and_size_only() {
        let key = "k".repeat(64);
        let keys = ManagerKeys {
            path: "/var/ossec/etc/client.keys".into(),
            lines: HashMap::from([("001".to_owned(), record("001", "web-1", &key))]),
        };
        let shown = format!("{keys:?}");
        assert_eq!(
            shown,
            r#"ManagerKeys { path: "/var/ossec/etc/client.keys", lines: 1 }"#
        );
        assert!(!shown.contains(&key));
    }
}

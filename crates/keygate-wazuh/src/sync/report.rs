//! What a sync run did, or without `apply` would do: the ids changed, the
//! changes that failed or conflict, the guards that held the plan back,
//! the backup written, and the API calls it cost. Keys never appear here.

use std::path::PathBuf;

use serde::Serialize;

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

impl Action {
    /// `insert`, `replace` or `delete`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Replace => "replace",
            Action::Delete => "delete",
        }
    }
}

/// A change that failed, or that cannot or may not be made.
#[derive(Clone, Debug, Serialize)]
pub struct Failure {
    /// The agent id.
    pub id: String,
    /// What was attempted.
    pub action: Action,
    /// Why; never a key.
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

/// A manager agent deleted (with `--prune`) because a replace or an insert
/// takes its name or address: the manager would have removed it anyway.
#[derive(Clone, Debug, Serialize)]
pub struct Displaced {
    /// The agent deleted.
    pub id: String,
    /// The agent whose replace or insert needs its name or address.
    pub by: String,
}

/// What a run did (or, without `apply`, would do).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Whether the changes were written.
    pub applied: bool,
    /// Ids inserted (planned to be, in a dry run or a refused plan).
    pub inserted: Vec<String>,
    /// Ids replaced.
    pub replaced: Vec<String>,
    /// Ids deleted.
    pub deleted: Vec<String>,
    /// Of the deleted, those a replace or insert needed out of the way.
    pub displaced: Vec<Displaced>,
    /// How many agents were already equal.
    pub unchanged: u64,
    /// Changes that failed or cannot be made, with reasons.
    pub failed: Vec<Failure>,
    /// Changes not applied because the manager would remove another agent
    /// for them (without `--prune`), or the store holds the same name or
    /// address twice.
    pub conflicts: Vec<Failure>,
    /// Store entries that failed validation.
    pub invalid: Vec<Invalid>,
    /// Why prune was skipped, if it was.
    pub prune_skipped: Option<String>,
    /// Why the whole plan was refused (nothing changed), if it was.
    pub refused: Option<String>,
    /// Deletes not made because the registry changed while applying.
    pub deletes_skipped: Vec<String>,
    /// Why they were skipped.
    pub deletes_skipped_reason: Option<String>,
    /// The backup file written before the first change.
    pub backup: Option<PathBuf>,
    /// The manager's client.keys keys were compared against, if one was.
    pub client_keys: Option<PathBuf>,
    /// Agents in the manager's registry (`000` excepted) when planned.
    pub manager_agents: u64,
    /// The most agents this run may delete.
    pub max_delete: u64,
    /// API calls made, authentication excepted.
    pub api_calls: u64,
    /// HTTP 429 answers met (each retried).
    pub throttled: u64,
    /// API calls applying the plan takes (made, with `apply`).
    pub apply_calls: u64,
    /// How long those take at the configured pace, in seconds.
    pub apply_seconds: u64,
}

impl Report {
    /// Whether anything is (or was) to be changed.
    pub fn has_changes(&self) -> bool {
        !(self.inserted.is_empty() && self.replaced.is_empty() && self.deleted.is_empty())
    }

    /// Whether the run failed: a change failed or conflicts, the plan was
    /// refused, prune was skipped, or deletes were skipped.
    pub fn is_failure(&self) -> bool {
        !self.failed.is_empty()
            || !self.conflicts.is_empty()
            || self.refused.is_some()
            || self.prune_skipped.is_some()
            || !self.deletes_skipped.is_empty()
    }

    pub(crate) fn sort(&mut self) {
        for list in [
            &mut self.inserted,
            &mut self.replaced,
            &mut self.deleted,
            &mut self.deletes_skipped,
        ] {
            list.sort();
        }
        self.failed.sort_by(|a, b| a.id.cmp(&b.id));
        self.conflicts.sort_by(|a, b| a.id.cmp(&b.id));
        self.displaced.sort_by(|a, b| a.id.cmp(&b.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The actions' names, as the report and the JSON output give them.
    #[test]
    fn actions_are_named_as_the_api_calls_them() {
        assert_eq!(Action::Insert.as_str(), "insert");
        assert_eq!(Action::Replace.as_str(), "replace");
        assert_eq!(Action::Delete.as_str(), "delete");
    }

    /// Each way a run can fail makes it a failure on its own (the exit
    /// code says so); a report with none is not one.
    #[test]
    fn each_failure_alone_fails_the_run() {
        let failure = || Failure {
            id: "001".into(),
            action: Action::Insert,
            reason: "x".into(),
        };
        assert!(!Report::default().is_failure());
        let cases: [fn(&mut Report, Failure); 5] = [
            |r, f| r.failed.push(f),
            |r, f| r.conflicts.push(f),
            |r, _| r.refused = Some("too many deletes".into()),
            |r, _| r.prune_skipped = Some("invalid entries".into()),
            |r, _| r.deletes_skipped.push("009".into()),
        ];
        for (n, set) in cases.into_iter().enumerate() {
            let mut report = Report::default();
            set(&mut report, failure());
            assert!(report.is_failure(), "case {n}");
        }
    }

    /// An insert, a replace or a delete alone is a change.
    #[test]
    fn each_kind_of_change_alone_is_a_change() {
        assert!(!Report::default().has_changes());
        let cases: [fn(&mut Report); 3] = [
            |r| r.inserted.push("001".into()),
            |r| r.replaced.push("001".into()),
            |r| r.deleted.push("001".into()),
        ];
        for (n, set) in cases.into_iter().enumerate() {
            let mut report = Report::default();
            set(&mut report);
            assert!(report.has_changes(), "case {n}");
        }
    }
}

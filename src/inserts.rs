//! Was the agent inserted? The daemon's watch on the manager's client.keys
//! (`[wazuh] client_keys`, when readable).
//!
//! Wazuh logs why it refused an agent keygate served (a duplicate name, ip
//! or id that `<force>` does not let it replace, a name equal to the
//! manager's hostname) in its own log at best, while keygate's audit trail
//! says the agent was answered. So:
//!
//! - **before answering** ([`Watched`], a layer at the top of the stack),
//!   the agent is compared with client.keys as last read: if another agent
//!   holds its name or its ip (or its id holds another key), the answer still
//!   goes out, with a warning naming the other agent and the reason Wazuh
//!   will give, and the audit event carries it as `conflict`;
//! - **after answering**, a background task looks for the agent in
//!   client.keys: there with the key served within `[wazuh]
//!   insert_confirm_within` is `confirmed`, otherwise a warning says Wazuh
//!   did not take it and why it probably did not (`not_inserted`); both are
//!   counted (`keygate_wazuh_inserts_total{result}`).
//!
//! The request path reads an index built when the file changes (a `stat`
//! per poll on a background task, the file backend's parser to read it) and
//! leaves the record in a list the task takes at its next poll (no channel:
//! waking the task for every answer could wake a parked thread): a few hash
//! lookups, a short lock and no system call per answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use keygate_backends::file::client_keys::{file_version, ClientKeysFile, FileVersion};
use keygate_core::backend::ListStream;
use keygate_core::record::AddressKind;
use keygate_core::wazuh::OncePerAgent;
use keygate_core::{AgentRecord, BackendError, KeyBackend, Query};
use tokio::time::Instant;

/// Served agents waiting for confirmation; beyond this many, newly served
/// ones are not watched.
const MAX_PENDING: usize = 100_000;

/// What Wazuh does with a duplicate it may not replace.
const UNLESS_FORCE: &str = "Wazuh refuses it unless <force> allows replacing";

/// The manager's client.keys as last read, indexed the way Wazuh's own
/// duplicate checks look (`OS_IsAllowedID`, `OS_IsAllowedIP`,
/// `OS_IsAllowedName`).
#[derive(Default)]
struct Index {
    version: Option<FileVersion>,
    by_id: HashMap<Box<str>, AgentRecord>,
    by_name: HashMap<Box<str>, AgentRecord>,
    by_ip: HashMap<AddressKind, AgentRecord>,
}

impl Index {
    fn of(file: &ClientKeysFile) -> Self {
        let mut index = Index {
            version: Some(file.version()),
            ..Index::default()
        };
        for record in file.records() {
            index
                .by_id
                .entry(record.id.as_str().into())
                .or_insert_with(|| record.clone());
            index
                .by_name
                .entry(record.name.as_str().into())
                .or_insert_with(|| record.clone());
            if record.ip.kind() != AddressKind::Any {
                index
                    .by_ip
                    .entry(record.ip.kind())
                    .or_insert_with(|| record.clone());
            }
        }
        index
    }

    /// Whether client.keys holds `record`'s id with its key.
    fn holds(&self, record: &AgentRecord) -> bool {
        self.by_id
            .get(record.id.as_str())
            .is_some_and(|r| r.key == record.key)
    }

    /// Why Wazuh will probably refuse `record`, in the order its
    /// `local_add` checks: id, ip, the manager's hostname, name.
    fn conflict(&self, record: &AgentRecord, hostname: Option<&str>) -> Option<String> {
        let id = record.id.as_str();
        if let Some(held) = self.by_id.get(id) {
            if held.key != record.key || held.name != record.name || held.ip != record.ip {
                return Some(format!(
                    "Duplicate ID: agent {id} is in client.keys as '{}' with another registration; {UNLESS_FORCE}",
                    held.name.as_str()
                ));
            }
        }
        let other = |held: &&AgentRecord| held.id != record.id;
        if let Some(held) = self.by_ip.get(&record.ip.kind()).filter(other) {
            return Some(format!(
                "Duplicate IP: agent {} holds {}; {UNLESS_FORCE}",
                held.id.as_str(),
                held.ip.as_str()
            ));
        }
        if hostname == Some(record.name.as_str()) {
            return Some(format!(
                "Invalid agent name: '{}' is the manager's hostname; Wazuh refuses it",
                record.name.as_str()
            ));
        }
        if let Some(held) = self.by_name.get(record.name.as_str()).filter(other) {
            return Some(format!(
                "Duplicate name: agent {} holds '{}'; {UNLESS_FORCE}",
                held.id.as_str(),
                held.name.as_str()
            ));
        }
        None
    }
}

/// Why an agent not found in client.keys was probably not taken, when
/// client.keys itself does not say.
const NO_TRACE: &str = "client.keys shows no duplicate: see ossec.log on the manager \
     (authd says why it refused an agent), check that the request came from Wazuh, and on a \
     cluster worker that the master took it";

/// How many served agents Wazuh took or did not take.
#[derive(Debug, Default)]
pub struct Counts {
    /// Found in client.keys with the key served.
    pub confirmed: AtomicU64,
    /// Not found within `insert_confirm_within`.
    pub not_inserted: AtomicU64,
}

/// The watch on one client.keys file.
pub struct InsertWatch {
    path: PathBuf,
    within: Duration,
    poll: Duration,
    index: ArcSwap<Index>,
    /// Answers given since the task last looked, at most [`MAX_PENDING`].
    served: Mutex<Vec<AgentRecord>>,
    hostname: Option<String>,
    /// Agents warned about since the index was last read (a warning per
    /// agent per version of the file, not per retry of Wazuh's).
    warned: OncePerAgent,
    /// What the task found.
    pub counts: Counts,
}

impl InsertWatch {
    /// Watches `path` when it can be read now: reads it, starts the task
    /// (on the current runtime) and returns the watch; `None` otherwise.
    pub async fn start(path: &Path, within: Duration) -> Option<Arc<Self>> {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        Self::start_with(path, within, hostname).await
    }

    async fn start_with(
        path: &Path,
        within: Duration,
        hostname: Option<String>,
    ) -> Option<Arc<Self>> {
        let index = match read(path).await {
            Ok(index) => index,
            Err(error) => {
                tracing::info!(
                    path = %path.display(),
                    %error,
                    "Insert confirmation off: the manager's client.keys cannot be read."
                );
                return None;
            }
        };
        let watch = Arc::new(Self {
            path: path.to_owned(),
            within,
            poll: (within / 10).clamp(Duration::from_millis(10), Duration::from_secs(1)),
            index: ArcSwap::from_pointee(index),
            served: Mutex::new(Vec::new()),
            hostname,
            warned: OncePerAgent::new(MAX_PENDING),
            counts: Counts::default(),
        });
        tracing::info!(
            path = %path.display(),
            within_s = within.as_secs_f64(),
            "Watching the manager's client.keys to confirm inserts."
        );
        tokio::spawn(run(Arc::downgrade(&watch)));
        Some(watch)
    }

    /// `root` with the watch in front of it.
    pub fn wrap(self: &Arc<Self>, root: Arc<dyn KeyBackend>) -> Arc<dyn KeyBackend> {
        Arc::new(Watched {
            inner: root,
            watch: self.clone(),
        })
    }

    /// Before answering with `record`: the conflict check, then the record
    /// queued for confirmation.
    fn served(&self, record: &AgentRecord) {
        let index = self.index.load();
        if let Some(conflict) = index.conflict(record, self.hostname.as_deref()) {
            keygate_core::audit::conflict(&conflict);
            if self.warned.first(record.id.as_str()) {
                tracing::warn!(
                    agent_id = record.id.as_str(),
                    agent_name = record.name.as_str(),
                    %conflict,
                    "Answered, but Wazuh will probably refuse this agent."
                );
            }
        }
        let queued = match self.served.lock() {
            Ok(mut served) if served.len() < MAX_PENDING => {
                served.push(record.clone());
                true
            }
            _ => false,
        };
        if !queued {
            tracing::debug!(
                agent_id = record.id.as_str(),
                "Too many answers waiting for confirmation; this one is not watched."
            );
        }
    }

    /// Re-reads client.keys if it changed since it was last read.
    async fn refresh(&self) {
        let now = file_version(&self.path);
        if now.is_none() || now == self.index.load().version {
            return;
        }
        match read(&self.path).await {
            Ok(index) => {
                self.index.store(Arc::new(index));
                self.warned.forget();
            }
            Err(error) => tracing::debug!(%error, "client.keys could not be re-read."),
        }
    }

    /// Settles what is pending at `now`: confirmed when client.keys holds
    /// the agent with its key, not inserted once its deadline has passed.
    fn settle(&self, pending: &mut HashMap<String, Pending>, now: Instant) {
        let index = self.index.load();
        pending.retain(|_, p| {
            if index.holds(&p.record) {
                self.counts.confirmed.fetch_add(1, Ordering::Relaxed);
                keygate_core::metrics::wazuh_insert(true);
                tracing::debug!(
                    agent_id = p.record.id.as_str(),
                    "Wazuh took the agent keygate served."
                );
                return false;
            }
            if now < p.deadline {
                return true;
            }
            self.counts.not_inserted.fetch_add(1, Ordering::Relaxed);
            keygate_core::metrics::wazuh_insert(false);
            let reason = index
                .conflict(&p.record, self.hostname.as_deref())
                .unwrap_or_else(|| NO_TRACE.to_owned());
            tracing::warn!(
                agent_id = p.record.id.as_str(),
                agent_name = p.record.name.as_str(),
                within_s = self.within.as_secs_f64(),
                %reason,
                "Wazuh did not take the agent keygate served."
            );
            false
        });
    }
}

/// The watch `[wazuh]` asks for: on `client_keys` (or the first readable
/// default), when it can be read.
pub async fn for_config(wazuh: &keygate_config::WazuhConfig) -> Option<Arc<InsertWatch>> {
    let path = wazuh.client_keys_path()?;
    InsertWatch::start(&path, wazuh.insert_confirm_within).await
}

/// `root` with `watch` in front of it, if there is one.
pub fn front(watch: &Option<Arc<InsertWatch>>, root: Arc<dyn KeyBackend>) -> Arc<dyn KeyBackend> {
    match watch {
        Some(watch) => watch.wrap(root),
        None => root,
    }
}

/// Reads and indexes the file on a blocking thread.
async fn read(path: &Path) -> Result<Index, String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || ClientKeysFile::read(&path).map(|f| Index::of(&f)))
        .await
        .unwrap_or_else(|e| Err(format!("reader task failed: {e}")))
}

/// An agent answered and not yet found in client.keys.
struct Pending {
    record: AgentRecord,
    deadline: Instant,
}

/// The background task: every poll, takes the agents served since the last
/// one, re-reads client.keys if it changed and settles what is pending.
/// Ends when the watch is dropped.
async fn run(watch: Weak<InsertWatch>) {
    let Some((poll, within)) = watch.upgrade().map(|w| (w.poll, w.within)) else {
        return;
    };
    let mut pending: HashMap<String, Pending> = HashMap::new();
    let mut tick = tokio::time::interval(poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(watch) = watch.upgrade() else { return };
        let served = match watch.served.lock() {
            Ok(mut served) => std::mem::take(&mut *served),
            Err(_) => Vec::new(),
        };
        let now = Instant::now();
        for record in served {
            let id = record.id.as_str().to_owned();
            let room = pending.len() < MAX_PENDING;
            match pending.get_mut(&id) {
                // Asked again before Wazuh took it: the latest answer is the
                // one to find, by the first deadline.
                Some(p) => p.record = record,
                None if room => {
                    let deadline = now + within;
                    pending.insert(id, Pending { record, deadline });
                }
                None => {}
            }
        }
        // The index is kept current for the conflict checks too.
        watch.refresh().await;
        if !pending.is_empty() {
            watch.settle(&mut pending, Instant::now());
        }
    }
}

/// The stack with the watch in front: every answer goes through
/// [`InsertWatch::served`].
struct Watched {
    inner: Arc<dyn KeyBackend>,
    watch: Arc<InsertWatch>,
}

#[async_trait]
impl KeyBackend for Watched {
    fn name(&self) -> &str {
        self.inner.name()
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let found = self.inner.lookup(query).await;
        if let Ok(Some(record)) = &found {
            // Only what will be answered: the gateway refuses a record
            // for another agent.
            if record.check_matches(query).is_ok() {
                self.watch.served(record);
            }
        }
        found
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.inner.health().await
    }

    fn current_host(&self) -> Option<String> {
        self.inner.current_host()
    }

    fn list(&self) -> ListStream<'_> {
        self.inner.list()
    }
}

#[cfg(test)]
mod tests;

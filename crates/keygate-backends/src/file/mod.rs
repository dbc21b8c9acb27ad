//! `type = "file"`: Wazuh's own client.keys, or a CSV file, held in memory.
//!
//! - [`parse`]: both formats, read on bytes line by line; a bad line (even
//!   one that is not UTF-8) is an invalid entry, never a failed file.
//! - [`index`]: one loaded version, indexed by id, host and network; the
//!   address matching rules (most specific network wins).
//! - [`watch`]: reading the file and re-reading it when it changes.
//! - here: the config and the backend, which swaps in each new version
//!   atomically; a reload that fails keeps serving the last good data.

mod index;
mod parse;
#[cfg(test)]
mod tests;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use futures_util::stream::{self, StreamExt};
use keygate_core::{AgentRecord, BackendError, KeyBackend, ListStream, Query};
use serde::Deserialize;

use index::Snapshot;
use watch::{load, stamp, watch, Stamp};

use crate::{BackendSpec, Problems};

/// `[[backend]] type = "file"`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The file to serve. Relative paths are resolved against the config
    /// file's directory.
    pub path: PathBuf,
    /// `client_keys`: Wazuh's `ID NAME IP KEY` lines (default). `csv`: a
    /// header naming the columns `id,name,ip,key` (any order), one agent a row.
    #[serde(default)]
    pub format: FileFormat,
    /// How often the file is checked for changes (default `"1s"`).
    #[serde(default = "default_reload_interval", with = "humantime_serde")]
    pub reload_interval: Duration,
}

/// The layout of an agent file.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    /// Wazuh's client.keys.
    #[default]
    ClientKeys,
    /// CSV with a header `id,name,ip,key`.
    Csv,
}

fn default_reload_interval() -> Duration {
    Duration::from_secs(1)
}

#[async_trait]
impl BackendSpec for FileConfig {
    const TYPE: &'static str = "file";

    fn resolve_paths(&mut self, base: &Path) {
        crate::resolve(base, &mut self.path);
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        if self.path.as_os_str().is_empty() {
            problems.push("path", "must not be empty");
        }
        if self.reload_interval < Duration::from_millis(10) {
            problems.push("reload_interval", "must be at least 10ms");
        }
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, crate::BuildError> {
        Ok(FileBackend::open(name, self.clone()).await)
    }
}

/// Reads a Wazuh manager's client.keys with this backend's parser (one bad
/// line costs only that line), for `keygate sync` to compare keys against
/// without asking the API for each: its valid records. Removed agents and
/// invalid lines are left out; an id on two lines is left out too (which
/// line Wazuh uses is not for keygate to guess).
pub fn read_client_keys(path: &Path) -> Result<Vec<AgentRecord>, String> {
    let (_, snap) = load(path, FileFormat::ClientKeys)?;
    let mut seen = std::collections::HashMap::new();
    for entry in snap.entries() {
        if let Ok(record) = &entry.record {
            *seen.entry(record.id.as_str()).or_insert(0u32) += 1;
        }
    }
    Ok(snap
        .entries()
        .iter()
        .filter_map(|e| e.record.as_ref().ok())
        .filter(|r| seen.get(r.id.as_str()) == Some(&1))
        .cloned()
        .collect())
}

/// How many invalid lines a load logs one by one.
const LOGGED_INVALID_LINES: usize = 20;

/// The file backend. Lookups read the current snapshot without locking.
pub struct FileBackend {
    name: String,
    config: FileConfig,
    data: ArcSwap<Snapshot>,
    /// Set once a load has succeeded; until then lookups are outages.
    loaded: ArcSwapOption<Stamp>,
    /// Why the last load failed, if it did.
    last_error: ArcSwapOption<String>,
}

impl FileBackend {
    /// Loads the file and starts watching it. A file that cannot be read
    /// yet is not fatal: lookups answer "unavailable" until it can.
    pub async fn open(name: &str, config: FileConfig) -> Arc<Self> {
        let backend = Arc::new(Self {
            name: name.to_owned(),
            config,
            data: ArcSwap::from_pointee(Snapshot::default()),
            loaded: ArcSwapOption::empty(),
            last_error: ArcSwapOption::empty(),
        });
        backend.reload().await;
        tokio::spawn(watch(Arc::downgrade(&backend)));
        backend
    }

    /// Re-reads the file now; keeps the old data if that fails.
    async fn reload(&self) {
        let (path, format) = (self.config.path.clone(), self.config.format);
        let started = std::time::Instant::now();
        let result = tokio::task::spawn_blocking(move || load(&path, format))
            .await
            .unwrap_or_else(|e| Err(format!("loader task failed: {e}")));
        match result {
            Ok((stamp, snap)) => {
                let (good, bad) = snap.counts();
                tracing::info!(
                    backend = %self.name,
                    path = %self.config.path.display(),
                    agents = good,
                    invalid = bad,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "Loaded agent file."
                );
                self.log_invalid(&snap, bad);
                self.data.store(Arc::new(snap));
                self.loaded.store(Some(Arc::new(stamp)));
                self.last_error.store(None);
            }
            Err(error) => {
                let serving = self.loaded.load().is_some();
                tracing::warn!(backend = %self.name, %error, serving_last_good = serving, "Agent file reload failed.");
                self.last_error.store(Some(Arc::new(error)));
            }
        }
    }

    /// Logs each invalid line (its number and the rule it broke, never a
    /// value), the first [`LOGGED_INVALID_LINES`] of them one by one.
    fn log_invalid(&self, snap: &Snapshot, bad: usize) {
        let invalid = snap.entries().iter().filter_map(|e| match &e.record {
            Ok(_) => None,
            Err(reason) => Some((e.line, reason)),
        });
        for (line, reason) in invalid.take(LOGGED_INVALID_LINES) {
            tracing::warn!(
                backend = %self.name,
                path = %self.config.path.display(),
                line,
                %reason,
                "Agent file line is invalid; asking for it answers 5."
            );
        }
        if bad > LOGGED_INVALID_LINES {
            tracing::warn!(
                backend = %self.name,
                more = bad - LOGGED_INVALID_LINES,
                "More invalid lines; `keygate list` shows them all."
            );
        }
    }

    /// The outage a lookup or listing reports before the first load.
    fn not_loaded(&self) -> BackendError {
        BackendError::Unavailable(
            self.last_error
                .load()
                .as_deref()
                .cloned()
                .unwrap_or_else(|| "file not loaded yet".into()),
        )
    }

    fn changed(&self) -> bool {
        let on_disk = stamp(&self.config.path).ok();
        let loaded = self.loaded.load();
        match (on_disk, loaded.as_deref()) {
            (Some(now), Some(then)) => now != *then,
            // Never loaded: retry every interval until it works.
            (_, None) => true,
            // Gone: keep serving what we have; it will be re-read when it
            // comes back with a different stamp.
            (None, Some(_)) => false,
        }
    }
}

#[async_trait]
impl KeyBackend for FileBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        if self.loaded.load().is_none() {
            return Err(self.not_loaded());
        }
        self.data.load().find(query)
    }

    /// Every entry of the loaded version, in file order: valid ones as
    /// records, invalid ones as `line N` with the reason. Skipped lines
    /// (comments, removed agents) are not entries. The listing reads one
    /// version even if the file is reloaded meanwhile.
    fn list(&self) -> ListStream<'_> {
        if self.loaded.load().is_none() {
            let error = self.not_loaded();
            return stream::once(async move { Err(error) }).boxed();
        }
        let snap = self.data.load_full();
        let count = snap.entries().len();
        stream::iter((0..count).filter_map(move |i| snap.entries().get(i).map(|e| Ok(e.listed()))))
            .boxed()
    }

    async fn health(&self) -> Result<(), BackendError> {
        match (self.loaded.load().is_some(), self.last_error.load_full()) {
            (true, None) => Ok(()),
            (true, Some(e)) => Err(BackendError::Unavailable(format!(
                "serving the last good data; reload failed: {e}"
            ))),
            (false, _) => Err(self.not_loaded()),
        }
    }
}

//! Reading the file and noticing when it changes.
//!
//! Polling was chosen over inotify (the `notify` crate) because it survives
//! the file being replaced, its directory being re-mounted or living on
//! NFS, at the cost of one `stat` per interval. A version of the file is
//! identified by device, inode, size and mtime, which also catches the
//! atomic rename Wazuh's tools do.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Weak;

use super::index::Snapshot;
use super::{parse, FileBackend, FileFormat};

/// What identifies one version of the file on disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    mtime: i64,
    mtime_nsec: i64,
}

pub(super) fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let m = std::fs::metadata(path)?;
    Ok(Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    })
}

/// Reads and parses the file, a block at a time (it is never in memory
/// whole). Fails only when it cannot be read or (CSV) its header lacks a
/// column; bad lines are entries of the snapshot.
pub(super) fn load(path: &Path, format: FileFormat) -> Result<(Stamp, Snapshot), String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    let before = stamp(path).map_err(|e| cannot(&e))?;
    let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
    let snap = match format {
        FileFormat::ClientKeys => parse::client_keys(file, before.len),
        FileFormat::Csv => parse::csv(std::io::BufReader::new(file), before.len),
    }
    .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((before, snap))
}

/// Re-reads the file whenever its stamp changes, every `reload_interval`,
/// until the backend is dropped.
pub(super) async fn watch(backend: Weak<FileBackend>) {
    let interval = match backend.upgrade() {
        Some(b) => b.config.reload_interval,
        None => return,
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(b) = backend.upgrade() else { return };
        if b.changed() {
            b.reload().await;
        }
    }
}

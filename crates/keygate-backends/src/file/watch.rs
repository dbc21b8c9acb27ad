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
    std::fs::metadata(path).map(|m| stamp_of(&m))
}

fn stamp_of(m: &std::fs::Metadata) -> Stamp {
    Stamp {
        dev: m.dev(),
        ino: m.ino(),
        len: m.len(),
        mtime: m.mtime(),
        mtime_nsec: m.mtime_nsec(),
    }
}

/// How many times a file that changes while it is read is read again
/// before the load fails.
pub(super) const READS: usize = 3;

/// Reads and parses the file, a block at a time (it is never in memory
/// whole), from one consistent read: the file opened must keep its size
/// and mtime, and the path must still name it, from before the read to
/// after it; otherwise it is read again, [`READS`] times at most, then
/// the load fails (a writer rewriting it in place would otherwise give a
/// mix of two versions, or half of one). Fails too when it cannot be read
/// or (CSV) its header lacks a column; bad lines are entries of the
/// snapshot.
pub(super) fn load(path: &Path, format: FileFormat) -> Result<(Stamp, Snapshot), String> {
    read_consistently(path, READS, |file, len| match format {
        FileFormat::ClientKeys => parse::client_keys(file, len),
        FileFormat::Csv => parse::csv(std::io::BufReader::new(file), len),
    })
}

/// [`load`] with the parser given: `parse(file, length)`.
fn read_consistently(
    path: &Path,
    reads: usize,
    mut parse: impl FnMut(&std::fs::File, u64) -> Result<Snapshot, String>,
) -> Result<(Stamp, Snapshot), String> {
    let cannot = |e: &dyn std::fmt::Display| format!("cannot read {}: {e}", path.display());
    for _ in 0..reads {
        let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
        let before = stamp_of(&file.metadata().map_err(|e| cannot(&e))?);
        let snap = parse(&file, before.len).map_err(|e| format!("{}: {e}", path.display()))?;
        let after = stamp_of(&file.metadata().map_err(|e| cannot(&e))?);
        let named = stamp(path).map_err(|e| cannot(&e))?;
        if before == after && before == named {
            return Ok((before, snap));
        }
    }
    Err(format!(
        "{} changed while it was read, {reads} times in a row: not used (write a new file \
         and rename it over the old one, so that readers see one version or the other)",
        path.display()
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(n: u32) -> String {
        (1..=n)
            .map(|i| format!("{i:03} agent-{i} any k{i}\n"))
            .collect()
    }

    fn count(snap: &Snapshot) -> usize {
        snap.counts().0
    }

    /// A file that changes while it is read (a writer appending, or
    /// truncating and rewriting it in place) is read again, so the
    /// snapshot is one version of it: here the second read's 5 agents,
    /// never the first read's mix.
    #[test]
    fn a_file_changed_during_the_read_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.keys");
        std::fs::write(&path, lines(3)).unwrap();
        let mut reads = 0;
        let (stamp_read, snap) = read_consistently(&path, READS, |file, len| {
            reads += 1;
            let snap = parse::client_keys(file, len)?;
            if reads == 1 {
                std::fs::write(&path, lines(5)).unwrap();
            }
            Ok(snap)
        })
        .unwrap();
        assert_eq!(reads, 2);
        assert_eq!(count(&snap), 5);
        assert_eq!(stamp_read, stamp(&path).unwrap());
    }

    /// A file replaced by a rename during the read is read again too (the
    /// path no longer names the file that was read).
    #[test]
    fn a_file_replaced_during_the_read_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.keys");
        std::fs::write(&path, lines(3)).unwrap();
        let mut reads = 0;
        let (_, snap) = read_consistently(&path, READS, |file, len| {
            reads += 1;
            if reads == 1 {
                let new = dir.path().join("new.keys");
                std::fs::write(&new, lines(4)).unwrap();
                std::fs::rename(&new, &path).unwrap();
            }
            parse::client_keys(file, len)
        })
        .unwrap();
        assert_eq!(reads, 2);
        assert_eq!(count(&snap), 4);
    }

    /// A listing reads the file as it is on disk now: a version changed
    /// since the last load (the watcher has not looked yet) is read again
    /// first, and a file that cannot be read any more fails the listing
    /// instead of listing the last good data.
    #[tokio::test]
    async fn a_listing_reads_the_file_as_it_is_now() {
        use futures_util::StreamExt;
        use keygate_core::KeyBackend;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.keys");
        std::fs::write(&path, lines(3)).unwrap();
        let config = super::super::FileConfig {
            path: path.clone(),
            format: FileFormat::ClientKeys,
            reload_interval: std::time::Duration::from_secs(3600),
        };
        let b = FileBackend::open("keys", config).await;
        std::fs::write(&path, lines(5)).unwrap();
        let listed: Vec<_> = b.list().collect().await;
        assert_eq!(listed.len(), 5);
        assert!(listed.iter().all(Result::is_ok), "{listed:?}");
        std::fs::remove_file(&path).unwrap();
        let listed: Vec<_> = b.list().collect().await;
        assert!(
            matches!(&listed[..], [Err(e)] if e.to_string().contains("cannot read")),
            "{listed:?}"
        );
    }

    /// A file that changes during every read fails the load after
    /// [`READS`] reads, saying why; nothing half-read is used.
    #[test]
    fn a_file_that_keeps_changing_fails_the_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.keys");
        std::fs::write(&path, lines(300)).unwrap();
        let mut reads = 0;
        let result = read_consistently(&path, READS, |file, len| {
            reads += 1;
            let snap = parse::client_keys(file, len);
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            writeln!(f, "{:03} late any k", 400 + reads).unwrap();
            snap
        });
        let Err(e) = result else {
            panic!("a file that changed during every read was used")
        };
        assert_eq!(reads, READS);
        assert!(
            e.contains("changed while it was read, 3 times in a row"),
            "{e}"
        );
    }
}

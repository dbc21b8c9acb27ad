//! A Wazuh manager's own client.keys, read as this backend reads its file
//! (same parser, same rules: comments and removed `!`/`#` agents skipped,
//! `any` and CIDR addresses), for the code that watches what Wazuh did with
//! an answer (the daemon's insert confirmation) and for `keygate sync`,
//! which compares keys against it instead of asking the API for each.
//! Reading is blocking and whole; [`file_version`] tells cheaply whether
//! the file changed since.

use std::path::Path;

use keygate_core::AgentRecord;

use super::index::Snapshot;
use super::watch::{load, stamp, Stamp};
use super::FileFormat;

/// What identifies one version of a file on disk (device, inode, size,
/// mtime): a new one after every write or atomic replacement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileVersion(Stamp);

/// The version of the file at `path` now; `None` if it cannot be read.
pub fn file_version(path: &Path) -> Option<FileVersion> {
    stamp(path).ok().map(FileVersion)
}

/// One read of a client.keys file.
pub struct ClientKeysFile {
    version: FileVersion,
    snapshot: Snapshot,
}

impl ClientKeysFile {
    /// Reads and parses the file (blocking). Fails only when it cannot be
    /// read; lines keygate finds invalid are left out of [`Self::records`].
    pub fn read(path: &Path) -> Result<Self, String> {
        let (stamp, snapshot) = load(path, FileFormat::ClientKeys)?;
        Ok(Self {
            version: FileVersion(stamp),
            snapshot,
        })
    }

    /// The version read (taken before reading: a write during the read
    /// shows as a change next time).
    pub fn version(&self) -> FileVersion {
        self.version
    }

    /// Every valid agent of the file, in file order.
    pub fn records(&self) -> impl Iterator<Item = &AgentRecord> {
        self.snapshot
            .entries()
            .iter()
            .filter_map(|e| e.record.as_ref().ok())
    }

    /// The valid agents whose id is on one line only: an id on two lines
    /// is left out (which line Wazuh uses is not for keygate to guess).
    pub fn unique_records(&self) -> Vec<AgentRecord> {
        let mut seen = std::collections::HashMap::new();
        for record in self.records() {
            *seen.entry(record.id.as_str()).or_insert(0u32) += 1;
        }
        self.records()
            .filter(|r| seen.get(r.id.as_str()) == Some(&1))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Removed agents and comments are not agents; a rewrite is a new
    /// version.
    #[test]
    fn removed_agents_are_skipped_and_a_rewrite_is_a_new_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.keys");
        std::fs::write(
            &path,
            "# comment\n001 web-01 any k1\n002 !web-02 10.0.0.2 k2\n003 #db any k3\n004 db-01 10.0.0.0/24 k4\n",
        )
        .unwrap();
        let file = ClientKeysFile::read(&path).unwrap();
        let ids: Vec<&str> = file.records().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["001", "004"]);
        assert_eq!(file_version(&path), Some(file.version()));
        std::fs::write(&path, "001 web-01 any k1\n").unwrap();
        assert_ne!(file_version(&path), Some(file.version()));
        assert_eq!(file_version(&dir.path().join("none")), None);
        assert!(ClientKeysFile::read(&dir.path().join("none")).is_err());
    }
}

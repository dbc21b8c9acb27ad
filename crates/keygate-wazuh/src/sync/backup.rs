//! The backup written before `sync --apply` changes anything: the
//! manager's lines for every agent to be replaced or deleted, with their
//! keys, in client.keys format (`ID NAME IP KEY`), so a file backend
//! pointed at it and `sync --apply` put them back.
//!
//! One file per run in `[wazuh] backup_dir` (created 0700), named by UTC
//! time to the nanosecond (`keygate-sync-20250102T030405.678901234Z.keys`, so
//! names sort by age), created 0600 and synced to disk, directory too,
//! before the first change. The oldest files beyond `[wazuh] backups_kept`
//! are removed afterwards. A backup that cannot be written stops the run.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Where backups go and how many are kept.
#[derive(Clone, Debug)]
pub struct Backups {
    /// `[wazuh] backup_dir`.
    pub dir: PathBuf,
    /// `[wazuh] backups_kept`.
    pub kept: usize,
}

const PREFIX: &str = "keygate-sync-";
const SUFFIX: &str = ".keys";

impl Backups {
    /// Writes `lines` (sorted by the caller) to a new file named after the
    /// time now; its path.
    pub(crate) fn write(&self, lines: &[Zeroizing<String>]) -> Result<PathBuf, String> {
        let stamp: String = humantime::format_rfc3339_nanos(std::time::SystemTime::now())
            .to_string()
            .chars()
            .filter(|c| !matches!(c, '-' | ':'))
            .collect();
        self.write_stamped(lines, &stamp)
    }

    /// Writes `lines` to a new file named after `stamp`: `.1`, `.2`... up
    /// to `.100` is added when a file of that name exists (two runs in the
    /// same nanosecond); never an existing file overwritten.
    fn write_stamped(&self, lines: &[Zeroizing<String>], stamp: &str) -> Result<PathBuf, String> {
        let failed = |what: &str, path: &Path, e: std::io::Error| {
            format!(
                "cannot write the backup: {what} {}: {e}; nothing was changed \
                 (set [wazuh] backup_dir to a directory keygate may write)",
                path.display()
            )
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| failed("cannot create", &self.dir, e))?;
        let mut n = 0;
        let (path, mut file) = loop {
            let name = match n {
                0 => format!("{PREFIX}{stamp}{SUFFIX}"),
                _ => format!("{PREFIX}{stamp}.{n}{SUFFIX}"),
            };
            let path = self.dir.join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(file) => break (path, file),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 100 => n += 1,
                Err(e) => return Err(failed("cannot create", &path, e)),
            }
        };
        let mut text = Zeroizing::new(String::new());
        for line in lines {
            text.push_str(line);
            text.push('\n');
        }
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| failed("cannot write", &path, e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| failed("cannot sync", &self.dir, e))?;
        Ok(path)
    }

    /// Removes the oldest backups beyond `kept`; a file that cannot be
    /// removed is logged, not fatal.
    pub(crate) fn remove_old(&self) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.starts_with(PREFIX) && n.ends_with(SUFFIX))
            .collect();
        names.sort();
        let extra = names.len().saturating_sub(self.kept.max(1));
        for name in names.into_iter().take(extra) {
            let path = self.dir.join(&name);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "Cannot remove an old sync backup.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Files are 0600 in a 0700 directory, hold the lines given, and only
    /// the newest `kept` stay; other files in the directory are left alone.
    #[test]
    fn backups_are_private_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let backups = Backups {
            dir: dir.path().join("b"),
            kept: 2,
        };
        // Other files in the directory are never rotated away.
        let others = ["notes.keys", "keygate-sync-readme.txt"].map(|f| backups.dir.join(f));
        let mut written = Vec::new();
        for n in 0..4 {
            let line = Zeroizing::new(format!("00{n} web any {}", "k".repeat(64)));
            written.push(backups.write(&[line]).unwrap());
            if n == 0 {
                for other in &others {
                    std::fs::write(other, "mine").unwrap();
                }
            }
            backups.remove_old();
        }
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&backups.dir), 0o700);
        for other in &others {
            assert!(other.exists(), "{} was removed", other.display());
            std::fs::remove_file(other).unwrap();
        }
        let left: Vec<PathBuf> = {
            let mut v: Vec<PathBuf> = std::fs::read_dir(&backups.dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            v.sort();
            v
        };
        assert_eq!(left, written[2..]);
        assert_eq!(mode(&left[1]), 0o600);
        let text = std::fs::read_to_string(&left[1]).unwrap();
        assert_eq!(text, format!("003 web any {}\n", "k".repeat(64)));
    }

    /// A backup never overwrites one of the same name: the next free
    /// suffix is taken, and past `.100` it is an error. A name the file
    /// system refuses is an error at once.
    #[test]
    fn a_backup_of_the_same_instant_takes_the_next_name() {
        let dir = tempfile::tempdir().unwrap();
        let backups = Backups {
            dir: dir.path().to_owned(),
            kept: 1000,
        };
        let stamp = "20261205T093000.000000000Z";
        let line = |n: u32| Zeroizing::new(format!("{n:03} web any {}", "k".repeat(64)));
        let name = |p: PathBuf| p.file_name().unwrap().to_str().unwrap().to_owned();
        let first = backups.write_stamped(&[line(1)], stamp).unwrap();
        assert_eq!(name(first.clone()), format!("{PREFIX}{stamp}{SUFFIX}"));
        let second = backups.write_stamped(&[line(2)], stamp).unwrap();
        assert_eq!(name(second), format!("{PREFIX}{stamp}.1{SUFFIX}"));
        assert!(std::fs::read_to_string(&first).unwrap().starts_with("001 "));
        for _ in 2..=100 {
            backups.write_stamped(&[line(3)], stamp).unwrap();
        }
        let e = backups.write_stamped(&[line(4)], stamp).unwrap_err();
        assert!(e.contains("cannot create") && e.contains(".100"), "{e}");
        let e = backups
            .write_stamped(&[line(5)], &"x".repeat(300))
            .unwrap_err();
        assert!(e.contains("cannot create"), "{e}");
    }

    /// A directory that cannot be created is an error naming it.
    #[test]
    fn an_unwritable_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        let backups = Backups {
            dir: file.join("sub"),
            kept: 1,
        };
        let e = backups.write(&[]).unwrap_err();
        assert!(
            e.contains("cannot create") && e.contains("nothing was changed"),
            "{e}"
        );
    }
}

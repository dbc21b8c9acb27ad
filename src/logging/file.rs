//! The log and audit files: opened for appending, created with the owner
//! and group of their directory, reopened at their path after logrotate
//! moved them, and written a batch at a time, whole or not at all.
//!
//! Ownership: the exec one-shot runs as root (Wazuh runs it), and with no
//! daemon up it may be the first to create the daemon's files. A file
//! created as `root:root 0640` cannot be opened by the daemon's own user,
//! which then exits 78 at start and its unit's `RestartPreventExitStatus=78`
//! keeps it down. So a file keygate creates takes the owner and group of
//! the directory it is created in (the unit's `LogsDirectory`), whoever
//! creates it.
//!
//! Whole lines: a `write` that stops short (a full disk) leaves part of a
//! batch in the file, and the next batch would be appended to that cut
//! line, merging two events into one line that is no longer JSON. A batch
//! that cannot be written whole is therefore taken back: the file is
//! truncated to where it ended before, if it still ends with the piece we
//! wrote (another process appending in between is left alone). If it
//! cannot be taken back, the next batch starts on a new line, so a cut line
//! stays alone.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;

/// A log file that can be reopened at its path (after logrotate renamed it).
pub struct LogFile {
    /// Where it is configured.
    pub path: PathBuf,
    file: Mutex<Open>,
}

/// The open file, and whether it ends with a piece of a batch that could
/// not be taken back.
struct Open {
    file: File,
    torn: bool,
}

impl LogFile {
    /// Opens (or creates) `path` for appending.
    pub fn open(path: &Path) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            path: path.to_owned(),
            file: Mutex::new(Open {
                file: open_append(path)?,
                torn: false,
            }),
        }))
    }

    /// Opens the file at its path again, for the next batches.
    pub fn reopen(&self) -> anyhow::Result<()> {
        let file = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = Open { file, torn: false };
        Ok(())
    }
}

/// Writes into the [`LogFile`]'s current file, each `write` whole or not at
/// all (see the module doc).
pub struct FileWriter(pub Arc<LogFile>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut open = self.0.file.lock().unwrap_or_else(PoisonError::into_inner);
        if open.torn {
            append_whole(&open.file, b"\n")?;
            open.torn = false;
        }
        match append_whole(&open.file, buf) {
            Ok(()) => Ok(buf.len()),
            Err(Partial { error, torn }) => {
                open.torn = torn;
                Err(error)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A batch that was not written whole: why, and whether a piece of it is
/// left at the end of the file.
pub struct Partial {
    /// The error that stopped the write.
    pub error: io::Error,
    /// A piece of the batch is still in the file.
    pub torn: bool,
}

impl From<Partial> for io::Error {
    fn from(partial: Partial) -> Self {
        partial.error
    }
}

/// Appends `buf` to `file` (opened for appending and reading): the whole
/// of it (short writes are continued), or, on an error, nothing: what was
/// written of it is taken back.
pub fn append_whole(mut file: &File, buf: &[u8]) -> Result<(), Partial> {
    let mut written = 0;
    let error = loop {
        let Some(rest) = buf.get(written..).filter(|r| !r.is_empty()) else {
            return Ok(());
        };
        match file.write(rest) {
            Ok(0) => break io::Error::from(io::ErrorKind::WriteZero),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => break e,
        }
    };
    let torn = written > 0 && !take_back(file, buf.get(..written).unwrap_or_default());
    Err(Partial { error, torn })
}

/// Removes `piece` from the end of `file` if the file ends with it; whether
/// it did.
fn take_back(file: &File, piece: &[u8]) -> bool {
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    let Some(start) = len.checked_sub(piece.len() as u64) else {
        return false;
    };
    let mut tail = vec![0; piece.len()];
    file.read_exact_at(&mut tail, start).is_ok() && tail == piece && file.set_len(start).is_ok()
}

/// Opens `path` for appending (and reading, to take a cut batch back),
/// making its directory if needed. A file created here gets mode 0640 and
/// the owner and group of its directory.
pub fn open_append(path: &Path) -> anyhow::Result<File> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create log directory {}", dir.display()))?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true).append(true).mode(0o640);
    let opened = match options.open(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            match options.clone().create_new(true).open(path) {
                Ok(file) => {
                    take_owner_of(&file, dir);
                    Ok(file)
                }
                // Created by someone else in between.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => options.open(path),
                Err(e) => Err(e),
            }
        }
        other => other,
    };
    opened.with_context(|| format!("cannot open log file {}", path.display()))
}

/// Gives `file` (just created) the owner and group of `dir`, as far as we
/// may: root may give it to anyone; another user only to a group of its
/// own. Best effort: a file that keeps its creator as owner is what the
/// creator would have had anyway.
fn take_owner_of(file: &File, dir: &Path) {
    let (Ok(d), Ok(f)) = (std::fs::metadata(dir), file.metadata()) else {
        return;
    };
    if (f.uid(), f.gid()) == (d.uid(), d.gid()) {
        return;
    }
    if std::os::unix::fs::fchown(file, Some(d.uid()), Some(d.gid())).is_err() {
        let _ = std::os::unix::fs::fchown(file, None, Some(d.gid()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file created in a directory owned by another user and group (root
    /// creating it, as the exec one-shot does) takes the directory's owner
    /// and group, mode 0640; an existing file keeps its own.
    #[test]
    fn a_created_file_takes_its_directorys_owner() {
        assert_eq!(nix::unistd::geteuid().as_raw(), 0, "this test runs as root");
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).unwrap();
        std::os::unix::fs::chown(&logs, Some(65534), Some(65533)).unwrap();
        drop(open_append(&logs.join("audit.log")).unwrap());
        let meta = std::fs::metadata(logs.join("audit.log")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (65534, 65533));
        assert_eq!(meta.mode() & 0o777 & !0o640, 0, "{:o}", meta.mode());

        std::fs::write(logs.join("old.log"), "x\n").unwrap();
        std::os::unix::fs::chown(logs.join("old.log"), Some(1), Some(1)).unwrap();
        drop(open_append(&logs.join("old.log")).unwrap());
        let meta = std::fs::metadata(logs.join("old.log")).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1, 1));
    }

    /// A batch that was cut short is taken back from the file's end, and
    /// only if the file still ends with it.
    #[test]
    fn a_cut_batch_is_taken_back_only_when_it_is_the_files_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let file = open_append(&path).unwrap();
        append_whole(&file, b"{\"a\":1}\n")
            .map_err(io::Error::from)
            .unwrap();
        append_whole(&file, b"{\"b\":")
            .map_err(io::Error::from)
            .unwrap();
        assert!(take_back(&file, b"{\"b\":"));
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
        assert!(!take_back(&file, b"{\"b\":"), "not the file's end");
        assert!(!take_back(&file, &[b'x'; 100]), "longer than the file");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}\n");
    }
}

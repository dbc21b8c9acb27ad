//! The daemon's stderr when it is the journal: each line starts with its
//! syslog priority (`<3>` error, `<4>` warning, `<6>` info, `<7>` debug and
//! trace: sd-daemon(3)'s prefixes, which journald reads and strips) and
//! carries no timestamp of its own (journald stamps every line). So
//! `journalctl -p warning -u keygate` finds the warnings, and a line shows
//! one time, not two.
//!
//! systemd tells a service its stderr is the journal with `JOURNAL_STREAM`
//! (`<device>:<inode>` of the stream); stderr is the journal only while it
//! is still that stream (a child whose stderr was redirected inherits the
//! variable but not the stream).
//!
//! Why not tracing-journald: it sends each event as a datagram in the
//! journal's native protocol. Its fields become journal fields, which
//! `journalctl` does not show by default (only the message: an operator
//! reading `journalctl -u keygate` would lose `backend=`, `error=` and the
//! rest), each event is a `sendmsg` on the thread that logs (our writer
//! gathers lines and writes a batch at a time, and the audit trail needs
//! to know whether its line was written, which a datagram sent and
//! forgotten does not say), and the lines would no longer be the same as
//! in a log file or `docker logs`. A three-character prefix keeps all of it.

use std::cell::RefCell;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// Whether stderr is the journal (see the module doc).
pub fn stderr_is_journal() -> bool {
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.to_str().and_then(|s| s.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let stderr = std::io::stderr();
    let Ok(fd) = stderr.as_fd().try_clone_to_owned() else {
        return false;
    };
    std::fs::File::from(fd)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

/// Prints `text` on stderr as an error of the daemon's, before its log is
/// set up: `keygate: ` before it, and `<3>` before each line when stderr is
/// the journal.
pub fn eprint_error(text: &str) {
    let prefix = if stderr_is_journal() { "<3>" } else { "" };
    let mut lines = String::new();
    for (i, line) in text.lines().enumerate() {
        let lead = if i == 0 { "keygate: " } else { "" };
        lines.push_str(&format!("{prefix}{lead}{line}\n"));
    }
    let _ = std::io::Write::write_all(&mut std::io::stderr(), lines.as_bytes());
}

/// The sd-daemon(3) prefix of a line logged at `level`.
pub fn priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// An event format that starts each line with its [`priority`] (each line
/// of an event that spans several).
pub struct Prioritized<F>(pub F);

impl<S, N, F> FormatEvent<S, N> for Prioritized<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        thread_local! {
            static LINE: RefCell<String> = const { RefCell::new(String::new()) };
        }
        let priority = priority(*event.metadata().level());
        LINE.with(|line| {
            let mut own = String::new();
            let mut borrowed = line.try_borrow_mut();
            let line = borrowed.as_deref_mut().unwrap_or(&mut own);
            line.clear();
            // No colour: stderr is the journal, not a terminal.
            let inner = Writer::new(line);
            self.0.format_event(ctx, inner, event)?;
            // journald reads each line of the stream as an entry: a value
            // that holds line breaks (a parse error quoting the file) gets
            // the event's priority on each of its lines.
            for piece in line.split_inclusive('\n') {
                writer.write_str(priority)?;
                writer.write_str(piece)?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `JOURNAL_STREAM` names stderr's device and inode: a mismatch, a
    /// malformed value or none at all is not the journal. (Run in a child
    /// process: the variable and stderr are process-wide.)
    #[test]
    fn the_journal_is_recognised_by_stderrs_device_and_inode() {
        if let Ok(expected) = std::env::var("KEYGATE_TEST_JOURNAL_EXPECTED") {
            assert_eq!(stderr_is_journal().to_string(), expected);
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stderr");
        let meta = std::fs::File::create(&path).unwrap().metadata().unwrap();
        let own = format!("{}:{}", meta.dev(), meta.ino());
        let other = format!("{}:{}", meta.dev(), meta.ino() + 1);
        for (stream, expected) in [
            (Some(own.as_str()), true),
            (Some(other.as_str()), false),
            (Some("garbage"), false),
            (None, false),
        ] {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args([
                "--exact",
                "logging::journal::tests::the_journal_is_recognised_by_stderrs_device_and_inode",
            ])
            .env("KEYGATE_TEST_JOURNAL_EXPECTED", expected.to_string())
            .stderr(
                std::fs::OpenOptions::new()
                    .append(true)
                    .open(&path)
                    .unwrap(),
            );
            match stream {
                Some(s) => cmd.env("JOURNAL_STREAM", s),
                None => cmd.env_remove("JOURNAL_STREAM"),
            };
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "JOURNAL_STREAM={stream:?}: {}",
                String::from_utf8_lossy(&out.stdout)
            );
        }
    }
}

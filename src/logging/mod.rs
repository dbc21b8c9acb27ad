//! Log setup: where the diagnostic log and the audit trail go.
//!
//! - The diagnostic log goes to `[log] file`, else to stderr for the daemon
//!   (journald, docker logs; colour only when stderr is a terminal; when
//!   stderr is the journal, each line starts with its syslog priority and
//!   has no timestamp: [`journal`]) and nowhere for exec mode, whose stderr
//!   is Wazuh's stdout.
//! - Audit events (target [`AUDIT_TARGET`]) go to `[log] audit_file` as JSON
//!   lines when it is set, else into the diagnostic log whatever its level;
//!   `audit = false` drops them.
//! - An audit event is never dropped. With `audit_failure = "refuse"` it is
//!   written before its answer is sent, and the answer learns whether it
//!   was ([`keygate_core::audit::report_write`]): an answer whose event could
//!   not be written is refused. With `"serve"` it is written with the next
//!   batch and a lost one is counted.
//! - Files are created with the owner and group of their directory, and
//!   written whole or not at all ([`file`]).
//! - The daemon reopens both files on SIGUSR1, after logrotate moved them.
//! - The daemon's lines are written in batches ([`batch`]); exec mode
//!   writes its line or two directly.

pub mod batch;
pub mod file;
pub mod journal;
pub mod plain;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context;
use batch::{Batched, Delivery};
use file::{FileWriter, LogFile};
use keygate_config::{AuditFailure, LogConfig, LogFormat};
use keygate_core::audit::{self, AUDIT_TARGET};
use tokio::signal::unix::Signal;
use tracing::Metadata;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry};

/// Where logs go when no file is configured.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The daemon: stderr (journald, docker logs).
    Stderr,
    /// Exec mode: nowhere.
    Nowhere,
}

/// Keeps the background writers running; drop it last, so buffered lines
/// are written before exit.
#[must_use]
pub struct Guards(#[allow(dead_code)] Vec<batch::Flusher>);

/// The files the daemon reopens on SIGUSR1.
static REOPEN: OnceLock<Vec<Arc<LogFile>>> = OnceLock::new();

/// A writer that hands audit events to [`Batched`] as `audit` says, and
/// every other line as lossy; with `report`, an audit event's outcome is
/// reported to the answer waiting for it.
#[derive(Clone)]
struct Routed {
    writer: Batched,
    audit: Delivery,
    report: bool,
}

impl Routed {
    /// How the audit trail is written under `policy` (see the module doc).
    fn new(writer: Batched, policy: AuditFailure) -> Self {
        match policy {
            AuditFailure::Refuse => Self {
                writer,
                audit: Delivery::Committed,
                report: true,
            },
            AuditFailure::Serve => Self {
                writer,
                audit: Delivery::Lossless,
                report: false,
            },
        }
    }
}

/// One line of a [`Routed`] writer.
struct RoutedLine<'a> {
    line: batch::Line<'a>,
    report: bool,
}

impl Write for RoutedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.line.write(buf)?;
        if let (true, Some(written)) = (self.report, self.line.written()) {
            audit::report_write(written.map_err(batch::WriteFailed::error));
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Routed {
    type Writer = RoutedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        RoutedLine {
            line: self.writer.line(Delivery::Lossy),
            report: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        if meta.target() == AUDIT_TARGET {
            RoutedLine {
                line: self.writer.line(self.audit),
                report: self.report,
            }
        } else {
            self.make_writer()
        }
    }
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// A formatting layer writing `format` to `writer`; for the journal, each
/// line starts with its priority and has no timestamp.
fn fmt_layer<W>(format: LogFormat, writer: W, ansi: bool, journal: bool) -> Boxed
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .log_internal_errors(false)
        .with_writer(writer);
    match (format, journal) {
        (LogFormat::Text, true) => layer
            .with_target(false)
            .without_time()
            .fmt_fields(plain::PlainFields)
            .map_event_format(journal::Prioritized)
            .boxed(),
        (LogFormat::Json, true) => layer
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .without_time()
            .map_event_format(journal::Prioritized)
            .boxed(),
        (LogFormat::Text, false) if !ansi => layer
            .with_timer(plain::Rfc3339Micros)
            .with_target(false)
            .fmt_fields(plain::PlainFields)
            .boxed(),
        (LogFormat::Text, false) => layer
            .with_timer(plain::Rfc3339Micros)
            .with_target(false)
            .boxed(),
        (LogFormat::Json, false) => layer
            .with_timer(plain::Rfc3339Micros)
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .boxed(),
    }
}

/// Where the audit trail goes, for `keygate check`.
pub fn audit_destination(config: &LogConfig) -> String {
    match (config.audit, &config.audit_file, &config.file) {
        (false, _, _) => "off ([log] audit = false)".into(),
        (true, Some(path), _) => format!("{} (JSON lines)", path.display()),
        (true, None, Some(path)) => format!("into the log file {}", path.display()),
        (true, None, None) => "into the daemon's log on stderr".into(),
    }
}

/// Installs the global subscriber.
pub fn init(config: &LogConfig, fallback: Fallback) -> anyhow::Result<Guards> {
    let daemon = fallback == Fallback::Stderr;
    // An audit event that has somewhere to go must say it went there before
    // its answer is sent; set first, so that a file that cannot be opened
    // refuses answers instead of leaving them unrecorded.
    let recorded = config.audit && (daemon || config.audit_file.is_some() || config.file.is_some());
    audit::require_reports(recorded && config.audit_failure == AuditFailure::Refuse);
    let mut writers = Writers {
        daemon,
        policy: config.audit_failure,
        flushers: Vec::new(),
        reopen: Vec::new(),
    };
    let separate_audit = config.audit && config.audit_file.is_some();
    let audit_in_log = if config.audit && !separate_audit {
        "info"
    } else {
        "off"
    };
    let filter = EnvFilter::try_new(format!(
        "{},sqlx=warn,{AUDIT_TARGET}={audit_in_log}",
        config.level
    ))
    .context("invalid log level")?;
    let mut layers: Vec<Boxed> = Vec::new();
    let diagnostic = match (&config.file, fallback) {
        (Some(path), _) => Some(fmt_layer(
            config.format,
            writers.file(path, "log")?,
            false,
            false,
        )),
        (None, Fallback::Stderr) => {
            let ansi = std::io::stderr().is_terminal();
            let journal = journal::stderr_is_journal();
            let writer = writers.batched(Box::new(std::io::stderr()), "log", journal)?;
            Some(fmt_layer(config.format, writer, ansi, journal))
        }
        (None, Fallback::Nowhere) => None,
    };
    if let Some(layer) = diagnostic {
        layers.push(layer.with_filter(filter).boxed());
    }
    if let (true, Some(path)) = (config.audit, &config.audit_file) {
        let only_audit = Targets::new().with_target(AUDIT_TARGET, LevelFilter::INFO);
        let writer = writers.file(path, "audit trail")?;
        layers.push(
            fmt_layer(LogFormat::Json, writer, false, false)
                .with_filter(only_audit)
                .boxed(),
        );
    }
    tracing_subscriber::registry().with(layers).try_init().ok();
    if daemon {
        let _ = REOPEN.set(writers.reopen);
    }
    Ok(Guards(writers.flushers))
}

/// The writers made so far: the daemon's flushing threads, and the files
/// SIGUSR1 reopens.
struct Writers {
    daemon: bool,
    policy: AuditFailure,
    flushers: Vec<batch::Flusher>,
    reopen: Vec<Arc<LogFile>>,
}

impl Writers {
    /// A batching writer into `sink`, with its thread.
    fn batched(
        &mut self,
        sink: Box<dyn Write + Send>,
        name: &'static str,
        journal: bool,
    ) -> anyhow::Result<Routed> {
        let (writer, flusher) = Batched::new(
            sink,
            batch::CAPACITY,
            name,
            journal,
            keygate_core::metrics::audit_write_failed,
        )
        .context("cannot start the log writer thread")?;
        self.flushers.push(flusher);
        Ok(Routed::new(writer, self.policy))
    }

    /// A writer into the file at `path`: in the daemon a batching writer
    /// around a reopenable file; in exec mode a direct one (a line or two
    /// per process, and a background writer's shutdown would add
    /// milliseconds to every one-shot lookup).
    fn file(&mut self, path: &Path, name: &'static str) -> anyhow::Result<Routed> {
        let file = LogFile::open(path)?;
        if !self.daemon {
            return Ok(Routed::new(
                Batched::direct(FileWriter(file), name),
                self.policy,
            ));
        }
        self.reopen.push(file.clone());
        self.batched(Box::new(FileWriter(file)), name, false)
    }
}

/// Reopens the log and audit files (each at its configured path) whenever
/// SIGUSR1 arrives: logrotate's `postrotate`. Spawn it in the daemon with
/// the handler installed before the sockets are bound (SIGUSR1's default
/// action ends the process).
pub async fn reopen_on_sigusr1(usr1: std::io::Result<Signal>) {
    let Ok(mut usr1) = usr1 else {
        tracing::warn!("Cannot install the SIGUSR1 handler; log files will not be reopened.");
        return;
    };
    while usr1.recv().await.is_some() {
        let files = REOPEN.get().map_or(&[][..], Vec::as_slice);
        for file in files {
            match file.reopen() {
                Ok(()) => tracing::info!(file = %file.path.display(), "Log file reopened."),
                Err(error) => {
                    tracing::error!(file = %file.path.display(), error = %format!("{error:#}"), "Log file cannot be reopened; still writing to the old one.");
                }
            }
        }
        if files.is_empty() {
            tracing::debug!("SIGUSR1: no log file to reopen.");
        }
    }
}

#[cfg(test)]
mod tests;

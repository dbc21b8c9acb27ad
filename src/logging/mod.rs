//! Log setup: where the diagnostic log and the audit trail go.
//!
//! - The diagnostic log goes to `[log] file`, else to stderr for the daemon
//!   (journald, docker logs; colour only when stderr is a terminal) and
//!   nowhere for exec mode, whose stderr is Wazuh's stdout.
//! - Audit events (target [`AUDIT_TARGET`]) go to `[log] audit_file` as JSON
//!   lines when it is set, else into the diagnostic log whatever its level;
//!   `audit = false` drops them.
//! - The daemon reopens both files on SIGUSR1, after logrotate moved them.
//! - The daemon's lines are written in batches by a thread of their own
//!   ([`batch`]); exec mode writes its line or two directly.

pub mod batch;
pub mod plain;

use std::fs::File;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use anyhow::Context;
use keygate_config::{LogConfig, LogFormat};
use keygate_core::audit::AUDIT_TARGET;
use tokio::signal::unix::Signal;
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

/// A log file that can be reopened at its path (after logrotate renamed it).
struct LogFile {
    path: PathBuf,
    file: Mutex<File>,
}

impl LogFile {
    fn open(path: &Path) -> anyhow::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            path: path.to_owned(),
            file: Mutex::new(open_append(path)?),
        }))
    }

    fn reopen(&self) -> anyhow::Result<()> {
        let file = open_append(&self.path)?;
        *self.file.lock().unwrap_or_else(PoisonError::into_inner) = file;
        Ok(())
    }
}

/// Writes into the [`LogFile`]'s current file.
struct FileWriter(Arc<LogFile>);

impl Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut file = self.0.file.lock().unwrap_or_else(PoisonError::into_inner);
        file.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0
            .file
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .flush()
    }
}

/// Opens `path` for appending (mode 0640 when created), making its
/// directory if needed.
fn open_append(path: &Path) -> anyhow::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create log directory {}", dir.display()))?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))
}

type Boxed = Box<dyn Layer<Registry> + Send + Sync>;

/// A formatting layer writing `format` to `writer`.
fn fmt_layer<W>(format: LogFormat, writer: W, ansi: bool) -> Boxed
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_timer(plain::Rfc3339Micros)
        .with_writer(writer);
    match format {
        LogFormat::Text if !ansi => layer
            .with_target(false)
            .fmt_fields(plain::PlainFields)
            .boxed(),
        LogFormat::Text => layer.with_target(false).boxed(),
        LogFormat::Json => layer
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
    let mut writers = Writers::default();
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
        (Some(path), _) => Some(file_layer(
            path,
            config.format,
            false,
            daemon,
            &mut writers,
        )?),
        (None, Fallback::Stderr) => {
            let ansi = std::io::stderr().is_terminal();
            let writer = writers.batched(Box::new(std::io::stderr()), false)?;
            Some(fmt_layer(config.format, writer, ansi))
        }
        (None, Fallback::Nowhere) => None,
    };
    if let Some(layer) = diagnostic {
        layers.push(layer.with_filter(filter).boxed());
    }
    if let (true, Some(path)) = (config.audit, &config.audit_file) {
        let only_audit = Targets::new().with_target(AUDIT_TARGET, LevelFilter::INFO);
        layers.push(
            file_layer(path, LogFormat::Json, true, daemon, &mut writers)?
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

/// The daemon's writers made so far: their flushing threads, and the files
/// SIGUSR1 reopens.
#[derive(Default)]
struct Writers {
    flushers: Vec<batch::Flusher>,
    reopen: Vec<Arc<LogFile>>,
}

impl Writers {
    /// A batching writer into `sink`; `lossless` ones never drop a line.
    fn batched(
        &mut self,
        sink: Box<dyn Write + Send>,
        lossless: bool,
    ) -> anyhow::Result<batch::Batched> {
        let (writer, flusher) = batch::Batched::new(sink, lossless, batch::CAPACITY)
            .context("cannot start the log writer thread")?;
        self.flushers.push(flusher);
        Ok(writer)
    }
}

/// A layer writing `format` to the file at `path`: in the daemon through a
/// batching writer around a reopenable file; in exec mode directly (a line
/// or two per process, and a background writer's shutdown would add
/// milliseconds to every one-shot lookup). `lossless` writers block rather
/// than drop lines when the disk is slow: the audit trail must be complete.
fn file_layer(
    path: &Path,
    format: LogFormat,
    lossless: bool,
    daemon: bool,
    writers: &mut Writers,
) -> anyhow::Result<Boxed> {
    if !daemon {
        return Ok(fmt_layer(format, Mutex::new(open_append(path)?), false));
    }
    let file = LogFile::open(path)?;
    writers.reopen.push(file.clone());
    let writer = writers.batched(Box::new(FileWriter(file)), lossless)?;
    Ok(fmt_layer(format, writer, false))
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

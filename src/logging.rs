//! Log setup: stderr or `[log] file` for the daemon; the file or nothing for
//! exec mode (whose stderr is Wazuh's stdout).

use keygate_config::LogConfig;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// Where logs go when no file is configured.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fallback {
    /// The daemon: stderr (journald, docker logs).
    Stderr,
    /// Exec mode: nowhere.
    Nowhere,
}

/// Installs the global subscriber. Keep the guard alive until exit so
/// buffered lines are written.
pub fn init(config: &LogConfig, fallback: Fallback) -> anyhow::Result<Option<WorkerGuard>> {
    use anyhow::Context;
    let filter =
        EnvFilter::try_new(format!("{},sqlx=warn", config.level)).context("invalid log level")?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    match (&config.file, fallback) {
        (Some(path), _) => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create log directory {}", dir.display()))?;
            }
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open log file {}", path.display()))?;
            if fallback == Fallback::Nowhere {
                // Exec mode logs a line or two per process: write them
                // directly. A background writer's shutdown handshake would
                // add milliseconds to every one-shot lookup.
                builder
                    .with_ansi(false)
                    .with_writer(std::sync::Mutex::new(file))
                    .try_init()
                    .ok();
                return Ok(None);
            }
            let (writer, guard) = tracing_appender::non_blocking(file);
            builder.with_ansi(false).with_writer(writer).try_init().ok();
            Ok(Some(guard))
        }
        (None, Fallback::Stderr) => {
            builder.with_writer(std::io::stderr).try_init().ok();
            Ok(None)
        }
        (None, Fallback::Nowhere) => Ok(None),
    }
}

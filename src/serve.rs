//! The daemon: load and validate the config, build the stack, bind the
//! sockets, serve until SIGTERM/SIGINT; SIGHUP or `keygate reload` re-read
//! the config.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use keygate_config::{Config, Stack};
use keygate_core::{Breaker, CacheLayer};
use keygate_server::{server, socket, Serving, Settings};
use tokio::signal::unix::{signal, SignalKind};

use crate::EX_CONFIG;

/// What the admin commands act on; swapped together with the stack.
pub struct Admin {
    /// The cache, if enabled.
    pub cache: Option<Arc<CacheLayer>>,
    /// Each backend's breaker, in chain order.
    pub breakers: Vec<Arc<Breaker>>,
}

/// The running daemon's state.
pub struct Daemon {
    config_path: PathBuf,
    /// The config in force; the lock also serialises reloads.
    current: tokio::sync::Mutex<Config>,
    /// What the socket serves.
    pub serving: Arc<ArcSwap<Serving>>,
    /// What the admin commands see.
    pub admin: ArcSwap<Admin>,
}

impl Daemon {
    fn new(config_path: &Path, config: Config, stack: Stack) -> Self {
        let serving = Serving {
            root: stack.root,
            request_timeout: config.server.request_timeout,
        };
        Self {
            config_path: config_path.to_owned(),
            current: tokio::sync::Mutex::new(config),
            serving: Arc::new(ArcSwap::from_pointee(serving)),
            admin: ArcSwap::from_pointee(Admin {
                cache: stack.cache,
                breakers: stack.breakers,
            }),
        }
    }

    /// Re-reads the config. An invalid one changes nothing and returns
    /// every problem; a valid one is swapped in whole, so requests in
    /// flight finish on the stack they started with. Cache entries are kept
    /// unless the backend list changed.
    pub async fn reload(&self) -> Result<String, Vec<String>> {
        let mut current = self.current.lock().await;
        tracing::info!(config = %self.config_path.display(), "Reloading the config.");
        let refuse = |problems: Vec<String>| {
            for p in &problems {
                tracing::error!(problem = %p, "Reload refused; the running config stays.");
            }
            problems
        };
        let config = keygate_config::load(&self.config_path)
            .map_err(|e| refuse(e.problems.iter().map(ToString::to_string).collect()))?;
        let admin = self.admin.load();
        let keep = if current.same_backends(&config) {
            admin.cache.as_deref()
        } else {
            None
        };
        let stack = config
            .build_stack(keep)
            .await
            .map_err(|problems| refuse(problems.iter().map(ToString::to_string).collect()))?;
        if config.server.socket != current.server.socket
            || config.server.control_socket != current.server.control_socket
            || config.server.socket_mode != current.server.socket_mode
            || config.server.max_connections != current.server.max_connections
            || config.server.read_timeout != current.server.read_timeout
        {
            tracing::warn!(
                "[server] settings other than request_timeout take effect only after a restart."
            );
        }
        let kept = keep.is_some() && stack.cache.is_some();
        self.serving.store(Arc::new(Serving {
            root: stack.root,
            request_timeout: config.server.request_timeout,
        }));
        self.admin.store(Arc::new(Admin {
            cache: stack.cache,
            breakers: stack.breakers,
        }));
        let message = format!(
            "reloaded {}: {} backend(s); cache entries {}",
            self.config_path.display(),
            config.backends.len(),
            if kept { "kept" } else { "dropped" }
        );
        tracing::info!(
            backends = config.backends.len(),
            cache_kept = kept,
            "Reloaded."
        );
        *current = config;
        Ok(message)
    }
}

/// Runs the daemon; returns its exit code.
pub fn main(config_path: &Path) -> ExitCode {
    let config = match keygate_config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("keygate: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let _guard = match crate::logging::init(&config.log, crate::logging::Fallback::Stderr) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("keygate: {e:#}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("keygate: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(serve(config, config_path))
}

async fn serve(config: Config, config_path: &Path) -> ExitCode {
    let stack = match config.build_stack(None).await {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "Backend cannot be built.");
                eprintln!("keygate: {p}");
            }
            return ExitCode::from(EX_CONFIG);
        }
    };
    let (listener, socket_file) =
        match socket::bind(&config.server.socket, config.server.socket_mode) {
            Ok(bound) => bound,
            Err(e) => {
                tracing::error!(error = %e, "Cannot bind the socket.");
                eprintln!("keygate: {e}");
                return ExitCode::FAILURE;
            }
        };
    let (control_listener, control_file) = match socket::bind(&config.server.control_socket, 0o600)
    {
        Ok(bound) => bound,
        Err(e) => {
            tracing::error!(error = %e, "Cannot bind the control socket.");
            eprintln!("keygate: {e}");
            return ExitCode::FAILURE;
        }
    };
    let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    tracing::info!(
        socket = %config.server.socket.display(),
        control_socket = %config.server.control_socket.display(),
        backends = ?names,
        cache = config.cache.is_some(),
        "Serving."
    );
    let settings = Settings {
        max_connections: config.server.max_connections,
        read_timeout: config.server.read_timeout,
    };
    let daemon = Arc::new(Daemon::new(config_path, config, stack));

    let reloader = tokio::spawn(reload_on_sighup(daemon.clone()));
    let control = tokio::spawn(crate::control::serve(control_listener, daemon.clone()));
    // Type=notify: bound and listening, so connections queue for the accept loop below.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "Cannot tell systemd that keygate is ready.");
    }
    server::run(
        listener,
        daemon.serving.clone(),
        settings,
        shutdown_signal(),
    )
    .await;
    reloader.abort();
    control.abort();
    drop(socket_file);
    drop(control_file);
    tracing::info!("Stopped.");
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("Cannot install signal handlers; stop with SIGKILL.");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received; finishing requests in flight."),
        _ = int.recv() => tracing::info!("SIGINT received; finishing requests in flight."),
    }
}

async fn reload_on_sighup(daemon: Arc<Daemon>) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("Cannot install the SIGHUP handler; use 'keygate reload'.");
        return;
    };
    while hup.recv().await.is_some() {
        let _ = daemon.reload().await;
    }
}

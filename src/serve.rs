//! The daemon: load and validate the config, build the stack, bind the
//! socket, serve until SIGTERM/SIGINT, re-read the config on SIGHUP.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use arc_swap::ArcSwap;
use keygate_config::Config;
use keygate_server::{server, socket, Serving, Settings};
use tokio::signal::unix::{signal, SignalKind};

use crate::EX_CONFIG;

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
    let stack = match config.build_stack().await {
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
    let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    tracing::info!(socket = %config.server.socket.display(), backends = ?names, "Serving.");
    let serving = Arc::new(ArcSwap::from_pointee(Serving {
        root: stack.root,
        request_timeout: config.server.request_timeout,
    }));
    let settings = Settings {
        max_connections: config.server.max_connections,
        read_timeout: config.server.read_timeout,
    };

    let reloader = tokio::spawn(reload_on_sighup(
        config_path.to_owned(),
        config.clone(),
        serving.clone(),
    ));
    server::run(listener, serving, settings, shutdown_signal()).await;
    reloader.abort();
    drop(socket_file);
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

/// SIGHUP: re-read the config. An invalid one is logged, problem by
/// problem, and the running stack stays; a valid one is swapped in whole,
/// so requests in flight finish on the stack they started with.
async fn reload_on_sighup(
    path: std::path::PathBuf,
    mut current: Config,
    serving: Arc<ArcSwap<Serving>>,
) {
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("Cannot install the SIGHUP handler; reload needs a restart.");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!(config = %path.display(), "SIGHUP received; reloading the config.");
        let config = match keygate_config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                for p in &e.problems {
                    tracing::error!(problem = %p, "Reload refused; the running config stays.");
                }
                continue;
            }
        };
        let stack = match config.build_stack().await {
            Ok(s) => s,
            Err(problems) => {
                for p in &problems {
                    tracing::error!(problem = %p, "Reload refused; the running config stays.");
                }
                continue;
            }
        };
        if config.server != current.server {
            tracing::warn!(
                "[server] settings other than request_timeout take effect only after a restart."
            );
        }
        serving.store(Arc::new(Serving {
            root: stack.root,
            request_timeout: config.server.request_timeout,
        }));
        tracing::info!(backends = config.backends.len(), "Reloaded.");
        current = config;
    }
}

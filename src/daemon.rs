//! The daemon: load and validate the config, build the stack, bind the
//! sockets, serve until SIGTERM/SIGINT; SIGHUP or `keygate reload` re-read
//! the config. Both sockets go through the same accept loop
//! ([`keygate_server::run`]); the admin commands are executed here
//! ([`Control`] for [`Daemon`]), and `src/control.rs` is only their client.
//!
//! Threads: a multi-threaded runtime runs everything but the Wazuh socket's
//! accepts (control socket, metrics, signals, reloads, the backends' own
//! tasks, and Wazuh connections that have to wait). The Wazuh socket is
//! served by one thread per core blocking in `accept()` on the one
//! listener ([`keygate_server::Acceptors`]): a request
//! whose bytes are there and whose answer is in memory (the cache, the
//! file backend) is accepted, answered and closed on the thread the kernel
//! woke for it, with no poller and no other thread involved; what has to
//! wait (a late request, a database lookup) becomes a task on the runtime.
//! The threads share the connection slots and counters. A thread that
//! ends while the socket is still to be served makes the daemon exit 1, so
//! that systemd restarts it: never a process alive with a dead socket.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use keygate_config::{Config, Stack};
use keygate_core::{Breaker, CacheLayer, KeyBackend, LatencyLayer, Request};
use keygate_server::control::{
    BackendView, Control, ControlHandler, ControlRequest, ControlResponse,
};
use keygate_server::socket::{self, SocketOptions};
use keygate_server::{
    run, Acceptors, Access, Counters, Limits, Serving, Slots, Wazuh, WazuhSettings,
};
use tokio::signal::unix::{signal, SignalKind};

use crate::exit::Code;
use crate::preflight::CONTROL_CONNECTIONS;

/// What the admin commands act on; swapped together with the stack.
pub struct Admin {
    /// The cache, if enabled.
    pub cache: Option<Arc<CacheLayer>>,
    /// Each backend's breaker, in chain order.
    pub breakers: Vec<Arc<Breaker>>,
    /// Each backend's latency statistics, in chain order.
    pub latencies: Vec<Arc<LatencyLayer>>,
}

impl Admin {
    fn of(stack: &Stack) -> Self {
        Self {
            cache: stack.cache.clone(),
            breakers: stack.breakers.clone(),
            latencies: stack.latencies.clone(),
        }
    }
}

/// The running daemon's state.
pub struct Daemon {
    config_path: PathBuf,
    /// The config in force; the lock also serialises reloads.
    current: tokio::sync::Mutex<Config>,
    /// What the Wazuh socket serves.
    pub serving: Arc<ArcSwap<Serving>>,
    /// What the admin commands see.
    pub admin: ArcSwap<Admin>,
    /// The Wazuh socket's connection counters (open, refused at the limit,
    /// idle ones evicted, refused peers, panics while answering).
    pub counters: Arc<Counters>,
    /// The watch on the manager's client.keys, in front of every stack.
    inserts: Option<Arc<crate::inserts::InsertWatch>>,
}

impl Daemon {
    fn new(
        config_path: &Path,
        config: Config,
        stack: Stack,
        inserts: Option<Arc<crate::inserts::InsertWatch>>,
    ) -> Self {
        let admin = Admin::of(&stack);
        let serving = Serving {
            root: crate::inserts::front(&inserts, stack.root),
            request_timeout: config.server.request_timeout,
        };
        Self {
            config_path: config_path.to_owned(),
            current: tokio::sync::Mutex::new(config),
            serving: Arc::new(ArcSwap::from_pointee(serving)),
            admin: ArcSwap::from_pointee(admin),
            counters: Arc::new(Counters::default()),
            inserts,
        }
    }

    /// Re-reads the config. An invalid one changes nothing and returns
    /// every problem; a valid one is swapped in whole, so requests in
    /// flight finish on the stack they started with. Cached answers are kept
    /// when `[cache]` is unchanged, except those of a backend whose settings
    /// changed and of the backends after it ([`Config::cache_kept`]). Of
    /// `[server]`, only `request_timeout` applies live.
    pub async fn reload(&self) -> Result<String, Vec<String>> {
        let mut current = self.current.lock().await;
        tracing::info!(config = %self.config_path.display(), "Reloading the config.");
        let refuse = |problems: Vec<String>| {
            keygate_core::metrics::config_reload(false);
            for p in &problems {
                tracing::error!(problem = %p, "Reload refused; the running config stays.");
            }
            problems
        };
        let config = crate::preflight::load_for_reload(&self.config_path).map_err(refuse)?;
        let admin = self.admin.load();
        // A backend whose settings changed loses its cached answers, and so
        // do the ones after it; `[cache]` changed: every entry goes.
        let kept = current.cache_kept(&config);
        let keep = admin
            .cache
            .as_deref()
            .filter(|cache| config.cache.as_ref() == Some(cache.settings()))
            .map(|cache| (cache, &kept));
        let cache_kept = match keep {
            Some(_) if kept.everything => "kept".to_owned(),
            Some(_) if !kept.backends.is_empty() => {
                let names: Vec<&str> = kept.backends.iter().map(|(_, n)| n.as_str()).collect();
                format!(
                    "kept for {} only (the config of a later backend changed)",
                    names.join(", ")
                )
            }
            _ => "dropped".to_owned(),
        };
        let stack = config
            .build_stack(keep)
            .await
            .map_err(|problems| refuse(problems.iter().map(ToString::to_string).collect()))?;
        let mut needs_restart = config.server.clone();
        needs_restart.request_timeout = current.server.request_timeout;
        if needs_restart != current.server {
            tracing::warn!(
                "[server] settings other than request_timeout take effect only after a restart."
            );
        }
        self.admin.store(Arc::new(Admin::of(&stack)));
        self.serving.store(Arc::new(Serving {
            root: crate::inserts::front(&self.inserts, stack.root),
            request_timeout: config.server.request_timeout,
        }));
        let message = format!(
            "reloaded {}: {} backend(s); cache entries {cache_kept}",
            self.config_path.display(),
            config.backends.len(),
        );
        tracing::info!(
            backends = config.backends.len(),
            cache = %cache_kept,
            "Reloaded."
        );
        *current = config;
        keygate_core::metrics::config_reload(true);
        Ok(message)
    }

    fn backends(&self) -> Vec<BackendView> {
        let admin = self.admin.load();
        admin
            .breakers
            .iter()
            .zip(&admin.latencies)
            .map(|(breaker, latency)| {
                let s = breaker.snapshot();
                let l = latency.stats();
                BackendView {
                    name: s.name,
                    state: s.state.as_str().to_owned(),
                    lookups: s.lookups,
                    skipped: s.skipped,
                    consecutive_failures: s.consecutive_failures,
                    p50_ms: l.p50.map(millis),
                    p99_ms: l.p99.map(millis),
                    host: latency.current_host(),
                    last_error: s.last_error,
                }
            })
            .collect()
    }
}

const CACHE_OFF: &str = "the cache is disabled ([cache] enabled = false)";

impl Control for Daemon {
    async fn execute(&self, request: ControlRequest) -> ControlResponse {
        let failed = |e: String| ControlResponse::Failed { errors: vec![e] };
        let cache = self.admin.load().cache.clone();
        match request {
            ControlRequest::Reload => match self.reload().await {
                Ok(message) => ControlResponse::Done { message },
                Err(errors) => ControlResponse::Failed { errors },
            },
            ControlRequest::Backends => ControlResponse::Backends {
                backends: self.backends(),
            },
            ControlRequest::CacheStats => {
                let Some(cache) = cache else {
                    return failed(CACHE_OFF.into());
                };
                cache.run_pending_tasks().await;
                ControlResponse::CacheStats {
                    stats: cache.stats(),
                }
            }
            ControlRequest::CacheFlush { query } => {
                let Some(cache) = cache else {
                    return failed(CACHE_OFF.into());
                };
                let Some(query) = query else {
                    cache.flush_all().await;
                    tracing::info!("Cache flushed.");
                    return ControlResponse::Done {
                        message: "flushed every entry".into(),
                    };
                };
                match Request::parse(query.as_bytes()) {
                    Err(e) => failed(format!("{query}: {e}")),
                    Ok(q) => {
                        let found = cache.flush(&q).await;
                        tracing::info!(query = %q, found, "Cache entry flushed.");
                        ControlResponse::Done {
                            message: if found {
                                format!("flushed {q}")
                            } else {
                                format!("{q} was not cached")
                            },
                        }
                    }
                }
            }
        }
    }
}

/// Runs the daemon; returns its exit code.
pub fn main(config_path: &Path) -> ExitCode {
    let config = match keygate_config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            crate::logging::journal::eprint_error(&e.to_string());
            return Code::Config.into();
        }
    };
    let _guard = match crate::logging::init(&config.log, crate::logging::Fallback::Stderr) {
        Ok(g) => g,
        Err(e) => {
            crate::logging::journal::eprint_error(&format!("{e:#}"));
            return Code::Config.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(runtime_workers(config.server.worker_threads))
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

/// How many threads the runtime has: half the cores, at least one. The
/// runtime finishes only what waits (a database round trip, a late
/// request, the control socket, reloads); in-memory answers are given on
/// the accepting threads (one per core). Every worker more is one more
/// thread the runtime wakes to look for work whenever a task is scheduled:
/// on the 2-core benchmark machine one worker instead of two took a
/// database lookup from 37-47 to 32-34 µs of keygate's CPU and served
/// 13-33 % more lookups (docs/dev/benchmarks-history.md, "Server hot path and SQL, third
/// pass"). `[server] worker_threads` overrides it (a machine whose
/// lookups wait on many slow backends at once may want more).
fn runtime_workers(configured: Option<usize>) -> usize {
    configured.unwrap_or_else(|| {
        half_the_cores(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    })
}

/// The default number of runtime workers for `cores` cores: half, at
/// least one.
fn half_the_cores(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// A duration in milliseconds, as `keygate backends` shows latencies.
fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Logs and prints why the daemon cannot start; exit code 1.
fn cannot_start(what: &str, error: &dyn std::fmt::Display) -> ExitCode {
    tracing::error!(error = %error, "Cannot bind the {what}.");
    eprintln!("keygate: {error}");
    ExitCode::FAILURE
}

async fn serve(config: Config, config_path: &Path) -> ExitCode {
    if let Err(code) = crate::preflight::before_serving(&config) {
        return code;
    }
    let stack = match config.build_stack(None).await {
        Ok(s) => s,
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "Backend cannot be built.");
                eprintln!("keygate: {p}");
            }
            return Code::Config.into();
        }
    };
    let shutdown = shutdown_signal();
    let hup = signal(SignalKind::hangup());
    tokio::spawn(crate::logging::reopen_on_sigusr1(signal(
        SignalKind::user_defined1(),
    )));
    let metrics = match crate::metrics::bind(config.metrics) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let s = &config.server;
    let options = SocketOptions {
        mode: s.socket_mode,
        group: s.socket_group.clone(),
    };
    let (listener, socket_file) = match socket::bind(&s.socket, &options) {
        Ok(bound) => bound,
        Err(e) => return cannot_start("socket", &e),
    };
    let (control_listener, control_file) =
        match socket::bind(&s.control_socket, &SocketOptions::mode(0o600)) {
            Ok(bound) => bound,
            Err(e) => return cannot_start("control socket", &e),
        };
    let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
    tracing::info!(
        socket = %s.socket.display(),
        control_socket = %s.control_socket.display(),
        backends = ?names,
        cache = config.cache.is_some(),
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        "Serving."
    );
    let wazuh_settings = WazuhSettings {
        read_timeout: s.read_timeout,
        max_lookups: s.max_lookups,
        access: Access {
            uids: s.allowed_uids.clone(),
            gids: s.allowed_gids.clone(),
        },
    };
    let limits = Limits {
        max_connections: s.max_connections,
        drain: s.read_timeout + s.request_timeout,
    };
    let control_limits = Limits {
        max_connections: CONTROL_CONNECTIONS,
        ..limits
    };
    let read_timeout = s.read_timeout;
    let inserts = crate::inserts::for_config(&config.wazuh).await;
    let daemon = Arc::new(Daemon::new(config_path, config, stack, inserts));
    metrics.map(|m| tokio::spawn(m.serve(daemon.clone())));
    let wazuh = Arc::new(Wazuh::new(
        daemon.serving.clone(),
        wazuh_settings,
        daemon.counters.clone(),
    ));
    let control = Arc::new(ControlHandler::new(daemon.clone(), read_timeout));

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let reloader = tokio::spawn(reload_on_sighup(daemon.clone(), hup));
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
    let acceptors = match listener.into_std().and_then(|listener| {
        let slots = Slots::new(limits.max_connections);
        Acceptors::start(listener, &wazuh, &slots, &daemon.counters, threads)
    }) {
        Ok(acceptors) => acceptors,
        Err(e) => return cannot_start("socket", &e),
    };
    // Type=notify: bound and watched, so connections queue for the accept
    // loops.
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "Cannot tell systemd that keygate is ready.");
    }
    let (served, (), ()) = tokio::join!(
        async {
            let served = acceptors
                .run_until(until_stopped(stopped.clone()), limits.drain)
                .await;
            // Whatever ended the Wazuh socket's service ends the rest.
            let _ = stop.send(true);
            served
        },
        run(
            control_listener,
            control,
            control_limits,
            Arc::new(Counters::default()),
            until_stopped(stopped.clone())
        ),
        async {
            tokio::select! {
                () = shutdown => {}
                _ = until_stopped(stopped.clone()) => {}
            }
            let _ = stop.send(true);
        },
    );
    reloader.abort();
    drop(socket_file);
    drop(control_file);
    if let Err(ended) = served {
        tracing::error!(error = %ended, "The Wazuh socket is no longer served; exiting so that the service manager restarts keygate.");
        eprintln!("keygate: {ended}");
        return ExitCode::FAILURE;
    }
    tracing::info!("Stopped.");
    ExitCode::SUCCESS
}

/// Completes at SIGTERM or SIGINT. The handlers are installed when this is
/// called, before the sockets are bound, so a signal sent as soon as the
/// socket answers is never the default "terminate at once".
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    let signals = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    );
    async move {
        let (Ok(mut term), Ok(mut int)) = signals else {
            tracing::error!("Cannot install signal handlers; stop with SIGKILL.");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM received; finishing requests in flight."),
            _ = int.recv() => tracing::info!("SIGINT received; finishing requests in flight."),
        }
    }
}

/// Reloads at every SIGHUP (`hup`, installed before the sockets are bound).
async fn reload_on_sighup(daemon: Arc<Daemon>, hup: std::io::Result<tokio::signal::unix::Signal>) {
    let Ok(mut hup) = hup else {
        tracing::warn!("Cannot install the SIGHUP handler; use 'keygate reload'.");
        return;
    };
    while hup.recv().await.is_some() {
        let _ = daemon.reload().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Half the cores, at least one: the 2-core machines the tests run on
    /// cannot tell half from other rules, so the rule is tested here.
    #[test]
    fn the_default_workers_are_half_the_cores() {
        for (cores, workers) in [(1, 1), (2, 1), (3, 1), (4, 2), (8, 4), (64, 32)] {
            assert_eq!(half_the_cores(cores), workers, "{cores} cores");
        }
        assert_eq!(runtime_workers(Some(7)), 7);
    }

    /// `keygate backends` shows latencies in milliseconds.
    #[test]
    fn latencies_are_shown_in_milliseconds() {
        assert_eq!(millis(Duration::from_micros(1500)), 1.5);
        assert_eq!(millis(Duration::from_secs(2)), 2000.0);
    }
}

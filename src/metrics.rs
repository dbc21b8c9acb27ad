//! The Prometheus endpoint: `[metrics] listen` serves `GET /metrics`.
//!
//! The series and their names are in [`keygate_core::metrics`]; the
//! exposition format is `metrics-exporter-prometheus`'s, and the `process_*`
//! series `metrics-process`'s. The HTTP side is ours (on hyper) rather than
//! the exporter's listener, so that each scrape first copies in the state
//! that has counters of its own (the cache's stats, each breaker's state,
//! the socket's connection counts): a scrape is exact, with no background
//! task and no lag. It only reads counters kept as things happen (the
//! cache's entry count is each shard's length): it never sweeps or walks
//! the cache, so scraping costs the requests being served nothing.
//!
//! Scrape connections are bounded ([`MAX_SCRAPES`]) without letting idle
//! ones keep a scrape out: a connection has [`HEADER_TIMEOUT`] to send its
//! request, serves that one request and closes, and at the bound a new
//! connection takes the place of the oldest one that has not sent its
//! request yet (as on the Wazuh socket, [`keygate_server::idle`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use hyper_util::rt::TokioTimer;
use keygate_server::idle::{Evicted, IdleSet, Ticket};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use keygate_config::MetricsConfig;

use crate::daemon::Daemon;

/// Scrape connections open at once. One more takes the place of the
/// oldest that has not sent its request; if every one has, it is closed.
const MAX_SCRAPES: usize = 8;
/// How long a scrape connection has to send its request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one scrape connection may stay open, its reply included.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The metrics listener, bound and with the recorder installed.
pub struct Endpoint {
    listener: TcpListener,
    handle: PrometheusHandle,
    process: metrics_process::Collector,
}

/// Where metrics are served, for `keygate check`.
pub fn destination(config: Option<MetricsConfig>) -> String {
    config.map_or_else(
        || "off (no [metrics] section)".into(),
        |m| format!("http://{}/metrics", m.listen),
    )
}

/// Installs the recorder and binds `[metrics] listen`; `None` when
/// `[metrics]` is absent (then nothing listens and nothing is recorded).
/// A failure is logged and printed, and its exit code returned. Call it
/// inside the runtime, before serving requests.
pub fn bind(config: Option<MetricsConfig>) -> Result<Option<Endpoint>, ExitCode> {
    let Some(config) = config else {
        return Ok(None);
    };
    try_bind(config.listen).map(Some).map_err(|e| {
        let error = crate::out::chain(&e);
        tracing::error!(%error, "Cannot serve metrics.");
        eprintln!("keygate: {error}");
        ExitCode::FAILURE
    })
}

fn try_bind(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    let listener = std::net::TcpListener::bind(addr)
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let listener = TcpListener::from_std(listener)
        .with_context(|| format!("cannot listen for metrics on {addr}"))?;
    let handle = PrometheusBuilder::new()
        .set_buckets(keygate_core::metrics::LATENCY_BUCKETS)
        .context("metrics buckets")?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    keygate_core::metrics::describe();
    let process = metrics_process::Collector::default();
    process.describe();
    process.collect();
    tracing::info!(listen = %addr, "Serving metrics at /metrics.");
    Ok(Endpoint {
        listener,
        handle,
        process,
    })
}

impl Endpoint {
    /// Serves scrapes until the task is aborted. Accepting never waits.
    pub async fn serve(self, daemon: Arc<Daemon>) {
        let slots = Arc::new(Semaphore::new(MAX_SCRAPES));
        let idle = Arc::new(IdleSet::<OwnedSemaphorePermit>::default());
        let scrape = Arc::new(Scrape {
            handle: self.handle,
            process: self.process,
            daemon,
        });
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "Metrics accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let permit = match slots.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => match idle.evict_oldest() {
                    Some(permit) => permit,
                    None => {
                        tracing::debug!("Metrics connection closed: every slot is scraping.");
                        continue;
                    }
                },
            };
            // Parked here, not in the task: the next accept may need to
            // evict it before the task first runs.
            let parked = idle.park(permit);
            tokio::spawn(connection(stream, parked, idle.clone(), scrape.clone()));
        }
    }
}

/// What a scrape reads.
struct Scrape {
    handle: PrometheusHandle,
    process: metrics_process::Collector,
    daemon: Arc<Daemon>,
}

/// Serves one scrape connection: its one request within [`HEADER_TIMEOUT`]
/// (idle until then, and so evictable), the whole within
/// [`SCRAPE_TIMEOUT`]. `parked` is its place among [`MAX_SCRAPES`], parked
/// in `idle` until its request comes.
async fn connection(
    stream: TcpStream,
    (ticket, mut evicted): (Ticket, Evicted),
    idle: Arc<IdleSet<OwnedSemaphorePermit>>,
    scrape: Arc<Scrape>,
) {
    let held = Arc::new(std::sync::Mutex::new(None));
    let service = {
        let (idle, held) = (idle.clone(), held.clone());
        hyper::service::service_fn(move |req| {
            // The request came: this connection is no longer idle.
            if let Some(permit) = idle.unpark(ticket) {
                *held
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(permit);
            }
            let scrape = scrape.clone();
            async move { Ok::<_, Infallible>(respond(&req, &scrape)) }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        served = tokio::time::timeout(SCRAPE_TIMEOUT, conn) => {
            if let Ok(Err(error)) = served {
                tracing::debug!(%error, "Metrics connection failed.");
            }
        }
        // Sent only by an eviction; unparking drops the sender (an error),
        // which leaves the connection be.
        Ok(()) = &mut evicted => {
            tracing::debug!("Idle metrics connection closed to admit a new one.");
        }
    }
    // Still parked if it never sent a request: free its place.
    drop(idle.unpark(ticket));
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

fn respond(req: &Request<Incoming>, scrape: &Scrape) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return text(
            StatusCode::NOT_FOUND,
            "not found: metrics are at /metrics\n",
        );
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
        r.headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    refresh(&scrape.daemon);
    scrape.process.collect();
    scrape.handle.run_upkeep();
    text(StatusCode::OK, scrape.handle.render())
}

/// Copies the state that keeps its own counters into the metrics: counters
/// and gauges read as they are, never a walk over the cache.
fn refresh(daemon: &Daemon) {
    use keygate_core::metrics;
    let admin = daemon.admin.load();
    if let Some(cache) = &admin.cache {
        metrics::cache_stats(&cache.stats());
    }
    for breaker in &admin.breakers {
        let s = breaker.snapshot();
        metrics::backend_state(&s.name, s.state, s.skipped);
    }
    let c = &daemon.counters;
    metrics::connections(&metrics::Connections {
        open: c.open(),
        refused_at_limit: c.refused_at_limit(),
        evicted_idle: c.evicted_idle(),
        refused_peers: c.refused_peers(),
        panics: c.panics(),
    });
}

//! The Prometheus endpoint: `[metrics] listen` serves `GET /metrics`.
//!
//! The series and their names are in [`keygate_core::metrics`]; the
//! exposition format is `metrics-exporter-prometheus`'s. The HTTP side is
//! ours (on hyper) rather than the exporter's listener, so that each scrape
//! first copies in the state that has counters of its own (the cache's
//! stats, each breaker's state, the socket's connection counts): a scrape
//! is exact, with no background task and no lag.

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
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use keygate_config::MetricsConfig;

use crate::daemon::Daemon;

/// Scrapes served at once; more wait for their turn.
const MAX_SCRAPES: usize = 8;
/// How long one scrape connection may stay open.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(30);

/// The metrics listener, bound and with the recorder installed.
pub struct Endpoint {
    listener: TcpListener,
    handle: PrometheusHandle,
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
    tracing::info!(listen = %addr, "Serving metrics at /metrics.");
    Ok(Endpoint { listener, handle })
}

impl Endpoint {
    /// Serves scrapes until the task is aborted.
    pub async fn serve(self, daemon: Arc<Daemon>) {
        let scrapes = Arc::new(Semaphore::new(MAX_SCRAPES));
        loop {
            let stream = match self.listener.accept().await {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "Metrics accept failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = scrapes.clone().acquire_owned().await else {
                return;
            };
            let handle = self.handle.clone();
            let daemon = daemon.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let (handle, daemon) = (handle.clone(), daemon.clone());
                    async move { Ok::<_, Infallible>(respond(&req, &handle, &daemon).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service);
                if let Ok(Err(error)) = tokio::time::timeout(SCRAPE_TIMEOUT, conn).await {
                    tracing::debug!(%error, "Metrics connection failed.");
                }
                drop(permit);
            });
        }
    }
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

async fn respond(
    req: &Request<Incoming>,
    handle: &PrometheusHandle,
    daemon: &Daemon,
) -> Response<Full<Bytes>> {
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
    refresh(daemon).await;
    handle.run_upkeep();
    text(StatusCode::OK, handle.render())
}

/// Copies the state that keeps its own counters into the metrics.
async fn refresh(daemon: &Daemon) {
    use keygate_core::metrics;
    let admin = daemon.admin.load_full();
    if let Some(cache) = &admin.cache {
        cache.run_pending_tasks().await;
        metrics::cache_stats(&cache.stats());
    }
    for breaker in &admin.breakers {
        let s = breaker.snapshot();
        metrics::backend_state(&s.name, s.state, s.skipped);
    }
    metrics::connections(daemon.counters.open(), daemon.counters.refused_at_limit());
}

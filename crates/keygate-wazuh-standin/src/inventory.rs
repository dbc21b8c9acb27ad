//! A stand-in inventory (CMDB) for keygate's `type = "http"` backend: a
//! small HTTPS server with its own CA whose answers the test decides (a
//! handler from each request to an answer, possibly delayed), recording
//! every request as it arrived (the raw path and query, the
//! `Authorization` header) and every TCP connection accepted.
//!
//! [`cmdb`] is a ready handler: `GET /api/agents/{id}`, `GET
//! /api/agents?ip={ip}` and `GET /api/agents?offset=N&limit=M`, answering
//! `{"data": [{"agent_id", "hostname", "ip", "wazuh_key"}]}` (the shape of
//! `config/examples/http.toml`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_rustls::TlsAcceptor;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `GET`, `HEAD`, ...
    pub method: String,
    /// The raw request target: path and query exactly as sent.
    pub target: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
}

impl Seen {
    /// The raw path (before `?`).
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// The query's `name` parameter, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        let query = self.target.split_once('?')?.1;
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

/// What the server answers.
#[derive(Clone, Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: String,
    /// Extra headers (`Location` for a redirect).
    pub headers: Vec<(String, String)>,
    /// How long to wait before answering.
    pub delay: Duration,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            headers: vec![("content-type".into(), "application/json".into())],
            delay: Duration::ZERO,
        }
    }

    /// A 302 to `location`.
    pub fn redirect(location: impl Into<String>) -> Self {
        Self {
            status: 302,
            body: String::new(),
            headers: vec![("location".into(), location.into())],
            delay: Duration::ZERO,
        }
    }

    /// The same answer after `delay`.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }
}

/// Decides the answer to each request.
pub type Handler = Arc<dyn Fn(&Seen) -> Answer + Send + Sync>;

struct Shared {
    handler: Mutex<Handler>,
    seen: Mutex<Vec<Seen>>,
    connections: AtomicUsize,
}

/// A running inventory; stopped when dropped.
pub struct Inventory {
    server: crate::server::TlsServer,
    shared: Arc<Shared>,
}

impl Inventory {
    /// Starts on a free port of 127.0.0.1, answering with `handler`.
    pub fn start(handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) -> Self {
        let shared = Arc::new(Shared {
            handler: Mutex::new(Arc::new(handler)),
            seen: Mutex::new(Vec::new()),
            connections: AtomicUsize::new(0),
        });
        let state = shared.clone();
        let server = crate::server::TlsServer::start(move |acceptor, tcp| {
            state.connections.fetch_add(1, Ordering::Relaxed);
            serve(acceptor, tcp, state.clone())
        });
        Self { server, shared }
    }

    /// Starts with the [`cmdb`] handler over `agents` (id, name, ip, key).
    pub fn cmdb(agents: &[(&str, &str, &str, &str)]) -> Self {
        Self::start(cmdb(agents))
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        self.server.ca_pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_ca(&self, path: &std::path::Path) {
        std::fs::write(path, self.server.ca_pem()).unwrap();
    }

    /// Replaces the handler.
    pub fn set_handler(&self, handler: impl Fn(&Seen) -> Answer + Send + Sync + 'static) {
        *lock(&self.shared.handler) = Arc::new(handler);
    }

    /// Every request so far, in order.
    pub fn seen(&self) -> Vec<Seen> {
        lock(&self.shared.seen).clone()
    }

    /// How many requests arrived.
    pub fn requests(&self) -> usize {
        lock(&self.shared.seen).len()
    }

    /// How many TCP connections were accepted (keep-alive reuses them).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn serve(acceptor: TlsAcceptor, tcp: tokio::net::TcpStream, state: Arc<Shared>) {
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
        let state = state.clone();
        async move {
            let seen = Seen {
                method: request.method().to_string(),
                target: request
                    .uri()
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default(),
                authorization: request
                    .headers()
                    .get(hyper::header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned),
            };
            let handler = lock(&state.handler).clone();
            let answer = handler(&seen);
            lock(&state.seen).push(seen);
            if !answer.delay.is_zero() {
                tokio::time::sleep(answer.delay).await;
            }
            let mut response = hyper::Response::builder().status(answer.status);
            for (name, value) in &answer.headers {
                response = response.header(name, value);
            }
            Ok::<_, std::convert::Infallible>(
                response.body(Full::new(Bytes::from(answer.body))).unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// One agent as the [`cmdb`] handler writes it.
fn agent_json(a: &(String, String, String, String)) -> serde_json::Value {
    serde_json::json!({"agent_id": a.0, "hostname": a.1, "ip": a.2, "wazuh_key": a.3})
}

/// A CMDB over `agents` (id, name, ip, key): `GET /api/agents/{id}` (404
/// when unknown), `GET /api/agents?ip={ip}` (every agent with that
/// address, possibly none), `GET /api/agents?offset=N&limit=M` (a page),
/// each as `{"data": [...]}`; `HEAD /` is 200; anything else 404. Ids and
/// addresses are indexed, so a benchmark's 100,000 agents answer as fast
/// as ten.
pub fn cmdb(agents: &[(&str, &str, &str, &str)]) -> impl Fn(&Seen) -> Answer + Send + Sync {
    let agents: Vec<(String, String, String, String)> = agents
        .iter()
        .map(|a| (a.0.into(), a.1.into(), a.2.into(), a.3.into()))
        .collect();
    let mut by_id = std::collections::HashMap::new();
    let mut by_ip: std::collections::HashMap<String, Vec<usize>> = std::collections::HashMap::new();
    for (i, a) in agents.iter().enumerate() {
        by_id.entry(a.0.clone()).or_insert(i);
        by_ip.entry(a.2.clone()).or_default().push(i);
    }
    move |seen: &Seen| {
        let data = |list: Vec<serde_json::Value>| {
            Answer::json(200, serde_json::json!({ "data": list }).to_string())
        };
        if seen.method == "HEAD" {
            return Answer::json(200, "");
        }
        if let Some(id) = seen.path().strip_prefix("/api/agents/") {
            return match by_id.get(id) {
                Some(&i) => data(vec![agent_json(&agents[i])]),
                None => Answer::json(404, r#"{"error":"no such agent"}"#),
            };
        }
        if seen.path() != "/api/agents" {
            return Answer::json(404, r#"{"error":"no such endpoint"}"#);
        }
        if let Some(ip) = seen.param("ip") {
            let found = by_ip.get(&ip).map(Vec::as_slice).unwrap_or_default();
            return data(found.iter().map(|&i| agent_json(&agents[i])).collect());
        }
        let number = |name: &str, default: usize| {
            seen.param(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        let (offset, limit) = (number("offset", 0), number("limit", agents.len()));
        data(
            agents
                .iter()
                .skip(offset)
                .take(limit)
                .map(agent_json)
                .collect(),
        )
    }
}

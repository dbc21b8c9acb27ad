//! A stand-in for a Wazuh manager's REST API, for keygate's tests and
//! benchmarks. It is not Wazuh: it was written from the public API
//! specification, `api/api/spec/spec.yaml` in the wazuh/wazuh repository,
//! and from Wazuh's own API code where the specification is silent (the
//! rate limit of `api.yaml`'s `access.max_request_per_minute`).
//!
//! A real Wazuh manager cannot be installed on the machines these tests run
//! on, so this is a small HTTPS server that implements exactly the endpoints
//! `keygate sync` uses, as that specification describes them:
//! `POST /security/user/authenticate` (basic auth → JWT),
//! `GET /agents` (paging with `offset`/`limit`, `agents_list`, `select`,
//! `q=id!=000` as the one filter, failed items with code 1701), `GET /agents/{id}/key` (base64 of the
//! client.keys line), `POST /agents/insert` (the key and id rules, and the
//! `force` rules with the specification's defaults: enabled, 1h
//! disconnected, 1h after registration) and `DELETE /agents` (`older_than`
//! defaulting to 7d; agent `000` refused). Agent `000`, the manager, is
//! always there. Unknown query parameters are refused with 400, as the real
//! API does.
//!
//! Test switches: answer the next N requests with HTTP 429; a per-window
//! rate limit like the API's (`set_rate_limit`: every call but
//! authentication counted, 429 beyond it); a 308 redirect of a path to
//! another host; a delay before each write is answered (so overlapping
//! writes show); expire every token (the next call gets 401); counters of
//! requests and writes, and the timeline of writes.
//! What it does not model: groups, agent status and keep-alives (every
//! agent counts as connected and registered at insert time), RBAC.
//!
//! [`inventory`] is a second stand-in, for the `type = "http"` backend: an
//! HTTPS inventory (CMDB) whose answers each test decides.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod gate;
mod handlers;
pub mod inventory;
mod server;
mod writes;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

pub use gate::{RateLimit, Write, WriteKind};

/// A registered agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    /// The name.
    pub name: String,
    /// The registered address (`registerIP`).
    pub ip: String,
    /// The key.
    pub key: String,
    /// When it was registered (for `after_registration_time`, `older_than`).
    pub registered: Instant,
}

/// The stand-in's state, shared with the test.
#[derive(Debug, Default)]
pub struct State {
    /// Agents by id, `000` excluded (it is answered implicitly).
    pub agents: BTreeMap<String, Agent>,
    /// Tokens that are valid now, with how many calls each has made.
    pub tokens: Vec<(String, usize)>,
    /// Calls a token is good for before it expires (`None`: no limit), a
    /// stand-in for the 900 s lifetime.
    pub token_budget: Option<usize>,
    /// Requests still to be answered with HTTP 429.
    pub fail_429: usize,
    /// How many 429 answers were given.
    pub served_429: usize,
    /// Every request, as `METHOD /path?query`.
    pub log: Vec<String>,
    /// Successful writes (inserts and deleted agents).
    pub writes: usize,
    /// Successful logins.
    pub logins: usize,
    /// The API's rate limit, when switched on.
    pub rate_limit: Option<RateLimit>,
    /// Paths answered with a 308 to the given location.
    pub redirects: Vec<(String, String)>,
    /// Every write, in order of arrival, with when it was answered.
    pub timeline: Vec<Write>,
    /// How long each write waits before its answer leaves.
    pub write_delay: Duration,
    /// Writes naming exactly these ids wait this long instead.
    pub slow_writes: Vec<(String, Duration)>,
    window: Option<(Instant, usize)>,
    events: u64,
    user: String,
    password: String,
    serial: u64,
}

/// A running stand-in; stopped when dropped.
pub struct StandIn {
    server: server::TlsServer,
    state: Arc<Mutex<State>>,
}

impl StandIn {
    /// Starts on a free port of 127.0.0.1 with one API user.
    pub fn start(user: &str, password: &str) -> StandIn {
        let state = Arc::new(Mutex::new(State {
            user: user.to_owned(),
            password: password.to_owned(),
            ..State::default()
        }));
        let shared = state.clone();
        let server =
            server::TlsServer::start(move |acceptor, tcp| serve(acceptor, tcp, shared.clone()));
        StandIn { server, state }
    }

    /// The base URL, `https://localhost:PORT`.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_pem(&self) -> &str {
        self.server.ca_pem()
    }

    /// Writes the CA certificate to `path`.
    pub fn write_ca(&self, path: &Path) {
        std::fs::write(path, self.server.ca_pem()).unwrap();
    }

    /// The state, locked.
    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers an agent directly, as if it had just enrolled (so the
    /// API's default `force` and `older_than` rules would protect it).
    pub fn put(&self, id: &str, name: &str, ip: &str, key: &str) {
        let registered = Instant::now();
        self.state().agents.insert(
            id.to_owned(),
            Agent {
                name: name.into(),
                ip: ip.into(),
                key: key.into(),
                registered,
            },
        );
    }

    /// The registry now: id → (name, ip, key).
    pub fn agents(&self) -> BTreeMap<String, (String, String, String)> {
        self.state()
            .agents
            .iter()
            .map(|(id, a)| (id.clone(), (a.name.clone(), a.ip.clone(), a.key.clone())))
            .collect()
    }

    /// Answers the next `n` requests with HTTP 429.
    pub fn fail_next_with_429(&self, n: usize) {
        self.state().fail_429 = n;
    }

    /// Switches the API's rate limit on: at most `requests` calls (all but
    /// authentication) per `window`, HTTP 429 beyond.
    pub fn set_rate_limit(&self, requests: usize, window: Duration) {
        let mut s = self.state();
        s.rate_limit = Some(RateLimit { requests, window });
        s.window = None;
    }

    /// Answers every request for `path` with a 308 to `location`.
    pub fn redirect(&self, path: &str, location: &str) {
        self.state()
            .redirects
            .push((path.to_owned(), location.to_owned()));
    }

    /// Delays the answer of every write by `delay`.
    pub fn delay_writes(&self, delay: Duration) {
        self.state().write_delay = delay;
    }

    /// Delays the answer of the writes naming exactly `ids` (the insert's
    /// id, or a delete's `agents_list`) by `delay`.
    pub fn delay_write_of(&self, ids: &str, delay: Duration) {
        self.state().slow_writes.push((ids.to_owned(), delay));
    }

    /// The registry as client.keys text (`ID NAME IP KEY` lines).
    pub fn client_keys(&self) -> String {
        self.state()
            .agents
            .iter()
            .map(|(id, a)| format!("{id} {} {} {}\n", a.name, a.ip, a.key))
            .collect()
    }

    /// Calls made, authentication excepted.
    pub fn api_calls(&self) -> usize {
        self.state()
            .log
            .iter()
            .filter(|l| !l.starts_with("POST /security/"))
            .count()
    }

    /// Revokes every token, as expiry after 900 s would.
    pub fn expire_tokens(&self) {
        self.state().tokens.clear();
    }

    /// Makes every token expire after `calls` authenticated calls.
    pub fn expire_tokens_after(&self, calls: usize) {
        self.state().token_budget = Some(calls);
    }
}

/// Serves one connection: TLS, then HTTP/1.1 with the API's handlers.
async fn serve(acceptor: TlsAcceptor, tcp: tokio::net::TcpStream, state: Arc<Mutex<State>>) {
    let Ok(tls) = acceptor.accept(tcp).await else {
        return;
    };
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, std::convert::Infallible>(handlers::handle(&state, request).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(tls), service)
        .await;
}

/// A CA and a server certificate for `localhost` and 127.0.0.1 signed by it.
pub(crate) fn certificates() -> (String, Arc<rustls::ServerConfig>) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "keygate test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    (ca.pem(), Arc::new(config))
}

type Response = hyper::Response<Full<Bytes>>;

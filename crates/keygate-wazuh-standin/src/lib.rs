//! A stand-in for a Wazuh manager's REST API, for keygate's tests and
//! benchmarks.
//!
//! A real Wazuh manager cannot be installed on the machines these tests run
//! on, so this is a small HTTPS server that implements exactly the endpoints
//! `keygate sync` uses, as the public API specification
//! (`api/api/spec/spec.yaml` in wazuh/wazuh) describes them:
//! `POST /security/user/authenticate` (basic auth → JWT),
//! `GET /agents` (paging with `offset`/`limit`, `agents_list`, `select`,
//! failed items with code 1701), `GET /agents/{id}/key` (base64 of the
//! client.keys line), `POST /agents/insert` (the key and id rules, and the
//! `force` rules with the specification's defaults: enabled, 1h
//! disconnected, 1h after registration) and `DELETE /agents` (`older_than`
//! defaulting to 7d; agent `000` refused). Agent `000`, the manager, is
//! always there. Unknown query parameters are refused with 400, as the real
//! API does.
//!
//! Test switches: answer the next N requests with HTTP 429, expire every
//! token (the next call gets 401), and counters of requests and writes.
//! What it does not model: groups, agent status and keep-alives (every
//! agent counts as connected and registered at insert time), RBAC.
//!
//! [`inventory`] is a second stand-in, for the `type = "http"` backend: an
//! HTTPS inventory (CMDB) whose answers each test decides.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod handlers;
pub mod inventory;
mod server;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio_rustls::rustls;
use tokio_rustls::TlsAcceptor;

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

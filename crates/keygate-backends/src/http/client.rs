//! The HTTP side: one reqwest client (rustls, pooled keep-alive
//! connections) per backend, the credentials, the redirect policy, and how
//! each outcome (status, transport failure, oversized body) becomes an
//! answer or a [`BackendError`]. Messages name the status or the failure,
//! never the URL (reqwest's own texts carry it: they are not used).

use std::path::Path;
use std::time::Duration;

use keygate_core::BackendError;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, StatusCode, Url};
use zeroize::Zeroizing;

use crate::endpoint;
use crate::error::{BuildError, FileError};

use super::config::HttpConfig;

/// Same-host redirects followed at most.
const MAX_REDIRECTS: usize = 5;
/// Longest silence while reading a response (a stalled listing page ends
/// there; a lookup ends at the backend's `timeout` first).
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest response to a lookup: one agent is a few hundred bytes.
pub const MAX_LOOKUP_BODY: usize = 1 << 20;
/// Largest page of a listing.
pub const MAX_PAGE_BODY: usize = 64 << 20;

/// How requests prove who keygate is.
#[derive(Clone)]
pub enum Auth {
    /// No credentials.
    None,
    /// `Authorization: Bearer <token>` (marked sensitive: never in
    /// reqwest's or hyper's debug output).
    Bearer(HeaderValue),
    /// HTTP basic authentication.
    Basic(String, Zeroizing<String>),
}

impl Auth {
    /// The credentials the config names, read once.
    pub fn read(config: &HttpConfig) -> Result<Self, BuildError> {
        if let Some(path) = &config.token_file {
            let token = crate::secret::read_password_file("token_file", path)?;
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.as_str())).map_err(|_| {
                    BuildError::invalid(
                        "token_file",
                        format!(
                            "{} holds characters an HTTP header cannot carry",
                            path.display()
                        ),
                    )
                })?;
            value.set_sensitive(true);
            return Ok(Self::Bearer(value));
        }
        if let Some(user) = &config.basic_user {
            let password = config.hosts.password().read()?.ok_or_else(|| {
                BuildError::invalid("basic_user", "needs a password (password_file)")
            })?;
            return Ok(Self::Basic(user.clone(), password));
        }
        Ok(Self::None)
    }

    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::None => request,
            Self::Bearer(value) => request.header(AUTHORIZATION, value.clone()),
            Self::Basic(user, password) => request.basic_auth(user, Some(password.as_str())),
        }
    }
}

/// Follows a redirect only to the same scheme, host and port, at most
/// [`MAX_REDIRECTS`] times; any other is not followed and its 3xx answer
/// becomes an error. (reqwest would follow one to another host, and a
/// redirected lookup must never be answered by a server nobody configured.)
fn redirect_policy() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt
            .previous()
            .first()
            .is_some_and(|first| first.origin() == attempt.url().origin());
        if !same_origin || attempt.previous().len() > MAX_REDIRECTS {
            attempt.stop()
        } else {
            attempt.follow()
        }
    })
}

/// Reads `ca_file`: its PEM certificates, the only roots trusted then.
fn roots(path: &Path) -> Result<Vec<reqwest::Certificate>, BuildError> {
    let pem = std::fs::read(path).map_err(|e| FileError::new("ca_file", path, e))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
        BuildError::invalid(
            "ca_file",
            format!("{} is not a PEM certificate file", path.display()),
        )
    })?;
    if certs.is_empty() {
        return Err(BuildError::invalid(
            "ca_file",
            format!("{} holds no certificate", path.display()),
        ));
    }
    Ok(certs)
}

/// The backend's client: TLS verified against the system's roots or only
/// `ca_file`'s (never unverified unless `insecure`), keep-alive
/// connections pooled per host, our redirect policy.
pub fn client(config: &HttpConfig) -> Result<reqwest::Client, BuildError> {
    let connect_timeout = config
        .hosts
        .connect_timeout(super::config::DEFAULT_CONNECT_TIMEOUT);
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .connect_timeout(connect_timeout)
        .read_timeout(READ_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .redirect(redirect_policy())
        .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = &config.ca_file {
        builder = builder.tls_built_in_root_certs(false);
        for cert in roots(path)? {
            builder = builder.add_root_certificate(cert);
        }
    }
    if config.insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| {
        BuildError::invalid(
            "url",
            format!("cannot build the HTTPS client: {}", reason(&e)),
        )
    })
}

/// One configured host: its base URL and the shared client.
pub struct Host {
    /// `https://host:port[/prefix]`, without a trailing `/`.
    pub base: String,
    /// The base redacted, for `keygate backends`.
    label: String,
    client: reqwest::Client,
    auth: Auth,
    /// How long a probe of this host may take.
    probe_timeout: Duration,
}

impl Host {
    /// A host at `base`.
    pub fn new(base: &str, client: reqwest::Client, auth: Auth, probe_timeout: Duration) -> Self {
        Self {
            base: base.trim_end_matches('/').to_owned(),
            label: endpoint::redact_url(base),
            client,
            auth,
            probe_timeout,
        }
    }

    /// Sends a GET to `url` and returns the status and the body (at most
    /// `limit` bytes), or the failure as an outage.
    pub async fn get(&self, url: Url, limit: usize) -> Result<(StatusCode, Vec<u8>), BackendError> {
        let request = self
            .auth
            .apply(self.client.request(Method::GET, url))
            .header(reqwest::header::ACCEPT, "application/json");
        let mut response = request.send().await.map_err(|e| transport(&e))?;
        let status = response.status();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| transport(&e))? {
            if body.len() + chunk.len() > limit {
                return Err(BackendError::Internal(format!(
                    "the inventory's response is larger than {} KiB",
                    limit / 1024
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    /// A HEAD of the base URL: any answer but a server error or a refused
    /// login means the host is there.
    pub async fn head(&self) -> Result<(), BackendError> {
        let url = Url::parse(&format!("{}/", self.base))
            .map_err(|_| BackendError::Internal("the base URL is not valid".into()))?;
        let request = self.auth.apply(self.client.request(Method::HEAD, url));
        let sent = tokio::time::timeout(self.probe_timeout, request.send())
            .await
            .map_err(|_| BackendError::Timeout(self.probe_timeout))?;
        let status = sent.map_err(|e| transport(&e))?.status();
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Err(refused(status)),
            s if s.is_server_error() => Err(server_error(s)),
            _ => Ok(()),
        }
    }
}

impl endpoint::Host for Host {
    async fn probe(&self) -> bool {
        self.head().await.is_ok()
    }

    fn label(&self) -> &str {
        &self.label
    }
}

fn refused(status: StatusCode) -> BackendError {
    BackendError::LoginRefused(format!(
        "the inventory refused keygate's credentials (HTTP {})",
        status.as_u16()
    ))
}

fn server_error(status: StatusCode) -> BackendError {
    BackendError::Unavailable(format!("the inventory answered HTTP {}", status.as_u16()))
}

/// What a status that is neither success nor not-found means: a server
/// error or 429 is an outage (the breaker counts it, a stale answer may be
/// served), a refused login or any other 4xx a misconfiguration, a
/// redirect not followed a misconfiguration too.
pub fn unexpected(status: StatusCode) -> BackendError {
    match status {
        s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => server_error(s),
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => refused(status),
        s if s.is_redirection() => BackendError::Internal(format!(
            "the inventory answered a redirect (HTTP {}) to another host, or too many: \
             keygate follows redirects only on the same host (point the URL at the final one)",
            s.as_u16()
        )),
        s => BackendError::Internal(format!("the inventory answered HTTP {}", s.as_u16())),
    }
}

/// A transport failure as an outage, described by its causes without the
/// URL.
fn transport(e: &reqwest::Error) -> BackendError {
    BackendError::Unavailable(reason(e))
}

/// `cannot connect: ...`, `timed out`, with the causes reqwest gives,
/// never its own text (which holds the URL).
fn reason(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "the inventory did not answer in time".to_owned()
    } else if e.is_connect() {
        "cannot connect to the inventory".to_owned()
    } else if e.is_body() || e.is_decode() {
        "reading the inventory's response failed".to_owned()
    } else {
        "the request to the inventory failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !part.contains("://") && !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

//! Every HTTP detail of talking to the Wazuh API, in one place: the rustls
//! client (verification always on unless `insecure`), login with basic auth
//! for a JWT, `Authorization: Bearer`, one re-login when the token expires
//! (HTTP 401), bounded retries with backoff on HTTP 429 and 5xx (and on
//! connection failures), a semaphore bounding requests in flight, and the
//! pace ([`Pace`]) every call but authentication waits for. Redirects are
//! never followed: a 3xx is an [`Error::Redirect`] naming the status and
//! the `Location`'s host, and nothing is sent there.
//!
//! Messages never carry the password or the token; URLs are built from the
//! configured base and percent-encoded path segments and query pairs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::{header, Method, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{Mutex, RwLock, Semaphore};
use zeroize::Zeroizing;

use crate::api::{ApiError, Envelope, Token};
use crate::pace::Pace;
use crate::{Error, Settings};

/// The transport: one per run.
pub(crate) struct Http {
    client: reqwest::Client,
    base: Url,
    user: String,
    password: Zeroizing<String>,
    token: RwLock<Option<Arc<Zeroizing<String>>>>,
    login: Mutex<()>,
    permits: Semaphore,
    pace: Pace,
    /// Calls sent, authentication excepted (retries included).
    calls: AtomicU64,
    /// HTTP 429 answers met.
    throttled: AtomicU64,
    settings: Settings,
}

/// A request: method, path segments under the base URL, query pairs, body.
pub(crate) struct Call<'a, B: Serialize> {
    pub method: Method,
    pub path: &'a [&'a str],
    pub query: &'a [(&'a str, &'a str)],
    pub body: Option<&'a B>,
}

impl Http {
    pub(crate) fn new(settings: Settings) -> Result<Self, Error> {
        let base = Url::parse(&settings.url)
            .map_err(|e| Error::Setup(format!("url is not a URL: {e}")))?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
            .pool_max_idle_per_host(settings.concurrency)
            .user_agent(concat!("keygate/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Setup(format!(
                    "cannot read ca_file {}: {}",
                    path.display(),
                    e.kind()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|_| {
                Error::Setup(format!(
                    "ca_file {} holds no PEM certificate",
                    path.display()
                ))
            })?;
            if certs.is_empty() {
                return Err(Error::Setup(format!(
                    "ca_file {} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if settings.insecure {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| Error::Setup(format!("cannot build the HTTPS client: {}", chain(&e))))?;
        Ok(Self {
            client,
            base,
            user: settings.user.clone(),
            password: settings.password.clone(),
            token: RwLock::new(None),
            login: Mutex::new(()),
            permits: Semaphore::new(settings.concurrency.max(1)),
            pace: Pace::new(settings.pace()),
            calls: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            settings,
        })
    }

    /// The time between two calls.
    pub(crate) fn pace(&self) -> Duration {
        self.settings.pace()
    }

    /// Calls sent so far (authentication excepted) and HTTP 429s met.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.throttled.load(Ordering::Relaxed),
        )
    }

    fn url(&self, path: &[&str], query: &[(&str, &str)]) -> Result<Url, Error> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| Error::Setup("url cannot have a path".into()))?
            .pop_if_empty()
            .extend(path);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        Ok(url)
    }

    /// Logs in (again) unless another task already replaced `stale`.
    pub(crate) async fn login(
        &self,
        stale: Option<&Arc<Zeroizing<String>>>,
    ) -> Result<Arc<Zeroizing<String>>, Error> {
        let _one_at_a_time = self.login.lock().await;
        let current = self.token.read().await.clone();
        if let Some(current) = current {
            if stale.is_none_or(|s| !Arc::ptr_eq(s, &current)) {
                return Ok(current);
            }
        }
        let url = self.url(&["security", "user", "authenticate"], &[])?;
        let mut attempt = 0;
        let response = loop {
            attempt += 1;
            let sent = self
                .client
                .post(url.clone())
                .basic_auth(&self.user, Some(self.password.as_str()))
                .send()
                .await;
            match self
                .judge(sent, attempt, "POST /security/user/authenticate")
                .await?
            {
                Some(r) => break r,
                None => continue,
            }
        };
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            let body: ApiError = response.json().await.unwrap_or_default();
            return Err(Error::Auth {
                user: self.user.clone(),
                detail: format!("HTTP {}{}", status.as_u16(), detail_of(&body)),
            });
        }
        let token: Envelope<Token> = decode(response, "POST /security/user/authenticate").await?;
        let token = Arc::new(Zeroizing::new(token.data.token));
        *self.token.write().await = Some(token.clone());
        tracing::debug!(user = %self.user, "Logged in to the Wazuh API.");
        Ok(token)
    }

    /// Sends a call and decodes a 2xx answer into `T`.
    pub(crate) async fn call<T: DeserializeOwned, B: Serialize>(
        &self,
        call: Call<'_, B>,
    ) -> Result<T, Error> {
        let what = format!("{} /{}", call.method, call.path.join("/"));
        let url = self.url(call.path, call.query)?;
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Error::Setup("client closed".into()))?;
        // (The read guard must be gone before `login` takes the write lock.)
        let current = self.token.read().await.clone();
        let mut token = match current {
            Some(t) => t,
            None => self.login(None).await?,
        };
        let mut relogins = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            self.pace.wait().await;
            self.calls.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .client
                .request(call.method.clone(), url.clone())
                .header(header::AUTHORIZATION, format!("Bearer {}", token.as_str()));
            if let Some(body) = call.body {
                request = request.json(body);
            }
            let Some(response) = self.judge(request.send().await, attempt, &what).await? else {
                continue;
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && relogins < self.settings.retry.attempts {
                // The token expired (15 minutes by default) or was revoked;
                // other calls in flight may have renewed it already.
                tracing::debug!(call = %what, "Token refused; logging in again.");
                relogins += 1;
                token = self.login(Some(&token)).await?;
                continue;
            }
            if !status.is_success() {
                let body: ApiError = response.json().await.unwrap_or_default();
                return Err(Error::Api {
                    call: what,
                    status: status.as_u16(),
                    detail: detail_of(&body),
                    code: body.error,
                });
            }
            return decode(response, &what).await;
        }
    }

    /// Decides what to do with a response: `Ok(Some)` to use it,
    /// `Ok(None)` to try again (after the backoff, already slept), `Err`
    /// when retries are exhausted or the failure cannot be retried.
    async fn judge(
        &self,
        sent: Result<reqwest::Response, reqwest::Error>,
        attempt: u32,
        what: &str,
    ) -> Result<Option<reqwest::Response>, Error> {
        let retry = &self.settings.retry;
        let (reason, wait, backoff_max) = match sent {
            Ok(r) if r.status().is_redirection() => {
                return Err(Error::Redirect {
                    call: what.to_owned(),
                    status: r.status().as_u16(),
                    location: location_host(&r),
                })
            }
            Ok(r)
                if r.status() == StatusCode::TOO_MANY_REQUESTS || r.status().is_server_error() =>
            {
                let throttled = r.status() == StatusCode::TOO_MANY_REQUESTS;
                let (attempts, max) = if throttled {
                    self.throttled.fetch_add(1, Ordering::Relaxed);
                    (retry.throttled_attempts, retry.throttled_max)
                } else {
                    (retry.attempts, retry.max)
                };
                let after = r
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let status = r.status().as_u16();
                if attempt >= attempts {
                    let body: ApiError = r.json().await.unwrap_or_default();
                    return Err(Error::Api {
                        call: what.to_owned(),
                        status,
                        detail: format!("{} (after {attempt} attempts)", detail_of(&body)),
                        code: body.error,
                    });
                }
                (format!("HTTP {status}"), after, max)
            }
            Ok(r) => return Ok(Some(r)),
            Err(e) if e.is_connect() && attempt < retry.attempts => (chain(&e), None, retry.max),
            Err(e) => {
                return Err(Error::Transport {
                    call: what.to_owned(),
                    reason: chain(&e),
                })
            }
        };
        let backoff = retry
            .base
            .saturating_mul(1 << (attempt - 1).min(16))
            .min(backoff_max);
        let wait = wait.map_or(backoff, |w| w.min(backoff_max));
        tracing::debug!(call = %what, attempt, %reason, wait_ms = wait.as_millis() as u64, "Retrying.");
        tokio::time::sleep(wait).await;
        Ok(None)
    }
}

/// The host and port a redirect points to, never its path or query.
fn location_host(response: &reqwest::Response) -> String {
    let Some(location) = response
        .headers()
        .get(header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return "(none)".into();
    };
    match response.url().join(location) {
        Ok(url) => match (url.host_str(), url.port_or_known_default()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            _ => "(no host)".into(),
        },
        Err(_) => "(not a URL)".into(),
    }
}

async fn decode<T: DeserializeOwned>(response: reqwest::Response, what: &str) -> Result<T, Error> {
    let bytes = response.bytes().await.map_err(|e| Error::Transport {
        call: what.to_owned(),
        reason: chain(&e),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Decode {
        call: what.to_owned(),
        reason: e.to_string(),
    })
}

fn detail_of(body: &ApiError) -> String {
    match (body.title.is_empty(), body.detail.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(": {}", body.title),
        (true, false) => format!(": {}", body.detail),
        (false, false) => format!(": {}: {}", body.title, body.detail),
    }
}

/// An error and its causes, without the URL (which could carry a query
/// with ids, harmless, but never a secret either way).
fn chain(e: &reqwest::Error) -> String {
    let mut text = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.ends_with(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redirect(location: Option<&str>) -> reqwest::Response {
        use reqwest::ResponseBuilderExt;
        // The answer of a call to the API's /agents/insert.
        let api = Url::parse("https://manager.example:55000/agents/insert").unwrap();
        let mut answer = http::Response::builder().status(308).url(api);
        if let Some(location) = location {
            answer = answer.header(header::LOCATION, location);
        }
        reqwest::Response::from(answer.body("").unwrap())
    }

    /// A redirect is shown by the host and port it points to (the scheme's
    /// own port when it has one), never its path or query.
    #[test]
    fn a_redirect_shows_only_where_it_points() {
        let shown = |location| location_host(&redirect(location));
        assert_eq!(
            shown(Some("https://evil.example/x?token=1")),
            "evil.example:443"
        );
        assert_eq!(
            shown(Some("https://evil.example:8443/x")),
            "evil.example:8443"
        );
        assert_eq!(shown(Some("/elsewhere")), "manager.example:55000");
        assert_eq!(shown(Some("gopher2://evil.example/x")), "evil.example");
        assert_eq!(shown(Some("data:text/plain,x")), "(no host)");
        assert_eq!(shown(None), "(none)");
    }

    /// The API's error title and detail, as error messages append them.
    #[test]
    fn an_api_error_is_shown_by_its_title_and_detail() {
        let body = |title: &str, detail: &str| ApiError {
            title: title.into(),
            detail: detail.into(),
            error: None,
        };
        assert_eq!(detail_of(&body("", "")), "");
        assert_eq!(detail_of(&body("Forbidden", "")), ": Forbidden");
        assert_eq!(detail_of(&body("", "no such agent")), ": no such agent");
        assert_eq!(
            detail_of(&body("Bad Request", "bad key")),
            ": Bad Request: bad key"
        );
    }
}

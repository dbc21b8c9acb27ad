//! `type = "http"`: an inventory or CMDB that answers JSON over HTTPS, asked
//! for one agent by id (`url_by_id`) or by address (`url_by_ip`), and
//! optionally for every agent (`url_all`, paged with `{offset}`/`{limit}`).
//!
//! Values are percent-encoded into the templates (every byte but letters,
//! digits and `-._~`), so no value can change the path or the query.
//! Requests go through one reqwest client per backend (rustls; verified
//! against the system's roots or only `ca_file`'s; keep-alive connections
//! pooled per host), with the token (`Authorization: Bearer`) or basic
//! credentials read once at build. Redirects are followed only on the same
//! scheme, host and port. Several hosts (`urls`) fail over through the
//! shared [`Hosts`](crate::endpoint::Hosts).
//!
//! The answer: a status in `not_found_status` (default 404) or an empty
//! result list is not found; a result list of more than one agent is
//! ambiguous (5); a server error, 429, a refused connection, a TLS failure
//! or a stalled read is an outage (2: the next host, the breaker, stale
//! answers); a refused login, another 4xx, a redirect elsewhere, a body
//! that is not JSON or too large is a misconfiguration (6); a record that
//! fails validation, a field of the wrong type or a pointer that leads
//! nowhere is a bad record (5).

mod client;
pub mod config;
mod fields;
mod list;
mod record;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use keygate_core::{AgentRecord, BackendError, KeyBackend, ListStream, Query};

use crate::endpoint::Hosts;
use crate::{BackendSpec, BuildError, Problems};

pub use config::{encode, fill, HttpConfig, HttpFieldDefaults, HttpFields};

use client::{Auth, Host};
use record::Pointers;

#[async_trait]
impl BackendSpec for HttpConfig {
    const TYPE: &'static str = "http";

    fn resolve_paths(&mut self, base: &Path) {
        config::resolve_paths(self, base);
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        config::validate(self, problems);
    }

    fn has_inline_password(&self) -> bool {
        config::inline_password(self)
    }

    fn warnings(&self, warnings: &mut Problems<'_>) {
        if self.insecure {
            warnings.push("insecure", INSECURE_WARNING);
        }
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BuildError> {
        let auth = Auth::read(self)?;
        let client = client::client(self)?;
        let probe_timeout = self
            .hosts
            .connect_timeout(config::DEFAULT_CONNECT_TIMEOUT)
            .saturating_mul(2);
        let hosts = self.host_list().build(name, |_key, url, _password| {
            Ok(Host::new(url, client.clone(), auth.clone(), probe_timeout))
        })?;
        if self.insecure {
            tracing::warn!(backend = %name, "{INSECURE_WARNING}");
        }
        Ok(Arc::new(HttpBackend {
            name: name.to_owned(),
            by_id: self.path_of(&self.url_by_id).to_owned(),
            by_ip: self.path_of(&self.url_by_ip).to_owned(),
            all: self.url_all.as_deref().map(|t| self.path_of(t).to_owned()),
            page_size: self.page_size,
            not_found: self.not_found_status.clone(),
            pointers: Pointers::new(&self.fields),
            total: self.fields.total.clone(),
            hosts,
        }))
    }
}

/// What `insecure = true` means, said at every start and by `keygate check`.
const INSECURE_WARNING: &str = "insecure = true: the inventory's TLS certificate is NOT \
     verified; anyone on the network path can impersonate it (answer any key) and read \
     keygate's credentials. Set ca_file instead.";

/// The http backend.
pub struct HttpBackend {
    name: String,
    /// The templates' parts after the host.
    by_id: String,
    by_ip: String,
    all: Option<String>,
    page_size: usize,
    not_found: Vec<u16>,
    pointers: Pointers,
    /// `[backend.fields] total`: where a page of `url_all` says how many
    /// agents the inventory has.
    total: Option<String>,
    hosts: Hosts<Host>,
}

impl HttpBackend {
    /// `template` on `host` with `values` filled in.
    fn url(
        host: &Host,
        template: &str,
        values: &[(&str, &str)],
    ) -> Result<reqwest::Url, BackendError> {
        fill(&host.base, template, values).ok_or_else(|| {
            BackendError::Internal("the URL template does not give a valid URL".into())
        })
    }

    /// Answers `query` from one host.
    async fn lookup_on(
        &self,
        host: &Host,
        query: &Query,
    ) -> Result<Option<AgentRecord>, BackendError> {
        let value = query.value();
        let url = match query {
            Query::Id(_) => Self::url(host, &self.by_id, &[("id", &value)])?,
            Query::Ip(_) => Self::url(host, &self.by_ip, &[("ip", &value)])?,
        };
        let (status, body) = host.get(url, client::MAX_LOOKUP_BODY).await?;
        if self.not_found.contains(&status.as_u16()) {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(client::unexpected(status));
        }
        let doc = record::parse(&body)?;
        self.pointers.lookup(&doc)
    }
}

#[async_trait]
impl KeyBackend for HttpBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        self.hosts.run(|host| self.lookup_on(host, query)).await
    }

    /// A HEAD of the active host's base URL (then the following hosts'):
    /// any answer but a server error or a refused login is healthy.
    async fn health(&self) -> Result<(), BackendError> {
        self.hosts.run(Host::head).await
    }

    fn current_host(&self) -> Option<String> {
        self.hosts.current()
    }

    /// The pages of `url_all` ([`list`]); without it, an error saying so.
    fn list(&self) -> ListStream<'_> {
        self.list_all()
    }
}

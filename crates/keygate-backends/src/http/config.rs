//! `[[backend]] type = "http"`: its keys, their validation, and the URL
//! templates (`url_by_id`, `url_by_ip`, `url_all`) with the encoding of
//! the values put into them.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use reqwest::Url;

use crate::endpoint::{has_inline_password, redact_url, HostList};
use crate::secret::PASSWORD_KEYS;
use crate::Problems;

use super::record::split_list;

pub use super::fields::{HttpFieldDefaults, HttpFields};

crate::endpoint::network_config! {
    /// `[[backend]] type = "http"`: an inventory or CMDB answering JSON over
    /// HTTPS. Either the templates are absolute URLs (`url_by_id =
    /// "https://cmdb/api/agents/{id}"`, one host) or `url`/`urls` name the
    /// hosts (`https://cmdb-a.example.org`) and the templates are paths
    /// under each (`/api/agents/{id}`), tried in order with failover;
    /// `connect_timeout` defaults to `"2s"`; the password is `basic_user`'s.
    #[derive(Clone)]
    pub struct HttpConfig via RawHttpConfig("RawHttpConfig") {
        /// URL of one agent by id, with `{id}` where the percent-encoded id
        /// goes: absolute, or a path under `url`/`urls` when they are set.
        pub url_by_id: String,
        /// URL of the agents with an address, with `{ip}` where the
        /// percent-encoded address goes: absolute (same host as
        /// `url_by_id`), or a path under `url`/`urls`.
        pub url_by_ip: String,
        /// URL of every agent, for listing (`keygate list`, `export`,
        /// `verify`, `sync`), with `{offset}` and `{limit}` when the
        /// inventory pages its answers; without it the backend cannot list
        /// (default none).
        #[serde(default)]
        pub url_all: Option<String>,
        /// Agents asked per page of `url_all` (its `{limit}`; default 500).
        #[serde(default = "default_page_size")]
        pub page_size: usize,
        /// File whose first line is a token sent as `Authorization: Bearer`
        /// (default none). Relative paths are resolved against the config
        /// file's directory.
        #[serde(default)]
        pub token_file: Option<PathBuf>,
        /// User for HTTP basic authentication, with the password from
        /// `password_file`, `password_env` or `password_credential`
        /// (default none).
        #[serde(default)]
        pub basic_user: Option<String>,
        /// PEM file of the CA certificate(s) that sign the servers'
        /// certificates; only these are trusted then (default: the
        /// system's CA store). Relative paths are resolved against the
        /// config file's directory.
        #[serde(default)]
        pub ca_file: Option<PathBuf>,
        /// Accept any server certificate (default false). Anyone on the
        /// path can then impersonate the inventory and read the token:
        /// keygate warns at every start and in `keygate check`.
        #[serde(default)]
        pub insecure: bool,
        /// HTTP statuses that mean "no such agent" (answer 4): 204 or
        /// 4xx (default `[404]`). An empty result list is not found too.
        #[serde(default = "default_not_found_status")]
        pub not_found_status: Vec<u16>,
        /// `[backend.fields]`: JSON pointers (RFC 6901) to each part of the
        /// record in the response (defaults `/id`, `/name`, `/ip`, `/key`).
        /// Pointers through an array index 0 (`/data/0/id`) make that
        /// array the result list.
        #[serde(default)]
        pub fields: HttpFields,
    }
}

/// The default `connect_timeout`.
pub(super) const DEFAULT_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
/// Largest `page_size`.
const MAX_PAGE_SIZE: usize = 10_000;

fn default_page_size() -> usize {
    500
}
fn default_not_found_status() -> Vec<u16> {
    vec![404]
}

/// Templates may carry a token in their query: shown redacted only.
impl fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |t: &str| {
            if t.contains("://") {
                redact_url(t)
            } else {
                redact_url(&format!("https://_{t}"))
                    .trim_start_matches("https://_")
                    .to_owned()
            }
        };
        f.debug_struct("HttpConfig")
            .field("hosts", &self.hosts)
            .field("url_by_id", &show(&self.url_by_id))
            .field("url_by_ip", &show(&self.url_by_ip))
            .field("url_all", &self.url_all.as_deref().map(show))
            .field("page_size", &self.page_size)
            .field("token_file", &self.token_file)
            .field("basic_user", &self.basic_user)
            .field("ca_file", &self.ca_file)
            .field("insecure", &self.insecure)
            .field("not_found_status", &self.not_found_status)
            .field("fields", &self.fields)
            .finish()
    }
}

/// The schemes keygate accepts.
const SCHEMES: &[&str] = &["https", "http"];

/// `https://host:port` and the rest (`/api/agents/{id}`) of an absolute
/// URL; `None` when `url` has no `scheme://`.
pub(super) fn split_origin(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = scheme.len() + 3 + end;
    Some((&url[..at], &url[at..]))
}

/// A value made safe for any part of a URL: every byte but the unreserved
/// ones (RFC 3986: letters, digits, `-._~`) is percent-encoded, so no
/// value can end a path segment, start a query or a fragment, or add a
/// parameter.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `template` (the part after a host's base URL) under `base`, with each
/// `{name}` replaced by its value, percent-encoded. `None` for a value
/// that is empty, `.` or `..` (a path segment of its own would vanish or
/// climb: keygate never has such a value, and never sends one) or a
/// result that is not a URL.
pub fn fill(base: &str, template: &str, values: &[(&str, &str)]) -> Option<Url> {
    if values
        .iter()
        .any(|(_, v)| v.is_empty() || *v == "." || *v == "..")
    {
        return None;
    }
    let mut text = format!("{}{template}", base.trim_end_matches('/'));
    for (name, value) in values {
        text = text.replace(&format!("{{{name}}}"), &encode(value));
    }
    Url::parse(&text).ok()
}

/// Whether `url`'s host is this machine (credentials may go there in
/// clear text).
fn loopback(url: &str) -> bool {
    Url::parse(url).ok().is_some_and(|u| {
        u.host_str().is_some_and(|h| {
            h.eq_ignore_ascii_case("localhost")
                || h.trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        })
    })
}

fn has_userinfo(url: &str) -> bool {
    split_origin(url).is_some_and(|(origin, _)| origin.contains('@'))
}

impl HttpConfig {
    /// Whether the hosts come from `url`/`urls` (the templates are paths).
    fn explicit_hosts(&self) -> bool {
        self.hosts.url.is_some() || !self.hosts.urls.is_empty()
    }

    /// The host list: `url`/`urls` as written, or the origin of an
    /// absolute `url_by_id`.
    pub fn host_list(&self) -> HostList {
        let mut hosts = self.hosts.clone();
        if !self.explicit_hosts() {
            hosts.url = Some(split_origin(&self.url_by_id).map_or_else(
                || "https://url-by-id.invalid".to_owned(),
                |(origin, _)| origin.to_owned(),
            ));
        }
        hosts
    }

    /// A template's part after the host: the template itself under
    /// `url`/`urls`, else what follows its origin.
    pub fn path_of<'a>(&self, template: &'a str) -> &'a str {
        if self.explicit_hosts() {
            template
        } else {
            split_origin(template).map_or(template, |(_, rest)| rest)
        }
    }

    /// The templates, with their keys and placeholders.
    fn templates(&self) -> Vec<(&'static str, &str, &'static [&'static str])> {
        let mut out = vec![
            ("url_by_id", self.url_by_id.as_str(), &["id"][..]),
            ("url_by_ip", self.url_by_ip.as_str(), &["ip"][..]),
        ];
        if let Some(all) = &self.url_all {
            out.push(("url_all", all.as_str(), &[][..]));
        }
        out
    }

    fn validate_template(
        &self,
        problems: &mut Problems<'_>,
        key: &str,
        template: &str,
        required: &[&str],
    ) {
        if template.trim().is_empty() {
            problems.push(key, "must not be empty");
            return;
        }
        let optional: &[&str] = if key == "url_all" {
            &["offset", "limit"]
        } else {
            &[]
        };
        let mut rest = template.to_owned();
        for name in required.iter().chain(optional) {
            let placeholder = format!("{{{name}}}");
            if required.contains(name) && !template.contains(&placeholder) {
                problems.push(key, format!("must contain {placeholder}"));
            }
            rest = rest.replace(&placeholder, "");
        }
        if rest.contains(['{', '}']) {
            let allowed: Vec<String> = required
                .iter()
                .chain(optional)
                .map(|n| format!("{{{n}}}"))
                .collect();
            problems.push(
                key,
                format!("only {} may appear in braces", allowed.join(" and ")),
            );
        }
        if key == "url_all" && template.contains("{offset}") != template.contains("{limit}") {
            problems.push(key, "use {offset} and {limit} together (or neither)");
        }
        let placed = match split_origin(template) {
            Some(_) if self.explicit_hosts() => Err(
                "must be a path such as /api/agents/{id} when url or urls is set \
                 (the URL is not shown: it may hold a secret)",
            ),
            Some((origin, _)) => {
                if origin.contains(['{', '}']) {
                    Err("a placeholder may only be in the path or the query")
                } else if has_userinfo(template) {
                    Err("must not hold a user or password: use basic_user and password_file")
                } else if !SCHEMES
                    .iter()
                    .any(|s| origin.starts_with(&format!("{s}://")))
                {
                    Err("must start with https:// or http://")
                } else if split_origin(&self.url_by_id).map(|(o, _)| o) != Some(origin) {
                    Err(
                        "must be on the same host as url_by_id (several hosts: set urls and \
                         make the templates paths)",
                    )
                } else {
                    Ok(())
                }
            }
            None if !self.explicit_hosts() => {
                Err("must be an absolute https:// URL, or a path with url or urls set")
            }
            None if !template.starts_with('/') => {
                Err("must be a path starting with / (under url or urls)")
            }
            None => Ok(()),
        };
        if let Err(message) = placed {
            problems.push(key, message);
            return;
        }
        let sample = [
            ("id", "001"),
            ("ip", "10.0.0.1"),
            ("offset", "0"),
            ("limit", "1"),
        ];
        if fill("https://h.invalid", self.path_of(template), &sample).is_none() {
            problems.push(key, "is not a valid URL once its placeholders are filled");
        }
    }

    fn validate_fields(&self, problems: &mut Problems<'_>) {
        let pointer = |p: &str| {
            (p.is_empty() || p.starts_with('/'))
                && p.split('~').skip(1).all(|s| s.starts_with(['0', '1']))
        };
        const POINTER: &str =
            "must be a JSON pointer (RFC 6901): empty, or /name/0/... with ~0 for ~ and ~1 for /";
        self.fields
            .parts
            .validate(problems, "fields", pointer, POINTER);
        match &self.fields.total {
            Some(p) if !pointer(p) => problems.push("fields.total", POINTER),
            Some(_) if self.url_all.is_none() => problems.push(
                "fields.total",
                "counts the agents of url_all's pages: set url_all too",
            ),
            _ => {}
        }
        let lists: Vec<Option<&str>> = self.fields.all().iter().map(|p| split_list(p).0).collect();
        for (part, list) in ["name", "ip", "key"].iter().zip(&lists[1..]) {
            if *list != lists[0] {
                let want = lists[0].map_or("no result list (no /0)".to_owned(), |l| {
                    format!("the same result list as fields.id ({l}/0)")
                });
                problems.push(&format!("fields.{part}"), format!("must go through {want}"));
            }
        }
        if self.url_all.is_some() && lists[0].is_none() {
            problems.push(
                "url_all",
                "needs [backend.fields] pointers through a result list (like /data/0/id) to \
                 find the agents in each page",
            );
        }
    }

    fn validate_auth(&self, problems: &mut Problems<'_>) {
        let password = self.hosts.password().is_set();
        if self.token_file.is_some() && self.basic_user.is_some() {
            problems.push(
                "basic_user",
                "set either token_file or basic_user, not both",
            );
        }
        if self
            .token_file
            .as_ref()
            .is_some_and(|p| p.as_os_str().is_empty())
        {
            problems.push("token_file", "must not be empty");
        }
        match &self.basic_user {
            Some(user)
                if user.is_empty() || user.contains(':') || user.contains(char::is_control) =>
            {
                problems.push(
                    "basic_user",
                    "must not be empty and must not hold ':' or control characters",
                )
            }
            Some(_) if !password => problems.push(
                "basic_user",
                format!("needs a password: set {PASSWORD_KEYS}"),
            ),
            None if password => problems.push(
                self.hosts.password().key(),
                "is basic_user's password: set basic_user too",
            ),
            _ => {}
        }
        let credentials = self.token_file.is_some() || self.basic_user.is_some();
        if credentials {
            let key = if self.token_file.is_some() {
                "token_file"
            } else {
                "basic_user"
            };
            let mut urls: Vec<String> = self
                .host_list()
                .entries()
                .into_iter()
                .map(|(_, u)| u.to_owned())
                .collect();
            urls.sort();
            urls.dedup();
            if urls
                .iter()
                .any(|u| u.starts_with("http://") && !loopback(u))
            {
                problems.push(
                    key,
                    "would be sent in clear text to an http:// URL on another machine: use https://",
                );
            }
        }
    }
}

/// Everything `validate` checks (see [`crate::BackendSpec::validate`]).
pub(super) fn validate(config: &HttpConfig, problems: &mut Problems<'_>) {
    config.host_list().validate(problems, SCHEMES, |url| {
        Url::parse(url).is_ok_and(|u| u.has_host())
    });
    if config.explicit_hosts() {
        for (key, url) in config.hosts.entries() {
            if has_userinfo(url) {
                problems.push(
                    &key,
                    "must not hold a user or password: use basic_user and password_file",
                );
            }
        }
    }
    for (key, template, required) in config.templates() {
        config.validate_template(problems, key, template, required);
    }
    if !(1..=MAX_PAGE_SIZE).contains(&config.page_size) {
        problems.push("page_size", format!("must be from 1 to {MAX_PAGE_SIZE}"));
    }
    if config.insecure && config.ca_file.is_some() {
        problems.push("insecure", "set either ca_file or insecure, not both");
    }
    if config
        .ca_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        problems.push("ca_file", "must not be empty");
    }
    if config.not_found_status.is_empty() {
        problems.push(
            "not_found_status",
            "must list at least one status (default [404])",
        );
    }
    for (i, status) in config.not_found_status.iter().enumerate() {
        if *status != 204 && !(400..=499).contains(status) {
            problems.push(
                &format!("not_found_status[{i}]"),
                "must be 204 or a 4xx status (an outage must never read as not found)",
            );
        }
    }
    config.validate_auth(problems);
    config.validate_fields(problems);
}

/// Makes the file paths absolute against `base`.
pub(super) fn resolve_paths(config: &mut HttpConfig, base: &Path) {
    config.hosts.resolve_paths(base);
    for path in [config.token_file.as_mut(), config.ca_file.as_mut()]
        .into_iter()
        .flatten()
    {
        crate::resolve(base, path);
    }
}

/// Whether a URL or template holds a password or token inline.
pub(super) fn inline_password(config: &HttpConfig) -> bool {
    config.hosts.has_inline_password()
        || config.templates().iter().any(|(_, t, _)| {
            has_inline_password(t) || has_inline_password(&format!("https://_{t}"))
        })
}

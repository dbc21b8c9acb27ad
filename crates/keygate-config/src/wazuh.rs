//! `[wazuh]`: how `keygate sync` reaches a Wazuh manager's REST API. The
//! section is optional; only `keygate sync` reads it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::Value;
use keygate_backends::Problem;

use crate::section::Section;

/// A validated `[wazuh]` section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WazuhConfig {
    /// `url` (required): the API's base URL, `https://wazuh-manager:55000`.
    /// Only https, with no user or password in it.
    pub url: String,
    /// `user` (required): an API user with `agent:create`, `agent:read` and
    /// `agent:delete`.
    pub user: String,
    /// `password_file` (required): the file whose first line is the user's
    /// password; relative to the config file's directory.
    pub password_file: PathBuf,
    /// `ca_file`: extra CA certificates (PEM) trusted for the API besides
    /// the system's. Verification is always on unless `insecure`.
    pub ca_file: Option<PathBuf>,
    /// `insecure` (default false): skip certificate verification; keygate
    /// warns at every run.
    pub insecure: bool,
    /// `concurrency` (default 8): most API requests in flight at once.
    pub concurrency: usize,
    /// `timeout` (default `"30s"`): deadline of one API request.
    pub timeout: Duration,
}

/// Reads the optional `[wazuh]` table: `Some(None)` when it is absent,
/// `None` when it has problems (pushed to `problems`).
pub(crate) fn read(
    value: Option<Value>,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> Option<Option<WazuhConfig>> {
    let Some(value) = value else {
        return Some(None);
    };
    let mut s = Section::new("wazuh", Some(value), problems);
    let url: Option<String> = s.required("url");
    let user: Option<String> = s.required("user");
    let password_file: Option<PathBuf> = s.required("password_file");
    let ca_file: Option<PathBuf> = s.optional("ca_file");
    let insecure: bool = s.field("insecure", false);
    let concurrency: usize = s.field("concurrency", 8);
    let timeout = s.duration("timeout", Duration::from_secs(30));
    if let Some(url) = &url {
        match url.split_once("://") {
            Some(("https", rest)) => {
                let authority = rest.split('/').next().unwrap_or("");
                if authority.contains('@') {
                    s.problem(
                        "url",
                        "must not carry a user or password; use user and password_file",
                    );
                } else if authority.is_empty() {
                    s.problem(
                        "url",
                        "must name a host, e.g. \"https://wazuh-manager:55000\"",
                    );
                }
            }
            _ => s.problem(
                "url",
                "must be an https:// URL such as \"https://wazuh-manager:55000\"",
            ),
        }
    }
    if user.as_deref() == Some("") {
        s.problem("user", "must not be empty");
    }
    if password_file
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        s.problem("password_file", "must not be empty");
    }
    if !(1..=64).contains(&concurrency) {
        s.problem("concurrency", "must be between 1 and 64");
    }
    if timeout.is_zero() {
        s.problem("timeout", "must be more than 0");
    }
    if !s.finish() {
        return None;
    }
    let (Some(url), Some(user), Some(mut password_file)) = (url, user, password_file) else {
        return None;
    };
    keygate_backends::resolve(base, &mut password_file);
    let ca_file = ca_file.map(|mut f| {
        keygate_backends::resolve(base, &mut f);
        f
    });
    Some(Some(WazuhConfig {
        url: url.trim_end_matches('/').to_owned(),
        user,
        password_file,
        ca_file,
        insecure,
        concurrency,
        timeout,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKEND: &str = "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n";

    /// Defaults apply, relative paths resolve, and without the section
    /// there is no `[wazuh]`.
    #[test]
    fn defaults_and_paths() {
        let text = format!("[wazuh]\nurl = \"https://m:55000/\"\nuser = \"keygate\"\npassword_file = \"api.pass\"\n{BACKEND}");
        let c = crate::load_str(&text, Path::new("/etc/keygate")).unwrap();
        let w = c.wazuh.unwrap();
        assert_eq!(w.url, "https://m:55000");
        assert_eq!(w.password_file, PathBuf::from("/etc/keygate/api.pass"));
        assert_eq!(
            (w.concurrency, w.timeout, w.insecure),
            (8, Duration::from_secs(30), false)
        );
        assert!(crate::load_str(BACKEND, Path::new("/"))
            .unwrap()
            .wazuh
            .is_none());
    }

    /// Every problem of the section is reported with its key path.
    #[test]
    fn every_problem_has_its_key_path() {
        let text = format!("[wazuh]\nurl = \"http://u:p@m:55000\"\nuser = \"\"\npassword_file = \"p\"\nconcurrency = 0\ntimeout = \"0s\"\ninsecur = true\n{BACKEND}");
        let e = crate::load_str(&text, Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("wazuh.insecur: unknown key"), "{e}");
        assert!(e.contains("wazuh.url: must be an https:// URL"), "{e}");
        assert!(
            e.contains("wazuh.concurrency: must be between 1 and 64"),
            "{e}"
        );
        let text = format!("[wazuh]\nurl = \"https://u:p@m:55000\"\nuser = \"\"\npassword_file = \"p\"\nconcurrency = 0\ntimeout = \"0s\"\n{BACKEND}");
        let e = crate::load_str(&text, Path::new("/"))
            .unwrap_err()
            .to_string();
        for want in [
            "wazuh.url: must not carry a user or password",
            "wazuh.user: must not be empty",
            "wazuh.concurrency: must be between 1 and 64",
            "wazuh.timeout: must be more than 0",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
        assert!(!e.contains(":p@"), "{e}");
        let e = crate::load_str(
            &format!("[wazuh]\nurl = \"http://m\"\n{BACKEND}"),
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("wazuh.user: missing required key"), "{e}");
        assert!(
            e.contains("wazuh.password_file: missing required key"),
            "{e}"
        );
    }
}

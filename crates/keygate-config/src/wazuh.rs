//! `[wazuh]`: how `keygate sync` reaches a Wazuh manager's REST API. The
//! section is optional; only `keygate sync` reads it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::Value;
use keygate_backends::secret::PasswordSource;
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
    /// Where the user's password comes from (exactly one is required):
    /// `password_file` (a file whose first line is the password, relative to
    /// the config file's directory), `password_env` (an environment
    /// variable) or `password_credential` (a systemd credential,
    /// `$CREDENTIALS_DIRECTORY/<name>`).
    pub password: PasswordSource,
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
    let mut password = PasswordSource {
        password_file: s.optional("password_file"),
        password_env: s.optional("password_env"),
        password_credential: s.optional("password_credential"),
    };
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
    if password.is_set() {
        password.validate(&mut s.scope());
    } else {
        s.problem(
            "password_file",
            format!(
                "missing: set one of {}",
                keygate_backends::secret::PASSWORD_KEYS
            ),
        );
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
    let (Some(url), Some(user)) = (url, user) else {
        return None;
    };
    if let Some(file) = &mut password.password_file {
        keygate_backends::resolve(base, file);
    }
    let ca_file = ca_file.map(|mut f| {
        keygate_backends::resolve(base, &mut f);
        f
    });
    Some(Some(WazuhConfig {
        url: url.trim_end_matches('/').to_owned(),
        user,
        password,
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
        assert_eq!(
            w.password.password_file,
            Some(PathBuf::from("/etc/keygate/api.pass"))
        );
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
            e.contains(
                "wazuh.password_file: missing: set one of password_file, password_env or \
                 password_credential"
            ),
            "{e}"
        );
    }

    /// The password may come from an environment variable or a systemd
    /// credential instead of a file; only one source at a time.
    #[test]
    fn password_from_env_or_credential_and_only_one_source() {
        let c = |extra: &str| {
            crate::load_str(
                &format!("[wazuh]\nurl = \"https://m\"\nuser = \"k\"\n{extra}\n{BACKEND}"),
                Path::new("/etc/keygate"),
            )
        };
        let w = c("password_env = \"WAZUH_PW\"").unwrap().wazuh.unwrap();
        assert_eq!(w.password.password_env.as_deref(), Some("WAZUH_PW"));
        let w = c("password_credential = \"wazuh-api\"")
            .unwrap()
            .wazuh
            .unwrap();
        assert_eq!(w.password.password_credential.as_deref(), Some("wazuh-api"));
        let e = c("password_env = \"A\"\npassword_file = \"p\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("wazuh.password_env: set only one of password_file"),
            "{e}"
        );
        let e = c("password_credential = \"../x\"").unwrap_err().to_string();
        assert!(
            e.contains("wazuh.password_credential: must be a credential name"),
            "{e}"
        );
    }
}

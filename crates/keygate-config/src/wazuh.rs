//! `[wazuh]`: the Wazuh manager keygate serves. Its version (what an answer
//! may carry), its ossec.conf and client.keys (what `check` and the daemon
//! read of the manager's side), and, for the commands that call the REST API
//! (`keygate sync`), how to reach it and how carefully to write to it. The
//! section is optional: without it every key takes its default, and the API
//! keys are required only by `sync`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::value::Value;
use keygate_backends::secret::PasswordSource;
use keygate_backends::Problem;
use keygate_core::WazuhVersion;

use crate::section::Section;

/// The default of `[wazuh] backup_dir`.
pub const DEFAULT_BACKUP_DIR: &str = "/var/lib/keygate/backups";

/// Where the manager's client.keys is looked for when `[wazuh] client_keys`
/// is not set, in this order: Wazuh 3.x/4.x, then 5.0's install path.
pub const DEFAULT_CLIENT_KEYS: [&str; 2] = [
    "/var/ossec/etc/client.keys",
    "/var/wazuh-manager/etc/client.keys",
];

/// A validated `[wazuh]` section (every key at its default when the section
/// is absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WazuhConfig {
    /// `version` (default `"auto"`): the Wazuh version keygate serves, or
    /// `auto` to read it from the local installation.
    pub version: VersionSetting,
    /// `ossec_conf` (default: the one under the detected Wazuh home): the
    /// manager's ossec.conf, read by `keygate check`.
    pub ossec_conf: Option<PathBuf>,
    /// `client_keys` (default: the first readable of [`DEFAULT_CLIENT_KEYS`]):
    /// the manager's client.keys. The daemon watches it to tell whether
    /// Wazuh took an agent it served; `sync` compares keys against it
    /// instead of reading each key through the API.
    pub client_keys: Option<PathBuf>,
    /// `insert_confirm_within` (default `"30s"`): how long after an answer
    /// the served agent must appear in client.keys before keygate warns
    /// that Wazuh did not take it.
    pub insert_confirm_within: Duration,
    /// The REST API (`url`, `user`, a password source, `ca_file`,
    /// `insecure`, `concurrency`, `timeout`); `None` when `url` is not set.
    pub api: Option<WazuhApi>,
    /// `max_delete` (default: 10 % of the manager's agents, at least 1): the
    /// most agents `sync --prune` may delete in one run.
    pub max_delete: Option<usize>,
    /// `backup_dir` (default [`DEFAULT_BACKUP_DIR`]): where `sync --apply`
    /// writes the manager's lines for every agent it replaces or deletes,
    /// before it does.
    pub backup_dir: PathBuf,
    /// `backups_kept` (default 30): how many backup files are kept.
    pub backups_kept: usize,
    /// `max_requests_per_minute` (default 100, a third of the Wazuh API's
    /// default limit): the pace of `sync`'s API calls, authentication
    /// excepted.
    pub max_requests_per_minute: u32,
}

impl Default for WazuhConfig {
    fn default() -> Self {
        Self {
            version: VersionSetting::Auto,
            ossec_conf: None,
            client_keys: None,
            insert_confirm_within: Duration::from_secs(30),
            api: None,
            max_delete: None,
            backup_dir: PathBuf::from(DEFAULT_BACKUP_DIR),
            backups_kept: 30,
            max_requests_per_minute: 100,
        }
    }
}

/// `[wazuh] version`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VersionSetting {
    /// `"auto"`: read from the local installation; unknown is taken as 4.4
    /// or later.
    Auto,
    /// An explicit version (`"3.13"`, `"4.14.7"`).
    Fixed(WazuhVersion),
}

/// How to reach the manager's REST API (`[wazuh]` with `url`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WazuhApi {
    /// `url`: the API's base URL, `https://wazuh-manager:55000`. Only https,
    /// with no user or password in it.
    pub url: String,
    /// `user` (required with `url`): an API user with `agent:create`,
    /// `agent:read` and `agent:delete`.
    pub user: String,
    /// Where the user's password comes from (exactly one is required with
    /// `url`): `password_file` (a file whose first line is the password,
    /// relative to the config file's directory), `password_env` (an
    /// environment variable) or `password_credential` (a systemd
    /// credential, `$CREDENTIALS_DIRECTORY/<name>`).
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

/// Reads the optional `[wazuh]` table (defaults when absent); `None` when
/// it has problems (pushed to `problems`).
pub(crate) fn read(
    value: Option<Value>,
    base: &Path,
    problems: &mut Vec<Problem>,
) -> Option<WazuhConfig> {
    let defaults = WazuhConfig::default();
    let mut s = Section::new("wazuh", value, problems);
    let version_text: String = s.field("version", "auto".to_owned());
    let version = if version_text == "auto" {
        VersionSetting::Auto
    } else {
        match version_text.parse::<WazuhVersion>() {
            Ok(v) => VersionSetting::Fixed(v),
            Err(e) => {
                s.problem("version", format!("{e}, or \"auto\""));
                VersionSetting::Auto
            }
        }
    };
    let ossec_conf: Option<PathBuf> = s.optional("ossec_conf");
    let client_keys: Option<PathBuf> = s.optional("client_keys");
    let insert_confirm_within = s.duration("insert_confirm_within", defaults.insert_confirm_within);
    let url: Option<String> = s.optional("url");
    let user: Option<String> = s.optional("user");
    let mut password = PasswordSource {
        password_file: s.optional("password_file"),
        password_env: s.optional("password_env"),
        password_credential: s.optional("password_credential"),
    };
    let ca_file: Option<PathBuf> = s.optional("ca_file");
    let insecure: bool = s.field("insecure", false);
    let concurrency: usize = s.field("concurrency", 8);
    let timeout = s.duration("timeout", Duration::from_secs(30));
    let max_delete: Option<usize> = s.optional("max_delete");
    let backup_dir: PathBuf = s.field("backup_dir", defaults.backup_dir.clone());
    let backups_kept: usize = s.field("backups_kept", defaults.backups_kept);
    let max_requests_per_minute: u32 =
        s.field("max_requests_per_minute", defaults.max_requests_per_minute);
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
        if user.is_none() {
            s.problem("user", "missing required key (the API needs a user)");
        }
        if !password.is_set() {
            s.problem(
                "password_file",
                format!(
                    "missing: set one of {}",
                    keygate_backends::secret::PASSWORD_KEYS
                ),
            );
        }
    } else if user.is_some() || password.is_set() {
        s.problem(
            "url",
            "missing: user and the password are for the Wazuh API, which needs its url \
             (e.g. \"https://wazuh-manager:55000\")",
        );
    }
    if user.as_deref() == Some("") {
        s.problem("user", "must not be empty");
    }
    if password.is_set() {
        password.validate(&mut s.scope());
    }
    if !(1..=64).contains(&concurrency) {
        s.problem("concurrency", "must be between 1 and 64");
    }
    if timeout.is_zero() {
        s.problem("timeout", "must be more than 0");
    }
    if insert_confirm_within.is_zero() {
        s.problem("insert_confirm_within", "must be more than 0");
    }
    if !(1..=10_000).contains(&backups_kept) {
        s.problem("backups_kept", "must be between 1 and 10000");
    }
    if !(1..=100_000).contains(&max_requests_per_minute) {
        s.problem(
            "max_requests_per_minute",
            "must be between 1 and 100000 (the Wazuh API allows 300 a minute by default)",
        );
    }
    if backup_dir.as_os_str().is_empty() {
        s.problem("backup_dir", "must not be empty");
    }
    if !s.finish() {
        return None;
    }
    let resolve = |mut path: PathBuf| {
        keygate_backends::resolve(base, &mut path);
        path
    };
    let api = match (url, user) {
        (Some(url), Some(user)) => {
            if let Some(file) = &mut password.password_file {
                keygate_backends::resolve(base, file);
            }
            Some(WazuhApi {
                url: url.trim_end_matches('/').to_owned(),
                user,
                password,
                ca_file: ca_file.map(resolve),
                insecure,
                concurrency,
                timeout,
            })
        }
        _ => None,
    };
    Some(WazuhConfig {
        version,
        ossec_conf: ossec_conf.map(resolve),
        client_keys: client_keys.map(resolve),
        insert_confirm_within,
        api,
        max_delete,
        backup_dir: resolve(backup_dir),
        backups_kept,
        max_requests_per_minute,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BACKEND: &str = "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n";

    fn load(wazuh: &str) -> Result<WazuhConfig, String> {
        crate::load_str(&format!("{wazuh}\n{BACKEND}"), Path::new("/etc/keygate"))
            .map(|c| c.wazuh)
            .map_err(|e| e.to_string())
    }

    /// Defaults apply, relative paths resolve; without the section every
    /// key takes its default and there is no API.
    #[test]
    fn defaults_and_paths() {
        let w = load("[wazuh]\nurl = \"https://m:55000/\"\nuser = \"keygate\"\npassword_file = \"api.pass\"\nbackup_dir = \"backups\"\nclient_keys = \"ck\"\nossec_conf = \"o.conf\"").unwrap();
        let api = w.api.clone().unwrap();
        assert_eq!(api.url, "https://m:55000");
        assert_eq!(
            api.password.password_file,
            Some(PathBuf::from("/etc/keygate/api.pass"))
        );
        assert_eq!(
            (api.concurrency, api.timeout, api.insecure),
            (8, Duration::from_secs(30), false)
        );
        assert_eq!(w.backup_dir, PathBuf::from("/etc/keygate/backups"));
        assert_eq!(w.client_keys, Some(PathBuf::from("/etc/keygate/ck")));
        assert_eq!(w.ossec_conf, Some(PathBuf::from("/etc/keygate/o.conf")));
        let none = load("").unwrap();
        assert_eq!(none, WazuhConfig::default());
        assert_eq!(none.version, VersionSetting::Auto);
        assert_eq!(none.api, None);
        assert_eq!(
            (
                none.backups_kept,
                none.max_requests_per_minute,
                none.max_delete
            ),
            (30, 100, None)
        );
        assert_eq!(none.insert_confirm_within, Duration::from_secs(30));
        assert_eq!(none.backup_dir, PathBuf::from(DEFAULT_BACKUP_DIR));
    }

    /// A `[wazuh]` section with only `version` (or `ossec_conf`) is valid:
    /// the API keys are required only by the commands that call the API.
    #[test]
    fn a_section_without_the_api_is_valid() {
        let w = load("[wazuh]\nversion = \"3.13\"").unwrap();
        assert_eq!(w.version, VersionSetting::Fixed(WazuhVersion::new(3, 13)));
        assert_eq!(w.api, None);
        let w = load("[wazuh]\nversion = \"v4.14.7\"\nossec_conf = \"/var/ossec/etc/ossec.conf\"")
            .unwrap();
        assert_eq!(w.version, VersionSetting::Fixed("4.14.7".parse().unwrap()));
        let e = load("[wazuh]\nversion = \"latest\"").unwrap_err();
        assert!(e.contains("wazuh.version: not a Wazuh version"), "{e}");
        assert!(e.contains("or \"auto\""), "{e}");
        // The API's user or password without its url is a mistake.
        let e = load("[wazuh]\nuser = \"k\"\npassword_env = \"P\"").unwrap_err();
        assert!(e.contains("wazuh.url: missing"), "{e}");
    }

    /// The sync keys are checked, each with its key path.
    #[test]
    fn sync_keys_are_checked() {
        let e = load("[wazuh]\nbackups_kept = 0\nmax_requests_per_minute = 0\ninsert_confirm_within = \"0s\"\nbackup_dir = \"\"\nmax_delete = -1").unwrap_err();
        for want in [
            "wazuh.backups_kept: must be between 1 and 10000",
            "wazuh.max_requests_per_minute: must be between 1 and 100000",
            "wazuh.insert_confirm_within: must be more than 0",
            "wazuh.backup_dir: must not be empty",
            "wazuh.max_delete:",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
        let w = load("[wazuh]\nmax_delete = 0\nmax_requests_per_minute = 250\nbackups_kept = 5")
            .unwrap();
        assert_eq!(
            (w.max_delete, w.max_requests_per_minute, w.backups_kept),
            (Some(0), 250, 5)
        );
    }

    /// Every problem of the section is reported with its key path.
    #[test]
    fn every_problem_has_its_key_path() {
        let e = load("[wazuh]\nurl = \"http://u:p@m:55000\"\nuser = \"\"\npassword_file = \"p\"\nconcurrency = 0\ntimeout = \"0s\"\ninsecur = true").unwrap_err();
        assert!(e.contains("wazuh.insecur: unknown key"), "{e}");
        assert!(e.contains("wazuh.url: must be an https:// URL"), "{e}");
        assert!(
            e.contains("wazuh.concurrency: must be between 1 and 64"),
            "{e}"
        );
        let e = load("[wazuh]\nurl = \"https://u:p@m:55000\"\nuser = \"\"\npassword_file = \"p\"\nconcurrency = 0\ntimeout = \"0s\"").unwrap_err();
        for want in [
            "wazuh.url: must not carry a user or password",
            "wazuh.user: must not be empty",
            "wazuh.concurrency: must be between 1 and 64",
            "wazuh.timeout: must be more than 0",
        ] {
            assert!(e.contains(want), "missing {want:?} in {e}");
        }
        assert!(!e.contains(":p@"), "{e}");
        let e = load("[wazuh]\nurl = \"http://m\"").unwrap_err();
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
            load(&format!(
                "[wazuh]\nurl = \"https://m\"\nuser = \"k\"\n{extra}"
            ))
        };
        let w = c("password_env = \"WAZUH_PW\"").unwrap().api.unwrap();
        assert_eq!(w.password.password_env.as_deref(), Some("WAZUH_PW"));
        let w = c("password_credential = \"wazuh-api\"")
            .unwrap()
            .api
            .unwrap();
        assert_eq!(w.password.password_credential.as_deref(), Some("wazuh-api"));
        let e = c("password_env = \"A\"\npassword_file = \"p\"").unwrap_err();
        assert!(
            e.contains("wazuh.password_env: set only one of password_file"),
            "{e}"
        );
        let e = c("password_credential = \"../x\"").unwrap_err();
        assert!(
            e.contains("wazuh.password_credential: must be a credential name"),
            "{e}"
        );
    }
}

//! `keygate check`'s look at the Wazuh manager keygate serves:
//!
//! - the version served (`[wazuh] version`, or read from the installation;
//!   unknown is taken as 4.4 or later, and said);
//! - the manager's side, when its ossec.conf is found (`[wazuh] ossec_conf`,
//!   or the one under the Wazuh home): [`manager`];
//! - the store's records that Wazuh will not take as they are: an IPv6 ip
//!   before 4.4 (refused by keygate, code 5) and names Wazuh's
//!   `OS_IsValidName` refuses (served, but Wazuh's API and the agent's own
//!   enrollment refuse them).
//!
//! Problems are warnings; only a socket or exec_path that is plainly wrong
//! is an error (exit 1). `check` prints the [`WazuhReport`] as text or JSON.

mod manager;

use std::path::Path;

use futures_util::StreamExt;
use keygate_config::{Config, Served, Stack, VersionSource};
use keygate_core::{AgentRecord, Listed, WazuhVersion};
use serde::Serialize;

use crate::out::outln;

/// How many record findings are printed; the rest are counted.
const SHOWN_RECORDS: usize = 20;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// As it should be.
    Ok,
    /// Worth knowing; nothing to fix.
    Note,
    /// Will probably not work as meant (exit code unchanged).
    Warning,
    /// Plainly wrong: Wazuh does not reach this keygate (exit 1).
    Error,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Note => "note",
            Level::Warning => "warning",
            Level::Error => "ERROR",
        }
    }
}

/// One thing `check` says about the manager.
#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// What it is about (`key_requests`, `socket`, `exec_path`, `timeout`,
    /// `access`, `force`, `record`...).
    pub item: &'static str,
    /// What was found, naming both sides of a mismatch.
    pub message: String,
}

impl Finding {
    fn new(level: Level, item: &'static str, message: String) -> Self {
        Self {
            level,
            item,
            message,
        }
    }
}

/// What `check` found about the store's records.
#[derive(Debug, Default, Serialize)]
pub struct Records {
    /// Records read.
    pub checked: u64,
    /// The first [`SHOWN_RECORDS`] findings.
    pub findings: Vec<Finding>,
    /// Findings beyond those.
    pub more: u64,
    /// Backends that could not list their records.
    pub not_listed: Vec<String>,
}

/// Everything `check` says about Wazuh.
#[derive(Debug, Serialize)]
pub struct WazuhReport {
    /// The version answers are made for.
    pub version: String,
    /// Where it comes from, in words.
    pub version_source: String,
    /// The ossec.conf read, if one was found.
    pub ossec_conf: Option<String>,
    /// About the version and the manager's ossec.conf.
    pub findings: Vec<Finding>,
    /// About the store's records.
    pub records: Records,
}

impl WazuhReport {
    /// Whether the manager's ossec.conf names keygate's socket.
    pub fn socket_confirmed(&self) -> bool {
        self.findings
            .iter()
            .any(|f| f.item == "socket" && f.level == Level::Ok)
    }

    /// Whether something is plainly wrong (exit 1).
    pub fn failed(&self) -> bool {
        self.findings.iter().any(|f| f.level == Level::Error)
    }

    /// The report as text, after the backend table.
    pub fn print(&self) {
        outln!("wazuh:   {}", self.version_source);
        for f in self.findings.iter().filter(|f| f.item == "version") {
            outln!("  {:<8} {}", f.level.label(), f.message);
        }
        if let Some(path) = &self.ossec_conf {
            outln!("ossec.conf {path}:");
        }
        for f in self.findings.iter().filter(|f| f.item != "version") {
            outln!("  {:<8} {}: {}", f.level.label(), f.item, f.message);
        }
        let r = &self.records;
        let bad = r.findings.len() as u64 + r.more;
        outln!(
            "records: {} checked, {}",
            r.checked,
            match bad {
                0 => "none that this Wazuh refuses".to_owned(),
                n => format!("{n} that this Wazuh refuses or will not take as they are"),
            }
        );
        for f in &r.findings {
            outln!("  {:<8} {}", f.level.label(), f.message);
        }
        if r.more > 0 {
            outln!(
                "  ... and {} more (keygate list shows every record)",
                r.more
            );
        }
        for name in &r.not_listed {
            outln!("  note     backend '{name}' cannot list its records: not checked");
        }
    }
}

/// The report for `config` (read from `config_path`) and its built
/// `stack`, for the Wazuh `served`.
pub async fn report(
    config: &Config,
    config_path: &Path,
    stack: &Stack,
    served: &Served,
) -> WazuhReport {
    let mut findings = Vec::new();
    if served.source == VersionSource::Unknown {
        findings.push(Finding::new(
            Level::Note,
            "version",
            "no installation found under /var/ossec or /var/wazuh-manager says its version: \
             answers are made for 4.4 or later (set [wazuh] version for an older manager)"
                .to_owned(),
        ));
    }
    let ossec_conf = config.wazuh.ossec_conf_path(served.installation.as_ref());
    match &ossec_conf {
        None => findings.push(Finding::new(
            Level::Note,
            "ossec_conf",
            "no ossec.conf found: the manager's side is not checked (set [wazuh] ossec_conf)"
                .to_owned(),
        )),
        Some(path) => match keygate_wazuh::ossec_conf::read(path) {
            Err(e) => findings.push(Finding::new(
                Level::Warning,
                "ossec_conf",
                format!("cannot be read: {e}"),
            )),
            Ok(conf) => {
                let keygate = std::env::current_exe().ok();
                findings.extend(manager::findings(
                    &conf,
                    served.version,
                    config,
                    config_path,
                    keygate.as_deref(),
                ));
            }
        },
    }
    WazuhReport {
        version: served.version.to_string(),
        version_source: served.describe(),
        ossec_conf: ossec_conf.map(|p| p.display().to_string()),
        findings,
        records: records(stack, served.version).await,
    }
}

/// What this Wazuh will not take as it is in `record`, if anything.
pub fn record_finding(version: WazuhVersion, record: &AgentRecord) -> Option<Finding> {
    let who = format!("agent {} '{}'", record.id.as_str(), record.name.as_str());
    if let Some(refusal) = version.refuses(record) {
        return Some(Finding::new(
            Level::Warning,
            "record",
            format!("{who}: {refusal}: keygate refuses it (code 5)"),
        ));
    }
    record.name.wazuh_name_rule().map(|rule| {
        Finding::new(
            Level::Warning,
            "record",
            format!(
                "{who}: {rule} (Wazuh's OS_IsValidName): served, but Wazuh's API (keygate sync) \
                 and an agent's own enrollment refuse the name"
            ),
        )
    })
}

/// Every backend's records, checked against `version`.
async fn records(stack: &Stack, version: WazuhVersion) -> Records {
    let mut out = Records::default();
    for (name, _, backend) in &stack.backends {
        let mut items = backend.list();
        while let Some(item) = items.next().await {
            match item {
                Ok(Listed::Record(record)) => {
                    out.checked += 1;
                    if let Some(f) = record_finding(version, &record) {
                        if out.findings.len() < SHOWN_RECORDS {
                            out.findings.push(f);
                        } else {
                            out.more += 1;
                        }
                    }
                }
                Ok(Listed::Invalid { .. }) => {}
                Err(_) => {
                    out.not_listed.push(name.clone());
                    break;
                }
            }
        }
    }
    out
}

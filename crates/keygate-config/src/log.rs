//! `[log]`: level, format and destination of the daemon's log, and of the
//! audit trail.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::section::Section;
use crate::{LogConfig, LogFormat};

/// `[log] audit_failure`: what an answer does when its audit event cannot
/// be written (a full disk, a file that cannot be opened), as auditd's
/// `disk_full_action` lets its operator choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditFailure {
    /// The answer is error 2, "audit trail unavailable", with no key: no
    /// key is handed out unless its audit event was written first (the
    /// default).
    #[default]
    Refuse,
    /// The answer is sent anyway; the lost event is counted
    /// (`keygate_audit_write_failures_total`).
    Serve,
}

/// The accepted `level` values.
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            file: None,
            format: LogFormat::Text,
            audit: true,
            audit_file: None,
            audit_failure: AuditFailure::Refuse,
        }
    }
}

/// Reads `[log]`; a relative `file` is resolved against `base`.
pub(crate) fn read(mut s: Section<'_>, base: &Path) -> Option<LogConfig> {
    let d = LogConfig::default();
    let level: String = s.field("level", d.level);
    let file: Option<PathBuf> = s.optional("file");
    let format = s.field("format", d.format);
    let audit = s.field("audit", d.audit);
    let audit_file: Option<PathBuf> = s.optional("audit_file");
    let audit_failure = s.field("audit_failure", d.audit_failure);
    if !LEVELS.contains(&level.as_str()) {
        s.problem("level", format!("must be one of {}", LEVELS.join(", ")));
    }
    let resolve = |mut f: PathBuf| {
        keygate_backends::resolve(base, &mut f);
        f
    };
    let file = file.map(resolve);
    let audit_file = audit_file.map(resolve);
    if audit_file.is_some() && audit_file == file {
        s.problem(
            "audit_file",
            "must not be the log file (leave it out to write audit events into the log)",
        );
    }
    if !s.finish() {
        return None;
    }
    Some(LogConfig {
        level,
        file,
        format,
        audit,
        audit_file,
        audit_failure,
    })
}

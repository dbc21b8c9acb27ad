//! `[log]`: level and destination of the daemon's log.

use std::path::{Path, PathBuf};

use crate::section::Section;
use crate::LogConfig;

/// The accepted `level` values.
const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            file: None,
        }
    }
}

/// Reads `[log]`; a relative `file` is resolved against `base`.
pub(crate) fn read(mut s: Section<'_>, base: &Path) -> Option<LogConfig> {
    let d = LogConfig::default();
    let level: String = s.field("level", d.level);
    let file: Option<PathBuf> = s.optional("file");
    if !LEVELS.contains(&level.as_str()) {
        s.problem("level", format!("must be one of {}", LEVELS.join(", ")));
    }
    if !s.finish() {
        return None;
    }
    let file = file.map(|mut f| {
        keygate_backends::resolve(base, &mut f);
        f
    });
    Some(LogConfig { level, file })
}

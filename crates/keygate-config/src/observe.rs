//! `[metrics]`, and the `[log] format` values: how the daemon is observed.

use std::net::SocketAddr;

use figment::value::Value;
use keygate_backends::Problem;
use serde::Deserialize;

use crate::section::Section;

/// `[log] format`: how log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (the default).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Address and port `GET /metrics` is served on (`"127.0.0.1:9187"`).
    pub listen: SocketAddr,
}

/// Reads `[metrics]`: `Some(None)` when the file has no such table (nothing
/// listens), `None` when it has problems.
pub(crate) fn read_metrics(
    value: Option<Value>,
    problems: &mut Vec<Problem>,
) -> Option<Option<MetricsConfig>> {
    let Some(value) = value else {
        return Some(None);
    };
    let mut s = Section::new("metrics", Some(value), problems);
    let listen: Option<SocketAddr> = s.required("listen");
    s.finish()
        .then_some(listen.map(|listen| MetricsConfig { listen }))
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use crate::{load_str, LogFormat};

    const BACKEND: &str = "[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"client.keys\"\n";

    fn problems(text: &str) -> String {
        load_str(&format!("{text}\n{BACKEND}"), Path::new("/etc/keygate"))
            .unwrap_err()
            .problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Without the keys: text logs, audit on into the log, no metrics.
    #[test]
    fn defaults_log_text_audit_into_the_log_and_serve_no_metrics() {
        let c = load_str(BACKEND, Path::new("/etc/keygate")).unwrap();
        assert_eq!(c.log.format, LogFormat::Text);
        assert!(c.log.audit);
        assert_eq!(c.log.audit_file, None);
        assert_eq!(c.metrics, None);
    }

    /// The keys are read, and a relative audit_file is resolved.
    #[test]
    fn metrics_and_audit_keys_are_read() {
        let c = load_str(
            &format!("[log]\nformat = \"json\"\naudit = false\naudit_file = \"audit.log\"\n[metrics]\nlisten = \"127.0.0.1:9187\"\n{BACKEND}"),
            Path::new("/etc/keygate"),
        )
        .unwrap();
        assert_eq!(c.log.format, LogFormat::Json);
        assert!(!c.log.audit);
        assert_eq!(
            c.log.audit_file,
            Some(PathBuf::from("/etc/keygate/audit.log"))
        );
        assert_eq!(c.metrics.unwrap().listen.to_string(), "127.0.0.1:9187");
    }

    /// Every mistake is reported with its key path.
    #[test]
    fn bad_values_are_problems_with_their_key_path() {
        let p = problems(
            "[log]\nformat = \"xml\"\naudit = \"yes\"\nfile = \"/var/log/k.log\"\naudit_file = \"/var/log/k.log\"\n[metrics]\nlisten = \"localhost\"\nport = 9187\n",
        );
        for want in [
            "log.format:",
            "log.audit:",
            "log.audit_file: must not be the log file",
            "metrics.listen:",
            "metrics.port: unknown key",
        ] {
            assert!(p.contains(want), "missing {want:?} in:\n{p}");
        }
        assert!(problems("[metrics]\n").contains("metrics.listen: missing required key"));
    }
}

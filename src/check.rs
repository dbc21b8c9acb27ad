//! `keygate check`: everything the daemon would refuse or warn about, found
//! without starting it, then each backend probed.
//!
//! It takes the daemon's own path ([`crate::preflight`]): the config and
//! the environment loaded and validated (every problem once, with its key
//! path), what the config asks of this machine inspected (the socket
//! directories, `socket_group`, the open-file limit...), the backends built
//! (password and CA files read) and probed, and what they log meanwhile
//! collected ([`collect`]: an agent file's invalid lines, the first host of
//! `urls` down). "valid" is printed only once the config loaded and every
//! backend was built.
//!
//! Then what [`crate::check_wazuh`] finds about the Wazuh manager served:
//! its version, its ossec.conf against keygate's config, the records that
//! version will not take.
//!
//! Streams: the summary, the table and the manager's side go to stdout;
//! every error and warning of the config and the machine goes to stderr
//! (`error: PATH: ...`, `warning: PATH: ...`), as the other commands print
//! theirs. `--json` prints all of it as one JSON document on stdout. Exit
//! code: 78 when the config is invalid, 1 when anything else is wrong (an
//! error, a backend that cannot answer, a `<socket>` or `<exec_path>` that
//! does not reach this keygate), 0 otherwise, warnings included.

mod collect;

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use keygate_config::{Config, ConfigError, Problem, Stack};

use crate::exit::Code;
use crate::out::{errln, outln};

/// What the checks found that is not in the table.
#[derive(Debug, Default)]
pub struct Report {
    /// What stops keygate from working (exit code 1).
    pub errors: Vec<Problem>,
    /// What will probably not work as meant (exit code 0).
    pub warnings: Vec<Problem>,
}

impl Report {
    /// A setting that will probably not work as meant, under `path`.
    pub fn warning(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }
}

/// Runs the check; returns its exit code.
pub fn main(config_path: &Path, json: bool) -> ExitCode {
    let collected = collect::Collected::install();
    let config = match keygate_config::load(config_path) {
        Ok(c) => c,
        Err(e) => return invalid(config_path, &e, json),
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        errln!("keygate check: cannot start the runtime");
        return Code::Failure.into();
    };
    runtime.block_on(run(&config, config_path, &collected, json))
}

/// An invalid config: every problem, on stderr (or in the JSON document).
fn invalid(config_path: &Path, e: &ConfigError, json: bool) -> ExitCode {
    if json {
        let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
        outln!(
            "{}",
            serde_json::json!({"config": config_path, "valid": false, "problems": problems})
        );
    } else {
        errln!("keygate check: {e}");
    }
    Code::Config.into()
}

async fn run(
    config: &Config,
    config_path: &Path,
    collected: &collect::Collected,
    json: bool,
) -> ExitCode {
    let found = crate::preflight::inspect(config);
    let mut report = Report {
        errors: found.errors,
        warnings: found.warnings,
    };
    // Building reads password and CA files: a config is valid only once
    // that worked, so "valid" is printed after it, never before a problem.
    let stack = match config.build_stack(None).await {
        Ok(s) => s,
        Err(problems) => {
            let e = ConfigError {
                source_path: Some(config_path.to_owned()),
                problems,
            };
            if !json {
                print_findings(&report, &collected.take());
            }
            return invalid(config_path, &e, json);
        }
    };
    let (rows, failed) = probe(&stack, &mut report).await;
    let served = config.wazuh.served();
    let wazuh = crate::check_wazuh::report(config, config_path, &stack, &served).await;
    // The socket's usual place matters only while Wazuh's own <socket> is
    // unknown.
    if wazuh.socket_confirmed() {
        report.warnings.retain(|w| w.path != "server.socket");
    }
    let logged = collected.take();
    let metrics = crate::metrics::destination(config.metrics);
    let audit = crate::logging::audit_destination(&config.log);
    if json {
        let backends: Vec<_> = rows[1..]
            .iter()
            .map(|[name, kind, status, latency, detail]| {
                serde_json::json!({"name": name, "type": kind, "status": status, "latency": latency, "detail": detail})
            })
            .collect();
        let warnings: Vec<String> = report
            .warnings
            .iter()
            .map(ToString::to_string)
            .chain(logged.iter().cloned())
            .collect();
        let errors: Vec<String> = report.errors.iter().map(ToString::to_string).collect();
        outln!(
            "{}",
            serde_json::json!({
                "config": config_path,
                "valid": true,
                "metrics": metrics,
                "audit": audit,
                "errors": errors,
                "warnings": warnings,
                "backends": backends,
                "wazuh": wazuh,
            })
        );
    } else {
        outln!(
            "config {}: valid, {} backend(s)",
            config_path.display(),
            config.backends.len()
        );
        outln!("metrics: {metrics}");
        outln!("audit:   {audit}");
        print_table(&rows);
        wazuh.print();
        print_findings(&report, &logged);
        if failed > 0 {
            errln!("keygate check: {failed} backend(s) cannot answer");
        }
        if wazuh.failed() {
            errln!(
                "keygate check: Wazuh does not reach this keygate as configured (see ERROR above)"
            );
        }
    }
    // The loaded data is not freed one record at a time just before the
    // process ends: the kernel takes the pages back at exit anyway
    // (a 1,000,000-line client.keys took 40-50 ms of serial freeing).
    std::mem::forget(stack);
    if failed > 0 || !report.errors.is_empty() || wazuh.failed() {
        Code::Failure.into()
    } else {
        Code::Success.into()
    }
}

/// Probes each backend as `health()` does for the daemon's breakers;
/// returns the table and how many cannot answer. A backend that answers
/// from another host than its first is "degraded", with a warning.
async fn probe(stack: &Stack, report: &mut Report) -> (Vec<[String; 5]>, usize) {
    let mut rows = vec![[
        "BACKEND".to_owned(),
        "TYPE".into(),
        "STATUS".into(),
        "LATENCY".into(),
        "DETAIL".into(),
    ]];
    let mut failed = 0;
    for (i, (name, kind, backend)) in stack.backends.iter().enumerate() {
        let started = Instant::now();
        let result = backend.health().await;
        let latency = format!("{:.1}ms", started.elapsed().as_secs_f64() * 1000.0);
        let host = backend.current_host();
        let (status, detail) = match (result, host) {
            (Err(e), _) => {
                failed += 1;
                ("FAILED", e.to_string())
            }
            (Ok(()), Some(host)) if !host.starts_with("host 1 of") => {
                report.warning(
                    format!("backend[{i}]"),
                    format!("'{name}': its first host does not answer; it answers from {host}"),
                );
                ("degraded", host)
            }
            (Ok(()), _) => ("ok", String::new()),
        };
        rows.push([
            name.clone(),
            (*kind).to_owned(),
            status.to_owned(),
            latency,
            detail,
        ]);
    }
    (rows, failed)
}

/// Every warning (the inspection's, then what the backends logged), then
/// every error, to stderr.
fn print_findings(report: &Report, logged: &[String]) {
    for warning in &report.warnings {
        errln!("warning: {warning}");
    }
    for line in logged {
        errln!("warning: {line}");
    }
    for error in &report.errors {
        errln!("error: {error}");
    }
}

fn print_table(rows: &[[String; 5]]) {
    let mut widths = [0usize; 5];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        outln!("{}", line.join("  ").trim_end());
    }
}

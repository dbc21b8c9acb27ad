//! `keygate check`: validate the config and build the backends (every
//! problem once, with its key path; "valid" only when both worked), warn
//! about what will not work with the shipped Wazuh snippets, probe each
//! backend; print a table, then what `check_wazuh` found about the manager
//! served; exit non-zero on any problem. `--json` prints the same as one
//! JSON document.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::exit::Code;
use crate::out::outln;

/// Runs the check; returns its exit code.
pub fn main(config_path: &Path, json: bool) -> ExitCode {
    let invalid = |e: keygate_config::ConfigError| {
        if json {
            let problems: Vec<String> = e.problems.iter().map(ToString::to_string).collect();
            outln!(
                "{}",
                serde_json::json!({"config": config_path, "valid": false, "problems": problems})
            );
        } else {
            outln!("{e}");
        }
        Code::Config.into()
    };
    let config = match keygate_config::load(config_path) {
        Ok(c) => c,
        Err(e) => return invalid(e),
    };
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        outln!("cannot start the runtime");
        return Code::Failure.into();
    };
    runtime.block_on(async {
        // Building reads password and CA files: a config is valid only
        // once that worked, so "valid" is printed after it, never before
        // a problem.
        let stack = match config.build_stack(None).await {
            Ok(s) => s,
            Err(problems) => {
                return invalid(keygate_config::ConfigError {
                    source_path: Some(config_path.to_owned()),
                    problems,
                });
            }
        };
        let mut rows = vec![[
            "BACKEND".to_owned(),
            "TYPE".into(),
            "STATUS".into(),
            "LATENCY".into(),
            "DETAIL".into(),
        ]];
        let mut failed = 0;
        for (name, kind, backend) in &stack.backends {
            let started = Instant::now();
            let result = backend.health().await;
            let latency = format!("{:.1}ms", started.elapsed().as_secs_f64() * 1000.0);
            let (status, detail) = match result {
                Ok(()) => ("ok".to_owned(), String::new()),
                Err(e) => {
                    failed += 1;
                    ("FAILED".to_owned(), e.to_string())
                }
            };
            rows.push([name.clone(), (*kind).to_owned(), status, latency, detail]);
        }
        let served = config.wazuh.served();
        let wazuh = crate::check_wazuh::report(&config, config_path, &stack, &served).await;
        let metrics = crate::metrics::destination(config.metrics);
        let audit = crate::logging::audit_destination(&config.log);
        // The socket's usual place matters only while Wazuh's own
        // <socket> is unknown.
        let warnings: Vec<String> = config
            .warnings()
            .iter()
            .filter(|w| !(wazuh.socket_confirmed() && w.path == "server.socket"))
            .map(ToString::to_string)
            .collect();
        if json {
            let backends: Vec<_> = rows[1..]
                .iter()
                .map(|[name, kind, status, latency, detail]| {
                    serde_json::json!({"name": name, "type": kind, "status": status, "latency": latency, "detail": detail})
                })
                .collect();
            outln!(
                "{}",
                serde_json::json!({
                    "config": config_path,
                    "valid": true,
                    "metrics": metrics,
                    "audit": audit,
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
            for warning in &warnings {
                outln!("warning: {warning}");
            }
            print_table(&rows);
            wazuh.print();
        }
        // The loaded data is not freed one record at a time just before the
        // process ends: the kernel takes the pages back at exit anyway
        // (a 1,000,000-line client.keys took 40-50 ms of serial freeing).
        std::mem::forget(stack);
        if failed > 0 {
            if !json {
                outln!("{failed} backend(s) failed");
            }
            Code::Failure.into()
        } else if wazuh.failed() {
            if !json {
                outln!("Wazuh does not reach this keygate as configured (see ERROR above)");
            }
            Code::Failure.into()
        } else {
            Code::Success.into()
        }
    })
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

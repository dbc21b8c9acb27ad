//! `keygate check`: validate the config and build the backends (every
//! problem once, with its key path; "valid" only when both worked), warn
//! about what will not work with the shipped Wazuh snippets, probe each
//! backend; print a table; exit non-zero on any problem.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::exit::Code;
use crate::out::outln;

/// Runs the check; returns its exit code.
pub fn main(config_path: &Path) -> ExitCode {
    let config = match keygate_config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            outln!("{e}");
            return Code::Config.into();
        }
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
                let e = keygate_config::ConfigError {
                    source_path: Some(config_path.to_owned()),
                    problems,
                };
                outln!("{e}");
                return Code::Config.into();
            }
        };
        outln!(
            "config {}: valid, {} backend(s)",
            config_path.display(),
            config.backends.len()
        );
        outln!("metrics: {}", crate::metrics::destination(config.metrics));
        outln!(
            "audit:   {}",
            crate::logging::audit_destination(&config.log)
        );
        for warning in config.warnings() {
            outln!("warning: {warning}");
        }
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
        print_table(&rows);
        // The loaded data is not freed one record at a time just before the
        // process ends: the kernel takes the pages back at exit anyway
        // (a 1,000,000-line client.keys took 40-50 ms of serial freeing).
        std::mem::forget(stack);
        if failed > 0 {
            outln!("{failed} backend(s) failed");
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

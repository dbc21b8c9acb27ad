//! `keygate check`: validate the config (every problem, with its key path),
//! build the backends and probe each one; print a table; exit non-zero on any
//! problem.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use crate::EX_CONFIG;

/// Runs the check; returns its exit code.
pub fn main(config_path: &Path) -> ExitCode {
    let config = match keygate_config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            println!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    println!(
        "config {}: valid, {} backend(s)",
        config_path.display(),
        config.backends.len()
    );
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        println!("cannot start the runtime");
        return ExitCode::FAILURE;
    };
    runtime.block_on(async {
        let stack = match config.build_stack(None).await {
            Ok(s) => s,
            Err(problems) => {
                for p in problems {
                    println!("{p}");
                }
                return ExitCode::from(EX_CONFIG);
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
        print_table(&rows);
        if failed > 0 {
            println!("{failed} backend(s) failed");
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
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
        println!("{}", line.join("  ").trim_end());
    }
}

//! `exec`: times `keygate --config F id X` runs, as Wazuh's exec mode does.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use crate::load::{load_requests, parse_code, Mix, Source};

#[derive(Args)]
pub struct ExecArgs {
    /// The keygate binary.
    #[arg(long, default_value = "target/release/keygate")]
    keygate: PathBuf,
    /// Config passed with --config.
    #[arg(long)]
    config: PathBuf,
    /// Number of runs.
    #[arg(long, default_value_t = 200)]
    pub runs: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    mix: Mix,
}

/// Runs keygate `args.runs` times and prints the timing.
pub fn main(args: ExecArgs) -> Result<()> {
    let fixed = load_requests(&args.mix)?;
    let mut source = Source::new(&args.mix, fixed, 42)?;
    let mut times = Vec::with_capacity(args.runs);
    let mut codes = [0u64; 8];
    for _ in 0..args.runs {
        let req = source.request();
        let (kind, value) = req.split_once(':').context("request without ':'")?;
        let started = Instant::now();
        let out = Command::new(&args.keygate)
            .arg("--config")
            .arg(&args.config)
            .args([kind, value])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", args.keygate.display()))?;
        times.push(started.elapsed());
        if let Some(c) = parse_code(&out.stdout) {
            codes[usize::from(c).min(7)] += 1;
        }
    }
    times.sort_unstable();
    let at =
        |p: f64| times[((times.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"runs": args.runs, "median_ms": at(0.5), "p99_ms": at(0.99), "max_ms": at(1.0), "codes": codes})
        );
    } else {
        let codes: Vec<String> = codes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| format!("{c}:{n}"))
            .collect();
        println!(
            "exec runs={} median={:.2}ms p99={:.2}ms max={:.2}ms codes=[{}]",
            args.runs,
            at(0.5),
            at(0.99),
            at(1.0),
            codes.join(" ")
        );
    }
    Ok(())
}

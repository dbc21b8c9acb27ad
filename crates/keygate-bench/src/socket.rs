//! `socket`: N Wazuh-style clients against keygate's socket (and the floor).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::floor::start_floor;
use crate::load::{load_requests, run_load, Mix, RunResult};

#[derive(Args)]
pub struct SocketArgs {
    /// keygate's socket. Without it, only the floor is measured.
    #[arg(long)]
    pub socket: Option<PathBuf>,
    /// Concurrent clients (comma-separated list runs each in turn).
    #[arg(long, default_value = "8", value_delimiter = ',')]
    pub clients: Vec<usize>,
    /// How long each run lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Stop each client after this many requests (0: no limit).
    #[arg(long, default_value_t = 0)]
    pub max_requests: u64,
    /// Total requests per second across all clients (0: as fast as
    /// possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Check every answer against the `gen` fixture (ids only) and count
    /// wrong answers.
    #[arg(long)]
    pub verify: bool,
    /// Also measure the fixed-reply floor in the same invocation.
    #[arg(long)]
    pub floor: bool,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub mix: Mix,
}

fn print_result(r: &RunResult, json: bool, floor_rps: Option<f64>) {
    let codes: Vec<String> = r
        .tally
        .codes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c}:{n}"))
        .collect();
    if json {
        let v = serde_json::json!({
            "target": r.label, "clients": r.clients, "seconds": r.elapsed.as_secs_f64(),
            "requests": r.total(), "rps": r.rps(), "p50_ms": r.pct(0.5), "p99_ms": r.pct(0.99),
            "max_ms": r.pct(1.0), "codes": r.tally.codes, "failed_connections": r.tally.failed_connections,
            "bad_replies": r.tally.bad_replies, "wrong_answers": r.tally.wrong_answers, "vs_floor": floor_rps.map(|f| r.rps() / f),
        });
        println!("{v}");
    } else {
        let ratio = floor_rps
            .map(|f| format!("  {:.2}x floor", r.rps() / f))
            .unwrap_or_default();
        println!(
            "{:<8} clients={:<3} requests={:<8} rps={:<10.0} p50={:.3}ms p99={:.3}ms max={:.3}ms codes=[{}] failed_conn={} bad_replies={} wrong={}{}",
            r.label,
            r.clients,
            r.total(),
            r.rps(),
            r.pct(0.5),
            r.pct(0.99),
            r.pct(1.0),
            codes.join(" "),
            r.tally.failed_connections,
            r.tally.bad_replies,
            r.tally.wrong_answers,
            ratio
        );
    }
}

/// Runs every requested client count against the floor and/or keygate.
pub fn main(args: SocketArgs) -> Result<()> {
    if args.socket.is_none() && !args.floor {
        bail!("give --socket, --floor, or both");
    }
    let fixed = load_requests(&args.mix)?;
    let floor = if args.floor {
        Some(start_floor()?)
    } else {
        None
    };
    for &clients in &args.clients {
        let mut floor_rps = None;
        if let Some((_, path)) = &floor {
            let r = run_load("floor", path, clients, &args, &fixed)?;
            floor_rps = Some(r.rps());
            print_result(&r, args.json, None);
        }
        if let Some(socket) = &args.socket {
            let r = run_load("keygate", socket, clients, &args, &fixed)?;
            print_result(&r, args.json, floor_rps);
        }
    }
    Ok(())
}

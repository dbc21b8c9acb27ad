//! `socket`: N Wazuh-style clients against keygate's socket (and the floor).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Args;

use crate::floor::{self, Floor};
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
    /// Also measure fixed-reply floors in the same invocation, before
    /// keygate at each client count: `--floor` alone is the real floor
    /// (blocking threads, no runtime); `--floor blocking,tokio` adds the
    /// tokio responder as a second reference. keygate's ratio is printed
    /// against the first floor named.
    #[arg(long, num_args = 0..=1, value_delimiter = ',', default_missing_value = "blocking")]
    pub floor: Vec<Floor>,
    /// Measure each client count this many times (floors then keygate,
    /// side by side each time) and end with the median ratio: figures on a
    /// busy machine vary from run to run, their ratio much less.
    #[arg(long, default_value_t = 1)]
    pub rounds: u32,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub mix: Mix,
}

/// keygate's throughput against each floor measured just before it.
struct Against<'a>(&'a [(Floor, f64)]);

impl Against<'_> {
    fn text(&self, rps: f64) -> String {
        self.0
            .iter()
            .enumerate()
            .map(|(i, (floor, f))| match i {
                0 => format!("  {:.2}x {}", rps / f, floor.label()),
                _ => format!(", {:.2}x {}", rps / f, floor.label()),
            })
            .collect()
    }
}

fn print_result(r: &RunResult, json: bool, floors: &Against<'_>) {
    let codes: Vec<String> = r
        .tally
        .codes
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(c, n)| format!("{c}:{n}"))
        .collect();
    if json {
        let against: serde_json::Map<String, serde_json::Value> = floors
            .0
            .iter()
            .map(|(floor, f)| (floor.label().to_owned(), (r.rps() / f).into()))
            .collect();
        let v = serde_json::json!({
            "target": r.label, "clients": r.clients, "seconds": r.elapsed.as_secs_f64(),
            "requests": r.total(), "rps": r.rps(), "p50_ms": r.pct(0.5), "p99_ms": r.pct(0.99),
            "max_ms": r.pct(1.0), "codes": r.tally.codes, "failed_connections": r.tally.failed_connections,
            "bad_replies": r.tally.bad_replies, "wrong_answers": r.tally.wrong_answers,
            "vs_floor": floors.0.first().map(|(_, f)| r.rps() / f), "vs": against,
        });
        println!("{v}");
    } else {
        println!(
            "{:<11} clients={:<3} requests={:<8} rps={:<10.0} p50={:.3}ms p99={:.3}ms max={:.3}ms codes=[{}] failed_conn={} bad_replies={} wrong={}{}",
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
            floors.text(r.rps()),
        );
    }
}

/// The median of `v` (sorted in place); `None` if empty.
fn median(v: &mut [f64]) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// Runs every requested client count against the floors and/or keygate.
pub fn main(args: SocketArgs) -> Result<()> {
    if args.socket.is_none() && args.floor.is_empty() {
        bail!("give --socket, --floor, or both");
    }
    if args.rounds == 0 {
        bail!("--rounds must be at least 1");
    }
    let fixed = load_requests(&args.mix)?;
    let floors = args
        .floor
        .iter()
        .map(|&f| Ok((f, floor::start(f)?)))
        .collect::<Result<Vec<_>>>()?;
    for &clients in &args.clients {
        let mut ratios = Vec::new();
        let mut p99s = Vec::new();
        for _ in 0..args.rounds {
            let mut measured = Vec::new();
            for (floor, running) in &floors {
                let r = run_load(floor.label(), &running.path, clients, &args, &fixed)?;
                print_result(&r, args.json, &Against(&measured));
                measured.push((*floor, r.rps()));
            }
            if let Some(socket) = &args.socket {
                let r = run_load("keygate", socket, clients, &args, &fixed)?;
                print_result(&r, args.json, &Against(&measured));
                if let Some((_, f)) = measured.first() {
                    ratios.push(r.rps() / f);
                }
                p99s.push(r.pct(0.99));
            }
        }
        if args.rounds > 1 && !args.json {
            if let (Some(ratio), Some(p99)) = (median(&mut ratios), median(&mut p99s)) {
                let floor = floors.first().map_or("floor", |(f, _)| f.label());
                println!(
                    "# clients={clients}: median of {} rounds: keygate {ratio:.2}x {floor}, p99 {p99:.3}ms",
                    args.rounds
                );
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn ratio_is_against_the_first_floor_named() {
        let measured = [(Floor::Blocking, 100.0), (Floor::Tokio, 80.0)];
        assert_eq!(
            Against(&measured).text(80.0),
            "  0.80x floor, 1.00x floor-tokio"
        );
        assert_eq!(Against(&[]).text(80.0), "");
    }
}

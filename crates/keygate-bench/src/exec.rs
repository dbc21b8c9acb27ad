//! `exec`: times `keygate --config F id X` runs, as Wazuh's exec mode does.
//!
//! On a shared machine absolute times are noise, so the references a row is
//! judged against run in the same loop, interleaved with keygate's runs:
//! `--references` adds a spawn of `/bin/true` (same arguments, same pipes)
//! and `keygate --version` before every one-shot, and `--versus PROGRAM`
//! (the seed script) runs with the same arguments every few iterations.
//! The ratios are of medians taken in that one run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Also time, interleaved with keygate's runs, a spawn of /bin/true
    /// and `keygate --version`, and print the one-shot's ratio to /bin/true.
    #[arg(long)]
    references: bool,
    /// The most the one-shot / /bin/true ratio may be, printed beside it
    /// (the target of a one-shot through the daemon; none for one that
    /// answers by itself).
    #[arg(long, requires = "references")]
    ratio_target: Option<f64>,
    /// Also time this program (called like keygate: `--config F id X`),
    /// interleaved, and print how many times faster keygate is.
    #[arg(long)]
    versus: Option<PathBuf>,
    /// How many runs of --versus (spread evenly over the keygate runs).
    #[arg(long, default_value_t = 50)]
    versus_runs: usize,
    /// What to call --versus in the output.
    #[arg(long, default_value = "versus")]
    versus_label: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    mix: Mix,
}

/// The run times of one program, and the reply codes it printed.
#[derive(Default)]
struct Timed {
    times: Vec<Duration>,
    codes: [u64; 8],
}

impl Timed {
    /// Spawns `program args`, waits for its output, records the time.
    fn run(&mut self, program: &Path, args: &[&std::ffi::OsStr]) -> Result<()> {
        let started = Instant::now();
        let out = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .with_context(|| format!("cannot run {}", program.display()))?;
        self.times.push(started.elapsed());
        if let Some(c) = parse_code(&out.stdout) {
            self.codes[usize::from(c).min(7)] += 1;
        }
        Ok(())
    }

    /// The `p` quantile in milliseconds (sorts the times).
    fn at(&mut self, p: f64) -> f64 {
        self.times.sort_unstable();
        let i = ((self.times.len() as f64 - 1.0) * p).round() as usize;
        self.times
            .get(i)
            .map_or(f64::NAN, |t| t.as_secs_f64() * 1000.0)
    }

    fn codes(&self) -> String {
        let codes: Vec<String> = self
            .codes
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(c, n)| format!("{c}:{n}"))
            .collect();
        codes.join(" ")
    }
}

/// Runs keygate `args.runs` times (and the references) and prints the timing.
pub fn main(args: ExecArgs) -> Result<()> {
    let fixed = load_requests(&args.mix)?;
    let mut source = Source::new(&args.mix, fixed, 42)?;
    let mut keygate = Timed::default();
    let mut truth = Timed::default();
    let mut version = Timed::default();
    let mut versus = Timed::default();
    let every = args.runs.div_ceil(args.versus_runs.max(1)).max(1);
    let true_bin = Path::new("/bin/true");
    for i in 0..args.runs {
        let req = source.request();
        let (kind, value) = req.split_once(':').context("request without ':'")?;
        let call = [
            "--config".as_ref(),
            args.config.as_os_str(),
            kind.as_ref(),
            value.as_ref(),
        ];
        if args.references {
            truth.run(true_bin, &call)?;
            version.run(&args.keygate, &["--version".as_ref()])?;
        }
        if let Some(v) = &args.versus {
            if i % every == 0 {
                versus.run(v, &call)?;
            }
        }
        keygate.run(&args.keygate, &call)?;
    }
    let (median, p99, max) = (keygate.at(0.5), keygate.at(0.99), keygate.at(1.0));
    if args.json {
        let mut out = serde_json::json!({"runs": args.runs, "median_ms": median, "p99_ms": p99, "max_ms": max, "codes": keygate.codes});
        if args.references {
            out["true_median_ms"] = truth.at(0.5).into();
            out["version_median_ms"] = version.at(0.5).into();
            out["ratio_to_true"] = (median / truth.at(0.5)).into();
        }
        if args.versus.is_some() {
            out["versus_median_ms"] = versus.at(0.5).into();
            out["versus_runs"] = versus.times.len().into();
            out["times_faster_than_versus"] = (versus.at(0.5) / median).into();
        }
        println!("{out}");
        return Ok(());
    }
    println!(
        "exec runs={} median={median:.2}ms p99={p99:.2}ms max={max:.2}ms codes=[{}]",
        args.runs,
        keygate.codes()
    );
    if args.references {
        let (t, v) = (truth.at(0.5), version.at(0.5));
        println!(
            "/bin/true runs={} median={t:.2}ms p99={:.2}ms (spawned the same way, interleaved)",
            truth.times.len(),
            truth.at(0.99)
        );
        println!(
            "keygate --version runs={} median={v:.2}ms p99={:.2}ms ({:.2} x /bin/true)",
            version.times.len(),
            version.at(0.99),
            v / t
        );
        let target = args
            .ratio_target
            .map(|x| format!(" (target <= {x} x)"))
            .unwrap_or_default();
        println!("ratio one-shot / /bin/true = {:.2} x{target}", median / t);
    }
    if args.versus.is_some() {
        let s = versus.at(0.5);
        println!(
            "{} runs={} median={s:.2}ms p99={:.2}ms codes=[{}] (interleaved)",
            args.versus_label,
            versus.times.len(),
            versus.at(0.99),
            versus.codes()
        );
        println!(
            "ratio {} / one-shot = {:.1} x faster (target >= 50 x)",
            args.versus_label,
            s / median
        );
    }
    Ok(())
}

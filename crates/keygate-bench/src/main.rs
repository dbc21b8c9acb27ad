//! keygate-bench: load that looks exactly like Wazuh's client.
//!
//! Each of N client threads loops: connect, ONE send without terminator,
//! ONE recv of at most 64 KiB, close, for a fixed duration. Requests come
//! from a file (`id:...` / `ip:...` lines) or are generated, uniform or
//! Zipf-distributed over an id range. The report gives throughput, p50, p99
//! and max latency, replies by error code, and failed connections.
//!
//! `--floor` also runs the same load against a built-in responder that
//! returns a fixed reply without any lookup (tokio, like keygate): the
//! kernel's and runtime's floor, measured in the same invocation.
//! `exec` times `keygate --config F id X` runs, as Wazuh's exec mode does.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

#[derive(Parser)]
#[command(
    name = "keygate-bench",
    about = "Wazuh-style load generator for keygate"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Socket load: N clients, one connection per request.
    Socket(SocketArgs),
    /// Exec-mode timer: runs `keygate --config F id X` repeatedly.
    Exec(ExecArgs),
    /// Writes N synthetic agents (ids 001.., addresses 10.x.y.z, 64-hex keys).
    Gen(GenArgs),
}

#[derive(Args)]
struct GenArgs {
    /// How many agents.
    #[arg(long, default_value_t = 100_000)]
    count: u32,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GenFormat::ClientKeys)]
    format: GenFormat,
    /// Table name for the SQL format.
    #[arg(long, default_value = "agent")]
    table: String,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum GenFormat {
    /// Wazuh client.keys lines.
    ClientKeys,
    /// CSV with an id,name,ip,key header.
    Csv,
    /// Batched INSERTs into the documented `agent` table.
    Sql,
    /// Redis commands (HSET wazuh:agent:{id}, SET wazuh:agent-ip:{ip}).
    Redis,
    /// LDIF for slapadd: the base, the keygate service account and one
    /// device+ipHost entry per agent (the documented default mapping).
    Ldif,
}

fn gen_main(args: GenArgs) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let agent = |i: u32| {
        let id = format!("{i:03}");
        let ip = format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255);
        let key = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            i,
            u64::from(i) * 0x9e37_79b9,
            u64::from(i) ^ 0x5555,
            u64::from(i) << 7
        );
        (id, format!("agent-{i}"), ip, key)
    };
    if args.format == GenFormat::Csv {
        writeln!(out, "id,name,ip,key")?;
    }
    if args.format == GenFormat::Ldif {
        writeln!(out, "dn: dc=example,dc=org\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: example\n")?;
        writeln!(
            out,
            "dn: ou=services,dc=example,dc=org\nobjectClass: organizationalUnit\nou: services\n"
        )?;
        writeln!(
            out,
            "dn: cn=keygate,ou=services,dc=example,dc=org\nobjectClass: applicationProcess\nobjectClass: simpleSecurityObject\ncn: keygate\nuserPassword: keygate-test-password\n"
        )?;
        writeln!(
            out,
            "dn: ou=agents,dc=example,dc=org\nobjectClass: organizationalUnit\nou: agents\n"
        )?;
    }
    for i in 1..=args.count {
        let (id, name, ip, key) = agent(i);
        match args.format {
            GenFormat::ClientKeys => writeln!(out, "{id} {name} {ip} {key}")?,
            GenFormat::Csv => writeln!(out, "{id},{name},{ip},{key}")?,
            GenFormat::Sql => {
                if (i - 1) % 1000 == 0 {
                    write!(
                        out,
                        "INSERT INTO {} (id,name,ip,agent_key) VALUES ",
                        args.table
                    )?;
                } else {
                    write!(out, ",")?;
                }
                write!(out, "('{id}','{name}','{ip}','{key}')")?;
                if i % 1000 == 0 || i == args.count {
                    writeln!(out, ";")?;
                }
            }
            GenFormat::Ldif => {
                writeln!(
                    out,
                    "dn: cn={name},ou=agents,dc=example,dc=org\nobjectClass: device\nobjectClass: ipHost\ncn: {name}\nserialNumber: {id}\nipHostNumber: {ip}\ndescription: {key}\n"
                )?;
            }
            GenFormat::Redis => {
                writeln!(
                    out,
                    "HSET wazuh:agent:{id} id {id} name {name} ip {ip} key {key}"
                )?;
                writeln!(out, "SET wazuh:agent-ip:{ip} {id}")?;
            }
        }
    }
    out.flush()?;
    Ok(())
}

#[derive(Args, Clone)]
struct Mix {
    /// Request file: one `id:...` or `ip:...` per line.
    #[arg(long)]
    requests: Option<PathBuf>,
    /// Generated ids: first id of the range.
    #[arg(long, default_value_t = 1)]
    id_min: u32,
    /// Generated ids: last id of the range.
    #[arg(long, default_value_t = 100_000)]
    id_max: u32,
    /// Generated distribution.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    dist: Dist,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    zipf_s: f64,
    /// Each client walks the id range in order instead (every id once per pass).
    #[arg(long)]
    sequential: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Dist {
    Uniform,
    Zipf,
}

#[derive(Args)]
struct SocketArgs {
    /// keygate's socket. Without it, only the floor is measured.
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Concurrent clients (comma-separated list runs each in turn).
    #[arg(long, default_value = "8", value_delimiter = ',')]
    clients: Vec<usize>,
    /// How long each run lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Stop each client after this many requests (0: no limit).
    #[arg(long, default_value_t = 0)]
    max_requests: u64,
    /// Also measure the fixed-reply floor in the same invocation.
    #[arg(long)]
    floor: bool,
    /// Print one JSON object per run instead of a table.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    mix: Mix,
}

#[derive(Args)]
struct ExecArgs {
    /// The keygate binary.
    #[arg(long, default_value = "target/release/keygate")]
    keygate: PathBuf,
    /// Config passed with --config.
    #[arg(long)]
    config: PathBuf,
    /// Number of runs.
    #[arg(long, default_value_t = 200)]
    runs: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    mix: Mix,
}

/// Request source for one client.
struct Source {
    fixed: Arc<Vec<String>>,
    mix: Mix,
    rng: rand::rngs::SmallRng,
    zipf: Option<Zipf<f64>>,
    next: u64,
}

impl Source {
    fn new(mix: &Mix, fixed: Arc<Vec<String>>, seed: u64) -> Result<Self> {
        let n = f64::from(mix.id_max.saturating_sub(mix.id_min) + 1);
        let zipf = match mix.dist {
            Dist::Zipf => Some(Zipf::new(n, mix.zipf_s).context("invalid Zipf parameters")?),
            Dist::Uniform => None,
        };
        Ok(Self {
            fixed,
            mix: mix.clone(),
            rng: rand::rngs::SmallRng::seed_from_u64(seed),
            zipf,
            next: seed,
        })
    }

    fn request(&mut self) -> String {
        if !self.fixed.is_empty() {
            let i = self.rng.random_range(0..self.fixed.len());
            return self.fixed[i].clone();
        }
        let span = u64::from(self.mix.id_max - self.mix.id_min) + 1;
        let offset = if self.mix.sequential {
            self.next += 1;
            (self.next - 1) % span
        } else if let Some(z) = &self.zipf {
            (z.sample(&mut self.rng) as u64)
                .saturating_sub(1)
                .min(span - 1)
        } else {
            self.rng.random_range(0..span)
        };
        format!("id:{:03}", u64::from(self.mix.id_min) + offset)
    }
}

#[derive(Default)]
struct Tally {
    latencies_us: Vec<u32>,
    codes: [u64; 8],
    failed_connections: u64,
    bad_replies: u64,
}

fn one_request(socket: &Path, req: &[u8], buf: &mut [u8], tally: &mut Tally) {
    let started = Instant::now();
    let mut s = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(_) => {
            tally.failed_connections += 1;
            return;
        }
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
    if s.write_all(req).is_err() {
        tally.failed_connections += 1;
        return;
    }
    let n = match s.read(buf) {
        Ok(n) => n,
        Err(_) => {
            tally.failed_connections += 1;
            return;
        }
    };
    drop(s);
    tally
        .latencies_us
        .push(u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX));
    match parse_code(&buf[..n]) {
        Some(c) if (c as usize) < tally.codes.len() => tally.codes[c as usize] += 1,
        _ => tally.bad_replies += 1,
    }
}

/// Reads `"error":N` without a full JSON parse (keeps the client cheap).
fn parse_code(reply: &[u8]) -> Option<u8> {
    let at = reply.windows(8).position(|w| w == b"\"error\":")? + 8;
    let digit = *reply[at..].iter().find(|b| !b.is_ascii_whitespace())?;
    digit.is_ascii_digit().then(|| digit - b'0')
}

struct RunResult {
    label: String,
    clients: usize,
    elapsed: Duration,
    tally: Tally,
}

impl RunResult {
    fn total(&self) -> u64 {
        self.tally.latencies_us.len() as u64
    }
    fn rps(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        let v = &self.tally.latencies_us;
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        f64::from(v[i.min(v.len() - 1)]) / 1000.0
    }
}

fn run_load(
    label: &str,
    socket: &Path,
    clients: usize,
    args: &SocketArgs,
    fixed: &Arc<Vec<String>>,
) -> Result<RunResult> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut handles = Vec::new();
    let started = Instant::now();
    for c in 0..clients {
        let mut source = Source::new(&args.mix, fixed.clone(), 0x5eed + c as u64 * 7919)?;
        let (stop, socket, max) = (stop.clone(), socket.to_owned(), args.max_requests);
        handles.push(std::thread::spawn(move || {
            let mut tally = Tally::default();
            let mut buf = vec![0u8; 65536];
            let mut done = 0u64;
            while !stop.load(Ordering::Relaxed) && (max == 0 || done < max) {
                let req = source.request();
                one_request(&socket, req.as_bytes(), &mut buf, &mut tally);
                done += 1;
            }
            tally
        }));
    }
    let deadline = started + args.duration;
    while Instant::now() < deadline && !handles.iter().all(|h| h.is_finished()) {
        std::thread::sleep(Duration::from_millis(5));
    }
    stop.store(true, Ordering::Relaxed);
    let mut tally = Tally::default();
    for h in handles {
        let t = h
            .join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))?;
        tally.latencies_us.extend(t.latencies_us);
        for (a, b) in tally.codes.iter_mut().zip(t.codes) {
            *a += b;
        }
        tally.failed_connections += t.failed_connections;
        tally.bad_replies += t.bad_replies;
    }
    let elapsed = started.elapsed();
    tally.latencies_us.sort_unstable();
    Ok(RunResult {
        label: label.to_owned(),
        clients,
        elapsed,
        tally,
    })
}

/// The floor: a tokio responder with a fixed reply and no lookup.
fn start_floor() -> Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("floor.sock");
    let std_listener = std::os::unix::net::UnixListener::bind(&path)?;
    std_listener.set_nonblocking(true)?;
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let Ok(listener) = tokio::net::UnixListener::from_std(std_listener) else { return };
            const REPLY: &[u8] = br#"{"error":0,"data":{"id":"001","name":"floor","ip":"any","key":"0000000000000000000000000000000000000000000000000000000000000000"}}"#;
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 512];
                    if let Ok(n) = s.read(&mut buf).await {
                        if n > 0 {
                            let _ = s.write_all(REPLY).await;
                        }
                    }
                });
            }
        });
    });
    Ok((dir, path))
}

fn load_requests(mix: &Mix) -> Result<Arc<Vec<String>>> {
    let Some(path) = &mix.requests else {
        return Ok(Arc::new(Vec::new()));
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let list: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        bail!("{} holds no requests", path.display());
    }
    Ok(Arc::new(list))
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
            "bad_replies": r.tally.bad_replies, "vs_floor": floor_rps.map(|f| r.rps() / f),
        });
        println!("{v}");
    } else {
        let ratio = floor_rps
            .map(|f| format!("  {:.2}x floor", r.rps() / f))
            .unwrap_or_default();
        println!(
            "{:<8} clients={:<3} requests={:<8} rps={:<10.0} p50={:.3}ms p99={:.3}ms max={:.3}ms codes=[{}] failed_conn={} bad_replies={}{}",
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
            ratio
        );
    }
}

fn socket_main(args: SocketArgs) -> Result<()> {
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

fn exec_main(args: ExecArgs) -> Result<()> {
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

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::Socket(a) => socket_main(a),
        Cmd::Gen(a) => gen_main(a),
        Cmd::Exec(a) => {
            if a.runs == 0 {
                bail!("--runs must be at least 1");
            }
            exec_main(a)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_code_without_parsing_json() {
        assert_eq!(parse_code(br#"{"error":4,"message":"x"}"#), Some(4));
        assert_eq!(parse_code(br#"{"error": 0, "data": {}}"#), Some(0));
        assert_eq!(parse_code(b"garbage"), None);
    }

    #[test]
    fn generated_ids_stay_in_range_and_are_zero_padded() {
        let mix = Mix {
            requests: None,
            id_min: 1,
            id_max: 50,
            dist: Dist::Zipf,
            zipf_s: 1.1,
            sequential: false,
        };
        let mut s = Source::new(&mix, Arc::new(Vec::new()), 1).unwrap();
        for _ in 0..1000 {
            let r = s.request();
            let n: u32 = r.trim_start_matches("id:").parse().unwrap();
            assert!((1..=50).contains(&n), "{r}");
            assert!(r.len() >= 6, "{r}");
        }
    }

    /// The floor responder answers a Wazuh-style request.
    #[test]
    fn floor_responder_answers() {
        let (_dir, path) = start_floor().unwrap();
        let mut tally = Tally::default();
        let mut buf = vec![0u8; 65536];
        for _ in 0..50 {
            if UnixStream::connect(&path).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        one_request(&path, b"id:001", &mut buf, &mut tally);
        assert_eq!(tally.codes[0], 1);
    }
}

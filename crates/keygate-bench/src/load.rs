//! The Wazuh-style client loop shared by `socket` runs: request sources,
//! one request exactly as Wazuh makes it, the tally of what came back.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use crate::socket::SocketArgs;

#[derive(Args, Clone)]
pub struct Mix {
    /// Request file: one `id:...` or `ip:...` per line.
    #[arg(long)]
    pub requests: Option<std::path::PathBuf>,
    /// Generated ids: first id of the range.
    #[arg(long, default_value_t = 1)]
    pub id_min: u32,
    /// Generated ids: last id of the range.
    #[arg(long, default_value_t = 100_000)]
    pub id_max: u32,
    /// Generated distribution.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    pub dist: Dist,
    /// Zipf exponent.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,
    /// Each client walks the id range in order instead (every id once per pass).
    #[arg(long)]
    pub sequential: bool,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Dist {
    Uniform,
    Zipf,
}

pub struct Source {
    fixed: Arc<Vec<String>>,
    mix: Mix,
    rng: rand::rngs::SmallRng,
    zipf: Option<Zipf<f64>>,
    next: u64,
}

impl Source {
    pub fn new(mix: &Mix, fixed: Arc<Vec<String>>, seed: u64) -> Result<Self> {
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

    pub fn request(&mut self) -> String {
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
pub struct Tally {
    pub latencies_us: Vec<u32>,
    pub codes: [u64; 8],
    pub failed_connections: u64,
    pub bad_replies: u64,
    /// With `--verify`: answers that differ from the `gen` fixture (a
    /// record for another agent, wrong fields, or 4/5 for an agent that
    /// exists). Code 2 (no backend could answer) is not a wrong answer.
    pub wrong_answers: u64,
}

/// One request as Wazuh makes it; with `verify`, the reply is checked
/// against the `gen` fixture ([`answer_is_right`]).
pub fn one_request(socket: &Path, req: &[u8], buf: &mut [u8], tally: &mut Tally, verify: bool) {
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
    if verify && !answer_is_right(req, &buf[..n]) {
        tally.wrong_answers += 1;
    }
}

/// Whether `reply` is a right answer to `req` for the `gen` fixture (every
/// `id:N` exists, as agent N): the agent's own record, or code 2.
pub fn answer_is_right(req: &[u8], reply: &[u8]) -> bool {
    let Some(n) = std::str::from_utf8(req)
        .ok()
        .and_then(|r| r.strip_prefix("id:"))
        .and_then(|n| n.parse::<u32>().ok())
    else {
        return false;
    };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(reply) else {
        return false;
    };
    match v["error"].as_u64() {
        Some(0) => {
            let (id, name, ip, key) = crate::gen::agent(n);
            let d = &v["data"];
            d["id"] == id.as_str()
                && d["name"] == name.as_str()
                && d["ip"] == ip.as_str()
                && d["key"] == key.as_str()
        }
        Some(2) => true,
        _ => false,
    }
}

/// Reads `"error":N` without a full JSON parse (keeps the client cheap).
pub fn parse_code(reply: &[u8]) -> Option<u8> {
    let at = reply.windows(8).position(|w| w == b"\"error\":")? + 8;
    let digit = *reply[at..].iter().find(|b| !b.is_ascii_whitespace())?;
    digit.is_ascii_digit().then(|| digit - b'0')
}

pub struct RunResult {
    pub label: String,
    pub clients: usize,
    pub elapsed: Duration,
    pub tally: Tally,
}

impl RunResult {
    pub fn total(&self) -> u64 {
        self.tally.latencies_us.len() as u64
    }
    pub fn rps(&self) -> f64 {
        self.total() as f64 / self.elapsed.as_secs_f64()
    }
    pub fn pct(&self, p: f64) -> f64 {
        let v = &self.tally.latencies_us;
        if v.is_empty() {
            return 0.0;
        }
        let i = ((v.len() as f64 - 1.0) * p).round() as usize;
        f64::from(v[i.min(v.len() - 1)]) / 1000.0
    }
}

pub fn run_load(
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
        // With --rate, each client sends at rate/clients per second, on a
        // fixed schedule (a late request does not shift the next ones).
        let interval =
            (args.rate > 0.0).then(|| Duration::from_secs_f64(clients as f64 / args.rate));
        let verify = args.verify;
        handles.push(std::thread::spawn(move || {
            let mut tally = Tally::default();
            let mut buf = vec![0u8; 65536];
            let mut done = 0u64;
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) && (max == 0 || done < max) {
                if let Some(interval) = interval {
                    next += interval;
                    if let Some(wait) = next.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                }
                let req = source.request();
                one_request(&socket, req.as_bytes(), &mut buf, &mut tally, verify);
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
        tally.wrong_answers += t.wrong_answers;
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

pub fn load_requests(mix: &Mix) -> Result<Arc<Vec<String>>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `--verify` accepts the fixture's own record and code 2, nothing else.
    #[test]
    fn verify_checks_answers_against_the_fixture() {
        let (id, name, ip, key) = crate::gen::agent(42);
        let right = format!(
            r#"{{"error":0,"data":{{"id":"{id}","name":"{name}","ip":"{ip}","key":"{key}"}}}}"#
        );
        assert!(answer_is_right(b"id:042", right.as_bytes()));
        assert!(!answer_is_right(b"id:043", right.as_bytes()));
        assert!(answer_is_right(b"id:042", br#"{"error":2,"message":"x"}"#));
        assert!(!answer_is_right(b"id:042", br#"{"error":4,"message":"x"}"#));
        assert!(!answer_is_right(b"id:042", b"garbage"));
    }

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
}

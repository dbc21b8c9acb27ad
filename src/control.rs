//! The admin commands' client side (`keygate reload`, `cache stats`, `cache
//! flush [q]`, `backends`): send one typed request to the daemon's control
//! socket and print the answer for a person (aligned tables) or, with
//! `--json`, for a script. The daemon side is in `src/daemon.rs`; the
//! protocol in `keygate_server::control`.
//!
//! Exit codes (docs/codes.md): 0 done; 1 the daemon failed (the cache is
//! disabled, an answer that is not one); 78 `reload` refused, the new
//! config is invalid (problems on stderr); 64 a `cache flush` entry that is
//! not `id:...` or `ip:...`; 69 no daemon answers on the control socket;
//! 77 the socket or the daemon refuses us.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use keygate_core::{CacheStats, Request};
use keygate_server::control::{self, BackendView, ControlError, ControlRequest, ControlResponse};

use crate::exit::Code;
use crate::out::{errln, outln};

/// How the answer is printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// Aligned text for a person.
    Text,
    /// One JSON document for a script.
    Json,
}

/// Sends `request` to the daemon named by the config at `config_path` and
/// prints the answer; returns the exit code.
pub fn client(config_path: &Path, request: ControlRequest, output: Output) -> ExitCode {
    if let ControlRequest::CacheFlush { query: Some(query) } = &request {
        // The daemon would refuse it too; a mistake on the command line is
        // said as one, before asking.
        if let Err(e) = Request::parse(query.as_bytes()) {
            errln!("keygate cache flush: {query}: {e} (expected id:001 or ip:10.0.0.1)");
            return Code::Usage.into();
        }
    }
    let socket = keygate_config::control_socket_of(config_path);
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        errln!("keygate: cannot start the runtime");
        return Code::Failure.into();
    };
    let reload = request == ControlRequest::Reload;
    let answer = runtime.block_on(control::ask(&socket, &request, Duration::from_secs(60)));
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => {
            errln!("keygate: {e}");
            return unanswered(&e).into();
        }
    };
    let printed = match (answer, output) {
        (ControlResponse::Failed { errors }, _) => {
            for e in errors {
                errln!("{e}");
            }
            // A refused reload is a config the daemon found invalid (it
            // keeps the old one).
            return if reload { Code::Config } else { Code::Failure }.into();
        }
        (ControlResponse::Denied { error }, _) => {
            errln!("keygate: {error}");
            return Code::Permission.into();
        }
        (ControlResponse::Done { message }, Output::Text) => format!("{message}\n"),
        (ControlResponse::Done { message }, Output::Json) => {
            json(&serde_json::json!({ "message": message }))
        }
        (ControlResponse::CacheStats { stats }, Output::Text) => stats_table(&stats),
        (ControlResponse::CacheStats { stats }, Output::Json) => json(&stats),
        (ControlResponse::Backends { backends }, Output::Text) => backends_table(&backends),
        (ControlResponse::Backends { backends }, Output::Json) => json(&backends),
    };
    outln!("{}", printed.trim_end_matches('\n'));
    Code::Success.into()
}

/// The exit code when the daemon gave no answer: 77 when the socket's
/// mode refuses us, 69 when nobody answers (no file, refused, no answer in
/// time), 1 for an answer that is not one.
fn unanswered(error: &ControlError) -> Code {
    match error {
        ControlError::Unreachable { source, .. }
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Code::Permission
        }
        ControlError::Unreachable { .. } | ControlError::Timeout(_) => Code::Unavailable,
        ControlError::BadAnswer(_) => Code::Failure,
    }
}

fn json<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).map_or_else(|e| format!("{{\"error\":\"{e}\"}}\n"), |s| s + "\n")
}

/// `entries  3` lines, names and numbers each in their own column.
fn stats_table(s: &CacheStats) -> String {
    let rows = [
        ("entries", s.entries),
        ("hits", s.hits),
        ("negative_hits", s.negative_hits),
        ("misses", s.misses),
        ("stale_served", s.stale_served),
        ("coalesced_waits", s.coalesced_waits),
        ("refreshes", s.refreshes),
    ];
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|(k, v)| vec![(*k).to_owned(), v.to_string()])
        .collect();
    table(&[("COUNTER", Align::Left), ("VALUE", Align::Right)], &rows)
}

fn backends_table(list: &[BackendView]) -> String {
    let ms = |x: Option<f64>| x.map_or_else(|| "-".to_owned(), |m| format!("{m:.2}ms"));
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|b| {
            vec![
                b.name.clone(),
                b.state.clone(),
                b.lookups.to_string(),
                b.skipped.to_string(),
                ms(b.p50_ms),
                ms(b.p99_ms),
                b.host.clone().unwrap_or_else(|| "-".into()),
                b.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            ("BACKEND", Align::Left),
            ("STATE", Align::Left),
            ("LOOKUPS", Align::Right),
            ("SKIPPED", Align::Right),
            ("P50", Align::Right),
            ("P99", Align::Right),
            ("HOST", Align::Left),
            ("LAST ERROR", Align::Left),
        ],
        &rows,
    )
}

#[derive(Clone, Copy)]
enum Align {
    Left,
    Right,
}

/// Columns as wide as their widest cell, two spaces apart; the last column
/// is not padded.
fn table(headers: &[(&str, Align)], rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(i, (h, _))| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let last = cells.len().saturating_sub(1);
        let mut out = String::new();
        for (i, (cell, ((_, align), width))) in
            cells.iter().zip(headers.iter().zip(&widths)).enumerate()
        {
            if i > 0 {
                out.push_str("  ");
            }
            match (align, i == last) {
                (Align::Left, true) => out.push_str(cell),
                (Align::Left, false) => out.push_str(&format!("{cell:<width$}")),
                (Align::Right, _) => out.push_str(&format!("{cell:>width$}")),
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(headers.iter().map(|(h, _)| *h).collect());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every column starts at the same place on every line, and a number
    /// never touches its neighbour (LOOKUPS and SKIPPED used to run
    /// together).
    #[test]
    fn backends_table_is_aligned() {
        let b = |name: &str, lookups, skipped| BackendView {
            name: name.into(),
            state: "up".into(),
            lookups,
            skipped,
            consecutive_failures: 0,
            p50_ms: Some(1.5),
            p99_ms: None,
            host: Some("host 1 of 2: db1:3306".into()),
            last_error: None,
        };
        let out = backends_table(&[b("a", 123_456_789, 12_345_678), b("inventory-long", 4, 0)]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[1].contains("123456789  12345678"), "{out}");
        for col in ["STATE", "P50", "HOST"] {
            let at = lines[0].find(col).unwrap();
            let end = at + col.len();
            for l in &lines[1..] {
                let c = l.as_bytes()[if col == "P50" { end - 1 } else { at }];
                assert_ne!(c, b' ', "column {col} misaligned in:\n{out}");
            }
        }
        assert!(lines[2].starts_with("inventory-long  up "), "{out}");
    }

    #[test]
    fn stats_table_aligns_names_and_values() {
        let out = stats_table(&CacheStats {
            entries: 3,
            hits: 1_000_000,
            ..Default::default()
        });
        let ends: Vec<usize> = out.lines().map(str::len).collect();
        assert!(ends.windows(2).all(|w| w[0] == w[1]), "{out}");
        assert!(out.contains("\nhits             1000000\n"), "{out}");
    }
}

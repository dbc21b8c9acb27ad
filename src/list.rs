//! `keygate list`: every agent of the store (id, name, ip; the key only with
//! `--with-keys`), then the invalid records with their reasons and the
//! names Wazuh would refuse (warnings). Records are printed as they are
//! read, so a million agents never sit in memory.
//!
//! Exit codes (docs/codes.md): 0 all listed, 1 some records are invalid or
//! the listing is incomplete (the store failed midway: what was printed is
//! not the whole store, and the summary and stderr say so), 78 the config
//! is invalid or a backend cannot be built, 64 `--backend` names no
//! backend. Name warnings do not change it.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use futures_util::StreamExt;
use keygate_core::Listed;

use crate::exit::Code;
use crate::out::{capped, errln};
use crate::progress::Bar;
use crate::store::{NameWarning, Store};

/// `keygate list` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this backend (default: the whole chain, first backend wins for
    /// an id).
    #[arg(long)]
    pub backend: Option<String>,
    /// Print each agent's key too.
    #[arg(long)]
    pub with_keys: bool,
    /// One JSON document: {"agents": [...], "count": N, "invalid": [...],
    /// "warnings": [...], "complete": true} ("complete": false and "error"
    /// when the listing failed midway).
    #[arg(long)]
    pub json: bool,
}

/// Runs the command.
pub fn main(config_path: &Path, args: &Args) -> ExitCode {
    match crate::store::run(config_path, |config| async move {
        let store = Store::open(&config, args.backend.as_deref()).await?;
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        list(&store, args, &mut out).await
    }) {
        Ok(code) => code,
        Err(e) => crate::exit::fail("list", &e),
    }
}

async fn list(store: &Store, args: &Args, out: &mut impl Write) -> anyhow::Result<ExitCode> {
    let bar = Bar::new();
    let mut invalid = Vec::new();
    let mut warnings = Vec::new();
    let mut failure = None;
    let mut count = 0u64;
    if args.json {
        write!(out, "{{\"agents\":[")?;
    }
    let mut items = std::pin::pin!(store.list());
    while let Some(item) = items.next().await {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        match item {
            Listed::Record(r) => {
                warnings.extend(NameWarning::of(&r));
                let key = args.with_keys.then(|| r.key.expose());
                if args.json {
                    let mut v = serde_json::json!({"id": r.id.as_str(), "name": r.name.as_str(), "ip": r.ip.as_str()});
                    if let Some(k) = key {
                        v["key"] = k.into();
                    }
                    write!(out, "{}{v}", if count == 0 { "" } else { "," })?;
                } else {
                    write!(
                        out,
                        "{:<8} {:<32} {}",
                        r.id.as_str(),
                        r.name.as_str(),
                        r.ip.as_str()
                    )?;
                    if let Some(k) = key {
                        write!(out, " {k}")?;
                    }
                    writeln!(out)?;
                }
                count += 1;
                bar.inc(1);
            }
            Listed::Invalid { at, reason } => invalid.push((at, reason)),
        }
    }
    bar.finish();
    let failure = failure.map(|e| crate::store::incomplete(count, &e));
    if args.json {
        let invalid: Vec<_> = invalid
            .iter()
            .map(|(at, reason)| serde_json::json!({"at": at, "reason": reason}))
            .collect();
        let mut tail = serde_json::json!({
            "count": count,
            "invalid": invalid,
            "warnings": warnings,
            "complete": failure.is_none(),
        });
        if let Some(why) = &failure {
            tail["error"] = why.as_str().into();
        }
        // The agents went out one by one; the rest of the document follows.
        let tail = tail.to_string();
        writeln!(out, "],{}", tail.trim_start_matches('{'))?;
    } else {
        write!(out, "{count} agent(s), {} invalid record(s)", invalid.len())?;
        if !warnings.is_empty() {
            write!(out, ", {} warning(s)", warnings.len())?;
        }
        match failure {
            Some(_) => writeln!(out, ": INCOMPLETE, the listing failed")?,
            None => writeln!(out)?,
        }
        let invalid = capped(&invalid, "  ", |(at, reason)| {
            format!("invalid: {at}: {reason}")
        });
        write!(out, "{invalid}")?;
        write!(
            out,
            "{}",
            capped(&warnings, "  ", |w| format!("warning: {w}"))
        )?;
    }
    out.flush()?;
    if let Some(why) = failure {
        errln!("keygate list: {why}");
        return Ok(Code::Failure.into());
    }
    Ok(if invalid.is_empty() {
        Code::Success
    } else {
        Code::Failure
    }
    .into())
}

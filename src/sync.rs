//! `keygate sync`: makes a Wazuh manager's agent registry equal to the
//! store through the Wazuh API (the way past Wazuh 5.0, which removed key
//! polling). The engine is `keygate_wazuh::sync`; this is the command.
//!
//! Exit codes. Dry run (no `--apply`): 0 nothing to do, 2 changes pending,
//! 1 error (config, store or API, or records the API cannot take).
//! `--apply`: 0 every change succeeded, 1 otherwise.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use keygate_wazuh::sync::{self, Options, Report};
use keygate_wazuh::{Retry, Settings, Wazuh};

use crate::out::{errln, outln};
use crate::progress::Bar;
use crate::store::Store;

/// `keygate sync` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Make the changes (without it, print the plan and change nothing).
    #[arg(long)]
    pub apply: bool,
    /// Also delete manager agents that are not in the store (never 000).
    #[arg(long)]
    pub prune: bool,
    /// Only this backend (default: the whole chain, first backend wins).
    #[arg(long)]
    pub backend: Option<String>,
    /// The summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Ids per `agents_list` and per delete call.
const BATCH: usize = 500;

/// Runs the command.
pub fn main(config_path: &Path, args: &Args) -> ExitCode {
    let result = crate::store::run(config_path, |config| async move {
        let Some(wazuh) = &config.wazuh.api else {
            anyhow::bail!(
                "keygate sync needs the Wazuh API in {}: [wazuh] url, user and one of password_file, password_env or password_credential",
                config_path.display()
            );
        };
        if wazuh.insecure {
            errln!(
                "warning: [wazuh] insecure = true: the API's certificate is not verified; anyone on the path can read the API password and the agent keys"
            );
        }
        let password = wazuh
            .password
            .read()
            .context("[wazuh]")?
            .context("[wazuh] has no password source")?;
        let client = Wazuh::new(Settings {
            url: wazuh.url.clone(),
            user: wazuh.user.clone(),
            password,
            ca_file: wazuh.ca_file.clone(),
            insecure: wazuh.insecure,
            concurrency: wazuh.concurrency,
            timeout: wazuh.timeout,
            retry: Retry::default(),
        })?;
        let store = Store::open(&config, args.backend.as_deref()).await?;
        let options = Options {
            apply: args.apply,
            prune: args.prune,
            batch: BATCH,
            concurrency: wazuh.concurrency,
        };
        let bar = Bar::new();
        let report = sync::run(&client, store.list(), &options, &bar).await;
        bar.finish();
        Ok(report?)
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            errln!("keygate sync: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        outln!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        outln!("{}", render(&report, args.prune).trim_end());
    }
    let failed = !report.failed.is_empty();
    match (args.apply, failed, report.has_changes()) {
        (_, true, _) => ExitCode::FAILURE,
        (true, false, _) | (false, false, false) => ExitCode::SUCCESS,
        (false, false, true) => ExitCode::from(2),
    }
}

/// At most this many ids per line of the text summary (`--json` has all).
const SHOWN: usize = 20;

fn ids(list: &[String]) -> String {
    let mut s = list
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if list.len() > SHOWN {
        s.push_str(&format!(
            ", ... and {} more (--json lists all)",
            list.len() - SHOWN
        ));
    }
    s
}

fn render(r: &Report, prune: bool) -> String {
    let mut s = String::from(if r.applied {
        "Applied:\n"
    } else {
        "Plan (dry run, nothing changed):\n"
    });
    for (what, list) in [
        ("insert", &r.inserted),
        ("replace", &r.replaced),
        ("delete", &r.deleted),
    ] {
        s.push_str(&format!("  {what:<9} {:>6}", list.len()));
        if !list.is_empty() {
            s.push_str(&format!("  {}", ids(list)));
        }
        s.push('\n');
    }
    s.push_str(&format!("  unchanged {:>6}\n", r.unchanged));
    s.push_str(&format!("  failed    {:>6}\n", r.failed.len()));
    for f in &r.failed {
        let action = match f.action {
            sync::Action::Insert => "insert",
            sync::Action::Replace => "replace",
            sync::Action::Delete => "delete",
        };
        s.push_str(&format!("    {} ({action}): {}\n", f.id, f.reason));
    }
    if !r.invalid.is_empty() {
        s.push_str(&format!("  invalid store entries: {}\n", r.invalid.len()));
        for i in &r.invalid {
            s.push_str(&format!("    {}: {}\n", i.at, i.reason));
        }
    }
    if let Some(why) = &r.prune_skipped {
        s.push_str(&format!("  prune skipped: {why}\n"));
    } else if !prune && !r.applied {
        s.push_str("  (agents only in the manager are kept; --prune deletes them)\n");
    }
    if !r.applied && r.has_changes() {
        s.push_str("Run with --apply to make these changes.\n");
    }
    s
}

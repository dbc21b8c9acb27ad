//! `keygate sync`: makes a Wazuh manager's agent registry equal to the
//! store through the Wazuh API (the way past Wazuh 5.0, which removed key
//! polling). The engine is `keygate_wazuh::sync`; this is the command: the
//! config turned into the engine's options (the manager's client.keys read
//! with the file backend's parser), the summary, and the exit code.
//!
//! Exit codes (docs/codes.md): 0 done, or nothing to do; 1 a change failed
//! or conflicts, the plan was refused (`--max-delete`), prune was skipped,
//! or the store or the API failed; 2 dry run with changes pending;
//! 64 usage (an unknown `--backend`); 69 the API cannot be reached; 77 the
//! API refuses the user; 78 configuration (an invalid config, no `[wazuh]
//! url`, a backend that cannot be built).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use keygate_config::{Config, WazuhConfig};
use keygate_wazuh::sync::{self, Backups, ManagerKeys, Options, Report};
use keygate_wazuh::{Retry, Settings, Wazuh};

use crate::exit::Code;
use crate::out::{errln, outln};
use crate::progress::Bar;
use crate::store::Store;

/// `keygate sync` options.
#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct Args {
    /// Make the changes (without it, print the plan and change nothing).
    /// Before the first change, the manager's lines for every agent to be
    /// replaced or deleted are written to a backup file in `[wazuh]
    /// backup_dir` (default /var/lib/keygate/backups); the summary prints
    /// its path.
    #[arg(long)]
    pub apply: bool,
    /// Also delete manager agents that are not in the store (never 000),
    /// and the agents a replace or insert would make the manager remove.
    /// Skipped when the store lists no agent or has invalid entries.
    #[arg(long)]
    pub prune: bool,
    /// The most agents this run may delete; a plan that would delete more
    /// is refused whole (exit 1, nothing changed). Default: `[wazuh]
    /// max_delete`, else 10 % of the manager's agents (at least 1).
    #[arg(long, value_name = "N")]
    pub max_delete: Option<u64>,
    /// Only this backend (default: the whole chain, first backend wins).
    #[arg(long)]
    pub backend: Option<String>,
    /// The summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The rest of `keygate sync --help` (and of its man page).
const AFTER_HELP: &str = "\
The [wazuh] keys of a run (docs/configuration.md, docs/sync.md):
  url, user, password_file | password_env | password_credential  the API (required)
  max_delete               most deletes a run may make (default: 10 % of the manager's agents, at least 1)
  backup_dir               backups before every change (default /var/lib/keygate/backups)
  backups_kept             backup files kept (default 30)
  client_keys              the manager's client.keys, to compare keys without an API call each
                           (default: the first readable of /var/ossec/etc/client.keys and
                           /var/wazuh-manager/etc/client.keys)
  max_requests_per_minute  pace of every API call but authentication (default 100)
Exit codes: 0 done or nothing to do; 1 a change failed or conflicts, the plan was refused,
prune or deletes were skipped, or the store or the API failed; 2 dry run with changes
pending; 64 usage; 69 the API cannot be reached; 77 the API refuses the user; 78
configuration.";

/// Ids per delete call, and store records compared at a time.
const BATCH: usize = 500;
/// Why the command stopped before a report.
enum Stop {
    /// A usage error (64).
    Usage(String),
    /// A configuration error (78).
    Config(String),
    /// The run failed; its exit code is the error's ([`crate::exit::code_of`]:
    /// 69 the API cannot be reached, 77 it refuses the user, else 1).
    Failed(anyhow::Error),
}

/// Runs the command.
pub fn main(config_path: &Path, args: &Args) -> ExitCode {
    let (report, warnings) = match run(config_path, args) {
        Ok(done) => done,
        Err(stop) => {
            let (text, code) = match stop {
                Stop::Usage(t) => (t, Code::Usage),
                Stop::Config(t) => (t, Code::Config),
                Stop::Failed(e) => return crate::exit::fail("sync", &e),
            };
            errln!("keygate sync: {text}");
            return code.into();
        }
    };
    for warning in warnings {
        errln!("warning: {warning}");
    }
    if args.json {
        outln!("{}", serde_json::to_string(&report).unwrap_or_default());
    } else {
        outln!("{}", render(&report, args.prune).trim_end());
    }
    if report.is_failure() {
        Code::Failure.into()
    } else if !report.applied && report.has_changes() {
        Code::Differences.into()
    } else {
        Code::Success.into()
    }
}

fn run(config_path: &Path, args: &Args) -> Result<(Report, Vec<String>), Stop> {
    let config = keygate_config::load(config_path).map_err(|e| Stop::Config(e.to_string()))?;
    let Some(api) = config.wazuh.api.clone() else {
        return Err(Stop::Config(format!(
            "{} has no Wazuh API to sync to: set [wazuh] url, user and one of password_file, \
             password_env or password_credential (docs/configuration.md#wazuh)",
            config_path.display()
        )));
    };
    if let Some(name) = &args.backend {
        if !config.backends.iter().any(|b| &b.name == name) {
            let names: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
            return Err(Stop::Usage(format!(
                "--backend {name}: no such backend (configured: {})",
                names.join(", ")
            )));
        }
    }
    let mut warnings = Vec::new();
    if api.insecure {
        warnings.push(
            "[wazuh] insecure = true: the API's certificate is not verified; anyone on the path \
             can read the API password and the agent keys"
                .to_owned(),
        );
    }
    // A password source that cannot be read now (an unset variable, a
    // missing credential) is the run's failure, not the config's.
    let password = match api.password.read() {
        Ok(Some(p)) => p,
        Ok(None) => return Err(Stop::Config("[wazuh] has no password source".into())),
        Err(e) => return Err(Stop::Failed(anyhow::anyhow!("[wazuh]: {e}"))),
    };
    let settings = Settings {
        url: api.url.clone(),
        user: api.user.clone(),
        password,
        ca_file: api.ca_file.clone(),
        insecure: api.insecure,
        concurrency: api.concurrency,
        timeout: api.timeout,
        retry: Retry::default(),
        max_requests_per_minute: config.wazuh.max_requests_per_minute,
    };
    let (manager_keys, warning) = manager_keys(&config.wazuh);
    warnings.extend(warning);
    let options = Options {
        apply: args.apply,
        prune: args.prune,
        max_delete: args
            .max_delete
            .or(config.wazuh.max_delete.map(|n| n as u64)),
        batch: BATCH,
        concurrency: api.concurrency,
        manager_keys,
        backups: Backups {
            dir: config.wazuh.backup_dir.clone(),
            kept: config.wazuh.backups_kept,
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Stop::Failed(anyhow::anyhow!("cannot start the runtime: {e}")))?;
    let report = runtime.block_on(sync_with(&config, settings, &options, args))?;
    Ok((report, warnings))
}

async fn sync_with(
    config: &Config,
    settings: Settings,
    options: &Options,
    args: &Args,
) -> Result<Report, Stop> {
    let client = Wazuh::new(settings).map_err(|e| Stop::Config(e.to_string()))?;
    let store = Store::open(config, args.backend.as_deref())
        .await
        .map_err(|e| Stop::Config(format!("{e:#}")))?;
    let bar = Bar::new();
    let report = sync::run(&client, store.list(), options, &bar).await;
    bar.finish();
    report.map_err(|e| Stop::Failed(e.into()))
}

/// The manager's client.keys: `[wazuh] client_keys`, else the first
/// readable of the usual paths; `None` (keys read through the API) when
/// there is none, with a warning when the configured one cannot be read.
fn manager_keys(wazuh: &WazuhConfig) -> (Option<ManagerKeys>, Option<String>) {
    let candidates: Vec<PathBuf> = match &wazuh.client_keys {
        Some(path) => vec![path.clone()],
        None => keygate_config::DEFAULT_CLIENT_KEYS
            .iter()
            .map(PathBuf::from)
            .collect(),
    };
    for path in candidates {
        match read(&path) {
            Ok(records) => {
                let lines = records
                    .into_iter()
                    .map(|r| (r.id.as_str().to_owned(), r))
                    .collect();
                return (Some(ManagerKeys { path, lines }), None);
            }
            Err(e) if wazuh.client_keys.is_some() => {
                return (
                    None,
                    Some(format!(
                        "[wazuh] client_keys: {e}; keys are read through the API instead \
                         (one call per agent)"
                    )),
                )
            }
            Err(_) => {}
        }
    }
    (None, None)
}

#[cfg(feature = "file")]
fn read(path: &Path) -> Result<Vec<keygate_core::AgentRecord>, String> {
    keygate_backends::file::client_keys::ClientKeysFile::read(path).map(|f| f.unique_records())
}

#[cfg(not(feature = "file"))]
fn read(_: &Path) -> Result<Vec<keygate_core::AgentRecord>, String> {
    Err("reading client.keys needs the `file` feature, compiled out of this build".into())
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

fn failures(s: &mut String, title: &str, list: &[sync::Failure]) {
    s.push_str(&format!("  {title:<9} {:>6}\n", list.len()));
    for f in list.iter().take(SHOWN) {
        s.push_str(&format!(
            "    {} ({}): {}\n",
            f.id,
            f.action.as_str(),
            f.reason
        ));
    }
    if list.len() > SHOWN {
        s.push_str(&format!(
            "    ... and {} more (--json lists all)\n",
            list.len() - SHOWN
        ));
    }
}

fn render(r: &Report, prune: bool) -> String {
    let mut s = String::from(match (r.applied, r.refused.is_some()) {
        (_, true) => "Refused (nothing changed):\n",
        (true, _) => "Applied:\n",
        (false, _) => "Plan (dry run, nothing changed):\n",
    });
    if let Some(why) = &r.refused {
        s.push_str(&format!("  {why}\n"));
    }
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
    for d in r.displaced.iter().take(SHOWN) {
        s.push_str(&format!(
            "    {} is deleted because {} takes its name or address\n",
            d.id, d.by
        ));
    }
    s.push_str(&format!("  unchanged {:>6}\n", r.unchanged));
    failures(&mut s, "failed", &r.failed);
    if !r.conflicts.is_empty() {
        failures(&mut s, "conflicts", &r.conflicts);
    }
    if !r.invalid.is_empty() {
        s.push_str(&format!("  invalid store entries: {}\n", r.invalid.len()));
        for i in r.invalid.iter().take(SHOWN) {
            s.push_str(&format!("    {}: {}\n", i.at, i.reason));
        }
    }
    if let Some(why) = &r.prune_skipped {
        s.push_str(&format!("  prune skipped: {why}\n"));
    } else if !prune && !r.applied {
        s.push_str("  (agents only in the manager are kept; --prune deletes them)\n");
    }
    if let Some(why) = &r.deletes_skipped_reason {
        s.push_str(&format!(
            "  deletes skipped {:>6}  {}\n    {why}\n",
            r.deletes_skipped.len(),
            ids(&r.deletes_skipped)
        ));
    }
    if let Some(path) = &r.backup {
        s.push_str(&format!(
            "  backup: {} (the replaced and deleted agents' lines, with their keys)\n",
            path.display()
        ));
    }
    match &r.client_keys {
        Some(path) => s.push_str(&format!(
            "  keys compared against {} (an agent whose line there is missing or stale is read through the API)\n",
            path.display()
        )),
        None => s.push_str("  keys read through the API (no readable [wazuh] client_keys)\n"),
    }
    let pace = humantime::format_duration(std::time::Duration::from_secs(r.apply_seconds));
    s.push_str(&format!(
        "  API calls: {} made, {} answered 429 and retried; applying the plan takes {} (about {pace} at the configured pace)\n",
        r.api_calls, r.throttled, r.apply_calls
    ));
    if !r.applied && r.refused.is_none() && r.has_changes() {
        s.push_str("Run with --apply to make these changes.\n");
    }
    s
}

//! `keygate verify --client-keys PATH`: where the store (the whole chain,
//! first backend wins for an id) and a manager's client.keys disagree.
//!
//! Drift kinds: `only_in_store`, `only_in_manager`, `key_differs`,
//! `name_differs`, `ip_differs`, `removed_in_manager` (Wazuh marked the
//! agent removed, `ID !NAME IP KEY`, and the store still serves it),
//! `duplicate_name` and `duplicate_ip` (in either side; `any` excepted),
//! `duplicate_id` (two active lines in the manager's file). Keys are
//! compared, never shown.
//!
//! Names in the store that Wazuh's `OS_IsValidName` refuses are reported
//! as warnings (they do not change the exit code).
//!
//! When the store's listing is incomplete (it failed midway), nothing is
//! compared: an agent the listing did not reach would look
//! `only_in_manager`. It says "incomplete" and exits 1.
//!
//! Exit codes (docs/codes.md): 0 in sync; 2 drift (differences found, as
//! Terraform's `-detailed-exitcode`); 1 the comparison failed or is
//! incomplete: the file cannot be read, a line of it or a store record is
//! unreadable (then drift is still listed, but the exit code says the
//! comparison is not whole), or the listing is incomplete; 77 the file may
//! not be read; 78 the config is invalid or a backend cannot be built.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use futures_util::StreamExt;
use keygate_core::Listed;
use serde::Serialize;
use zeroize::Zeroizing;

use crate::exit::Code;
use crate::out::{capped, errln, outln};
use crate::progress::Bar;
use crate::store::{NameWarning, Store};

/// `keygate verify` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The manager's client.keys (e.g. /var/ossec/etc/client.keys).
    #[arg(long, value_name = "PATH")]
    pub client_keys: PathBuf,
    /// The result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// One disagreement.
#[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Drift {
    /// What kind (see the module doc).
    pub kind: &'static str,
    /// The agent id, or the shared name/address for duplicates.
    pub id: String,
    /// Details (never a key).
    pub detail: String,
}

/// The result.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// Why the store's listing is incomplete (then nothing is compared).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
    /// Store names Wazuh's `OS_IsValidName` refuses.
    pub warnings: Vec<NameWarning>,
    /// Every disagreement, sorted.
    pub drift: Vec<Drift>,
    /// What could not be read: file lines and store records.
    pub unreadable: Vec<String>,
    /// Agents in the store.
    pub store_agents: u64,
    /// Active agents in the manager's file.
    pub manager_agents: u64,
}

/// A manager's client.keys line.
struct Entry {
    name: String,
    ip: String,
    key: Zeroizing<String>,
    removed: bool,
    seen: bool,
}

/// Runs the command.
pub fn main(config_path: &Path, args: &Args) -> ExitCode {
    let result = crate::store::run(config_path, |config| async move {
        let text = Zeroizing::new(
            std::fs::read_to_string(&args.client_keys)
                .with_context(|| format!("cannot read {}", args.client_keys.display()))?,
        );
        let store = Store::open(&config, None).await?;
        verify(&store, &text).await
    });
    let report = match result {
        Ok(r) => r,
        Err(e) => return crate::exit::fail("verify", &e),
    };
    if let Some(why) = &report.incomplete {
        if args.json {
            let v = serde_json::json!({"complete": false, "error": why, "in_sync": false});
            outln!("{v}");
        } else {
            outln!("INCOMPLETE: the store could not be listed completely; nothing compared");
        }
        errln!("keygate verify: {why}");
        return Code::Failure.into();
    }
    if args.json {
        let in_sync = report.drift.is_empty() && report.unreadable.is_empty();
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        v["in_sync"] = in_sync.into();
        v["complete"] = true.into();
        outln!("{v}");
    } else {
        let warnings = capped(&report.warnings, "", |w| format!("warning: {w}"));
        let unreadable = capped(&report.unreadable, "", |l| format!("unreadable: {l}"));
        for line in warnings.lines().chain(unreadable.lines()) {
            outln!("{line}");
        }
        for d in &report.drift {
            outln!("{}: {} {}", d.kind, d.id, d.detail);
        }
        outln!(
            "{} agent(s) in the store, {} in the manager: {}",
            report.store_agents,
            report.manager_agents,
            match (report.unreadable.is_empty(), report.drift.is_empty()) {
                (false, _) => "some entries could not be read".to_owned(),
                (true, true) => "in sync".to_owned(),
                (true, false) => format!("{} difference(s)", report.drift.len()),
            }
        );
    }
    if !report.unreadable.is_empty() {
        Code::Failure
    } else if !report.drift.is_empty() {
        Code::Differences
    } else {
        Code::Success
    }
    .into()
}

/// Compares the store with the text of a manager's client.keys.
pub async fn verify(store: &Store, client_keys: &str) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let mut manager: HashMap<String, Entry> = HashMap::new();
    for (n, line) in client_keys.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [id, name, ip, key] = fields[..] else {
            report.unreadable.push(format!(
                "{} line {}: not 'ID NAME IP KEY'",
                "client.keys",
                n + 1
            ));
            continue;
        };
        let (removed, name) = match name.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, name),
        };
        let entry = Entry {
            name: name.to_owned(),
            ip: ip.to_owned(),
            key: Zeroizing::new(key.to_owned()),
            removed,
            seen: false,
        };
        match manager.get(id) {
            Some(old) if !old.removed && !removed => report.drift.push(Drift {
                kind: "duplicate_id",
                id: id.to_owned(),
                detail: format!("(manager: a second active line, line {})", n + 1),
            }),
            Some(old) if !old.removed => {}
            _ => {
                manager.insert(id.to_owned(), entry);
            }
        }
    }
    let active = || manager.iter().filter(|(_, e)| !e.removed);
    report.manager_agents = active().count() as u64;
    let mut manager_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut manager_ips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, e) in active() {
        manager_names
            .entry(e.name.clone())
            .or_default()
            .push(id.clone());
        if e.ip != "any" {
            manager_ips
                .entry(e.ip.clone())
                .or_default()
                .push(id.clone());
        }
    }

    let bar = Bar::new();
    let mut store_names: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut store_ips: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut items = std::pin::pin!(store.list());
    while let Some(item) = items.next().await {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                bar.finish();
                return Ok(Report {
                    incomplete: Some(crate::store::incomplete(report.store_agents, &e)),
                    ..Report::default()
                });
            }
        };
        let record = match item {
            Listed::Record(r) => r,
            Listed::Invalid { at, reason } => {
                report.unreadable.push(format!("store {at}: {reason}"));
                continue;
            }
        };
        bar.inc(1);
        report.store_agents += 1;
        report.warnings.extend(NameWarning::of(&record));
        let id = record.id.as_str().to_owned();
        store_names
            .entry(record.name.as_str().to_owned())
            .or_default()
            .push(id.clone());
        if record.ip.as_str() != "any" {
            store_ips
                .entry(record.ip.as_str().to_owned())
                .or_default()
                .push(id.clone());
        }
        let mut drift = |kind, detail: String| {
            report.drift.push(Drift {
                kind,
                id: id.clone(),
                detail,
            });
        };
        let Some(entry) = manager.get_mut(record.id.as_str()) else {
            drift("only_in_store", format!("({})", record.name.as_str()));
            continue;
        };
        entry.seen = true;
        if entry.removed {
            drift(
                "removed_in_manager",
                format!(
                    "(the manager removed {}; the store still serves it)",
                    entry.name
                ),
            );
            continue;
        }
        if entry.name != record.name.as_str() {
            drift(
                "name_differs",
                format!("(store {}, manager {})", record.name.as_str(), entry.name),
            );
        }
        if entry.ip != record.ip.as_str() {
            drift(
                "ip_differs",
                format!("(store {}, manager {})", record.ip.as_str(), entry.ip),
            );
        }
        if entry.key.as_str() != record.key.expose() {
            drift("key_differs", format!("({})", record.name.as_str()));
        }
    }
    bar.finish();
    for (id, e) in manager.iter().filter(|(_, e)| !e.removed && !e.seen) {
        report.drift.push(Drift {
            kind: "only_in_manager",
            id: id.clone(),
            detail: format!("({})", e.name),
        });
    }
    for (side, kind, map) in [
        ("store", "duplicate_name", store_names),
        ("store", "duplicate_ip", store_ips),
        ("manager", "duplicate_name", manager_names),
        ("manager", "duplicate_ip", manager_ips),
    ] {
        for (value, mut ids) in map.into_iter().filter(|(_, ids)| ids.len() > 1) {
            ids.sort();
            report.drift.push(Drift {
                kind,
                id: value,
                detail: format!("({side}: ids {})", ids.join(", ")),
            });
        }
    }
    report.drift.sort();
    Ok(report)
}

//! `keygate export`: the store in Wazuh's client.keys format (or CSV), to
//! provision agents or rebuild a manager's file.
//!
//! With `-o FILE` the file is written atomically: a temporary file in the
//! same directory, synced, then renamed over FILE, so a reader never sees
//! half a file. It gets an existing FILE's owner, group and mode (a
//! manager's client.keys is `root:wazuh 0640`, and Wazuh's daemons must
//! still read it), or, for a new FILE, mode 0640 and the directory's
//! group. Records that fail validation are reported and not written; a
//! second entry for an id is not written either. Agents sharing a name or
//! an address (`any` excepted) are written and reported: Wazuh's own force
//! rules would refuse or replace one of them. Names Wazuh's
//! `OS_IsValidName` refuses are written and reported as warnings.
//!
//! CSV cells that start with `=`, `+`, `-`, `@`, a tab, a carriage return
//! or `'` are written with a `'` in front, so that a spreadsheet shows
//! them instead of running them as formulas (OWASP's "CSV injection");
//! keygate's own CSV reader takes that `'` off again
//! ([`keygate_backends::file::cell`]).
//!
//! An incomplete listing (the store failed midway) writes nothing with
//! `-o` (FILE is left as it was); on stdout the lines already written stay,
//! and the report says the output is incomplete.
//!
//! The report goes to stdout with `-o`, to stderr when the data does.
//! Exit codes (docs/codes.md): 0 written, nothing to report; 1 written,
//! with problems reported, or the listing incomplete, or FILE could not be
//! written; 77 FILE or its directory may not be written; 78 the config is
//! invalid or a backend cannot be built; 64 `--backend` names no backend.
//! Name warnings do not change it.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use futures_util::StreamExt;
use keygate_backends::file::cell;
use keygate_core::Listed;
use serde::Serialize;

use crate::exit::Code;
use crate::out::{capped, errln, outln};
use crate::progress::Bar;
use crate::store::{NameWarning, Store};

/// Output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `ID NAME IP KEY` lines, Wazuh's client.keys (also written
    /// `client_keys`, as the config spells it).
    #[default]
    #[value(alias = "client_keys")]
    ClientKeys,
    /// CSV with the header `id,name,ip,key`.
    Csv,
}

/// `keygate export` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Only this backend (default: the whole chain, first backend wins).
    #[arg(long)]
    pub backend: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::ClientKeys)]
    pub format: Format,
    /// Write to this file (atomically; an existing file keeps its owner,
    /// group and mode, a new one gets 0640 and the directory's group)
    /// instead of stdout.
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// The report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What an export found worth reporting (never a key).
#[derive(Debug, Serialize)]
pub struct Report {
    /// Whether the store's whole listing was read (when not, nothing is
    /// written with `-o`).
    pub complete: bool,
    /// Why the listing is incomplete.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Agents written.
    pub written: u64,
    /// Where they were written (absent for stdout).
    pub file: Option<PathBuf>,
    /// Records not written: where and why.
    pub invalid: Vec<Problem>,
    /// Names held by more than one agent, with their ids.
    pub duplicate_names: Vec<Shared>,
    /// Addresses held by more than one agent, with their ids.
    pub duplicate_ips: Vec<Shared>,
    /// Names Wazuh's `OS_IsValidName` refuses (written all the same).
    pub warnings: Vec<NameWarning>,
}

impl Default for Report {
    fn default() -> Self {
        Self {
            complete: true,
            error: None,
            written: 0,
            file: None,
            invalid: Vec::new(),
            duplicate_names: Vec::new(),
            duplicate_ips: Vec::new(),
            warnings: Vec::new(),
        }
    }
}

/// A record refused.
#[derive(Debug, Serialize)]
pub struct Problem {
    /// Where it is.
    pub at: String,
    /// Why.
    pub reason: String,
}

/// A name or address shared by several ids.
#[derive(Debug, Serialize)]
pub struct Shared {
    /// The name or address.
    pub value: String,
    /// The ids holding it.
    pub ids: Vec<String>,
}

/// Runs the command.
pub fn main(config_path: &Path, args: &Args) -> ExitCode {
    let result = crate::store::run(config_path, |config| async move {
        let store = Store::open(&config, args.backend.as_deref()).await?;
        match &args.output {
            Some(path) => write_atomically(&store, args.format, path).await,
            None => {
                let stdout = std::io::stdout();
                let mut out = std::io::BufWriter::new(stdout.lock());
                let report = export(&store, args.format, &mut out).await?;
                out.flush()?;
                Ok(report)
            }
        }
    });
    let mut report = match result {
        Ok(r) => r,
        Err(e) => return crate::exit::fail("export", &e),
    };
    report.file.clone_from(&args.output);
    let text = render(&report, args.json);
    if args.output.is_some() {
        outln!("{}", text.trim_end());
    } else {
        errln!("{}", text.trim_end());
    }
    if let Some(why) = &report.error {
        if args.output.is_some() {
            errln!("keygate export: {why}");
        }
        return Code::Failure.into();
    }
    let clean = report.invalid.is_empty()
        && report.duplicate_names.is_empty()
        && report.duplicate_ips.is_empty();
    if clean { Code::Success } else { Code::Failure }.into()
}

fn render(report: &Report, json: bool) -> String {
    if json {
        return serde_json::to_string(report).map_or_else(|e| format!("{e}\n"), |s| s + "\n");
    }
    let mut s = match (&report.error, &report.file) {
        (Some(why), Some(f)) => format!(
            "INCOMPLETE: nothing written, {} is left as it was: {why}\n",
            f.display()
        ),
        (Some(why), None) => format!(
            "INCOMPLETE: {} agent(s) written, but the output is not the whole store: {why}\n",
            report.written
        ),
        (None, Some(f)) => format!("{} agent(s) written to {}\n", report.written, f.display()),
        (None, None) => format!("{} agent(s) written\n", report.written),
    };
    s.push_str(&capped(&report.invalid, "", |p| {
        format!("not written: {}: {}", p.at, p.reason)
    }));
    s.push_str(&capped(&report.duplicate_names, "", |d| {
        format!("duplicate name {}: ids {}", d.value, d.ids.join(", "))
    }));
    s.push_str(&capped(&report.duplicate_ips, "", |d| {
        format!("duplicate ip {}: ids {}", d.value, d.ids.join(", "))
    }));
    s.push_str(&capped(&report.warnings, "", |w| format!("warning: {w}")));
    s
}

/// Streams the store into `out`, one line (or row) per valid agent.
pub async fn export(store: &Store, format: Format, out: &mut dyn Write) -> anyhow::Result<Report> {
    let bar = Bar::new();
    let mut report = Report::default();
    let mut names: HashMap<String, Vec<String>> = HashMap::new();
    let mut ips: HashMap<String, Vec<String>> = HashMap::new();
    if format == Format::Csv {
        out.write_all(&csv_row(["id", "name", "ip", "key"])?)?;
    }
    let mut items = std::pin::pin!(store.list());
    while let Some(item) = items.next().await {
        let item = match item {
            Ok(item) => item,
            Err(e) => {
                report.complete = false;
                report.error = Some(crate::store::incomplete(report.written, &e));
                break;
            }
        };
        let record = match item {
            Listed::Record(r) => r,
            Listed::Invalid { at, reason } => {
                report.invalid.push(Problem { at, reason });
                continue;
            }
        };
        report.warnings.extend(NameWarning::of(&record));
        let (id, name, ip) = (record.id.as_str(), record.name.as_str(), record.ip.as_str());
        match format {
            Format::Csv => out.write_all(&csv_row([id, name, ip, record.key.expose()])?)?,
            Format::ClientKeys => writeln!(out, "{id} {name} {ip} {}", record.key.expose())?,
        }
        names
            .entry(name.to_owned())
            .or_default()
            .push(id.to_owned());
        if ip != "any" {
            ips.entry(ip.to_owned()).or_default().push(id.to_owned());
        }
        report.written += 1;
        bar.inc(1);
    }
    bar.finish();
    report.duplicate_names = shared(names);
    report.duplicate_ips = shared(ips);
    Ok(report)
}

/// One CSV row, quoted as needed (a key may hold a comma or a quote), each
/// cell safe from spreadsheets ([`cell::escape`]).
fn csv_row(fields: [&str; 4]) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::WriterBuilder::new().from_writer(Vec::with_capacity(160));
    w.write_record(fields.map(cell::escape).iter().map(|c| c.as_bytes()))?;
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("cannot format a CSV row: {}", e.error()))
}

fn shared(map: HashMap<String, Vec<String>>) -> Vec<Shared> {
    let mut out: Vec<Shared> = map
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .map(|(value, ids)| Shared { value, ids })
        .collect();
    out.sort_by(|a, b| a.value.cmp(&b.value));
    out
}

/// Who owns the written file, and its mode.
#[derive(Debug, PartialEq, Eq)]
struct Owner {
    uid: Option<u32>,
    gid: u32,
    mode: u32,
    /// Whether `path` exists (its owner must then be kept, or nothing
    /// written).
    existing: bool,
}

/// An existing `path`'s owner, group and mode; for a new one, mode 0640
/// and the group of `dir`.
fn owner_for(path: &Path, dir: &Path) -> anyhow::Result<Owner> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Owner {
            uid: Some(m.uid()),
            gid: m.gid(),
            mode: m.mode() & 0o7777,
            existing: true,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let d = std::fs::metadata(dir)
                .with_context(|| format!("cannot read the directory {}", dir.display()))?;
            Ok(Owner {
                uid: None,
                gid: d.gid(),
                mode: 0o640,
                existing: false,
            })
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Gives `file` (the temporary file) `owner`: an existing file's owner and
/// group must be kept, or nothing is written; a new file that cannot take
/// the directory's group (a user who is not in it) keeps the user's group,
/// with a warning. The mode is set last (a change of owner clears setuid
/// and setgid bits).
fn give(file: &std::fs::File, owner: &Owner, path: &Path) -> anyhow::Result<()> {
    let current = file.metadata()?;
    if owner.uid.is_some_and(|u| u != current.uid()) || owner.gid != current.gid() {
        if let Err(e) = std::os::unix::fs::fchown(file, owner.uid, Some(owner.gid)) {
            if owner.existing {
                return Err(e).with_context(|| {
                    format!(
                        "cannot give the new {} the owner and group of the old one ({}:{}); \
                         nothing written (run as root, or as its owner)",
                        path.display(),
                        owner.uid.unwrap_or_default(),
                        owner.gid
                    )
                });
            }
            errln!(
                "warning: {} gets your group, not its directory's group {} ({e})",
                path.display(),
                owner.gid
            );
        }
    }
    file.set_permissions(std::fs::Permissions::from_mode(owner.mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// A temporary file next to `path`, readable by its owner only until it
/// gets `path`'s owner and mode.
fn temporary_next_to(path: &Path) -> anyhow::Result<(tempfile::NamedTempFile, Owner)> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let owner = owner_for(path, dir)?;
    let file = tempfile::Builder::new()
        .prefix(".keygate-export-")
        .permissions(std::fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    Ok((file, owner))
}

/// Exports into a temporary file and renames it over `path` only when the
/// whole store was written; otherwise `path` is left as it was.
async fn write_atomically(store: &Store, format: Format, path: &Path) -> anyhow::Result<Report> {
    let (file, owner) = temporary_next_to(path)?;
    let mut out = std::io::BufWriter::new(file);
    let report = export(store, format, &mut out).await?;
    if !report.complete {
        return Ok(report);
    }
    let file = out
        .into_inner()
        .map_err(|e| e.into_error())
        .with_context(|| format!("cannot write {}", path.display()))?;
    give(file.as_file(), &owner, path)?;
    file.as_file()
        .sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot rename the temporary file to {}", path.display()))?;
    Ok(report)
}

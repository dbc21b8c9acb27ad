//! The configuration reference (`docs/configuration.md` and the backend
//! pages under `docs/backends/`) documents every key the loader reads, with
//! the default the code uses. The key list comes from the code: the keys each
//! `Section` read while loading a config, and for each backend type the keys
//! its own struct accepts (serde's list of expected keys when it meets an
//! unknown one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::section::READ;
use crate::{load_str, COMPILED_BACKEND_TYPES};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every Markdown page of the documentation: README.md and `docs/**.md`.
fn pages() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut paths = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut paths);
    paths.sort();
    paths
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).unwrap();
            (p, text)
        })
        .collect()
}

/// The configuration reference: `docs/configuration.md` followed by the
/// backend pages.
fn reference() -> String {
    pages()
        .into_iter()
        .filter(|(p, _)| {
            p.ends_with("docs/configuration.md") || p.parent().unwrap().ends_with("docs/backends")
        })
        .map(|(_, text)| text + "\n")
        .collect()
}

/// Whether `line`, outside a code block, is a Markdown heading.
fn is_heading(line: &str) -> bool {
    let hashes = line.len() - line.trim_start_matches('#').len();
    (1..=6).contains(&hashes) && line[hashes..].starts_with(' ')
}

/// The text under the heading (any level) that contains `marker`, up to
/// the next heading; headings inside code blocks (TOML comments) are text.
fn section<'a>(doc: &'a str, marker: &str) -> &'a str {
    let mut fence = false;
    let mut start = None;
    let mut offset = 0;
    for line in doc.split_inclusive('\n') {
        if line.starts_with("```") {
            fence = !fence;
        } else if !fence && is_heading(line) {
            if let Some(s) = start {
                return &doc[s..offset];
            }
            if line.contains(marker) {
                start = Some(offset + line.len());
            }
        }
        offset += line.len();
    }
    match start {
        Some(s) => &doc[s..],
        None => panic!("the configuration reference has no heading with {marker}"),
    }
}

/// `key -> default cell` for every table row of a section (a first cell
/// may name several keys: `` `query_by_id`, `query_by_ip` ``).
fn rows(section: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split(" | ").collect();
        let first = cells[0].trim_start_matches("| ");
        for key in first.split(", ") {
            out.insert(key.trim_matches('`').to_owned(), cells[1].to_owned());
        }
    }
    out
}

/// Whether `key` is documented in `section`: a table row, or a line of its
/// TOML snippet (`key = ...`, also commented out), or `` `key` `` in the text.
fn documents(section: &str, key: &str) -> bool {
    rows(section).contains_key(key)
        || section.lines().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("[backend.{key}]"))
        })
        || section.contains(&format!("`{key}`"))
}

/// The same default, however each side writes it.
fn same_default(code: &str, readme: &str) -> bool {
    let norm = |s: &str| s.trim().trim_matches(['`', '"']).to_ascii_lowercase();
    let (code, readme) = (norm(code), norm(readme));
    if let (Ok(a), Ok(b)) = (
        humantime::parse_duration(&code),
        humantime::parse_duration(&readme),
    ) {
        return a == b;
    }
    code == readme
}

const EVERY_TABLE: &str =
    "[server]\n[log]\n[cache]\n[metrics]\nlisten = \"127.0.0.1:9187\"\n[wazuh]\nurl = \"https://m:55000\"\nuser = \"k\"\npassword_file = \"/p\"\n[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"/k\"\n";

#[test]
fn every_key_of_the_shared_tables_is_documented_with_its_default() {
    READ.with(|r| r.borrow_mut().clear());
    load_str(EVERY_TABLE, Path::new("/")).unwrap();
    let read = READ.with(|r| r.borrow().clone());
    assert!(read.len() > 15, "{read:?}");
    let readme = reference();
    let mut wrong = Vec::new();
    for (table, key, default) in read {
        let marker = if table == "backend" {
            "`[[backend]]`".to_owned()
        } else {
            format!("`[{table}]`")
        };
        let text = section(&readme, &marker);
        let rows = rows(text);
        match (rows.get(key), default) {
            (None, _) => wrong.push(format!(
                "{table}.{key}: no row in the reference's {marker} table"
            )),
            (Some(doc), Some(default)) if !same_default(&default, doc) => wrong.push(format!(
                "{table}.{key}: the reference says {doc}, the code uses {default}"
            )),
            _ => {}
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The keys a backend type's own struct accepts, from serde's list of
/// expected keys (nested tables: `fields`, `attributes`).
fn type_keys(kind: &str) -> Vec<String> {
    let text = format!("[[backend]]\nname = \"k\"\ntype = \"{kind}\"\nzz_not_a_key = 1\n");
    let e = load_str(&text, Path::new("/")).unwrap_err();
    let p = e
        .problems
        .iter()
        .find(|p| p.path == "backend[0].zz_not_a_key")
        .unwrap_or_else(|| panic!("{e}"));
    let list = p.message.split("expected one of: ").nth(1).unwrap();
    list.split(", ").map(str::to_owned).collect()
}

#[test]
fn every_key_of_every_backend_type_is_documented() {
    let readme = reference();
    let mut wrong = Vec::new();
    for kind in COMPILED_BACKEND_TYPES {
        let text = section(&readme, &format!("`type = \"{kind}\"`"));
        let keys = type_keys(kind);
        assert!(keys.len() >= 2, "{kind}: {keys:?}");
        for key in keys {
            if !documents(text, &key) {
                wrong.push(format!(
                    "type = \"{kind}\": key {key} is not on its docs page"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every TOML block of README.md and docs/ that holds a `[[backend]]` is a
/// config the loader accepts (with `[[backend]]` snippets completed by
/// nothing).
#[test]
fn every_backend_snippet_in_the_docs_loads() {
    let docs: String = pages().into_iter().map(|(_, text)| text).collect();
    let mut blocks = 0;
    for block in docs.split("```toml\n").skip(1) {
        let block = &block[..block.find("```").unwrap()];
        if !block.contains("[[backend]]") {
            continue;
        }
        blocks += 1;
        if let Err(e) = load_str(block, Path::new("/etc/keygate")) {
            panic!("docs block does not load:\n{block}\n{e}");
        }
    }
    assert!(blocks >= 5, "{blocks}");
    // The durations the docs write are ones the loader reads.
    assert_eq!(
        humantime::parse_duration("24h").unwrap(),
        Duration::from_secs(86_400)
    );
}

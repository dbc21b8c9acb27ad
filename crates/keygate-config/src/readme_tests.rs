//! The configuration reference (`docs/configuration.md` and the backend
//! pages under `docs/backends/`) documents every key the loader reads, with
//! the default the code uses. The key list comes from the code: the keys each
//! `Section` read while loading a config, and for each backend type the keys
//! its own struct accepts (serde's list of expected keys when it meets an
//! unknown one).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

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

/// The lines of `section` inside its code blocks.
fn code_lines(section: &str) -> Vec<&str> {
    let mut fence = false;
    let mut out = Vec::new();
    for line in section.lines() {
        if line.starts_with("```") {
            fence = !fence;
        } else if fence {
            out.push(line);
        }
    }
    out
}

/// Whether `key` is documented in `section`: a row of its table, or a line
/// of its TOML snippet (`key = ...`, also commented out, or the
/// `[backend.key]` table). A mention in the text is not enough.
fn documents(section: &str, key: &str) -> bool {
    rows(section).contains_key(key)
        || code_lines(section).iter().any(|l| {
            let l = l.trim_start_matches(['#', ' ']);
            l.starts_with(&format!("{key} =")) || l.starts_with(&format!("[backend.{key}]"))
        })
}

/// What [`documents`] accepts and refuses.
#[test]
fn a_key_is_documented_by_a_row_or_a_toml_line_only() {
    let page = "| key | default |\n|---|---|\n| `url`, `urls` | required |\n\n\
                ```toml\ntimeout = \"2s\"\n# pool_size = 4\n[backend.fields]\n```\n\
                The `ca_file` key, and a line of prose:\nretries = 3 (not TOML)\n";
    for key in ["url", "urls", "timeout", "pool_size", "fields"] {
        assert!(documents(page, key), "{key}");
    }
    for key in ["ca_file", "retries", "default", "key"] {
        assert!(!documents(page, key), "{key}");
    }
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

/// A backend for a TOML block that shows other tables only.
const ONE_BACKEND: &str = "\n[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"/k\"\n";

/// `continuation` (keys of a `[[backend]]` table, then maybe its nested
/// tables, as a page shows a variant of the block above it) applied to
/// `previous`: the previous block's backend keys the continuation does not
/// set, then the continuation. The previous block's nested tables
/// (`[backend.attributes]`) are dropped: the continuation gives its own or
/// takes the defaults.
fn continued(previous: &str, continuation: &str) -> String {
    let key = |line: &str| {
        let line = line.trim_start();
        let end = line.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
        line[end..]
            .trim_start()
            .starts_with('=')
            .then(|| line[..end].to_owned())
    };
    let set: Vec<String> = continuation
        .lines()
        .take_while(|l| !l.starts_with('['))
        .filter_map(key)
        .collect();
    let mut out: String = previous
        .lines()
        .take_while(|l| !l.starts_with("[backend."))
        .filter(|l| key(l).is_none_or(|k| !set.contains(&k)))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str(continuation);
    out
}

/// What [`continued`] makes of a block and its variant.
#[test]
fn a_continuation_replaces_the_keys_it_sets() {
    let previous = "[[backend]]\nname = \"d\"\nbase_dn = \"a\"\n[backend.attributes]\nid = \"x\"\n";
    let continuation = "base_dn = \"b\"\n[backend.attributes]\nname = \"uid\"\n";
    assert_eq!(
        continued(previous, continuation),
        "[[backend]]\nname = \"d\"\nbase_dn = \"b\"\n[backend.attributes]\nname = \"uid\"\n"
    );
}

/// Every TOML block of README.md and docs/ is a config the loader accepts,
/// as written, so every value the docs show, durations included, is one
/// the loader reads. A block without a `[[backend]]` is given one; a block
/// of keys before any table continues the `[[backend]]` block above it on
/// the same page (a variant of it: [`continued`]).
#[test]
fn every_config_snippet_in_the_docs_loads() {
    let (mut backends, mut others, mut continuations) = (0, 0, 0);
    for (page, text) in pages() {
        let mut previous: Option<String> = None;
        for block in text.split("```toml\n").skip(1) {
            let block = &block[..block.find("```").unwrap()];
            let first = block
                .lines()
                .find(|l| !l.trim().is_empty() && !l.starts_with('#'));
            let config = if !first.is_some_and(|l| l.starts_with('[')) {
                let Some(previous) = &previous else {
                    panic!(
                        "{}: a block of keys with no [[backend]] block above it:\n{block}",
                        page.display()
                    );
                };
                continuations += 1;
                continued(previous, block)
            } else if block.contains("[[backend]]") {
                backends += 1;
                previous = Some(block.to_owned());
                block.to_owned()
            } else {
                others += 1;
                format!("{block}{ONE_BACKEND}")
            };
            if let Err(e) = load_str(&config, Path::new("/etc/keygate")) {
                panic!(
                    "{}: docs block does not load:\n{block}\n(as {config})\n{e}",
                    page.display()
                );
            }
        }
    }
    assert!(
        backends >= 5 && others >= 1 && continuations >= 1,
        "{backends} {others} {continuations}"
    );
}

//! Every `keygate ...` command the docs tell an operator to type (the
//! ```sh blocks of README.md and docs/**/*.md) is one this CLI parses: its
//! subcommand and flags exist and take the values shown. Lines that run
//! other programs (apt, systemctl, editor, printf...) are left alone;
//! `keygate` is found as the program (`keygate`, `target/release/keygate`),
//! after `cargo run ... --`, and after `docker compose ... exec SERVICE`.
//! (The TOML blocks are loaded by keygate-config's readme_tests.rs.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use pulldown_cmark::{CodeBlockKind, Event, Parser, Tag, TagEnd};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
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
    let mut out = vec![repo().join("README.md")];
    walk(&repo().join("docs"), &mut out);
    out.sort();
    out
}

/// The lines of a page's ```sh (or bash, shell) blocks, a line ending in
/// `\` joined with the next.
fn shell_lines(markdown: &str) -> Vec<String> {
    let mut lines = Vec::new();
    let mut inside = false;
    let mut text = String::new();
    for event in Parser::new(markdown) {
        match event {
            Event::Start(Tag::CodeBlock(CodeBlockKind::Fenced(info))) => {
                inside = matches!(
                    info.split_whitespace().next(),
                    Some("sh" | "bash" | "shell")
                );
                text.clear();
            }
            Event::Text(t) if inside => text.push_str(&t),
            Event::End(TagEnd::CodeBlock) if inside => {
                inside = false;
                lines.extend(text.replace("\\\n", " ").lines().map(str::to_owned));
            }
            _ => {}
        }
    }
    lines
}

/// The words of a shell line up to its comment, pipe, list operator or
/// redirection (shell-quoted as `sh` would split them).
fn command_words(line: &str) -> Vec<String> {
    let Some(words) = shlex::split(line) else {
        panic!("not a shell line: {line}");
    };
    words
        .into_iter()
        .take_while(|w| {
            !(w.starts_with('#')
                || matches!(w.as_str(), "|" | "||" | "&&" | ";" | "&")
                || w.starts_with('>')
                || w.starts_with("2>")
                || w.starts_with('<'))
        })
        .collect()
}

/// keygate's arguments in a shell line, if it runs keygate.
fn keygate_args(line: &str) -> Option<Vec<String>> {
    let words = command_words(line);
    // Environment assignments before the program.
    let mut words = words
        .into_iter()
        .skip_while(|w| w.contains('=') && !w.starts_with('-'))
        .peekable();
    let program = words.next()?;
    let is_keygate = |w: &str| w == "keygate" || w.ends_with("/keygate");
    let rest: Vec<String> = words.collect();
    if is_keygate(&program) {
        return Some(rest);
    }
    match program.as_str() {
        // cargo run [options] -- ARGS
        "cargo" if rest.first().is_some_and(|w| w == "run") => {
            let at = rest.iter().position(|w| w == "--")?;
            Some(rest[at + 1..].to_vec())
        }
        // docker compose ... exec|run [options] SERVICE keygate ARGS
        "docker" | "docker-compose" => {
            let at = rest.iter().position(|w| w == "exec" || w == "run")?;
            // Its options, then the service, then the program.
            let mut after = rest[at + 1..].iter().skip_while(|w| w.starts_with('-'));
            after.next()?;
            let program = after.next()?;
            is_keygate(program).then(|| after.cloned().collect())
        }
        _ => None,
    }
}

/// What [`keygate_args`] finds, and what it leaves.
#[test]
fn keygate_is_found_where_the_docs_run_it() {
    let cases: &[(&str, Option<&[&str]>)] = &[
        ("keygate check   # probe", Some(&["check"])),
        (
            "target/release/keygate --config config/keygate.toml id 001",
            Some(&["--config", "config/keygate.toml", "id", "001"]),
        ),
        (
            "cargo run --release -- --config config/keygate.toml",
            Some(&["--config", "config/keygate.toml"]),
        ),
        (
            "docker compose -f d.yaml -p keygate exec keygate keygate ip 10.0.0.7",
            Some(&["ip", "10.0.0.7"]),
        ),
        (
            "keygate verify --client-keys 'a b' --json > drift.json",
            Some(&["verify", "--client-keys", "a b", "--json"]),
        ),
        (
            "KEYGATE_LOG__LEVEL=debug keygate list | head",
            Some(&["list"]),
        ),
        ("systemctl enable --now keygate", None),
        ("apt install ./target/debian/keygate_*.deb", None),
        ("docker compose -p keygate up --build -d", None),
        (
            "docker compose -p keygate --profile client run --rm wazuh-client",
            None,
        ),
        ("cargo install cargo-deb --locked", None),
    ];
    for (line, want) in cases {
        let got = keygate_args(line);
        let want = want.map(|w| w.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(got, want, "{line}");
    }
}

/// Every keygate command in the docs' shell blocks parses; there are some
/// on several pages.
#[test]
fn every_keygate_command_in_the_docs_parses() {
    let mut found = Vec::new();
    for page in pages() {
        let markdown = std::fs::read_to_string(&page).unwrap();
        for line in shell_lines(&markdown) {
            let Some(args) = keygate_args(&line) else {
                continue;
            };
            let argv = std::iter::once("keygate".to_owned()).chain(args);
            if let Err(e) = crate::command().try_get_matches_from(argv) {
                use clap::error::ErrorKind::{DisplayHelp, DisplayVersion};
                assert!(
                    matches!(e.kind(), DisplayHelp | DisplayVersion),
                    "{}: `{line}` does not parse:\n{e}",
                    page.display()
                );
            }
            found.push(page.clone());
        }
    }
    found.dedup();
    assert!(found.len() >= 4, "{found:?}");
}

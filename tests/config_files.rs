//! Every config file shipped under `config/` parses and validates, so the
//! annotated default and the examples cannot drift from the code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_is_valid() {
    let mut files = Vec::new();
    toml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("config"),
        &mut files,
    );
    toml_files(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("docker"),
        &mut files,
    );
    assert!(
        files.len() >= 6,
        "expected the default config and the examples, found {files:?}"
    );
    for file in files {
        if let Err(e) = keygate_config::load(&file) {
            panic!("{e}");
        }
    }
}

/// The shipped default serves the demo data from files beside it.
#[test]
fn default_config_points_at_the_demo_data() {
    let c =
        keygate_config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/keygate.toml"))
            .unwrap();
    assert_eq!(c.backends.len(), 2);
    assert!(c.server.socket.ends_with("config/keygate.sock"));
}

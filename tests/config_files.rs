//! Every config file shipped under `config/` parses and validates, so the
//! annotated default and the examples cannot drift from the code.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// Every file below `dir` whose extension is `ext`.
fn files(dir: &Path, ext: &str, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, ext, out);
        } else if path.extension().is_some_and(|e| e == ext) {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_config_is_valid() {
    let mut found = Vec::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    files(&root.join("config"), "toml", &mut found);
    files(&root.join("docker"), "toml", &mut found);
    assert!(
        found.len() >= 6,
        "expected the default config and the examples, found {found:?}"
    );
    for file in found {
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

/// The production config (installed as /etc/keygate/keygate.toml) uses
/// only absolute paths, so copying it anywhere changes nothing, and its
/// socket is the one the shipped Wazuh snippets name: `check` has no warning
/// for it. The demo config, whose socket sits beside it, gets one.
#[test]
fn production_config_is_absolute_and_where_wazuh_looks() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config/keygate.production.toml")).unwrap();
    // Loaded as if from two different directories: identical results.
    let a = keygate_config::load_str(&text, Path::new("/etc/keygate")).unwrap();
    let b = keygate_config::load_str(&text, Path::new("/somewhere/else")).unwrap();
    assert_eq!(a.server, b.server);
    assert_eq!(a.log, b.log);
    assert_eq!(a.server.socket, Path::new(keygate_config::WAZUH_SOCKET));
    assert_eq!(a.server.socket, Path::new("/run/keygate/keygate.sock"));
    assert!(a.warnings().is_empty(), "{:?}", a.warnings());
    for (x, y) in a.backends.iter().zip(&b.backends) {
        assert_eq!(format!("{:?}", x.kind), format!("{:?}", y.kind));
    }
    let demo = keygate_config::load(&root.join("config/keygate.toml")).unwrap();
    let warnings = demo.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].path, "server.socket");
}

/// No test runs keygate on `config/keygate.toml` itself: its socket is
/// `config/keygate.sock`, where the quick start's daemon may be running
/// (exec mode would ask it, admin commands would act on it). Tests copy it
/// (`keygate_testkit::daemon::DemoConfig`, socket in a temp dir); only
/// that helper, this file (which parses it) and the packaging test (which
/// checks what the package ships) name it.
#[test]
fn no_test_runs_the_quick_start_config() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    for dir in ["tests", "crates"] {
        files(&root.join(dir), "rs", &mut sources);
    }
    let named = concat!("config/", "keygate.toml");
    let offenders: Vec<_> = sources
        .iter()
        .filter(|f| {
            !f.ends_with("tests/config_files.rs")
                && !f.ends_with("tests/packaging.rs")
                && !f.ends_with("keygate-testkit/src/daemon.rs")
        })
        .filter(|f| std::fs::read_to_string(f).unwrap().contains(named))
        .collect();
    assert!(offenders.is_empty(), "{offenders:?} use {named}");
}

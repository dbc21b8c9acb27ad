//! `KEYGATE_` environment overrides, `[[backend]]` entries included (by
//! index and by name, ignoring case). One test function, because the
//! environment is shared by the whole process.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

const CONFIG: &str = r#"
[server]
socket = "/run/keygate/keygate.sock"

[[backend]]
name = "master-keys"
type = "file"
path = "client.keys"

[[backend]]
name = "Inventory"
type = "sqlite"
path = "agents.db"
query_by_id = "SELECT id, name, ip, key FROM agent WHERE id = ?"
query_by_ip = "SELECT id, name, ip, key FROM agent WHERE ip = ?"
"#;

fn with_env<T>(vars: &[(&str, &str)], f: impl FnOnce() -> T) -> T {
    for (k, v) in vars {
        std::env::set_var(k, v);
    }
    let out = f();
    for (k, _) in vars {
        std::env::remove_var(k);
    }
    out
}

fn problems(file: &Path, vars: &[(&str, &str)]) -> String {
    with_env(vars, || keygate_config::load(file))
        .unwrap_err()
        .problems
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn environment_overrides_reach_sections_and_backend_entries() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keygate.toml");
    std::fs::write(&file, CONFIG).unwrap();

    // By index, by name in any case, and a plain section key, together.
    let c = with_env(
        &[
            ("KEYGATE_BACKEND__0__TIMEOUT", "3s"),
            ("KEYGATE_BACKEND__INVENTORY__TIMEOUT", "700ms"),
            ("KEYGATE_BACKEND__inventory__ON_NOT_FOUND", "stop"),
            ("KEYGATE_SERVER__REQUEST_TIMEOUT", "20s"),
        ],
        || keygate_config::load(&file),
    )
    .unwrap();
    assert_eq!(c.backends[0].timeout, Duration::from_secs(3));
    assert_eq!(c.backends[1].timeout, Duration::from_millis(700));
    assert_eq!(
        c.backends[1].on_not_found,
        keygate_config::ChainAction::Stop
    );
    assert_eq!(c.server.request_timeout, Duration::from_secs(20));
    // The file's other keys are untouched.
    assert_eq!(c.backends[1].name, "Inventory");

    // A selector that matches nothing names the variable.
    let p = problems(&file, &[("KEYGATE_BACKEND__5__TIMEOUT", "3s")]);
    assert!(
        p.contains("KEYGATE_BACKEND__5: no [[backend]] with that index: the file has 2"),
        "{p}"
    );
    let p = problems(&file, &[("KEYGATE_BACKEND__NOPE__TIMEOUT", "3s")]);
    assert!(
        p.contains("KEYGATE_BACKEND__NOPE: no [[backend]] has this index or name"),
        "{p}"
    );
    // An overridden value is checked like the file's: the problem names
    // the variable (not the file) with the key path, and says what a
    // valid value looks like.
    let p = problems(
        &file,
        &[
            ("KEYGATE_BACKEND__1__TIMEOUT", "soon"),
            ("KEYGATE_BACKEND__0__TIMOUT", "3s"),
        ],
    );
    assert!(
        p.contains(
            "KEYGATE_BACKEND__1__TIMEOUT (backend[1].timeout): expected a duration such as \"2s\""
        ),
        "{p}"
    );
    assert!(
        p.contains("KEYGATE_BACKEND__0__TIMOUT (backend[0].timout): unknown key"),
        "{p}"
    );
    let e = with_env(
        &[
            ("KEYGATE_BACKEND__INVENTORY__TIMEOUT", "bogus"),
            ("KEYGATE_SERVER__MAX_CONNECTIONS", "lots"),
            ("KEYGATE_LOG__LEVEL", "loud"),
        ],
        || keygate_config::load(&file),
    )
    .unwrap_err()
    .to_string();
    for want in [
        " and the environment (3 problem(s)):",
        "\n  KEYGATE_SERVER__MAX_CONNECTIONS (server.max_connections): expected a whole number such as 4096, found \"lots\"",
        "\n  KEYGATE_LOG__LEVEL (log.level): must be one of trace, debug, info, warn, error, off",
        "\n  KEYGATE_BACKEND__INVENTORY__TIMEOUT (backend[1].timeout): expected a duration such as \"2s\" (units: ms, s, m, h, d), found \"bogus\"",
    ] {
        assert!(e.contains(want), "{want:?} not in:\n{e}");
    }
    // The file's own mistakes still name the file's key.
    std::fs::write(
        &file,
        CONFIG.replace("[server]\n", "[server]\nmax_lookups = \"x\"\n"),
    )
    .unwrap();
    let p = with_env(&[("KEYGATE_SERVER__MAX_CONNECTIONS", "lots")], || {
        keygate_config::load(&file)
    })
    .unwrap_err()
    .to_string();
    assert!(
        p.contains("\n  server.max_lookups: expected a whole number such as 256, found \"x\""),
        "{p}"
    );
    std::fs::write(&file, CONFIG).unwrap();

    // Nothing is left behind for the next load.
    assert_eq!(
        keygate_config::load(&file).unwrap().backends[0].timeout,
        Duration::from_secs(2)
    );
}

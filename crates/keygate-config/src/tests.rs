//! The loader's promises: defaults, key paths, every problem at once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{load, load_str};

fn problems(text: &str) -> Vec<String> {
    load_str(text, Path::new("/etc/keygate"))
        .unwrap_err()
        .problems
        .iter()
        .map(|p| p.to_string())
        .collect()
}

const MINIMAL: &str = "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n";

#[test]
fn minimal_config_gets_defaults_and_resolves_relative_paths() {
    let c = load_str(MINIMAL, Path::new("/etc/keygate")).unwrap();
    assert_eq!(c.server.socket, PathBuf::from("/run/keygate/keygate.sock"));
    assert_eq!(c.server.socket_mode, 0o660);
    assert_eq!(c.server.max_connections, 4096);
    assert_eq!(c.server.max_lookups, 256);
    assert!(c.server.allowed_uids.is_empty() && c.server.allowed_gids.is_empty());
    assert_eq!(c.server.socket_group, None);
    assert_eq!(c.server.read_timeout, Duration::from_secs(5));
    assert_eq!(c.server.request_timeout, Duration::from_secs(10));
    assert_eq!(c.log.level, "info");
    assert_eq!(c.backends[0].timeout, Duration::from_secs(2));
    assert_eq!(
        c.server.control_socket,
        PathBuf::from("/run/keygate/keygate.sock.ctl")
    );
    let cache = c.cache.clone().unwrap();
    assert_eq!(
        (cache.capacity, cache.ttl, cache.negative_ttl),
        (100_000, Duration::from_secs(300), Duration::from_secs(30))
    );
    assert_eq!(
        (cache.stale_ttl, cache.refresh_ahead),
        (Duration::from_secs(86_400), 0.75)
    );
    assert_eq!(c.backends[0].breaker.failures_to_trip, 3);
    assert_eq!(
        c.backends[0].breaker.max_retry_interval,
        Duration::from_secs(60)
    );
    match &c.backends[0].kind {
        crate::BackendKind::File(f) => {
            assert_eq!(f.path, PathBuf::from("/etc/keygate/client.keys"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn every_problem_is_reported_with_its_key_path() {
    let text = r#"
[server]
socket_mode = "999"
request_timeout = "60s"
max_conections = 5

[log]
level = "loud"

[[backend]]
name = "keys"
type = "file"
path = "client.keys"
fromat = "csv"

[[backend]]
name = "db"
type = "sqlite"
path = "a.db"
query_by_id = "SELECT id, name, ip, key FROM agent"
query_by_ip = "SELECT id, name, ip, key FROM agent WHERE ip = ?"
timeout = "fast"

[[backend]]
name = "x"
type = "oracle"
"#;
    let p = problems(text);
    let joined = p.join("\n");
    for want in [
        "server.max_conections: unknown key",
        "log.level: must be one of",
        "backend[0].fromat: unknown key",
        "backend[1].timeout:",
        "backend[2].type: unknown backend type 'oracle'",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
}

#[test]
fn semantic_problems_are_all_listed() {
    let text = r#"
[server]
socket_mode = "999"
request_timeout = "60s"

[[backend]]
name = "db"
type = "sqlite"
path = "a.db"
query_by_id = "SELECT id, name, ip, key FROM agent"
query_by_ip = "SELECT id, name, ip, key FROM agent WHERE ip = ? OR ip = ?"
"#;
    let joined = problems(text).join("\n");
    for want in [
        "server.socket_mode: must be octal",
        "server.request_timeout: must be more than 0 and less than 60s",
        "backend[0].query_by_id: must have exactly one bind parameter (?), found 0",
        "backend[0].query_by_ip: must have exactly one bind parameter (?), found 2",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
}

#[test]
fn missing_required_keys_and_duplicate_names_are_reported() {
    let text = "[[backend]]\nname = \"a\"\ntype = \"file\"\n[[backend]]\ntype = \"file\"\npath = \"x\"\n[[backend]]\nname = \"c\"\ntype = \"file\"\npath = \"x\"\n[[backend]]\nname = \"c\"\ntype = \"file\"\npath = \"y\"\n";
    let joined = problems(text).join("\n");
    for want in [
        "backend[0].path: missing required key",
        "backend[1].name: missing required key",
        "name 'c' is used twice",
    ] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
}

#[test]
fn cache_section_is_validated_and_can_be_disabled() {
    let off = load_str(
        &format!("[cache]\nenabled = false\n{MINIMAL}"),
        Path::new("/"),
    )
    .unwrap();
    assert!(off.cache.is_none());
    let joined = problems(&format!(
        "[cache]\ncapacity = 0\nrefresh_ahead = 1.5\nttl = \"0s\"\n{MINIMAL}"
    ))
    .join("\n");
    for want in ["cache.capacity", "cache.refresh_ahead", "cache.ttl"] {
        assert!(joined.contains(want), "missing {want:?} in:\n{joined}");
    }
}

#[test]
fn no_backend_is_a_problem() {
    assert!(problems("[server]\n")
        .join("\n")
        .contains("backend: at least one [[backend]] is needed"));
    assert!(problems("[srever]\n").join("\n").contains("srever"));
}

#[test]
fn missing_file_is_reported() {
    let e = load(Path::new("/nonexistent/keygate.toml")).unwrap_err();
    assert!(
        e.to_string()
            .contains("cannot read /nonexistent/keygate.toml"),
        "{e}"
    );
}

/// Fails unless every `want` is among the problems of `text`, each once.
fn assert_all(text: &str, want: &[&str]) {
    let got = problems(text);
    let joined = got.join("\n");
    for w in want {
        let n = got.iter().filter(|p| p.starts_with(w)).count();
        assert_eq!(n, 1, "want {w:?} exactly once in:\n{joined}");
    }
}

/// Two bad values in one table are two problems (serde alone stops at the
/// first).
#[test]
fn two_bad_values_in_server_are_both_reported() {
    assert_all(
        &format!("[server]\nread_timeout = \"x\"\nrequest_timeout = \"y\"\nmax_connections = \"many\"\n{MINIMAL}"),
        &[
            "server.read_timeout:",
            "server.request_timeout:",
            "server.max_connections:",
        ],
    );
}

/// Both chain actions of one backend are checked.
#[test]
fn two_bad_chain_actions_are_both_reported() {
    assert_all(
        &format!("{MINIMAL}on_not_found = \"halt\"\non_error = \"explode\"\n"),
        &["backend[0].on_not_found:", "backend[0].on_error:"],
    );
}

/// A backend with an unknown key still takes part in the duplicate-name
/// check.
#[test]
fn duplicate_name_is_reported_even_when_the_entry_has_an_unknown_key() {
    assert_all(
        &format!("{MINIMAL}{MINIMAL}colour = \"blue\"\n"),
        &[
            "backend[1].colour: unknown key",
            "backend[1].name: backend name 'keys' is used twice",
        ],
    );
}

/// A backend type's own keys: every bad value and unknown key, together
/// with the shared keys' problems.
#[test]
fn every_problem_of_a_backend_types_own_keys_is_reported() {
    assert_all(
        "[[backend]]\nname = \"k\"\ntype = \"file\"\npath = 7\nformat = \"xml\"\nreload_interval = \"soon\"\nfromat = \"csv\"\ntimeout = \"quick\"\n",
        &[
            "backend[0].path:",
            "backend[0].format:",
            "backend[0].reload_interval:",
            "backend[0].fromat: unknown key",
            "backend[0].timeout:",
        ],
    );
    assert_all(
        "[[backend]]\nname = \"r\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1/0\"\nkey_by_id = 5\n[backend.fields]\nkey = 1\nkee = \"x\"\n",
        &[
            "backend[0].key_by_id:",
            "backend[0].fields.key:",
            "backend[0].fields.kee: unknown key",
        ],
    );
    assert_all(
        "[[backend]]\nname = \"m\"\ntype = \"mysql\"\nurls = [\"mysql://a@b/c\", 5]\npool_size = \"big\"\nquery_by_id = \"SELECT 1\"\nquery_by_ip = \"SELECT 1\"\n",
        &["backend[0].urls[1]:", "backend[0].pool_size:"],
    );
    // A bad value with a default does not hide the checks of the rest.
    assert_all(
        "[[backend]]\nname = \"m\"\ntype = \"mysql\"\nurl = \"mysql://a@b/c\"\npool_size = \"big\"\nquery_by_id = \"SELECT 1\"\nquery_by_ip = \"SELECT 1 WHERE ? = ?\"\n",
        &[
            "backend[0].pool_size:",
            "backend[0].query_by_id: must have exactly one bind parameter",
            "backend[0].query_by_ip: must have exactly one bind parameter",
        ],
    );
}

/// Every table is read even when others fail, and so are unknown tables.
#[test]
fn problems_of_every_table_are_reported_together() {
    assert_all(
        "srever = 1\n[server]\nsocket_mode = 660\n[log]\nlevel = 3\nfile = 4\n[cache]\ncapacity = \"lots\"\nttl = \"never\"\n[[backend]]\nname = 1\ntype = \"file\"\npath = \"x\"\n",
        &[
            "srever: unknown key",
            "server.socket_mode:",
            "log.level:",
            "log.file:",
            "cache.capacity:",
            "cache.ttl:",
            "backend[0].name:",
        ],
    );
}

/// A table written as a plain value is one problem, not a crash or silence.
#[test]
fn a_section_that_is_not_a_table_is_reported() {
    assert_all(
        &format!("server = 5\n{MINIMAL}"),
        &["server: must be a table"],
    );
}

/// The control socket is derived from the resolved socket once, not
/// resolved a second time (`config/config/keygate.sock.ctl`).
#[test]
fn default_control_socket_sits_beside_a_relative_socket() {
    let c = load_str(
        &format!("[server]\nsocket = \"keygate.sock\"\n{MINIMAL}"),
        Path::new("config"),
    )
    .unwrap();
    assert_eq!(c.server.socket, PathBuf::from("config/keygate.sock"));
    assert_eq!(
        c.server.control_socket,
        PathBuf::from("config/keygate.sock.ctl")
    );
    let dir = tempfile::tempdir().unwrap();
    let rel = dir.path().join("keygate.toml");
    std::fs::write(&rel, format!("[server]\nsocket = \"k.sock\"\n{MINIMAL}")).unwrap();
    assert_eq!(
        crate::control_socket_of(&rel),
        crate::load(&rel).unwrap().server.control_socket
    );
    // Read leniently: the rest of the file may be broken.
    let broken = dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "[server]\nsocket = \"k.sock\"\nread_timeout = \"x\"\n[[backend]]\ntype = 1\n",
    )
    .unwrap();
    assert!(crate::load(&broken).is_err());
    assert_eq!(
        crate::sockets_of(&broken),
        (dir.path().join("k.sock"), dir.path().join("k.sock.ctl"))
    );
}

/// A key that could not be read is reported once: validation of the
/// default standing in for it (`url` required when `urls` was unreadable)
/// adds nothing.
#[test]
fn an_unreadable_key_is_not_reported_again_by_validation() {
    let got = problems(
        "[[backend]]\nname = \"m\"\ntype = \"mysql\"\nurls = [\"mysql://a@b/c\", 5]\nquery_by_id = \"SELECT 1 WHERE 1 = ?\"\nquery_by_ip = \"SELECT 1 WHERE 1 = ?\"\n[[backend]]\nname = \"r\"\ntype = \"redis\"\nurl = 5\n",
    );
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].starts_with("backend[0].urls[1]:"), "{got:#?}");
    assert!(got[1].starts_with("backend[1].url:"), "{got:#?}");
}

/// The access-control keys are read, and an empty list (which would admit
/// nobody) is refused with its key path.
#[test]
fn access_control_keys_are_read_and_checked() {
    let c = load_str(
        &format!("[server]\nallowed_uids = [0, 1000]\nallowed_gids = [27]\nsocket_group = \"wazuh\"\nmax_lookups = 8\n{MINIMAL}"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(c.server.allowed_uids, [0, 1000]);
    assert_eq!(c.server.allowed_gids, [27]);
    assert_eq!(c.server.socket_group.as_deref(), Some("wazuh"));
    assert_eq!(c.server.max_lookups, 8);
    let e = load_str(
        &format!("[server]\nallowed_uids = []\nallowed_gids = [\"x\"]\nmax_lookups = 0\n{MINIMAL}"),
        Path::new("/"),
    )
    .unwrap_err()
    .to_string();
    for want in [
        "server.allowed_uids: must list",
        "server.allowed_gids",
        "server.max_lookups",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

/// Exec mode reaches the daemon through a config broken elsewhere: only
/// `server.socket` and `server.request_timeout` are read, each leniently.
#[test]
fn daemon_access_reads_the_socket_from_a_config_broken_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.toml");
    std::fs::write(
        &path,
        "[server]\nsocket = \"k.sock\"\nrequest_timeout = \"3s\"\nbogus = 1\n\
         [[backend]]\nname = \"x\"\ntype = \"nope\"\non_error = \"explode\"\n",
    )
    .unwrap();
    assert!(load(&path).is_err());
    let access = crate::daemon_access(&path);
    assert_eq!(access.socket, dir.path().join("k.sock"));
    assert_eq!(access.request_timeout, Duration::from_secs(3));
    std::fs::write(
        &path,
        "[server]\nsocket = \"/s\"\nrequest_timeout = \"90s\"\n",
    )
    .unwrap();
    let access = crate::daemon_access(&path);
    assert_eq!(access.socket, PathBuf::from("/s"));
    assert_eq!(access.request_timeout, Duration::from_secs(10));
    let access = crate::daemon_access(&dir.path().join("missing.toml"));
    assert_eq!(access.socket, PathBuf::from(crate::WAZUH_SOCKET));
}

/// A backend's risky but valid setting (`insecure = true` on an http
/// backend) is a warning under its key path, which `keygate check` prints.
#[cfg(feature = "http")]
#[test]
fn backend_warnings_carry_their_key_path() {
    let text = "[[backend]]\nname = \"a\"\ntype = \"file\"\npath = \"/k\"\n\
                [[backend]]\nname = \"cmdb\"\ntype = \"http\"\n\
                url_by_id = \"https://cmdb/api/{id}\"\nurl_by_ip = \"https://cmdb/api?ip={ip}\"\n\
                insecure = true\n";
    let config = load_str(text, Path::new("/etc/keygate")).unwrap();
    let warnings: Vec<String> = config
        .warnings()
        .into_iter()
        .filter(|w| w.path.starts_with("backend"))
        .map(|w| w.to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].starts_with(
            "backend[1].insecure: insecure = true: the inventory's TLS certificate is NOT verified"
        ),
        "{warnings:?}"
    );
}

/// `worker_threads` is optional (half the cores when absent), read when
/// set, and refused with its key path when 0 or above the cap.
#[test]
fn worker_threads_is_optional_and_bounded() {
    let c = load_str(MINIMAL, Path::new("/")).unwrap();
    assert_eq!(c.server.worker_threads, None);
    let c = load_str(
        &format!("[server]\nworker_threads = 3\n{MINIMAL}"),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(c.server.worker_threads, Some(3));
    for bad in ["0", "1025", "\"two\""] {
        let e = load_str(
            &format!("[server]\nworker_threads = {bad}\n{MINIMAL}"),
            Path::new("/"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("server.worker_threads"), "{bad}: {e}");
    }
}

/// Every duration key of the config, in every table and in a backend's
/// own keys, refuses more than a year, naming the key and the bound; all
/// of them are reported at once (issue 24, point 15: a `stale_ttl` of a
/// thousand years overflowed the clock and every miss answered 6).
#[test]
fn every_duration_key_is_bounded_with_a_clear_problem() {
    let long = "\"1year 1s\"";
    let text = format!(
        "[server]\nread_timeout = {long}\nrequest_timeout = {long}\n\
         [cache]\nttl = {long}\nnegative_ttl = {long}\nstale_ttl = \"1000years\"\n\
         [wazuh]\nurl = \"https://m:55000\"\nuser = \"k\"\npassword_file = \"/p\"\ntimeout = {long}\n\
         [[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"k\"\n\
         timeout = {long}\nmax_retry_interval = {long}\nreload_interval = {long}\n\
         [[backend]]\nname = \"r\"\ntype = \"redis\"\nurl = \"redis://h:6379\"\n\
         failback_after = {long}\nconnect_timeout = {long}\n"
    );
    let got = problems(&text);
    let bound = "must be at most \"1year\" (the longest duration keygate accepts)";
    for key in [
        "server.read_timeout",
        "server.request_timeout",
        "cache.ttl",
        "cache.negative_ttl",
        "cache.stale_ttl",
        "wazuh.timeout",
        "backend[0].timeout",
        "backend[0].max_retry_interval",
        "backend[0].reload_interval",
        "backend[1].failback_after",
        "backend[1].connect_timeout",
    ] {
        let want = format!("{key}: {bound}");
        assert!(got.contains(&want), "no {want:?} in:\n{}", got.join("\n"));
    }
    // A year itself is accepted.
    let c = load_str(
        &format!(
        "[cache]\nstale_ttl = \"1year\"\nttl = \"1year\"\n{}",
            "[[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"k\"\nreload_interval = \"1year\"\n"
        ),
        Path::new("/"),
    )
    .unwrap();
    assert_eq!(c.cache.unwrap().stale_ttl, Duration::from_secs(31_557_600));
}

/// A table missing a required key still has its other keys read and
/// validated: the missing key hides no other problem (a bad URL, a query
/// without its bind parameter, a value of the wrong type, `url` itself
/// missing), and validation says nothing more about the missing key.
#[test]
fn a_missing_required_key_hides_no_other_problem_of_its_table() {
    let got = problems(
        "[[backend]]\nname = \"db\"\ntype = \"mysql\"\nurl = \"http://x\"\nquery_by_ip = \"SELECT 1\"\npool_size = \"many\"\n\
         [[backend]]\nname = \"dir\"\ntype = \"ldap\"\nurl = \"http://x\"\n\
         [[backend]]\nname = \"db2\"\ntype = \"postgres\"\nquery_by_ip = \"SELECT 1 WHERE x = $1\"\n",
    );
    assert_eq!(
        got,
        [
            "backend[0].pool_size: expected a whole number such as 10, found \"many\"",
            "backend[0].query_by_id: missing required key",
            "backend[0].url: must start with one of mysql://, mariadb:// (the URL is not shown: it may hold a password)",
            "backend[0].query_by_ip: must have exactly one bind parameter (?), found 0",
            "backend[1].base_dn: missing required key",
            "backend[1].url: must start with one of ldap://, ldaps://, ldapi:// (the URL is not shown: it may hold a password)",
            "backend[2].query_by_id: missing required key",
            "backend[2].url: is required (or urls, a list of hosts)",
        ],
        "{got:#?}"
    );
}

/// A value of the wrong type says what is expected, with an example (the
/// key's default when there is one), and what was found: never serde's
/// "expected usize".
#[test]
fn type_errors_say_what_is_expected_with_an_example() {
    let got = problems(
        "[server]\nmax_connections = \"lots\"\nsocket_mode = 5\nallowed_uids = 3\n\
         [cache]\nenabled = \"yes\"\nttl = 5\nrefresh_ahead = \"x\"\n\
         [[backend]]\nname = \"k\"\ntype = \"file\"\npath = \"x\"\ntimeout = \"bogus\"\nreload_interval = \"zz\"\non_error = 1\n",
    );
    for want in [
        "server.max_connections: expected a whole number such as 4096, found \"lots\"",
        "server.socket_mode: expected a string in quotes such as \"0660\", found 5",
        "server.allowed_uids: expected a list in brackets ([...]), found 3",
        "cache.enabled: expected true or false, found \"yes\"",
        "cache.ttl: expected a duration such as \"5m\" (units: ms, s, m, h, d), found 5",
        "cache.refresh_ahead: expected a number such as 0.75, found \"x\"",
        "backend[0].timeout: expected a duration such as \"2s\" (units: ms, s, m, h, d), found \"bogus\"",
        "backend[0].reload_interval: expected a duration such as \"3s\" (units: ms, s, m, h, d), found \"zz\"",
        "backend[0].on_error: expected one of the names documented for this key, in quotes, found 1",
    ] {
        assert!(got.iter().any(|p| p == want), "{want:?} not in {got:#?}");
    }
    assert!(
        !got.iter().any(|p| p.contains("usize") || p.contains("f64")),
        "{got:#?}"
    );
}

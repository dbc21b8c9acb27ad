//! `check` sees what `serve` sees: a corpus of bad configs and environments
//! run through `keygate check`, the daemon (`serve`, short-lived, from the
//! testkit's harness) and `keygate reload` (a running daemon told to take
//! the config). Whatever `serve` refuses (its stderr) or warns about (a
//! warning or error in its log, at start or at the first lookup), `check`
//! reports on its stderr, word for word; `reload` refuses what `serve`
//! refuses and says nothing `check` does not.
//!
//! What only a running daemon can tell is not in the corpus: the socket
//! taken by another daemon, the metrics port in use.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keygate_testkit::daemon::{bin, Daemon};

/// One bad config (or environment).
struct Case {
    name: &'static str,
    /// `[server]` keys besides `socket` (`{dir}` is the case's directory).
    server: String,
    /// The rest of the config: `[log]` keys (besides `file`), `[[backend]]`.
    log: String,
    backends: String,
    /// Files the config needs, made in the case's directory.
    setup: fn(&Path),
    env: Vec<(&'static str, String)>,
    /// What `serve` says about it (asserted, so the case tests something).
    serve_says: &'static str,
    /// Whether `serve` refuses it (else it starts and warns).
    refused: bool,
    /// A request that makes the daemon meet the problem (a host down).
    request: Option<&'static str>,
}

fn file_backend() -> String {
    "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"{dir}/client.keys\"\n".to_owned()
}

fn good_keys(dir: &Path) {
    std::fs::write(
        dir.join("client.keys"),
        "001 web-01 any 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
}

fn case(name: &'static str, serve_says: &'static str, refused: bool) -> Case {
    Case {
        name,
        server: String::new(),
        log: String::new(),
        backends: file_backend(),
        setup: good_keys,
        env: Vec::new(),
        serve_says,
        refused,
        request: None,
    }
}

fn corpus() -> Vec<Case> {
    let mut cases = vec![
        Case {
            server: "socket = \"{dir}/open/k.sock\"\n".into(),
            setup: |dir| {
                good_keys(dir);
                let open = dir.join("open");
                std::fs::create_dir(&open).unwrap();
                std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
            },
            ..case(
                "a socket directory every user may write to, not sticky",
                "is writable by every user and not sticky",
                true,
            )
        },
        Case {
            setup: |dir| {
                good_keys(dir);
                let mut keys = std::fs::read_to_string(dir.join("client.keys")).unwrap();
                keys.push_str("002 bad name any abc\n");
                std::fs::write(dir.join("client.keys"), keys).unwrap();
            },
            ..case(
                "a client.keys with an invalid line",
                "Agent file line is invalid",
                false,
            )
        },
        Case {
            server: "socket_mode = \"0666\"\n".into(),
            ..case(
                "a socket mode that lets every user connect",
                "lets every local user connect",
                false,
            )
        },
        Case {
            server: "socket_group = \"no-such-group-kg\"\n".into(),
            ..case(
                "a socket_group that names no group",
                "no group named 'no-such-group-kg'",
                true,
            )
        },
        Case {
            log: "audit_file = \"{dir}/audit-dir\"\n".into(),
            setup: |dir| {
                good_keys(dir);
                std::fs::create_dir(dir.join("audit-dir")).unwrap();
            },
            ..case(
                "an audit file that is a directory",
                "cannot open log file",
                true,
            )
        },
        Case {
            backends: format!(
                "{}timeout = \"soon\"\n[[backend]]\ntype = \"mysql\"\nname = \"db\"\nurl = \"http://x\"\n",
                file_backend()
            ),
            ..case(
                "invalid values, a missing key and a wrong URL",
                "backend[1].query_by_id: missing required key",
                true,
            )
        },
        Case {
            backends: "[[backend]]\nname = \"cache\"\ntype = \"redis\"\nurl = \"redis://127.0.0.1:1/0\"\npassword_file = \"{dir}/missing.pass\"\n".into(),
            ..case(
                "a password file that cannot be read",
                "password_file",
                true,
            )
        },
        Case {
            env: vec![("KEYGATE_BACKEND__KEYS__TIMEOUT", "bogus".into())],
            ..case(
                "an environment override with a bad value",
                "KEYGATE_BACKEND__KEYS__TIMEOUT (backend[0].timeout): expected a duration",
                true,
            )
        },
    ];
    #[cfg(feature = "mysql")]
    cases.extend(mysql_cases());
    cases
}

/// The cases that need a database server: its URLs are the shared
/// MariaDB's, with a user of its own (kept until the test ends).
#[cfg(feature = "mysql")]
fn mysql_cases() -> Vec<Case> {
    use keygate_testkit::sql::{self, TestDb};
    let mut db = TestDb::mysql();
    let reader = db.mysql_reader("Parity-Pass-4b");
    let with_password = sql::with_password(&reader, "Parity-Pass-4b");
    let dead = format!("mysql://root@127.0.0.1:{}/x", keygate_testkit::free_port());
    let queries = "query_by_id = \"SELECT id,name,ip,agent_key FROM agent WHERE id = ?\"\n\
                   query_by_ip = \"SELECT id,name,ip,agent_key FROM agent WHERE ip = ?\"\n\
                   connect_timeout = \"1s\"\n";
    // Dropped at the end of the process: the cases outlive this function.
    std::mem::forget(db);
    vec![
        Case {
            backends: format!(
                "[[backend]]\nname = \"db\"\ntype = \"mysql\"\nurls = [\"{dead}\", \"{with_password}\"]\n{queries}"
            ),
            request: Some("id:001"),
            ..case(
                "the first host of urls down",
                "Host failed; moving on to the next one.",
                false,
            )
        },
        Case {
            backends: format!(
                "[[backend]]\nname = \"db\"\ntype = \"mysql\"\nurl = \"{with_password}\"\n{queries}"
            ),
            ..case(
                "a world-readable config holding a password",
                "holds a password in a URL",
                false,
            )
        },
    ]
}

/// The case's config text, for a daemon whose directory is `dir`; with
/// `control`, for the running daemon at that control socket (where
/// `keygate reload` finds it).
fn config_text(case: &Case, dir: &Path, control: Option<&Path>) -> String {
    let mut socket = if case.server.contains("socket = ") {
        String::new()
    } else {
        format!("socket = \"{}/k.sock\"\n", dir.display())
    };
    if let Some(control) = control {
        socket.push_str(&format!("control_socket = \"{}\"\n", control.display()));
    }
    format!(
        "[server]\n{socket}{}\n[log]\nfile = \"{}/keygate.log\"\n{}\n{}",
        case.server,
        dir.display(),
        case.log,
        case.backends
    )
    .replace("{dir}", &dir.display().to_string())
}

fn keygate(config: &Path, args: &[&str], env: &[(&'static str, String)]) -> Output {
    Command::new(bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("KEYGATE_CONFIG")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap()
}

/// What the daemon said: each line of its stderr (without `keygate: `),
/// and for each warning or error of its log, its `problem=` or else its
/// message. The restart notice of a reload is about the running daemon,
/// not the config.
fn said(stderr: &str, log: &str) -> Vec<String> {
    let mut said: Vec<String> = stderr
        .lines()
        .map(|l| l.trim().trim_start_matches("keygate: ").to_owned())
        .filter(|l| !l.is_empty())
        .collect();
    for line in log.lines() {
        let Some(rest) = [" WARN ", " ERROR "]
            .iter()
            .find_map(|level| line.split_once(level).map(|(_, rest)| rest.trim()))
        else {
            continue;
        };
        if rest.contains("take effect only after a restart") {
            continue;
        }
        said.push(match rest.split_once("problem=") {
            Some((_, problem)) => problem.to_owned(),
            None => message(rest).to_owned(),
        });
    }
    said
}

/// The message of a log line's text: what comes before its first field.
fn message(text: &str) -> &str {
    let bytes = text.as_bytes();
    for (i, _) in text.match_indices(' ') {
        let field = &bytes[i + 1..];
        let name = field
            .iter()
            .take_while(|b| b.is_ascii_lowercase() || **b == b'_')
            .count();
        if name > 0 && field.get(name) == Some(&b'=') {
            return &text[..i];
        }
    }
    text
}

#[test]
fn check_reports_everything_serve_refuses_or_warns_about() {
    // A daemon that reloads each case's config; its own config is good.
    let data = tempfile::tempdir().unwrap();
    good_keys(data.path());
    let reloaded =
        Daemon::start(&file_backend().replace("{dir}", &data.path().display().to_string()));
    let control = PathBuf::from(format!("{}.ctl", reloaded.socket().display()));
    for case in corpus() {
        let name = case.name;
        let dir = tempfile::tempdir().unwrap();
        (case.setup)(dir.path());
        let config = dir.path().join("keygate.toml");
        std::fs::write(&config, config_text(&case, dir.path(), None)).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();

        let checked = keygate(&config, &["check"], &case.env);
        let check = String::from_utf8_lossy(&checked.stderr).into_owned();
        let check_stdout = String::from_utf8_lossy(&checked.stdout).into_owned();
        assert!(
            !check_stdout.contains("warning") && !check_stdout.contains("error:"),
            "{name}: check printed a problem on stdout:\n{check_stdout}"
        );

        // reload: the environment is the running daemon's, so only the
        // file's cases apply.
        if case.env.is_empty() {
            let before = reloaded.log().len();
            let text = config_text(&case, dir.path(), Some(&control));
            std::fs::write(reloaded.config(), text).unwrap();
            // The same file as the reload reads (a message may name it).
            let checked = keygate(reloaded.config(), &["check"], &[]);
            let check = String::from_utf8_lossy(&checked.stderr);
            let out = keygate(reloaded.config(), &["reload"], &[]);
            if let (Some(request), true) = (case.request, out.status.success()) {
                reloaded.request(request);
            }
            let log = reloaded.log()[before..].to_owned();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                !out.status.success(),
                case.refused,
                "{name}: reload {out:?}\nlog:\n{log}"
            );
            for s in said(&stderr, &log) {
                assert!(
                    check.contains(&s),
                    "{name}: reload said {s:?}; check did not:\n{check}"
                );
            }
        }

        let env: Vec<(&str, &str)> = case.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let socket: PathBuf = dir.path().join("k.sock");
        let (refused, stderr, log) = match Daemon::try_start(dir, config, socket, &env) {
            Ok(mut d) => {
                if let Some(request) = case.request {
                    d.request(request);
                }
                let log = d.log();
                let stderr = d.stderr();
                let stopped = d.stop();
                assert!(stopped.success(), "{name}: {stopped}");
                (false, stderr, log)
            }
            Err(refused) => {
                assert!(!refused.status.success(), "{name}: {refused:?}");
                (true, refused.stderr, refused.log)
            }
        };
        assert_eq!(
            refused, case.refused,
            "{name}: serve\nstderr:\n{stderr}\nlog:\n{log}"
        );
        assert!(
            stderr.contains(case.serve_says) || log.contains(case.serve_says),
            "{name}: serve did not say {:?}\nstderr:\n{stderr}\nlog:\n{log}",
            case.serve_says
        );
        if case.refused {
            assert!(!checked.status.success(), "{name}: check passed:\n{check}");
        }
        for s in said(&stderr, &log) {
            assert!(
                check.contains(&s),
                "{name}: serve said {s:?}; check did not:\n{check}"
            );
        }
    }
}

/// The log parser of this test: a message ends where the first field
/// starts.
#[test]
fn a_log_lines_message_ends_at_its_first_field() {
    assert_eq!(
        message("Agent file line is invalid; it answers 5. backend=keys line=2"),
        "Agent file line is invalid; it answers 5."
    );
    assert_eq!(message("Stopped."), "Stopped.");
    assert_eq!(
        said(
            "keygate: x: y\n",
            "t  WARN Config. problem=a: b c=d\nt  INFO Hi.\n"
        ),
        ["x: y", "a: b c=d"]
    );
}

//! One table of exit codes (src/exit.rs, docs/codes.md), followed by every
//! command. Each row of docs/commands.md's table lists the codes its
//! command may exit with; [`ROWS`] holds the same lists (a test compares
//! them), and each command's test here runs the real binary into every
//! code of its row, no more and no fewer.
//!
//! Cases that need another user run keygate as `nobody` (the suite runs
//! as root, as e2e_hardening.rs does): the control socket's mode 0600, a
//! file only root may read, or the daemon's own refusal.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

use keygate_testkit::daemon::{bin, Daemon};
use keygate_testkit::repo_root;
use keygate_wazuh_standin::StandIn;

/// Each row of docs/commands.md (its first cell) and the exit codes its
/// last cell lists.
const ROWS: &[(&str, &[u8])] = &[
    ("`keygate [--config F] [serve]`", &[0, 1, 64, 78]),
    ("`keygate [--config F] id 001` / `ip 10.0.0.1`", &[0]),
    (
        "`keygate [--config F] serve id 001` / `serve ip 10.0.0.1`",
        &[0, 64],
    ),
    ("`keygate [--config F] check [--json]`", &[0, 1, 64, 78]),
    ("`keygate [--config F] reload`", &[0, 64, 69, 77, 78]),
    (
        "`keygate [--config F] cache stats [--json]`",
        &[0, 1, 64, 69, 77],
    ),
    (
        "`keygate [--config F] cache flush [id:001\\|ip:10.0.0.1]`",
        &[0, 1, 64, 69, 77],
    ),
    ("`keygate [--config F] backends [--json]`", &[0, 64, 69, 77]),
    ("`keygate [--config F] list`", &[0, 1, 64, 78]),
    ("`keygate [--config F] export`", &[0, 1, 64, 77, 78]),
    ("`keygate [--config F] verify`", &[0, 1, 2, 64, 77, 78]),
    ("`keygate [--config F] sync`", &[0, 1, 2, 64, 69, 77, 78]),
    ("`keygate --version` / `--help`", &[0]),
];

/// The codes of the row whose first cell starts with `prefix`.
fn row(prefix: &str) -> &'static [u8] {
    let found: Vec<_> = ROWS.iter().filter(|(r, _)| r.starts_with(prefix)).collect();
    assert_eq!(found.len(), 1, "{prefix}: {found:?}");
    found[0].1
}

/// The leading number of each `; `-separated part of a cell.
fn codes_in(cell: &str) -> Vec<u8> {
    cell.split("; ")
        .filter_map(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect()
}

/// docs/commands.md lists, for each command, exactly the codes of its row
/// here (and every code it lists is one of the table's).
#[test]
fn commands_md_lists_the_codes_tested_here() {
    let page = std::fs::read_to_string(repo_root().join("docs/commands.md")).unwrap();
    let table: BTreeMap<String, Vec<u8>> = page
        .lines()
        .skip_while(|l| !l.starts_with("| command |"))
        .skip(2)
        .take_while(|l| l.starts_with("| "))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").collect();
            let mut codes = codes_in(cells.last().unwrap().trim());
            codes.sort_unstable();
            (cells[0].trim().to_owned(), codes)
        })
        .collect();
    let ours: BTreeMap<String, Vec<u8>> = ROWS
        .iter()
        .map(|(r, c)| ((*r).to_owned(), c.to_vec()))
        .collect();
    assert_eq!(table, ours, "docs/commands.md's exit column and ROWS");
    let known = [0, 1, 2, 64, 69, 74, 77, 78, 141];
    for codes in ours.values() {
        assert!(codes.iter().all(|c| known.contains(c)), "{codes:?}");
    }
}

/// One run and the code it must exit with.
struct Case {
    want: u8,
    what: String,
    status: ExitStatus,
    output: String,
}

/// Runs keygate with `args` (`--config` first when given).
fn keygate(config: Option<&Path>, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    if let Some(config) = config {
        cmd.arg("--config").arg(config);
    }
    cmd.args(args)
        .env_remove("KEYGATE_CONFIG")
        .stdin(Stdio::null());
    cmd
}

fn case(want: u8, what: &str, mut cmd: Command) -> Case {
    let out = cmd.output().unwrap();
    Case {
        want,
        what: what.to_owned(),
        status: out.status,
        output: format!(
            "stdout:\n{}\nstderr:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// `cmd` run as nobody (uid and gid 65534).
fn as_nobody(mut cmd: Command) -> Command {
    cmd.uid(65534).gid(65534);
    cmd
}

/// Every case exits with its code, and the cases cover the row's codes
/// exactly.
fn check_row(prefix: &str, cases: &[Case]) {
    let mut covered: Vec<u8> = cases.iter().map(|c| c.want).collect();
    covered.sort_unstable();
    covered.dedup();
    assert_eq!(covered, row(prefix), "{prefix}: the codes tested");
    assert_codes(prefix, cases);
}

fn assert_codes(prefix: &str, cases: &[Case]) {
    for c in cases {
        assert_eq!(
            c.status.code(),
            Some(i32::from(c.want)),
            "{prefix}: {}\n{}",
            c.what,
            c.output
        );
    }
}

/// A temp dir every user may read, with `files` in it (mode 0644).
fn readable_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

const KEYS: &str = "001 web-01 10.0.0.1 k001\n002 web-02 10.0.0.2 k002\n";

/// A config in `dir` serving `keys.txt` there, its socket there too.
fn config_in(dir: &Path) -> PathBuf {
    let config = dir.join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nsocket = \"{}\"\n\n[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"keys.txt\"\n",
            dir.join("k.sock").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    config
}

const BAD_CONFIG: &str = "[server]\nread_timeout = \"soon\"\n";

fn bad_config(dir: &Path) -> PathBuf {
    let path = dir.join("bad.toml");
    std::fs::write(&path, BAD_CONFIG).unwrap();
    path
}

#[test]
fn serve_exits_with_each_code_of_its_row() {
    let dir = readable_dir(&[("keys.txt", KEYS)]);
    let mut d = Daemon::start(&format!(
        "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"{}\"\n",
        dir.path().join("keys.txt").display()
    ));
    let second = case(
        1,
        "a second daemon on a live socket",
        keygate(Some(d.config()), &["serve"]),
    );
    let stopped = d.stop();
    let cases = vec![
        Case {
            want: 0,
            what: "stopped by SIGTERM".into(),
            status: stopped,
            output: d.stderr(),
        },
        second,
        case(64, "serve --bogus", keygate(None, &["serve", "--bogus"])),
        case(
            78,
            "an invalid config",
            keygate(Some(&bad_config(dir.path())), &["serve"]),
        ),
    ];
    check_row("`keygate [--config F] [serve]`", &cases);
}

/// The exec one-shot exits 0 whatever happens (Wazuh discards the output
/// of anything else); a word after `serve` other than id/ip is a usage
/// error.
#[test]
fn the_one_shot_always_exits_0() {
    let dir = readable_dir(&[("keys.txt", KEYS)]);
    let config = config_in(dir.path());
    let bad = bad_config(dir.path());
    let mut cases = Vec::new();
    for (what, config, args) in [
        ("found", &config, &["id", "001"][..]),
        ("not found", &config, &["ip", "10.9.9.9"][..]),
        ("a bad value", &config, &["id", "x"][..]),
        ("an unknown option", &config, &["id", "--bogus"][..]),
        ("an invalid config", &bad, &["id", "001"][..]),
    ] {
        cases.push(case(0, what, keygate(Some(config), args)));
    }
    check_row("`keygate [--config F] id 001`", &cases);
    let cases = vec![
        case(
            0,
            "serve id 001",
            keygate(Some(&config), &["serve", "id", "001"]),
        ),
        case(
            0,
            "serve ip, invalid config",
            keygate(Some(&bad), &["serve", "ip", "10.0.0.1"]),
        ),
        case(
            64,
            "serve bogus",
            keygate(Some(&config), &["serve", "bogus", "001"]),
        ),
    ];
    check_row("`keygate [--config F] serve id 001`", &cases);
}

#[test]
fn check_exits_with_each_code_of_its_row() {
    let dir = readable_dir(&[("keys.txt", KEYS)]);
    let good = config_in(dir.path());
    let gone = dir.path().join("gone.toml");
    std::fs::write(
        &gone,
        "[[backend]]\nname = \"gone\"\ntype = \"file\"\npath = \"missing.keys\"\n",
    )
    .unwrap();
    let cases = vec![
        case(0, "a good config", keygate(Some(&good), &["check"])),
        case(1, "a backend that fails", keygate(Some(&gone), &["check"])),
        case(
            64,
            "check --bogus",
            keygate(Some(&good), &["check", "--bogus"]),
        ),
        case(
            78,
            "an invalid config",
            keygate(Some(&bad_config(dir.path())), &["check"]),
        ),
    ];
    check_row("`keygate [--config F] check [--json]`", &cases);
}

/// A daemon serving keys.txt from a directory every user may read, its
/// control socket at mode 0600 (root's); `cache` adds a `[cache]` table.
fn admin_daemon(cache: &str) -> (tempfile::TempDir, Daemon) {
    let dir = readable_dir(&[("keys.txt", KEYS)]);
    let d = Daemon::start(&format!(
        "{cache}\n[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"{}\"\n",
        dir.path().join("keys.txt").display()
    ));
    std::fs::set_permissions(d.dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(d.config(), std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, d)
}

/// The control socket of `d`.
fn control(d: &Daemon) -> PathBuf {
    let mut s = d.socket().as_os_str().to_owned();
    s.push(".ctl");
    PathBuf::from(s)
}

/// The admin command `args` against a daemon: as root (0); as nobody,
/// whom the socket's mode refuses (77); as nobody through a socket made
/// world-writable, whom the daemon itself refuses (77); and without a
/// daemon (69).
fn admin_cases(args: &[&str], d: &Daemon, absent: &Path) -> Vec<Case> {
    let mut cases = vec![
        case(0, "as root", keygate(Some(d.config()), args)),
        case(
            77,
            "as nobody: the socket's mode",
            as_nobody(keygate(Some(d.config()), args)),
        ),
        case(69, "no daemon", keygate(Some(absent), args)),
    ];
    let ctl = control(d);
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o666)).unwrap();
    cases.push(case(
        77,
        "as nobody: the daemon refuses",
        as_nobody(keygate(Some(d.config()), args)),
    ));
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o600)).unwrap();
    cases
}

#[test]
fn admin_commands_exit_with_each_code_of_their_rows() {
    let (dir, d) = admin_daemon("");
    let (_off_dir, off) = admin_daemon("[cache]\nenabled = false\n");
    let absent = config_in(dir.path());

    let mut cases = admin_cases(&["backends"], &d, &absent);
    cases.push(case(
        64,
        "backends --bogus",
        keygate(Some(d.config()), &["backends", "--bogus"]),
    ));
    check_row("`keygate [--config F] backends", &cases);

    let mut cases = admin_cases(&["cache", "stats"], &d, &absent);
    cases.push(case(
        1,
        "the cache is disabled",
        keygate(Some(off.config()), &["cache", "stats"]),
    ));
    cases.push(case(
        64,
        "cache stats --bogus",
        keygate(Some(d.config()), &["cache", "stats", "--bogus"]),
    ));
    check_row("`keygate [--config F] cache stats", &cases);

    let mut cases = admin_cases(&["cache", "flush", "id:001"], &d, &absent);
    cases.push(case(
        1,
        "the cache is disabled",
        keygate(Some(off.config()), &["cache", "flush"]),
    ));
    cases.push(case(
        64,
        "an entry that is not id: or ip:",
        keygate(Some(d.config()), &["cache", "flush", "001"]),
    ));
    check_row("`keygate [--config F] cache flush", &cases);

    let mut cases = admin_cases(&["reload"], &d, &absent);
    cases.push(case(
        64,
        "reload --bogus",
        keygate(Some(d.config()), &["reload", "--bogus"]),
    ));
    // The daemon refuses an invalid config, keeps the old one: 78.
    // (Its [server] socket still names the daemon's control socket.)
    let good = std::fs::read_to_string(d.config()).unwrap();
    std::fs::write(
        d.config(),
        good.replacen("[server]\n", "[server]\nread_timeout = \"soon\"\n", 1),
    )
    .unwrap();
    cases.push(case(
        78,
        "an invalid new config",
        keygate(Some(d.config()), &["reload"]),
    ));
    check_row("`keygate [--config F] reload`", &cases);
    assert_eq!(
        d.request("id:001")["error"],
        0,
        "the old config still serves"
    );
}

#[test]
fn list_exits_with_each_code_of_its_row() {
    let dir = readable_dir(&[("keys.txt", KEYS)]);
    let good = config_in(dir.path());
    let invalid = readable_dir(&[("keys.txt", "001 web-01 10.0.0.1 k001\n002 bad! any k\n")]);
    let cases = vec![
        case(0, "every record valid", keygate(Some(&good), &["list"])),
        case(
            1,
            "an invalid record",
            keygate(Some(&config_in(invalid.path())), &["list"]),
        ),
        case(
            64,
            "--backend naming no backend",
            keygate(Some(&good), &["list", "--backend", "nope"]),
        ),
        case(
            64,
            "list --bogus",
            keygate(Some(&good), &["list", "--bogus"]),
        ),
        case(
            78,
            "an invalid config",
            keygate(Some(&bad_config(dir.path())), &["list"]),
        ),
    ];
    check_row("`keygate [--config F] list`", &cases);
}

#[test]
fn export_exits_with_each_code_of_its_row() {
    let dir = readable_dir(&[("keys.txt", KEYS)]);
    let good = config_in(dir.path());
    let twins = readable_dir(&[(
        "keys.txt",
        "001 twin 10.0.0.1 k001\n002 twin 10.0.0.2 k002\n",
    )]);
    let out = dir.path().join("out.keys");
    let cases = vec![
        case(
            0,
            "written",
            keygate(Some(&good), &["export", "-o", out.to_str().unwrap()]),
        ),
        case(
            1,
            "a duplicate name reported",
            keygate(Some(&config_in(twins.path())), &["export"]),
        ),
        case(
            1,
            "a directory that does not exist",
            keygate(
                Some(&good),
                &[
                    "export",
                    "-o",
                    dir.path().join("no/such/dir/x").to_str().unwrap(),
                ],
            ),
        ),
        case(
            64,
            "--format xml",
            keygate(Some(&good), &["export", "--format", "xml"]),
        ),
        case(
            77,
            "as nobody into root's directory",
            as_nobody(keygate(
                Some(&good),
                &["export", "-o", dir.path().join("x.keys").to_str().unwrap()],
            )),
        ),
        case(
            78,
            "an invalid config",
            keygate(Some(&bad_config(dir.path())), &["export"]),
        ),
    ];
    check_row("`keygate [--config F] export`", &cases);
}

#[test]
fn verify_exits_with_each_code_of_its_row() {
    let dir = readable_dir(&[
        ("keys.txt", KEYS),
        ("same.keys", KEYS),
        ("drift.keys", "001 web-01 10.0.0.1 k001\n"),
        ("broken.keys", "001 web-01\n"),
    ]);
    let good = config_in(dir.path());
    let secret = dir.path().join("secret.keys");
    std::fs::write(&secret, KEYS).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file = |name: &str| dir.path().join(name).display().to_string();
    let verify = |path: &str| keygate(Some(&good), &["verify", "--client-keys", path]);
    let cases = vec![
        case(0, "in sync", verify(&file("same.keys"))),
        case(2, "drift", verify(&file("drift.keys"))),
        case(1, "an unreadable line", verify(&file("broken.keys"))),
        case(1, "a missing file", verify(&file("missing.keys"))),
        case(64, "no --client-keys", keygate(Some(&good), &["verify"])),
        case(
            77,
            "as nobody, a file only root may read",
            as_nobody(verify(&file("secret.keys"))),
        ),
        case(
            78,
            "an invalid config",
            keygate(
                Some(&bad_config(dir.path())),
                &["verify", "--client-keys", &file("same.keys")],
            ),
        ),
    ];
    check_row("`keygate [--config F] verify`", &cases);
}

const PASSWORD: &str = "Api-Pass-0f-keygate";

fn api_key(n: u32) -> String {
    format!("k{n:063}")
}

/// A config whose store holds `keys` and whose `[wazuh]` is the stand-in.
fn sync_config(dir: &Path, standin: &StandIn, keys: &str) -> PathBuf {
    std::fs::write(dir.join("keys.txt"), keys).unwrap();
    std::fs::write(dir.join("api.pass"), format!("{PASSWORD}\n")).unwrap();
    standin.write_ca(&dir.join("ca.pem"));
    let config = dir.join("sync.toml");
    std::fs::write(
        &config,
        format!(
            "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"keys.txt\"\n\n\
             [wazuh]\nurl = \"{}\"\nuser = \"keygate\"\npassword_file = \"api.pass\"\nca_file = \"ca.pem\"\n",
            standin.url()
        ),
    )
    .unwrap();
    config
}

/// The codes of sync's row this test leaves to
/// [`sync_exits_69_and_77_from_its_own_errors`].
const SYNC_PENDING: &[u8] = &[69, 77];

#[test]
fn sync_exits_with_each_code_of_its_row() {
    let standin = StandIn::start("keygate", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let one = format!("001 agent-1 10.1.0.1 {}\n", api_key(1));
    let config = sync_config(dir.path(), &standin, &one);
    let mut cases = vec![
        case(
            2,
            "a dry run with changes pending",
            keygate(Some(&config), &["sync"]),
        ),
        case(0, "applied", keygate(Some(&config), &["sync", "--apply"])),
        case(0, "nothing to do", keygate(Some(&config), &["sync"])),
        case(
            64,
            "sync --aply",
            keygate(Some(&config), &["sync", "--aply"]),
        ),
        case(
            78,
            "an invalid config",
            keygate(Some(&bad_config(dir.path())), &["sync"]),
        ),
    ];
    let short = tempfile::tempdir().unwrap();
    let config = sync_config(
        short.path(),
        &standin,
        &format!("{one}002 short-key any abc123\n"),
    );
    cases.push(case(
        1,
        "a key the API cannot take",
        keygate(Some(&config), &["sync", "--apply"]),
    ));
    let mut covered: Vec<u8> = cases.iter().map(|c| c.want).collect();
    covered.extend(SYNC_PENDING);
    covered.sort_unstable();
    covered.dedup();
    assert_eq!(covered, row("`keygate [--config F] sync`"));
    assert_codes("sync", &cases);
}

/// sync exits 69 when the API cannot be reached and 77 when it refuses
/// the user (src/exit.rs maps keygate_wazuh's Transport and Auth errors).
#[test]
fn sync_exits_69_and_77_from_its_own_errors() {
    let standin = StandIn::start("keygate", PASSWORD);
    let dir = tempfile::tempdir().unwrap();
    let config = sync_config(dir.path(), &standin, "");
    std::fs::write(dir.path().join("api.pass"), "wrong\n").unwrap();
    let refused = keygate(Some(&config), &["sync"]).output().unwrap();
    assert_eq!(refused.status.code(), Some(77), "{refused:?}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(&standin.url(), &format!("https://127.0.0.1:{port}"));
    std::fs::write(&config, text).unwrap();
    let unreachable = keygate(Some(&config), &["sync"]).output().unwrap();
    assert_eq!(unreachable.status.code(), Some(69), "{unreachable:?}");
}

#[test]
fn help_and_version_exit_0() {
    let cases = vec![
        case(0, "--version", keygate(None, &["--version"])),
        case(0, "--help", keygate(None, &["--help"])),
        case(0, "sync --help", keygate(None, &["sync", "--help"])),
    ];
    check_row("`keygate --version`", &cases);
}

/// 74: the output cannot be written (here /dev/full: no space left).
#[test]
fn an_output_that_cannot_be_written_exits_74() {
    let dir = readable_dir(&[("keys.txt", KEYS)]);
    let good = config_in(dir.path());
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let status = keygate(Some(&good), &["check"])
        .stdout(full)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(74), "{status}");
}

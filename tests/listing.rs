//! `list`, `export` and `verify` end to end, on what makes a listing
//! trustworthy: a paged http inventory that caps its pages is listed
//! whole, an incomplete listing is said to be incomplete (exit 1, nothing
//! written with `-o`), `export -o` keeps the file's owner, group and mode,
//! CSV cells are safe from spreadsheets and read back the same, and names
//! Wazuh refuses are reported as warnings. The real binary, a local HTTPS
//! inventory (keygate-wazuh-standin's `inventory`), files in a temporary
//! directory. The tests run as root (to give files other groups).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use keygate_wazuh_standin::inventory::{Answer, Inventory, Seen};
use serde_json::{json, Value};

const KEY: &str = "0b9d9f06cc8cf44765a12c0aa01a6e2217130979f4dfeda24e22b0af7e8d237e";

use keygate_testkit::cli::describe as text;

fn keygate(config: &Path, args: &[&str]) -> Output {
    keygate_testkit::cli::keygate(Path::new(env!("CARGO_BIN_EXE_keygate")), config, args)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An inventory of `n` agents answering at most 100 a page whatever
/// `{limit}` asks; pages at an offset of `fail_from` or more answer 503.
fn inventory(n: usize, fail_from: Option<usize>) -> Inventory {
    Inventory::start(move |seen: &Seen| {
        let number = |name: &str| seen.param(name).and_then(|v| v.parse::<usize>().ok());
        let offset = number("offset").unwrap_or(0);
        if fail_from.is_some_and(|f| offset >= f) {
            return Answer::json(503, "");
        }
        let limit = number("limit").unwrap_or(n).min(100);
        let data: Vec<Value> = (offset..n)
            .take(limit)
            .map(|i| {
                json!({"id": format!("{:03}", i + 1), "name": format!("host-{}", i + 1),
                            "ip": "any", "key": KEY})
            })
            .collect();
        Answer::json(200, json!({ "data": data }).to_string())
    })
}

/// A directory with a config whose one backend is `backend` (TOML lines
/// after `[[backend]]`), the inventory's CA as `ca.pem`.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    fn new(backend: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("keygate.toml");
        std::fs::write(
            &config,
            format!("[[backend]]\nname = \"store\"\n{backend}\n"),
        )
        .unwrap();
        Setup { dir, config }
    }

    fn http(inventory: &Inventory) -> Setup {
        let s = Setup::new(&format!(
            "type = \"http\"\nurl_by_id = \"{url}/api/agents/{{id}}\"\n\
             url_by_ip = \"{url}/api/agents?ip={{ip}}\"\n\
             url_all = \"{url}/api/agents?offset={{offset}}&limit={{limit}}\"\n\
             ca_file = \"ca.pem\"\n\
             [backend.fields]\nid = \"/data/0/id\"\nname = \"/data/0/name\"\n\
             ip = \"/data/0/ip\"\nkey = \"/data/0/key\"",
            url = inventory.url()
        ));
        inventory.write_ca(&s.path("ca.pem"));
        s
    }

    fn file(lines: &str) -> Setup {
        let s = Setup::new("type = \"file\"\npath = \"client.keys\"");
        std::fs::write(s.path("client.keys"), lines).unwrap();
        s
    }

    fn run(&self, args: &[&str]) -> Output {
        keygate(&self.config, args)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The inventory: 300 agents, at most 100 a page, the default
/// `page_size` of 500. `keygate list` lists all 300 (it printed `100
/// agent(s)` and exited 0), and `export` writes all 300.
#[test]
fn list_and_export_read_every_page_of_a_capped_inventory() {
    let inv = inventory(300, None);
    let s = Setup::http(&inv);
    let out = s.run(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).ends_with("300 agent(s), 0 invalid record(s)\n"),
        "{}",
        text(&out)
    );
    let file = s.path("client.keys");
    let out = s.run(&["export", "-o", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 300);
}

/// The store fails midway (the inventory's third page answers 503): `list`
/// prints what it read but says INCOMPLETE and exits 1 (`--json`:
/// `complete: false` and the error); `export -o` writes nothing and leaves
/// the file as it was; `export` to stdout says its output is incomplete;
/// `verify` compares nothing. Each exits 1 (they exited 2 with a store
/// error, and `list --json` left its document unclosed).
#[test]
fn an_incomplete_listing_is_said_and_exits_1() {
    let inv = inventory(300, Some(200));
    let s = Setup::http(&inv);

    let out = s.run(&["list"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("200 agent(s), 0 invalid record(s): INCOMPLETE"),
        "{}",
        text(&out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the listing is incomplete (200 agent(s) read before it failed)")
            && err.contains("backend 'store'")
            && err.contains("503"),
        "{}",
        text(&out)
    );

    let out = s.run(&["list", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(v["complete"], false);
    assert_eq!(v["count"], 200);
    assert!(v["error"].as_str().unwrap().contains("incomplete"), "{v}");

    let file = s.path("client.keys");
    std::fs::write(&file, "001 kept any k\n").unwrap();
    let out = s.run(&["export", "-o", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("INCOMPLETE: nothing written") && text(&out).contains("left as it was"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "001 kept any k\n");
    let leftovers: Vec<_> = std::fs::read_dir(s.dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".keygate-export-")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let out = s.run(&["export", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let report: Value =
        serde_json::from_slice(&out.stderr).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(report["complete"], false);
    assert_eq!(report["written"], 200);

    let manager = s.path("manager.keys");
    std::fs::write(&manager, "999 only-here any k\n").unwrap();
    let out = s.run(&["verify", "--client-keys", manager.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        stdout(&out).contains("INCOMPLETE") && !stdout(&out).contains("only_in_manager"),
        "{}",
        text(&out)
    );
    let out = s.run(&[
        "verify",
        "--client-keys",
        manager.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["complete"].clone(), v["in_sync"].clone()),
        (json!(false), json!(false))
    );
}

/// `export -o` over an existing file keeps its owner, group and mode (a
/// manager's `root:wazuh 0640` client.keys stayed `root:root`, which
/// Wazuh's daemons cannot read); a new file gets 0640 and its directory's
/// group.
#[test]
fn export_keeps_the_owner_group_and_mode_of_the_file_it_replaces() {
    let s = Setup::file(&format!("001 web-01 any {KEY}\n002 db-01 10.0.0.2 {KEY}\n"));
    let target = s.path("manager.keys");
    std::fs::write(&target, "old\n").unwrap();
    std::os::unix::fs::chown(&target, Some(0), Some(4242)).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o604)).unwrap();
    let out = s.run(&["export", "-o", target.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let m = std::fs::metadata(&target).unwrap();
    assert_eq!((m.uid(), m.gid(), m.mode() & 0o7777), (0, 4242, 0o604));
    assert_eq!(std::fs::read_to_string(&target).unwrap().lines().count(), 2);

    let sub = s.path("etc");
    std::fs::create_dir(&sub).unwrap();
    std::os::unix::fs::chown(&sub, None, Some(4343)).unwrap();
    let new = sub.join("client.keys");
    let out = s.run(&["export", "-o", new.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let m = std::fs::metadata(&new).unwrap();
    assert_eq!((m.gid(), m.mode() & 0o7777), (4343, 0o640));
}

/// CSV cells that start with `=`, `+`, `-` or `@` get a `'` in front, so a
/// spreadsheet does not run them; keygate's own CSV reader gives back the
/// same records (a name `-x`, a key starting with `=`). `--format` takes
/// `client_keys` as the config spells it, and `client-keys`.
#[test]
fn csv_export_is_safe_for_spreadsheets_and_reads_back_the_same() {
    let formula_key = "=HYPERLINK(\"http://x\")+1@2";
    let s = Setup::file(&format!(
        "001 -x any {KEY}\n002 web-01 10.0.0.2 {formula_key}\n003 web-03 any @{KEY}\n"
    ));
    let out = s.run(&["export", "--format", "csv"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let csv = stdout(&out);
    for line in csv.lines().skip(1) {
        for cell in line.split(',') {
            let cell = cell.trim_start_matches('"');
            assert!(
                !cell.starts_with(['=', '+', '-', '@']),
                "a cell a spreadsheet would run: {cell:?} in {csv}"
            );
        }
    }
    assert!(csv.contains("001,'-x,any,"), "{csv}");
    std::fs::write(s.path("agents.csv"), &csv).unwrap();
    let back = Setup::new("type = \"file\"\nformat = \"csv\"\npath = \"agents.csv\"");
    std::fs::write(back.path("agents.csv"), &csv).unwrap();
    let original = s.run(&["list", "--with-keys", "--json"]);
    let reread = back.run(&["list", "--with-keys", "--json"]);
    assert_eq!(reread.status.code(), Some(0), "{}", text(&reread));
    let agents = |o: &Output| serde_json::from_slice::<Value>(&o.stdout).unwrap()["agents"].clone();
    assert_eq!(agents(&original), agents(&reread));
    assert_eq!(agents(&reread)[0]["name"], "-x");
    assert_eq!(agents(&reread)[1]["key"], formula_key);

    for spelling in ["client_keys", "client-keys"] {
        let out = s.run(&["export", "--format", spelling]);
        assert_eq!(out.status.code(), Some(0), "{spelling}: {}", text(&out));
        assert!(stdout(&out).starts_with("001 -x any "), "{}", text(&out));
    }
}

/// Names Wazuh's `OS_IsValidName` refuses (one character) are listed, exported and compared as usual, and reported as warnings
/// with the rule they break; the exit code does not change.
#[test]
fn names_wazuh_refuses_are_reported_as_warnings() {
    let keys = format!("001 a any {KEY}\n002 b any {KEY}\n003 .web any {KEY}\n");
    let s = Setup::file(&keys);
    let out = s.run(&["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let listed = stdout(&out);
    assert!(
        listed.contains("3 agent(s), 0 invalid record(s), 2 warning(s)"),
        "{listed}"
    );
    assert!(
        listed.contains("warning: agent 001 name 'a': Wazuh requires at least 2 characters"),
        "{listed}"
    );
    assert!(
        listed.contains("warning: agent 002 name 'b': Wazuh requires at least 2 characters"),
        "{listed}"
    );
    // OS_IsValidName has no rule about a leading '.'.
    assert!(!listed.contains("'.web'"), "{listed}");
    let out = s.run(&["list", "--json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["warnings"][0]["rule"],
        "Wazuh requires at least 2 characters"
    );
    assert_eq!(v["complete"], true);

    let file = s.path("out.keys");
    let out = s.run(&["export", "-o", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("warning: agent 001 name 'a'"),
        "{}",
        text(&out)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), keys);

    let out = s.run(&["verify", "--client-keys", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        stdout(&out).contains("warning: agent 002 name 'b'") && stdout(&out).contains("in sync"),
        "{}",
        text(&out)
    );
}

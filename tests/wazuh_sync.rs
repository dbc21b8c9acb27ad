//! `keygate sync` end to end: the real binary, a client.keys store, and the
//! Wazuh API stand-in (`keygate-wazuh-standin`). A real Wazuh manager cannot
//! be installed on these machines; the stand-in is a small HTTPS server
//! implementing the endpoints sync uses as the public API specification
//! describes them (JWT login, paging, insert with and without force,
//! delete, keys, 429 on demand, token expiry, agent 000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use keygate_wazuh_standin::StandIn;

const PASSWORD: &str = "Api-Pass-0f-keygate";

fn key(n: u32) -> String {
    format!("k{n:063}")
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Setup {
    /// A config with a client.keys backend holding `keys` and `[wazuh]`
    /// pointing at the stand-in, with `password` in the password file.
    fn new(standin: &StandIn, keys: &str, password: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("client.keys"), keys).unwrap();
        std::fs::write(dir.path().join("api.pass"), format!("{password}\n")).unwrap();
        standin.write_ca(&dir.path().join("ca.pem"));
        let config = dir.path().join("keygate.toml");
        std::fs::write(
            &config,
            format!(
                "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n\n\
                 [wazuh]\nurl = \"{}\"\nuser = \"keygate\"\npassword_file = \"api.pass\"\n\
                 ca_file = \"ca.pem\"\nconcurrency = 4\ntimeout = \"10s\"\n\
                 backup_dir = \"backups\"\nmax_requests_per_minute = 100000\n",
                standin.url()
            ),
        )
        .unwrap();
        Setup { dir, config }
    }

    fn run(&self, args: &[&str]) -> Output {
        keygate(&self.config, args)
    }

    /// Sets `[wazuh] key = value` (the section is the last of the file).
    fn set(&self, key: &str, value: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        let kept: String = text
            .lines()
            .filter(|l| !l.starts_with(&format!("{key} = ")))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&self.config, format!("{kept}{key} = {value}\n")).unwrap();
    }

    /// The backup files, oldest first.
    fn backups(&self) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(self.path("backups")) {
            Ok(dir) => dir.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        };
        files.sort();
        files
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

use keygate_testkit::cli::describe as text;

fn keygate(config: &Path, args: &[&str]) -> Output {
    keygate_testkit::cli::keygate(Path::new(env!("CARGO_BIN_EXE_keygate")), config, args)
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn store(n: u32) -> String {
    (1..=n)
        .map(|i| format!("{i:03} agent-{i} 10.1.0.{i} {}\n", key(i)))
        .collect()
}

/// A dry run writes nothing and exits 2 with changes pending; apply exits
/// 0; a second run plans nothing and exits 0.
#[test]
fn dry_run_writes_nothing_then_apply_converges() {
    let standin = StandIn::start("keygate", PASSWORD);
    let setup = Setup::new(&standin, &store(5), PASSWORD);

    let plan = setup.run(&["sync", "--json"]);
    assert_eq!(plan.status.code(), Some(2), "{}", text(&plan));
    let v = json(&plan);
    assert_eq!(v["applied"], false);
    assert_eq!(v["inserted"].as_array().unwrap().len(), 5);
    assert_eq!(standin.state().writes, 0);
    assert!(standin.agents().is_empty());
    assert!(!String::from_utf8_lossy(&plan.stdout).contains(&key(1)));

    let apply = setup.run(&["sync", "--apply"]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    assert!(
        String::from_utf8_lossy(&apply.stdout).contains("insert         5"),
        "{}",
        text(&apply)
    );
    let agents = standin.agents();
    assert_eq!(agents.len(), 5);
    assert_eq!(agents["003"], ("agent-3".into(), "10.1.0.3".into(), key(3)));

    let again = setup.run(&["sync", "--json"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again));
    let v = json(&again);
    assert_eq!(v["unchanged"], 5);
    assert!(v["inserted"].as_array().unwrap().is_empty());
    assert!(v["replaced"].as_array().unwrap().is_empty());
}

/// Changed keys, names and addresses are replaced (force enabled, with
/// the conditions off); prune deletes only agents absent from the store,
/// never 000; without --prune nothing is deleted.
#[test]
fn replace_and_prune_only_what_is_absent_never_000() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.put("001", "agent-1", "10.1.0.1", &key(1));
    standin.put("002", "agent-2", "10.1.0.2", &key(99));
    standin.put("003", "old-name", "10.1.0.3", &key(3));
    standin.put("050", "decommissioned", "any", &key(50));
    let setup = Setup::new(&standin, &store(3), PASSWORD);

    let apply = setup.run(&["sync", "--apply", "--json"]);
    assert_eq!(apply.status.code(), Some(0), "{}", text(&apply));
    let v = json(&apply);
    assert_eq!(v["replaced"], serde_json::json!(["002", "003"]));
    assert_eq!(v["deleted"], serde_json::json!([]));
    assert!(standin.agents().contains_key("050"));

    let prune = setup.run(&["sync", "--apply", "--prune", "--json"]);
    assert_eq!(prune.status.code(), Some(0), "{}", text(&prune));
    assert_eq!(json(&prune)["deleted"], serde_json::json!(["050"]));
    assert_eq!(
        standin.agents().keys().cloned().collect::<Vec<_>>(),
        ["001", "002", "003"]
    );
    let log = standin.state().log.clone();
    let deletes: Vec<&String> = log.iter().filter(|l| l.starts_with("DELETE")).collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");
    assert!(deletes[0].contains("agents_list=050"), "{deletes:?}");
    assert!(deletes[0].contains("status=all") && deletes[0].contains("older_than=0s"));
    // 000 is listed by the manager and never touched.
    let page = log.iter().any(|l| l.starts_with("GET /agents?offset="));
    assert!(page, "{log:?}");
}

/// A wrong password: exit 77 (permission denied) and a message naming the
/// user and what to check, never the password.
#[test]
fn bad_password_exits_77_with_a_clear_message() {
    let standin = StandIn::start("keygate", PASSWORD);
    let setup = Setup::new(&standin, &store(2), "not-the-password");
    let out = setup.run(&["sync", "--apply"]);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("refused the credentials of user 'keygate'"),
        "{all}"
    );
    assert!(all.contains("password_file"), "{all}");
    assert!(!all.contains("not-the-password"), "{all}");
    assert_eq!(standin.state().writes, 0);
}

/// HTTP 429 answers are retried, counted in the report, and the run
/// succeeds.
#[test]
fn http_429_is_retried() {
    let standin = StandIn::start("keygate", PASSWORD);
    let setup = Setup::new(&standin, &store(3), PASSWORD);
    standin.fail_next_with_429(2);
    let out = setup.run(&["sync", "--apply", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(standin.state().served_429, 2);
    assert_eq!(json(&out)["throttled"], 2);
    assert_eq!(standin.agents().len(), 3);
}

/// A token that expires mid-run (401) is renewed with a new login and the
/// run completes.
#[test]
fn expired_token_is_renewed_mid_run() {
    let standin = StandIn::start("keygate", PASSWORD);
    let setup = Setup::new(&standin, &store(6), PASSWORD);
    // One call at a time, so which call meets the expiry is deterministic.
    let config = std::fs::read_to_string(&setup.config).unwrap();
    std::fs::write(
        &setup.config,
        config.replace("concurrency = 4", "concurrency = 1"),
    )
    .unwrap();
    standin.expire_tokens_after(3);
    let out = setup.run(&["sync", "--apply"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(standin.agents().len(), 6);
    assert!(standin.state().logins >= 2, "{}", standin.state().logins);
}

/// A key the API cannot take (not 64 alphanumerics) is reported as failed
/// with the reason and the other agents are applied; exit 1.
#[test]
fn a_wrong_length_key_is_reported_and_the_rest_applied() {
    let standin = StandIn::start("keygate", PASSWORD);
    let keys = format!("{}004 short-key any abc123\n", store(3));
    let setup = Setup::new(&standin, &keys, PASSWORD);
    let out = setup.run(&["sync", "--apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("004 (insert): the Wazuh API takes only keys of exactly 64"),
        "{}",
        text(&out)
    );
    assert!(!stdout.contains("abc123"), "{stdout}");
    assert_eq!(
        standin.agents().keys().cloned().collect::<Vec<_>>(),
        ["001", "002", "003"]
    );
}

/// Without [wazuh] url, sync says what is missing and exits 78 (a
/// configuration error).
#[test]
fn sync_without_a_wazuh_section_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("client.keys"), store(1)).unwrap();
    let config = dir.path().join("k.toml");
    std::fs::write(
        &config,
        "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n",
    )
    .unwrap();
    let out = keygate(&config, &["sync"]);
    assert_eq!(out.status.code(), Some(78), "{}", text(&out));
    assert!(text(&out).contains("[wazuh] url"), "{}", text(&out));
}

/// export → verify on the written file reports no drift; the file has mode
/// 0640 and invalid records are reported, not written.
#[test]
fn export_then_verify_reports_no_drift() {
    use std::os::unix::fs::PermissionsExt;
    let standin = StandIn::start("keygate", PASSWORD);
    let keys = format!("{}005 bad_name! any {}\n", store(4), key(5));
    let setup = Setup::new(&standin, &keys, PASSWORD);
    let out_file = setup.path("exported.keys");
    let out = setup.run(&["export", "-o", out_file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["written"], 4);
    assert_eq!(v["invalid"].as_array().unwrap().len(), 1);
    let mode = std::fs::metadata(&out_file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    assert_eq!(std::fs::read_to_string(&out_file).unwrap(), store(4));
    // Leave only valid records in the store, then verify against the export.
    std::fs::write(setup.path("client.keys"), store(4)).unwrap();
    let verify = setup.run(&["verify", "--client-keys", out_file.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    assert!(String::from_utf8_lossy(&verify.stdout).contains("in sync"));

    let csv = setup.run(&["export", "--format", "csv"]);
    assert_eq!(csv.status.code(), Some(0), "{}", text(&csv));
    let stdout = String::from_utf8_lossy(&csv.stdout);
    assert!(
        stdout.starts_with("id,name,ip,key\n001,agent-1,10.1.0.1,"),
        "{stdout}"
    );
}

/// verify finds each kind of drift in a crafted manager file (exit 2,
/// differences found), and exits 1 when the file or a line of it cannot be
/// read.
#[test]
fn verify_finds_every_kind_of_drift() {
    let standin = StandIn::start("keygate", PASSWORD);
    let store_text = format!(
        "{}007 twin 10.9.0.1 {}\n008 twin 10.9.0.1 {}\n",
        store(6),
        key(7),
        key(8)
    );
    let setup = Setup::new(&standin, &store_text, PASSWORD);
    let manager = format!(
        "# manager file\n001 agent-1 10.1.0.1 {}\n002 agent-2 10.1.0.2 {}\n003 renamed 10.1.0.3 {}\n004 agent-4 10.2.2.2 {}\n005 !agent-5 10.1.0.5 {}\n007 twin 10.9.0.1 {}\n008 twin 10.9.0.1 {}\n090 extra any {}\n091 extra any {}\n",
        key(1), key(99), key(3), key(4), key(5), key(7), key(8), key(90), key(91)
    );
    let file = setup.path("manager.keys");
    std::fs::write(&file, manager).unwrap();
    let out = setup.run(&["verify", "--client-keys", file.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let v = json(&out);
    let found: Vec<(String, String)> = v["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    for (kind, id) in [
        ("key_differs", "002"),
        ("name_differs", "003"),
        ("ip_differs", "004"),
        ("removed_in_manager", "005"),
        ("only_in_store", "006"),
        ("only_in_manager", "090"),
        ("only_in_manager", "091"),
        ("duplicate_name", "twin"),
        ("duplicate_ip", "10.9.0.1"),
        ("duplicate_name", "extra"),
    ] {
        assert!(
            found.contains(&(kind.into(), id.into())),
            "missing {kind} {id} in {found:?}"
        );
    }
    assert!(!found.iter().any(|(_, id)| id == "001"), "{found:?}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&key(99)));

    let missing = setup.run(&["verify", "--client-keys", "/nonexistent/client.keys"]);
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    std::fs::write(&file, "001 agent-1\n").unwrap();
    let broken = setup.run(&["verify", "--client-keys", file.to_str().unwrap()]);
    assert_eq!(broken.status.code(), Some(1), "{}", text(&broken));
}

/// list shows id, name and ip, never a key unless --with-keys, then the
/// invalid records with their reasons.
#[test]
fn list_hides_keys_and_counts_invalid_records() {
    let standin = StandIn::start("keygate", PASSWORD);
    let keys = format!("{}009 bad! any {}\n", store(2), key(9));
    let setup = Setup::new(&standin, &keys, PASSWORD);
    let out = setup.run(&["list"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("001") && stdout.contains("agent-2"),
        "{stdout}"
    );
    assert!(!stdout.contains(&key(1)), "{stdout}");
    assert!(
        stdout.contains("2 agent(s), 1 invalid record(s)"),
        "{stdout}"
    );
    let with = setup.run(&["list", "--with-keys", "--json"]);
    let v = json(&with);
    assert_eq!(v["agents"][0]["key"], key(1));
    assert_eq!(v["count"], 2);
    assert_eq!(v["invalid"].as_array().unwrap().len(), 1);
}

/// Runs keygate with `args` under `/usr/bin/time`, checks that it exited
/// with 0, and returns its peak memory (KiB) and what it printed.
fn max_rss_kib(config: &Path, args: &[&str]) -> (u64, String) {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("rss");
    let out = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&report)
        .arg(env!("CARGO_BIN_EXE_keygate"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("KEYGATE_CONFIG")
        .output()
        .expect("/usr/bin/time is needed for the memory test (apt-get install time)");
    // A run that failed early would also have used little memory.
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rss = std::fs::read_to_string(&report)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (rss, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Listing and exporting 100,000 agents from the file backend stream them:
/// the extra memory over holding the backend's own index stays under half
/// of what that index costs (a second copy of every record would double it).
/// Every run must succeed and `list` print every agent: a run that failed
/// early would pass the memory bound.
#[test]
fn listing_100000_agents_keeps_memory_bounded() {
    let standin = StandIn::start("keygate", PASSWORD);
    let mut keys = String::with_capacity(100_000 * 90);
    for i in 1..=100_000u32 {
        keys.push_str(&format!("{i:06} host-{i} any {}\n", key(i)));
    }
    let big = Setup::new(&standin, &keys, PASSWORD);
    let small = Setup::new(&standin, &store(3), PASSWORD);
    let (baseline, _) = max_rss_kib(&small.config, &["check"]);
    let (loaded, _) = max_rss_kib(&big.config, &["check"]);
    let index = loaded.saturating_sub(baseline);
    assert!(
        index > 1000,
        "the index of 100,000 agents should cost memory: {index} KiB"
    );
    let out = big.path("all.keys");
    // `export` also keeps its own map of names and addresses to report
    // duplicates (a few strings per agent, whatever the index costs), so
    // its allowance is one index more rather than half of one: records
    // shared with the backend made the index itself cheaper than that map.
    for (args, allowance) in [
        (vec!["list"], index / 2),
        (vec!["export", "-o", out.to_str().unwrap()], index),
    ] {
        let (used, printed) = max_rss_kib(&big.config, &args);
        assert!(
            used < loaded + allowance,
            "{args:?}: {used} KiB, index alone {loaded} KiB (index cost {index} KiB)"
        );
        if args[0] == "list" {
            let tail = &printed[printed.len().saturating_sub(300)..];
            assert!(
                printed.ends_with("\n100000 agent(s), 0 invalid record(s)\n"),
                "{tail}"
            );
            assert_eq!(printed.lines().count(), 100_001, "{tail}");
        }
    }
    assert_eq!(
        std::fs::read_to_string(&out).unwrap().lines().count(),
        100_000
    );
}

/// The API password may come from an environment variable
/// (`password_env`) or a systemd credential (`password_credential`)
/// instead of a file; an unset variable is named, never a password shown.
#[test]
fn password_from_env_or_systemd_credential() {
    let standin = StandIn::start("keygate", PASSWORD);
    let setup = Setup::new(&standin, &store(2), "not-the-password");
    let text_of = |source: &str| {
        std::fs::read_to_string(&setup.config)
            .unwrap()
            .replace("password_file = \"api.pass\"", source)
    };
    let config = setup.path("env.toml");
    std::fs::write(&config, text_of("password_env = \"KG_TEST_WAZUH_PW\"")).unwrap();
    let run = |envs: &[(&str, &str)]| {
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .arg("--config")
            .arg(&config)
            .args(["sync", "--json"])
            .env_remove("KEYGATE_CONFIG")
            .env_remove("KG_TEST_WAZUH_PW")
            .env_remove("CREDENTIALS_DIRECTORY")
            .envs(envs.iter().copied())
            .output()
            .unwrap()
    };
    let out = run(&[("KG_TEST_WAZUH_PW", PASSWORD)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(json(&out)["inserted"].as_array().unwrap().len(), 2);

    let out = run(&[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("environment variable KG_TEST_WAZUH_PW is not set"),
        "{}",
        text(&out)
    );

    std::fs::write(&config, text_of("password_credential = \"wazuh-api\"")).unwrap();
    let creds = setup.path("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("wazuh-api"), format!("{PASSWORD}\n")).unwrap();
    let out = run(&[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    std::fs::write(creds.join("wazuh-api"), "wrong\n").unwrap();
    let out = run(&[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())]);
    // The credential is read, and the API refuses it: exit 77 with that
    // reason (a crash, or any other failure, is not this).
    assert_eq!(out.status.code(), Some(77), "{}", text(&out));
    assert!(
        text(&out).contains("the Wazuh API refused the credentials of user 'keygate'"),
        "{}",
        text(&out)
    );
    assert!(!text(&out).contains("wrong"), "{}", text(&out));
}

/// `10.x.y.z` addresses, so fleets of thousands stay valid.
fn ip(i: u32) -> String {
    format!("10.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// Agents `range` as client.keys lines (`NNN host-N 10.x.y.z KEY`).
fn fleet(range: std::ops::RangeInclusive<u32>) -> String {
    range
        .map(|i| format!("{i:03} host-{i} {} {}\n", ip(i), key(i)))
        .collect()
}

/// Registers agents `range` in the stand-in as [`fleet`] writes them.
fn register(standin: &StandIn, range: std::ops::RangeInclusive<u32>) {
    for i in range {
        standin.put(&format!("{i:03}"), &format!("host-{i}"), &ip(i), &key(i));
    }
}

/// Failure 3: a store that shrank (120 of the manager's 300 agents, as a
/// writer truncating client.keys mid-read leaves it) makes `--prune`
/// refuse the whole plan: nothing deleted, exit 1 with the numbers. The
/// default limit is 10 % of the manager's agents; `--max-delete` raises it
/// for one run and `[wazuh] max_delete` in the config, and then every
/// deleted line is in the backup first.
#[test]
fn prune_refuses_a_store_that_shrank() {
    let standin = StandIn::start("keygate", PASSWORD);
    register(&standin, 1..=300);
    let setup = Setup::new(&standin, &fleet(1..=120), PASSWORD);
    let out = setup.run(&["sync", "--apply", "--prune"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(standin.agents().len(), 300);
    assert_eq!(standin.state().writes, 0);
    let all = text(&out);
    assert!(
        all.contains("would delete 180") && all.contains("--max-delete 30"),
        "{all}"
    );

    // The plan says what applying it costs at the pace.
    assert!(all.contains("API calls:"), "{all}");
    // `--max-delete` raises the limit for one run...
    let out = setup.run(&["sync", "--prune", "--max-delete", "180", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(json(&out)["max_delete"], 180);
    // ... and `[wazuh] max_delete` in the config.
    setup.set("max_delete", "180");
    let out = setup.run(&["sync", "--apply", "--prune", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(standin.agents().len(), 120);
    let v = json(&out);
    assert_eq!(v["deleted"].as_array().unwrap().len(), 180);
    let backup = PathBuf::from(v["backup"].as_str().unwrap());
    assert_eq!(setup.backups(), std::slice::from_ref(&backup));
    let saved = std::fs::read_to_string(&backup).unwrap();
    assert_eq!(saved, fleet(121..=300));
}

/// A store that lists no agent never prunes, whatever the limit; a store
/// whose listing fails changes nothing at all.
#[test]
fn an_empty_or_failed_store_never_prunes() {
    let standin = StandIn::start("keygate", PASSWORD);
    register(&standin, 1..=5);
    let setup = Setup::new(&standin, "", PASSWORD);
    let out = setup.run(&["sync", "--apply", "--prune", "--max-delete", "100"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("lists no agent"), "{}", text(&out));
    assert_eq!(standin.agents().len(), 5);

    std::fs::remove_file(setup.path("client.keys")).unwrap();
    let out = setup.run(&["sync", "--apply", "--prune", "--max-delete", "100"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(standin.agents().len(), 5);
    assert_eq!(standin.state().writes, 0);
}

/// Failure 4: a 308 from `/agents/insert` to another (trusted) host is
/// never followed: nothing reaches that host, each insert fails naming
/// the status and the host, and nothing counts as inserted.
#[test]
fn redirects_are_never_followed() {
    use keygate_wazuh_standin::inventory::{Answer, Inventory};
    let standin = StandIn::start("keygate", PASSWORD);
    let other = Inventory::start(|_| Answer::json(200, r#"{"data":{"id":"001"},"error":0}"#));
    standin.redirect("/agents/insert", &format!("{}/agents/insert", other.url()));
    let setup = Setup::new(&standin, &store(3), PASSWORD);
    // Both hosts trusted: only the policy keeps the keys home.
    std::fs::write(
        setup.path("ca.pem"),
        format!("{}{}", standin.ca_pem(), other.ca_pem()),
    )
    .unwrap();
    let out = setup.run(&["sync", "--apply", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(other.connections(), 0, "{:?}", other.seen());
    let v = json(&out);
    assert_eq!(v["inserted"], serde_json::json!([]));
    let failed = v["failed"].as_array().unwrap();
    assert_eq!(failed.len(), 3, "{v}");
    let reason = failed[0]["reason"].as_str().unwrap();
    let host = format!("localhost:{}", other.port());
    assert!(reason.contains("308") && reason.contains(&host), "{reason}");
}

/// Failure 5, and the budget: with `[wazuh] client_keys` readable, a
/// no-change sync of 2,000 agents reads the registry in pages of 500 and
/// no key through the API: at most 1 login + 4 pages + 1 (prune). Without
/// the file, keys are read through the API as before.
#[test]
fn a_no_change_sync_with_client_keys_reads_no_key_through_the_api() {
    let standin = StandIn::start("keygate", PASSWORD);
    register(&standin, 1..=2000);
    let setup = Setup::new(&standin, &fleet(1..=2000), PASSWORD);
    std::fs::write(setup.path("manager.keys"), standin.client_keys()).unwrap();
    setup.set("client_keys", "\"manager.keys\"");
    let out = setup.run(&["sync", "--prune", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(json(&out)["unchanged"], 2000);
    let state = standin.state();
    assert_eq!(state.logins, 1);
    let calls: Vec<&String> = state
        .log
        .iter()
        .filter(|l| !l.starts_with("POST /security/"))
        .collect();
    assert!(calls.len() <= 5, "{} calls: {calls:?}", calls.len());
    assert!(!calls.iter().any(|l| l.ends_with("/key")), "{calls:?}");
    drop(state);

    // A key that differs in the manager's file is a replace.
    let changed = standin.client_keys().replace(&key(7), &key(9999));
    std::fs::write(setup.path("manager.keys"), changed).unwrap();
    let out = setup.run(&["sync", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert_eq!(json(&out)["replaced"], serde_json::json!(["007"]));

    setup.set("client_keys", "\"missing.keys\"");
    let out = setup.run(&["sync", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(standin.state().log.iter().any(|l| l.ends_with("/key")));
}

/// Failure 5: paced at 100 a minute (the minute scaled to a second here:
/// 6,000 a minute is 100 a second) against an API that answers 429 beyond
/// 120 a minute (120 a second), a sync of 250 inserts meets no 429.
#[test]
fn a_paced_sync_stays_under_the_api_limit() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.set_rate_limit(120, std::time::Duration::from_secs(1));
    let setup = Setup::new(&standin, &fleet(1..=250), PASSWORD);
    setup.set("max_requests_per_minute", "6000");
    let out = setup.run(&["sync", "--apply", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(standin.state().served_429, 0);
    assert_eq!(json(&out)["throttled"], 0);
    assert_eq!(standin.agents().len(), 250);
}

/// Failure 7: a replace that would make the manager drop another agent
/// (002 holds the name the store gives 001) is a conflict without
/// `--prune`: nothing applied, 002 kept, exit 1. With `--prune` it is
/// 002's deletion, backed up and reported by id.
#[test]
fn a_replace_never_deletes_another_agent_unannounced() {
    let standin = StandIn::start("keygate", PASSWORD);
    standin.put("001", "alpha", "10.0.0.1", &key(1));
    standin.put("002", "beta", "10.0.0.2", &key(2));
    let setup = Setup::new(
        &standin,
        &format!("001 beta 10.0.0.1 {}\n", key(1)),
        PASSWORD,
    );
    let out = setup.run(&["sync", "--apply", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(standin.agents().len(), 2);
    assert_eq!(standin.agents()["001"].0, "alpha");
    let v = json(&out);
    assert_eq!(v["replaced"], serde_json::json!([]));
    assert_eq!(v["deleted"], serde_json::json!([]));
    let conflict = &v["conflicts"][0];
    assert_eq!(conflict["id"], "001");
    assert!(
        conflict["reason"].as_str().unwrap().contains("002"),
        "{conflict}"
    );

    let out = setup.run(&["sync", "--apply", "--prune", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v = json(&out);
    assert_eq!(v["deleted"], serde_json::json!(["002"]));
    assert_eq!(v["replaced"], serde_json::json!(["001"]));
    let saved = std::fs::read_to_string(v["backup"].as_str().unwrap()).unwrap();
    assert_eq!(
        saved,
        format!(
            "001 alpha 10.0.0.1 {}\n002 beta 10.0.0.2 {}\n",
            key(1),
            key(2)
        )
    );
}

/// The phases are strict: every delete is answered before the first
/// replace arrives, every replace before the first insert (writes answered
/// slowly, so overlapping ones would show).
#[test]
fn deletes_then_replaces_then_inserts_never_overlap() {
    use keygate_wazuh_standin::WriteKind;
    let standin = StandIn::start("keygate", PASSWORD);
    register(&standin, 1..=4);
    standin.put("090", "gone-1", "any", &key(90));
    standin.put("091", "gone-2", "any", &key(91));
    // Every write answered slowly, and one replace far more slowly: a
    // phase that did not wait for all of its writes would overlap the next.
    standin.delay_writes(std::time::Duration::from_millis(100));
    standin.delay_write_of("001", std::time::Duration::from_millis(1500));
    // 001-004 get new keys (replaces), 005-010 are new (inserts).
    let keys: String = fleet(1..=10)
        .replace(&key(1), &key(101))
        .replace(&key(2), &key(102));
    let keys = keys.replace(&key(3), &key(103)).replace(&key(4), &key(104));
    let setup = Setup::new(&standin, &keys, PASSWORD);
    let out = setup.run(&["sync", "--apply", "--prune", "--max-delete", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let timeline = standin.state().timeline.clone();
    let of = |kind| {
        timeline
            .iter()
            .filter(move |w: &&keygate_wazuh_standin::Write| w.kind == kind)
    };
    let last_end = |kind| of(kind).map(|w| w.finished).max().unwrap();
    let first_start = |kind| of(kind).map(|w| w.started).min().unwrap();
    assert!(
        last_end(WriteKind::Delete) < first_start(WriteKind::Replace),
        "{timeline:?}"
    );
    assert!(
        last_end(WriteKind::Replace) < first_start(WriteKind::Insert),
        "{timeline:?}"
    );
    assert_eq!(of(WriteKind::Replace).count(), 4);
    assert_eq!(of(WriteKind::Insert).count(), 6);
}

/// Names Wazuh's `OS_IsValidName` refuses (one character) are failures
/// with the rule, reported before any call for them; a leading '.' is not
/// one of its rules (the agent is inserted).
#[test]
fn names_wazuh_refuses_fail_before_the_api() {
    let standin = StandIn::start("keygate", PASSWORD);
    let keys = format!(
        "{}004 x any {}\n005 .hidden any {}\n",
        store(3),
        key(4),
        key(5)
    );
    let setup = Setup::new(&standin, &keys, PASSWORD);
    let out = setup.run(&["sync", "--apply", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v = json(&out);
    let reasons: Vec<(String, String)> = v["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap().into(),
                f["reason"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert_eq!(reasons[0].0, "004", "{reasons:?}");
    assert!(
        reasons[0].1.contains("at least 2 characters"),
        "{reasons:?}"
    );
    assert_eq!(standin.agents().len(), 4);
    let timeline = standin.state().timeline.clone();
    assert!(timeline.iter().all(|w| w.ids != "004"));
}

/// A backup that cannot be written stops the run before any change; kept
/// backups are limited to `backups_kept`; files are 0600 in a 0700
/// directory.
#[test]
fn no_change_without_a_backup_and_old_backups_are_removed() {
    use std::os::unix::fs::PermissionsExt;
    let standin = StandIn::start("keygate", PASSWORD);
    register(&standin, 1..=3);
    let setup = Setup::new(&standin, &fleet(1..=3), PASSWORD);
    setup.set("backup_dir", "\"client.keys/backups\"");
    let replaced = |n: u32| {
        let text = fleet(1..=3).replace(&key(1), &key(1000 + n));
        std::fs::write(setup.path("client.keys"), text).unwrap();
    };
    replaced(1);
    let out = setup.run(&["sync", "--apply"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("backup"), "{}", text(&out));
    assert_eq!(standin.state().writes, 0);
    assert_eq!(standin.agents()["001"].2, key(1));

    setup.set("backup_dir", "\"backups\"");
    setup.set("backups_kept", "2");
    for n in 2..=4 {
        replaced(n);
        let out = setup.run(&["sync", "--apply"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        assert!(text(&out).contains("backup"), "{}", text(&out));
    }
    let backups = setup.backups();
    assert_eq!(backups.len(), 2, "{backups:?}");
    // The newest holds the key the last run replaced.
    let newest = std::fs::read_to_string(&backups[1]).unwrap();
    assert!(newest.contains(&key(1003)), "{newest}");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&backups[1]), 0o600);
    assert_eq!(mode(&setup.path("backups")), 0o700);
}

/// `keygate sync --help` (the man page's source) and docs/sync.md name
/// every flag and `[wazuh]` key of a run, with its default.
#[test]
fn sync_help_and_docs_document_every_flag_and_key_with_its_default() {
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .args(["sync", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    let docs = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/sync.md"),
    )
    .unwrap();
    for text in [&*help, &*docs] {
        for want in [
            "--apply",
            "--prune",
            "--max-delete",
            "10 % of the manager's agents",
            "max_delete",
            "backup_dir",
            "/var/lib/keygate/backups",
            "backups_kept",
            "30",
            "client_keys",
            "/var/wazuh-manager/etc/client.keys",
            "max_requests_per_minute",
            "100",
        ] {
            assert!(text.contains(want), "{want:?} missing in:\n{text}");
        }
    }
}

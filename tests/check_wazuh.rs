//! `keygate check` reads the manager's side: the ossec.conf of Wazuh 3.13,
//! 4.3 and 4.14 (`tests/fixtures/wazuh/`), wired to this keygate, checked
//! item by item (key requests on, socket, exec_path, timeout, access,
//! force), each mismatch reported naming both sides; the store's records
//! Wazuh will not take (an IPv6 ip before 4.4, names OS_IsValidName
//! refuses); `--json` carries the same; docs/wazuh.md shows what it prints
//! for a healthy 4.14 manager.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use keygate_testkit::repo_root;

const KEY: &str = "ac57f6a5e1d9b0c2e5a1d6f7c8b9a0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f50c71";

/// A keygate config and a manager's ossec.conf in a temp dir laid out like
/// a host (`etc/keygate/keygate.toml`, `run/keygate/keygate.sock`,
/// `var/ossec/etc/ossec.conf`).
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    /// Wazuh `version`'s fixture wired to this keygate, with `agents` as
    /// the store (client.keys lines) and `extra` TOML (`[server]` keys, the
    /// rest of `[wazuh]`).
    fn new(version: &str, agents: &str, server: &str, wazuh: &str) -> Host {
        let host = Host {
            dir: tempfile::tempdir().unwrap(),
        };
        for sub in ["etc/keygate", "run/keygate", "var/ossec/etc"] {
            std::fs::create_dir_all(host.path(sub)).unwrap();
        }
        std::fs::write(host.path("etc/keygate/agents.keys"), agents).unwrap();
        std::fs::write(
            host.config(),
            format!(
                "[server]\nsocket = \"{}\"\n{server}\n\n[wazuh]\nossec_conf = \"{}\"\n{wazuh}\n\n[[backend]]\nname = \"agents\"\ntype = \"file\"\npath = \"agents.keys\"\n",
                host.path("run/keygate/keygate.sock").display(),
                host.ossec_conf().display(),
            ),
        )
        .unwrap();
        let fixture = repo_root().join(format!("tests/fixtures/wazuh/{version}/ossec.conf"));
        host.write_ossec_conf(&std::fs::read_to_string(fixture).unwrap());
        host
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    fn config(&self) -> PathBuf {
        self.path("etc/keygate/keygate.toml")
    }

    fn ossec_conf(&self) -> PathBuf {
        self.path("var/ossec/etc/ossec.conf")
    }

    /// Writes `text` as the manager's ossec.conf, with the shipped paths
    /// replaced by this host's (and this keygate binary).
    fn write_ossec_conf(&self, text: &str) {
        let text = text
            .replace(
                "/etc/keygate/keygate.toml",
                &self.config().display().to_string(),
            )
            .replace("/usr/bin/keygate ", &format!("{} ", keygate().display()))
            .replace(
                "/run/keygate/keygate.sock",
                &self.path("run/keygate/keygate.sock").display().to_string(),
            );
        std::fs::write(self.ossec_conf(), text).unwrap();
    }

    /// Rewrites the manager's ossec.conf with `from` replaced by `to`.
    fn edit_ossec_conf(&self, from: &str, to: &str) {
        let text = std::fs::read_to_string(self.ossec_conf()).unwrap();
        assert!(text.contains(from), "{from:?} not in ossec.conf");
        std::fs::write(self.ossec_conf(), text.replace(from, to)).unwrap();
    }

    /// `keygate check [args]`: exit code and stdout, with this host's temp
    /// dir and the binary's path written as on a real host.
    fn check(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(keygate())
            .arg("--config")
            .arg(self.config())
            .arg("check")
            .args(args)
            .env_remove("KEYGATE_CONFIG")
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout)
            .unwrap()
            .replace(&keygate().display().to_string(), "/usr/bin/keygate")
            .replace(&self.dir.path().display().to_string(), "");
        (out.status.code().unwrap(), text)
    }
}

fn keygate() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keygate"))
}

/// The store every version is checked with: a healthy agent, an IPv6 one,
/// an IPv4-mapped one, and a one-character name OS_IsValidName refuses.
fn agents() -> String {
    format!(
        "001 web-01 10.0.0.1 {KEY}\n006 v6-host 2001:db8::6 {KEY}\n007 mapped ::ffff:192.168.7.7 {KEY}\n008 x 10.0.0.8 {KEY}\n"
    )
}

/// The line of `text` that starts (after its indent) with `level` and
/// `item:`.
fn line<'a>(text: &'a str, level: &str, item: &str) -> &'a str {
    text.lines()
        .find(|l| {
            let mut words = l.split_whitespace();
            words.next() == Some(level) && words.next() == Some(&format!("{item}:"))
        })
        .unwrap_or_else(|| panic!("no '{level} {item}:' line in:\n{text}"))
}

/// Each healthy manager: every item is checked and fine, with the block
/// its version reads; the records this version refuses are reported.
#[test]
fn healthy_managers_of_3_13_4_3_and_4_14() {
    for (version, block, force, refuses_ipv6) in [
        (
            "3.13",
            "enabled (<wodle name=\"agent-key-polling\">, line 129)",
            "force_insert yes (<wodle name=\"agent-key-polling\">): a served agent replaces one with the same id, name or ip",
            true,
        ),
        (
            "4.3",
            "enabled (<wodle name=\"agent-key-polling\">, line 132)",
            "force_insert yes (<wodle name=\"agent-key-polling\">): a served agent replaces one with the same id, name or ip",
            true,
        ),
        (
            "4.14",
            "enabled (<auth><key_request>, line 116)",
            "enabled yes, key_mismatch yes, disconnected_time 1h, after_registration_time 1h (<auth><force>)",
            false,
        ),
    ] {
        let host = Host::new(version, &agents(), "", &format!("version = \"{version}\""));
        let (code, text) = host.check(&[]);
        assert_eq!(code, 0, "{version}:\n{text}");
        assert!(text.contains(&format!("wazuh:   {version} ([wazuh] version)")), "{text}");
        assert!(text.contains("ossec.conf /var/ossec/etc/ossec.conf:"), "{text}");
        assert!(line(&text, "ok", "key_requests").ends_with(block), "{version}:\n{text}");
        assert!(
            line(&text, "ok", "socket").ends_with("/run/keygate/keygate.sock is keygate's socket"),
            "{text}"
        );
        assert!(
            line(&text, "ok", "exec_path")
                .ends_with("runs this keygate (/usr/bin/keygate) with this config"),
            "{text}"
        );
        assert!(
            line(&text, "ok", "timeout")
                .ends_with("Wazuh waits 60s, keygate answers within 10s ([server] request_timeout)"),
            "{text}"
        );
        assert!(line(&text, "ok", "access").contains("authd runs as root"), "{text}");
        assert!(line(&text, "note", "force").ends_with(force), "{version}:\n{text}");
        // OS_IsValidName: served, but reported, on every version.
        assert!(
            text.contains("warning  agent 008 'x': Wazuh requires at least 2 characters (Wazuh's OS_IsValidName): served, but Wazuh's API (keygate sync) and an agent's own enrollment refuse the name"),
            "{text}"
        );
        // IPv6 (IPv4-mapped included): refused before 4.4 only.
        for agent in ["agent 006 'v6-host'", "agent 007 'mapped'"] {
            let reported = text.contains(&format!(
                "warning  {agent}: Wazuh {version} cannot take an IPv6 address; its authd would exit: keygate refuses it (code 5)"
            ));
            assert_eq!(reported, refuses_ipv6, "{version} {agent}:\n{text}");
        }
        let bad = if refuses_ipv6 { 3 } else { 1 };
        assert!(
            text.contains(&format!("records: 4 checked, {bad} that this Wazuh refuses")),
            "{text}"
        );
        assert!(!text.contains("ERROR"), "{text}");
        // ossec.conf names keygate's socket: no warning about its usual place.
        assert!(!text.contains("warning: server.socket"), "{text}");
    }
}

/// A socket or exec_path that plainly does not reach this keygate is an
/// error naming both sides (exit 1).
#[test]
fn a_wrong_socket_or_exec_path_is_an_error_naming_both_sides() {
    let host = Host::new("4.14", &agents(), "", "version = \"4.14\"");
    let ours = host.path("run/keygate/keygate.sock").display().to_string();
    host.edit_ossec_conf(
        &format!("<socket>{ours}</socket>"),
        "<socket>/var/ossec/queue/keygate.sock</socket>",
    );
    let (code, text) = host.check(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        line(&text, "ERROR", "socket").ends_with(
            "Wazuh asks /var/ossec/queue/keygate.sock, keygate listens on /run/keygate/keygate.sock ([server] socket)"
        ),
        "{text}"
    );

    let host = Host::new("4.14", &agents(), "", "version = \"4.14\"");
    let config = host.config().display().to_string();
    host.edit_ossec_conf(
        &format!("--config {config}"),
        "--config /etc/keygate/other.toml",
    );
    let (code, text) = host.check(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        line(&text, "ERROR", "exec_path").ends_with(
            "runs keygate with /etc/keygate/other.toml, this check reads /etc/keygate/keygate.toml"
        ),
        "{text}"
    );

    let host = Host::new("4.14", &agents(), "", "version = \"4.14\"");
    let config = host.config().display().to_string();
    host.edit_ossec_conf(&format!("--config {config}"), "");
    let (code, text) = host.check(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        line(&text, "ERROR", "exec_path").contains("(no --config: the default)"),
        "{text}"
    );

    let host = Host::new("3.13", &agents(), "", "version = \"3.13\"");
    let bin = keygate().display().to_string();
    host.edit_ossec_conf(&bin, "/opt/nowhere/keygate");
    let (code, text) = host.check(&[]);
    assert_eq!(code, 1, "{text}");
    assert!(
        line(&text, "ERROR", "exec_path")
            .ends_with("runs /opt/nowhere/keygate, which is not an executable file"),
        "{text}"
    );
}

/// Problems that do not stop Wazuh from reaching keygate are warnings
/// (exit 0): key requests off, a <timeout> that leaves no room for
/// request_timeout, an allowed_uids list without root, an old manager
/// with a 4.4 block, 5.0 without key requests.
#[test]
fn other_problems_are_warnings() {
    let host = Host::new(
        "4.14",
        &agents(),
        "request_timeout = \"10s\"\nallowed_uids = [1000]",
        "version = \"4.14\"",
    );
    host.edit_ossec_conf("<timeout>60</timeout>", "<timeout>10</timeout>");
    host.edit_ossec_conf(
        "<key_request>\n      <enabled>yes</enabled>",
        "<key_request>\n      <enabled>no</enabled>",
    );
    let (code, text) = host.check(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        line(&text, "warning", "key_requests")
            .ends_with("disabled: <enabled>no</enabled> in <auth><key_request> (line 116)"),
        "{text}"
    );
    assert!(
        line(&text, "warning", "timeout")
            .contains("Wazuh gives up after 10s, keygate may take 10s ([server] request_timeout)"),
        "{text}"
    );
    assert!(
        line(&text, "warning", "access")
            .contains("neither is in allowed_uids [1000] or allowed_gids []"),
        "{text}"
    );

    // 4.14's block on a 3.13 manager, and no wodle: off, and authd would
    // not start.
    let host = Host::new("4.14", &agents(), "", "version = \"3.13\"");
    let (code, text) = host.check(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        line(&text, "warning", "key_requests").contains("Wazuh 3.13 does not know <auth><key_request> (line 116; 4.4 and later): its authd refuses to start with it"),
        "{text}"
    );
    assert!(
        text.contains("off: ossec.conf has no <wodle name=\"agent-key-polling\"> block"),
        "{text}"
    );

    // 4.14 still reads the old block when there is no <key_request>.
    let host = Host::new("4.3", &agents(), "", "version = \"4.14\"");
    let (code, text) = host.check(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        line(&text, "ok", "key_requests")
            .contains("<wodle name=\"agent-key-polling\">, which 4.4+ authd still reads"),
        "{text}"
    );

    let host = Host::new("4.14", &agents(), "", "version = \"5.0\"");
    let (code, text) = host.check(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        line(&text, "warning", "key_requests")
            .contains("Wazuh 5.0 has no key requests (removed in 5.0.0)"),
        "{text}"
    );
    assert!(text.contains("`keygate sync` pushes the store"), "{text}");
}

/// `version = "auto"` with no installation on this host: the version is
/// unknown, taken as 4.4 or later, and check says so.
#[test]
fn an_unknown_version_is_said() {
    assert!(
        !Path::new("/var/ossec/bin/wazuh-control").exists(),
        "this test needs a host without Wazuh"
    );
    let host = Host::new("4.14", &agents(), "", "");
    let (code, text) = host.check(&[]);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("wazuh:   unknown (treated as 4.4 or later)"),
        "{text}"
    );
    assert!(text.contains("note     no installation found under /var/ossec or /var/wazuh-manager says its version"), "{text}");
    assert!(!text.contains("cannot take an IPv6 address"), "{text}");
}

/// `check --json` carries the same findings as the text.
#[test]
fn json_carries_the_same() {
    let host = Host::new("3.13", &agents(), "", "version = \"3.13\"");
    host.edit_ossec_conf("<timeout>60</timeout>", "<timeout>3</timeout>");
    let (code, text) = host.check(&["--json"]);
    assert_eq!(code, 0, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["backends"][0]["status"], "ok");
    let w = &v["wazuh"];
    assert_eq!(w["version"], "3.13");
    assert_eq!(w["ossec_conf"], "/var/ossec/etc/ossec.conf");
    let finding = |item: &str| {
        w["findings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["item"] == item)
            .unwrap_or_else(|| panic!("no {item} in {w}"))
            .clone()
    };
    assert_eq!(finding("key_requests")["level"], "ok");
    assert_eq!(finding("socket")["level"], "ok");
    assert_eq!(finding("exec_path")["level"], "ok");
    assert_eq!(finding("timeout")["level"], "warning");
    assert!(finding("timeout")["message"]
        .as_str()
        .unwrap()
        .contains("Wazuh gives up after 3s"));
    assert_eq!(finding("force")["level"], "note");
    assert_eq!(w["records"]["checked"], 4);
    let records: Vec<&str> = w["records"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["message"].as_str().unwrap())
        .collect();
    assert_eq!(records.len(), 3, "{records:?}");
    assert!(records[0].starts_with("agent 006 'v6-host': Wazuh 3.13 cannot take an IPv6 address"));

    let host = Host::new("4.14", &agents(), "", "version = \"4.14\"");
    host.edit_ossec_conf("<socket>", "<socket>/elsewhere");
    let (code, text) = host.check(&["--json"]);
    assert_eq!(code, 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["wazuh"]["findings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["item"] == "socket" && f["level"] == "error"));
    let invalid = Host::new("4.14", "", "bogus = 1", "");
    let (code, text) = invalid.check(&["--json"]);
    assert_eq!(code, 78, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["valid"], false);
    assert!(
        v["problems"][0].as_str().unwrap().contains("server.bogus"),
        "{v}"
    );
}

/// The sample in docs/wazuh.md is what `check` prints for a healthy 4.14
/// manager (latencies aside).
#[test]
fn the_docs_show_what_check_prints_for_a_healthy_4_14_manager() {
    let host = Host::new(
        "4.14",
        &format!("001 web-01 10.0.0.1 {KEY}\n002 db-01 any {KEY}\n"),
        "",
        "version = \"4.14.7\"",
    );
    let (code, text) = host.check(&[]);
    assert_eq!(code, 0, "{text}");
    let docs = std::fs::read_to_string(repo_root().join("docs/wazuh.md")).unwrap();
    let start = docs
        .find("```console\n$ keygate check\n")
        .expect("docs/wazuh.md has a ```console block starting with $ keygate check");
    let block = &docs[start + "```console\n$ keygate check\n".len()..];
    let sample = &block[..block.find("```").unwrap()];
    let normal = |s: &str| -> Vec<String> {
        s.lines()
            .map(|l| {
                l.split_whitespace()
                    .map(|w| {
                        if w.ends_with("ms") && w.starts_with(|c: char| c.is_ascii_digit()) {
                            "0.1ms"
                        } else {
                            w
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    };
    assert_eq!(
        normal(sample),
        normal(&text),
        "docs/wazuh.md's sample is not what check prints:\n{text}"
    );
}

//! The shipped `keygate-sync.service` as systemd and the package set it up:
//! systemd's own tools accept it and rate its exposure, and its command,
//! run with exactly the unit's user and groups (the postinst's drop-in
//! included) against the file modes the postinst sets, reads its config and
//! the manager's client.keys and writes its backup.
//!
//! The tools are installed by tests/setup.sh; a missing one fails the test.
//! The run-as test needs root (as the tests and CI run): it switches to
//! numeric ids no account uses, standing for the keygate user and the
//! keygate and wazuh groups, so the machine's accounts are never touched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use keygate_wazuh_standin::StandIn;

const UNIT: &str = "config/systemd/keygate-sync.service";
const TIMER: &str = "config/systemd/keygate-sync.timer";

fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_keygate"))
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

use keygate_testkit::cli::{read_text as read, run_tool as run};
use keygate_testkit::systemd;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The words of every `KEY=` line of a unit file's text.
fn values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.strip_prefix(&format!("{key}=")))
        .flat_map(|v| v.split_whitespace().map(str::to_owned))
        .collect()
}

/// `systemd-analyze verify` accepts the sync unit and its timer without a
/// single warning (it exits 0 on unknown keys, so any output fails).
#[test]
fn sync_unit_and_timer_pass_systemd_analyze_verify() {
    let root = systemd::unit_root(
        &bin(),
        &[
            (&repo().join(UNIT), "keygate-sync.service"),
            (&repo().join(TIMER), "keygate-sync.timer"),
        ],
    );
    let out = systemd::verify(root.path(), &["keygate-sync.service", "keygate-sync.timer"]);
    assert!(
        out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
        "systemd-analyze verify: {}\n{}{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// The sync unit's hardening holds with its state directory: an overall
/// exposure of 2.0 or less, offline.
#[test]
fn sync_unit_exposure_is_at_most_2() {
    let level = systemd::exposure(&repo().join(UNIT));
    assert!(level <= 2.0, "overall exposure {level} > 2.0");
    let unit = read(repo().join(UNIT));
    assert_eq!(values(&unit, "StateDirectory"), ["keygate"]);
    assert_eq!(values(&unit, "ProtectSystem"), ["strict"]);
}

/// The postinst's `write_sync_dropin`, run by `sh` with a `getent` that
/// knows only `groups`: the drop-in's SupplementaryGroups, or `None` when
/// it wrote none.
fn postinst_dropin(groups: &[&str]) -> Option<Vec<String>> {
    let postinst = read(repo().join("packaging/debian/postinst"));
    let start = postinst
        .find("write_sync_dropin() {")
        .expect("the postinst defines write_sync_dropin");
    let end = start + postinst[start..].find("\n}\n").unwrap() + 3;
    let function = &postinst[start..end];
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("bin");
    std::fs::create_dir(&fake).unwrap();
    let known = groups.join(" ");
    std::fs::write(
        fake.join("getent"),
        format!(
            "#!/bin/sh\nfor g in {known}; do [ \"$2\" = \"$g\" ] && echo \"$g:x:999:\" && exit 0; done\nexit 2\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(fake.join("getent"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dropin = dir.path().join("keygate-sync.service.d");
    let script = format!("set -e\n{function}\nwrite_sync_dropin \"$1\"\n");
    let out = run(Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("sh")
        .arg(&dropin)
        .env("PATH", format!("{}:/usr/bin:/bin", fake.display())));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = dropin.join("keygate-wazuh-group.conf");
    file.exists().then(|| {
        let text = read(&file);
        assert!(text.contains("[Service]\n"), "{text}");
        values(&text, "SupplementaryGroups")
    })
}

/// The drop-in names exactly the Wazuh groups that exist: `wazuh` on 4.x,
/// `wazuh-manager` on 5.0, none (no drop-in) without Wazuh.
#[test]
fn postinst_dropin_names_only_existing_wazuh_groups() {
    assert_eq!(
        postinst_dropin(&["wazuh", "keygate"]),
        Some(vec!["wazuh".into()])
    );
    assert_eq!(
        postinst_dropin(&["wazuh-manager"]),
        Some(vec!["wazuh-manager".into()])
    );
    assert_eq!(postinst_dropin(&["keygate"]), None);
}

/// A numeric id that no account in /etc/passwd (or group in /etc/group)
/// uses, from `from` up.
fn unused_id(file: &str, from: u32) -> u32 {
    let used: Vec<u32> = read(file)
        .lines()
        .filter_map(|l| l.split(':').nth(2)?.parse().ok())
        .collect();
    (from..).find(|id| !used.contains(id)).unwrap()
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Failure 6: the unit's command, run with exactly the unit's user, its
/// `Group=` and the postinst drop-in's `SupplementaryGroups=` (a Wazuh 4.x
/// host), against the config at the mode and owner the postinst sets
/// (`root:keygate 0640`) and the manager's client.keys at Wazuh's
/// (`root:wazuh 0640`), reads both and writes its backup in its state
/// directory.
#[test]
fn sync_unit_reads_its_config_as_its_user_and_groups() {
    let unit = read(repo().join(UNIT));
    let postinst = read(repo().join("packaging/debian/postinst"));
    assert_eq!(values(&unit, "User"), ["keygate"]);
    let group = values(&unit, "Group");
    let mut groups: Vec<String> = values(&unit, "SupplementaryGroups");
    groups.extend(postinst_dropin(&["wazuh", "keygate"]).unwrap_or_default());
    // The postinst's modes for the config.
    let chown_line = postinst
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("chown ") && l.ends_with("\"$CONFIG\""))
        .expect("the postinst chowns the config");
    let owner = chown_line.split_whitespace().nth(1).unwrap();
    let (config_user, config_group) = owner.split_once(':').unwrap();
    let chmod_line = postinst
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("chmod ") && l.ends_with("\"$CONFIG\""))
        .expect("the postinst chmods the config");
    let config_mode =
        u32::from_str_radix(chmod_line.split_whitespace().nth(1).unwrap(), 8).unwrap();
    assert_eq!(config_user, "root");

    // Numeric stand-ins for the names: the keygate user and each group.
    let uid = unused_id("/etc/passwd", 64_000);
    let first_gid = unused_id("/etc/group", 64_000);
    let gid_of = |name: &str| -> u32 {
        match name {
            "root" => 0,
            "keygate" => first_gid,
            "wazuh" | "wazuh-manager" => unused_id("/etc/group", first_gid + 1),
            other => panic!("the unit names a group the test does not map: {other}"),
        }
    };
    let [primary] = group.as_slice() else {
        panic!("Group= {group:?}")
    };

    let standin = StandIn::start("keygate", "unit-pass");
    let key = |n: u32| format!("{n:064}");
    standin.put("001", "web-01", "10.0.0.1", &key(1));
    standin.put("002", "web-02", "10.0.0.2", &key(99));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    chmod(root, 0o755);
    std::fs::copy(bin(), root.join("keygate")).unwrap();
    chmod(&root.join("keygate"), 0o755);
    // /etc/keygate: the config, the store and the password, as the
    // package and the docs set them up.
    let etc = root.join("etc");
    std::fs::create_dir(&etc).unwrap();
    chmod(&etc, 0o755);
    let store = format!(
        "001 web-01 10.0.0.1 {}\n002 web-02 10.0.0.2 {}\n",
        key(1),
        key(2)
    );
    std::fs::write(etc.join("client.keys"), store).unwrap();
    std::fs::write(etc.join("wazuh-api.pass"), "unit-pass\n").unwrap();
    standin.write_ca(&etc.join("ca.pem"));
    // The manager's client.keys, root:wazuh 0640 as Wazuh leaves it.
    let manager = root.join("manager.keys");
    std::fs::write(&manager, standin.client_keys()).unwrap();
    chown(&manager, 0, gid_of("wazuh"));
    chmod(&manager, 0o640);
    // StateDirectory=keygate: /var/lib/keygate, owned by the unit's user.
    let state = root.join("state");
    std::fs::create_dir(&state).unwrap();
    chown(&state, uid, gid_of(primary));
    chmod(&state, 0o700);
    let config = etc.join("keygate.toml");
    std::fs::write(
        &config,
        format!(
            "[[backend]]\nname = \"keys\"\ntype = \"file\"\npath = \"client.keys\"\n\n\
             [wazuh]\nurl = \"{}\"\nuser = \"keygate\"\npassword_file = \"wazuh-api.pass\"\n\
             ca_file = \"ca.pem\"\nclient_keys = \"{}\"\nbackup_dir = \"{}\"\n",
            standin.url(),
            manager.display(),
            state.join("backups").display()
        ),
    )
    .unwrap();
    for file in ["keygate.toml", "client.keys", "wazuh-api.pass", "ca.pem"] {
        chown(&etc.join(file), 0, gid_of(config_group));
        chmod(&etc.join(file), config_mode);
    }

    let exec: Vec<String> = values(&unit, "ExecStart")
        .into_iter()
        .map(|w| match w.as_str() {
            "/usr/bin/keygate" => root.join("keygate").display().to_string(),
            "/etc/keygate/keygate.toml" => config.display().to_string(),
            _ => w,
        })
        .collect();
    let supplementary: Vec<String> = groups.iter().map(|g| gid_of(g).to_string()).collect();
    let out = run(Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={}", gid_of(primary)))
        .arg(format!("--groups={}", supplementary.join(",")))
        .arg("--")
        .args(&exec)
        .env_remove("KEYGATE_CONFIG")
        .current_dir(root));
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(!all.contains("Permission denied"), "{all}");
    // The manager's file was read (no key through the API) and the backup
    // of the replaced agent written in the state directory.
    assert!(all.contains(&manager.display().to_string()), "{all}");
    assert!(!standin.state().log.iter().any(|l| l.ends_with("/key")));
    assert_eq!(standin.agents()["002"].2, key(2));
    let backups: Vec<_> = std::fs::read_dir(state.join("backups")).unwrap().collect();
    assert_eq!(backups.len(), 1);
}

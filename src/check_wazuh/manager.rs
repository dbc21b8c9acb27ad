//! The manager's side as its ossec.conf says it: whether key requests are
//! on, whether Wazuh asks keygate's socket and runs this keygate with this
//! config, whether its `<timeout>` leaves keygate room, whether authd may
//! connect, and the `<force>` settings. Each item is one [`Finding`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use keygate_config::{Config, DEFAULT_CONFIG_PATH};
use keygate_core::WazuhVersion;
use keygate_wazuh::ossec_conf::{interval, yes_no, Force, KeyRequest, OssecConf};

use super::{Finding, Level};

/// What Wazuh's authd (modulesd before 4.4) runs as: root, in the Wazuh
/// group (`wazuh`; `ossec` in 3.x).
const AUTHD_UID: u32 = 0;

/// The findings for `conf`, the manager's ossec.conf, against keygate's
/// `config` (read from `config_path`) and this program (`keygate`).
pub fn findings(
    conf: &OssecConf,
    version: WazuhVersion,
    config: &Config,
    config_path: &Path,
    keygate: Option<&Path>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if !version.has_key_polling() {
        out.push(Finding::new(
            Level::Warning,
            "key_requests",
            format!(
                "Wazuh {version} has no key requests (removed in 5.0.0): nothing asks keygate; \
                 `keygate sync` pushes the store through the API instead"
            ),
        ));
        return out;
    }
    let modern = version.takes_ipv6();
    let (block, which) = if modern {
        match (&conf.key_request, &conf.key_polling) {
            (Some(b), _) => (Some(b), "<auth><key_request>".to_owned()),
            (None, Some(b)) => (
                Some(b),
                "<wodle name=\"agent-key-polling\">, which 4.4+ authd still reads".to_owned(),
            ),
            (None, None) => (None, String::new()),
        }
    } else {
        if let Some(b) = &conf.key_request {
            out.push(Finding::new(
                Level::Warning,
                "key_requests",
                format!(
                    "Wazuh {version} does not know <auth><key_request> (line {}; 4.4 and later): \
                     its authd refuses to start with it",
                    b.line
                ),
            ));
        }
        (
            conf.key_polling.as_ref(),
            "<wodle name=\"agent-key-polling\">".to_owned(),
        )
    };
    let Some(block) = block else {
        let wanted = if modern {
            "<auth><key_request>"
        } else {
            "<wodle name=\"agent-key-polling\">"
        };
        out.push(Finding::new(
            Level::Warning,
            "key_requests",
            format!("off: ossec.conf has no {wanted} block, so Wazuh never asks keygate"),
        ));
        return out;
    };
    out.push(match block.enabled() {
        Ok(true) => Finding::new(
            Level::Ok,
            "key_requests",
            format!("enabled ({which}, line {})", block.line),
        ),
        Ok(false) => Finding::new(
            Level::Warning,
            "key_requests",
            format!(
                "disabled: <enabled>no</enabled> in {which} (line {})",
                block.line
            ),
        ),
        Err(e) => Finding::new(
            Level::Warning,
            "key_requests",
            format!("<enabled> {e} in {which} (line {})", block.line),
        ),
    });
    out.extend(socket(block, config));
    out.extend(exec_path(block, config_path, keygate));
    out.push(timeout(block, config.server.request_timeout));
    out.push(access(config));
    out.push(force(conf, block, modern));
    out
}

/// `<socket>` against `[server] socket`; both absent is an error.
fn socket(block: &KeyRequest, config: &Config) -> Option<Finding> {
    let ours = &config.server.socket;
    match (&block.socket, &block.exec_path) {
        (None, None) => Some(Finding::new(
            Level::Error,
            "socket",
            "neither <socket> nor <exec_path> is set: Wazuh has nothing to ask".to_owned(),
        )),
        (None, Some(_)) => Some(Finding::new(
            Level::Note,
            "socket",
            format!(
                "not set: Wazuh runs exec_path for every request (the one-shot asks the daemon on {} when it runs)",
                ours.display()
            ),
        )),
        (Some(theirs), _) if same_path(Path::new(theirs), ours) => Some(Finding::new(
            Level::Ok,
            "socket",
            format!("{theirs} is keygate's socket"),
        )),
        (Some(theirs), _) => Some(Finding::new(
            Level::Error,
            "socket",
            format!(
                "Wazuh asks {theirs}, keygate listens on {} ([server] socket)",
                ours.display()
            ),
        )),
    }
}

/// `<exec_path>`: the program must be this keygate and read this config.
fn exec_path(block: &KeyRequest, config_path: &Path, keygate: Option<&Path>) -> Option<Finding> {
    let line = block.exec_path.as_deref()?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let Some((program, args)) = words.split_first() else {
        return Some(Finding::new(
            Level::Error,
            "exec_path",
            "is empty".to_owned(),
        ));
    };
    let program = Path::new(program);
    if !is_executable(program) {
        return Some(Finding::new(
            Level::Error,
            "exec_path",
            format!(
                "runs {}, which is not an executable file",
                program.display()
            ),
        ));
    }
    let named = named_config(args);
    let reads = named.map_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH), PathBuf::from);
    if !same_path(&reads, config_path) {
        let how = if named.is_some() {
            String::new()
        } else {
            " (no --config: the default)".to_owned()
        };
        return Some(Finding::new(
            Level::Error,
            "exec_path",
            format!(
                "runs keygate with {}{how}, this check reads {}",
                reads.display(),
                config_path.display()
            ),
        ));
    }
    let this = keygate.map(|k| k.display().to_string()).unwrap_or_default();
    if keygate.is_some_and(|k| same_path(program, k)) {
        return Some(Finding::new(
            Level::Ok,
            "exec_path",
            format!("runs this keygate ({this}) with this config"),
        ));
    }
    Some(Finding::new(
        Level::Warning,
        "exec_path",
        format!(
            "runs {} with this config, but this keygate is {this}: another build or a wrapper",
            program.display()
        ),
    ))
}

/// The config file `--config FILE`, `--config=FILE`, `-c FILE` names.
fn named_config<'a>(args: &[&'a str]) -> Option<&'a str> {
    let mut words = args.iter();
    while let Some(word) = words.next() {
        if let Some(value) = word.strip_prefix("--config=") {
            return Some(value);
        }
        if *word == "--config" || *word == "-c" {
            return words.next().copied();
        }
    }
    None
}

/// Wazuh's `<timeout>` against keygate's `request_timeout`: Wazuh must
/// wait longer than keygate may take, with a second for the exchange.
fn timeout(block: &KeyRequest, request_timeout: Duration) -> Finding {
    let ours = humantime::format_duration(request_timeout);
    match block.timeout() {
        Err(e) => Finding::new(Level::Warning, "timeout", e),
        Ok(theirs) if theirs < request_timeout + Duration::from_secs(1) => Finding::new(
            Level::Warning,
            "timeout",
            format!(
                "Wazuh gives up after {}s, keygate may take {ours} ([server] request_timeout): \
                 raise <timeout> or lower request_timeout, or slow answers are lost (\"No data \
                 received from external socket\")",
                theirs.as_secs()
            ),
        ),
        Ok(theirs) => Finding::new(
            Level::Ok,
            "timeout",
            format!(
                "Wazuh waits {}s, keygate answers within {ours} ([server] request_timeout)",
                theirs.as_secs()
            ),
        ),
    }
}

/// Whether authd, root in the Wazuh group, may connect: root passes the
/// socket file's mode whatever it is, so only `allowed_uids` and
/// `allowed_gids` can shut it out.
fn access(config: &Config) -> Finding {
    let s = &config.server;
    let file = match &s.socket_group {
        Some(group) => format!("mode {:04o}, group {group}", s.socket_mode),
        None => format!("mode {:04o}, the daemon's group", s.socket_mode),
    };
    if s.allowed_uids.is_empty() && s.allowed_gids.is_empty() {
        return Finding::new(
            Level::Ok,
            "access",
            format!("authd runs as root, which the socket admits ({file}; no allowed_uids/allowed_gids)"),
        );
    }
    if s.allowed_uids.contains(&AUTHD_UID) {
        return Finding::new(
            Level::Ok,
            "access",
            format!("authd runs as root, in allowed_uids ({file})"),
        );
    }
    let wazuh_gids: Vec<(String, u32)> = ["wazuh", "ossec"]
        .iter()
        .filter_map(|g| gid_of(g).map(|gid| ((*g).to_owned(), gid)))
        .collect();
    if let Some((name, gid)) = wazuh_gids
        .iter()
        .find(|(_, gid)| s.allowed_gids.contains(gid))
    {
        return Finding::new(
            Level::Ok,
            "access",
            format!("authd runs in group {name} ({gid}), in allowed_gids ({file})"),
        );
    }
    Finding::new(
        Level::Warning,
        "access",
        format!(
            "authd runs as root (uid 0) in the Wazuh group, and neither is in allowed_uids {:?} \
             or allowed_gids {:?}: keygate refuses every request from it",
            s.allowed_uids, s.allowed_gids
        ),
    )
}

/// The group id of `name` in /etc/group.
fn gid_of(name: &str) -> Option<u32> {
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    groups.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// The settings that decide whether a served agent may replace one with
/// the same id, name or ip, in one line.
fn force(conf: &OssecConf, block: &KeyRequest, modern: bool) -> Finding {
    if !modern {
        let value = block.force_insert.as_deref().unwrap_or("yes");
        let what = match yes_no(Some(value), true) {
            Ok(true) => "a served agent replaces one with the same id, name or ip",
            Ok(false) => "a served agent that collides with an existing one is refused",
            Err(_) => "not yes or no",
        };
        return Finding::new(
            Level::Note,
            "force",
            format!("force_insert {value} (<wodle name=\"agent-key-polling\">): {what}"),
        );
    }
    let force = match (
        &conf.force,
        &conf.legacy_force_insert,
        &conf.legacy_force_time,
    ) {
        (Some(f), _, _) => f.clone(),
        (None, None, None) => Force::default(),
        (None, insert, time) => Force {
            enabled: insert.clone(),
            disconnected_time_enabled: time
                .as_deref()
                .filter(|t| interval(t).is_ok_and(|d| d.is_zero()))
                .map(|_| "no".to_owned()),
            disconnected_time: time.clone(),
            ..Force::default()
        },
    };
    let legacy = conf.force.is_none()
        && (conf.legacy_force_insert.is_some() || conf.legacy_force_time.is_some());
    let from = if legacy {
        "the legacy <auth><force_insert>/<force_time>"
    } else {
        "<auth><force>"
    };
    let mut line = format!("{} ({from})", force.describe());
    if block.force_insert.is_some() {
        line.push_str("; <force_insert> in the key request block is ignored since 4.4");
    }
    Finding::new(Level::Note, "force", line)
}

/// Whether two paths name the same file: the same text once normalized, or
/// the same file on disk.
fn same_path(a: &Path, b: &Path) -> bool {
    let normal = |p: &Path| p.components().collect::<PathBuf>();
    if normal(a) == normal(b) {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_named_on_the_command_line() {
        assert_eq!(named_config(&["--config", "/a.toml"]), Some("/a.toml"));
        assert_eq!(named_config(&["-c", "/a.toml", "serve"]), Some("/a.toml"));
        assert_eq!(named_config(&["--config=/a.toml"]), Some("/a.toml"));
        assert_eq!(named_config(&["serve"]), None);
        assert_eq!(named_config(&["--config"]), None);
    }

    #[test]
    fn paths_compare_by_file() {
        assert!(same_path(
            Path::new("/run/keygate//keygate.sock"),
            Path::new("/run/keygate/keygate.sock")
        ));
        assert!(!same_path(
            Path::new("/run/a.sock"),
            Path::new("/run/b.sock")
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, "").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();
        assert!(same_path(&dir.path().join("link"), &file));
    }
}

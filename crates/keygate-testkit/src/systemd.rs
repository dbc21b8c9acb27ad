//! systemd's own tools on the shipped units, without a running systemd:
//! `systemd-analyze verify` in a prepared root, and the exposure
//! `systemd-analyze security --offline` rates. The tools are installed by
//! `tests/setup.sh`; a missing one fails the test.

use std::path::Path;
use std::process::{Command, Output};

use crate::cli::run_tool;

/// A root for `systemd-analyze --root`: the host's units (the targets and
/// services a unit names), `units` copied in as `(file, unit name)`, the
/// keygate binary `bin` at /usr/bin/keygate (ExecStart) and /bin/kill
/// (ExecReload).
pub fn unit_root(bin: &Path, units: &[(&Path, &str)]) -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("usr/lib/systemd/system");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir("/usr/lib/systemd/system").unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
        }
    }
    for (file, name) in units {
        std::fs::copy(file, dir.join(name)).unwrap();
    }
    std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
    std::fs::copy(bin, root.path().join("usr/bin/keygate")).unwrap();
    std::fs::create_dir_all(root.path().join("bin")).unwrap();
    std::fs::copy("/bin/kill", root.path().join("bin/kill")).unwrap();
    root
}

/// `systemd-analyze verify` of `units` inside `root` (see [`unit_root`]);
/// `--man=no` skips checking `Documentation=man:...` with the host's man.
/// It exits 0 on unknown keys and bad values, printing a warning: a clean
/// unit is one with no output at all.
pub fn verify(root: &Path, units: &[&str]) -> Output {
    run_tool(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg("--man=no")
            .arg(format!("--root={}", root.display()))
            .args(units),
    )
}

/// The overall exposure `systemd-analyze security` rates the unit file
/// `unit` at, offline (the file itself, no running systemd needed).
pub fn exposure(unit: &Path) -> f64 {
    let out = run_tool(
        Command::new("systemd-analyze")
            .arg("security")
            .arg("--offline=yes")
            .arg("--no-pager")
            .arg(unit),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let name = unit.file_name().unwrap().to_string_lossy();
    let line = stdout
        .lines()
        .find(|l| l.contains(&format!("Overall exposure level for {name}:")))
        .unwrap_or_else(|| panic!("no overall exposure in:\n{}", crate::cli::describe(&out)));
    line.split(':')
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the exposure in {line:?}"))
}

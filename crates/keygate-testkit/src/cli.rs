//! Running commands from a test: keygate itself with a config, or a
//! system tool (`systemd-analyze`, `dpkg-deb`, `lintian`) that must be
//! installed, and showing what they did in an assertion's message.

use std::io::ErrorKind;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs `bin --config config args...` (the keygate binary a test was
/// built with: `env!("CARGO_BIN_EXE_keygate")`), with `KEYGATE_CONFIG`
/// removed so the environment cannot pick another config.
pub fn keygate(bin: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("KEYGATE_CONFIG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// What a command did: its exit status, stdout and stderr.
pub fn describe(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs a tool to completion with stdin closed; a missing tool fails
/// loudly, naming `bash tests/setup.sh` (tests never skip).
pub fn run_tool(cmd: &mut Command) -> Output {
    match cmd.stdin(Stdio::null()).output() {
        Ok(out) => out,
        Err(e) if e.kind() == ErrorKind::NotFound => panic!(
            "{:?} is not installed: run `bash tests/setup.sh`",
            cmd.get_program()
        ),
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

/// The text of a file, or a panic naming it.
pub fn read_text(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

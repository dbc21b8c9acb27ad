//! `keygate generate man|completions DIR` (hidden): writes the man pages
//! (clap_mangen) or the bash, zsh and fish completions (clap_complete) for
//! this very CLI, so they cannot drift from it. packaging/build-deb.sh runs
//! it before `cargo deb`.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;
use clap_complete::Shell;

/// What `keygate generate` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Generated {
    /// keygate.1 and one page per subcommand (keygate-check.1, ...).
    Man,
    /// keygate.bash, _keygate (zsh) and keygate.fish.
    Completions,
}

/// Writes `what` into `dir` (created if missing); prints each file written.
pub fn main(what: Generated, dir: &Path) -> ExitCode {
    match write(what, dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("keygate: cannot write into {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn write(what: Generated, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = crate::command();
    match what {
        Generated::Man => clap_mangen::generate_to(cmd, dir)?,
        Generated::Completions => {
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let path = clap_complete::generate_to(shell, &mut cmd, "keygate", dir)?;
                println!("{}", path.display());
            }
            return Ok(());
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "1") {
            println!("{}", path.display());
        }
    }
    Ok(())
}

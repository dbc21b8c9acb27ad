//! `keygate generate man|completions DIR` (hidden): writes the man pages
//! (clap_mangen for keygate(1) and a page per subcommand, with
//! [`crate::manpage`]'s sections; keygate.toml(5) from the configuration
//! reference) or the bash, zsh and fish completions (clap_complete) for
//! this very CLI, so they cannot drift from it. packaging/build-deb.sh runs
//! it before `cargo deb`.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;

use crate::exit::Code;
use clap_complete::Shell;

/// What `keygate generate` writes.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Generated {
    /// keygate.1, one page per subcommand (keygate-check.1, ...) and
    /// keygate.toml.5.
    Man,
    /// keygate.bash, _keygate (zsh) and keygate.fish.
    Completions,
}

/// Writes `what` into `dir` (created if missing); prints each file written.
pub fn main(what: Generated, dir: &Path) -> ExitCode {
    match write(what, dir) {
        Ok(()) => Code::Success.into(),
        Err(e) => {
            eprintln!("keygate: cannot write into {}: {e}", dir.display());
            crate::exit::code_of(&e.into()).into()
        }
    }
}

/// keygate.1: clap_mangen's sections, then EXIT STATUS, FILES,
/// ENVIRONMENT and SEE ALSO ([`crate::manpage`]), then VERSION.
fn main_page(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    crate::manpage::keygate_sections().to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    std::fs::write(dir.join("keygate.1"), out)
}

fn write(what: Generated, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = crate::command();
    match what {
        Generated::Man => {
            // One page per subcommand, then keygate.1 again with EXIT
            // STATUS, FILES, ENVIRONMENT and SEE ALSO, and keygate.toml.5.
            clap_mangen::generate_to(cmd.clone(), dir)?;
            main_page(cmd.disable_help_subcommand(true), dir)?;
            std::fs::write(
                dir.join("keygate.toml.5"),
                crate::manpage::config_page(env!("CARGO_PKG_VERSION")),
            )?;
        }
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
        if path.extension().is_some_and(|e| e == "1" || e == "5") {
            println!("{}", path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `generate man` writes keygate.1 with its added sections, a page per
    /// subcommand, and keygate.toml.5.
    #[test]
    fn man_writes_keygate_1_and_keygate_toml_5() {
        let dir = tempfile::tempdir().unwrap();
        write(Generated::Man, dir.path()).unwrap();
        let page = |name: &str| std::fs::read_to_string(dir.path().join(name)).unwrap();
        let main = page("keygate.1");
        for section in ["EXIT STATUS", "FILES", "ENVIRONMENT", "SEE ALSO", "VERSION"] {
            assert!(
                main.contains(&format!(".SH \"{section}\""))
                    || main.contains(&format!(".SH {section}\n")),
                "{section}"
            );
        }
        assert!(page("keygate-check.1").contains(".TH keygate-check 1"));
        assert!(page("keygate.toml.5").contains(".TH KEYGATE.TOML 5"));
    }
}

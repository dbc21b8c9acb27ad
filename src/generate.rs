//! `keygate generate man|completions DIR` (hidden): writes the man pages
//! (clap_mangen) or the bash, zsh and fish completions (clap_complete) for
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
    /// keygate.1 and one page per subcommand (keygate-check.1, ...).
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

/// keygate.1's sections beyond what clap knows: (heading, [(term, text)]).
const MAN_SECTIONS: &[(&str, &[(&str, &str)])] = &[
    (
        "FILES",
        &[
            ("/etc/keygate/keygate.toml", "The config file (--config, $KEYGATE_CONFIG)."),
            ("/run/keygate/keygate.sock", "The socket Wazuh connects to ([server] socket)."),
            ("/run/keygate/keygate.sock.ctl", "The control socket of reload, cache and backends (mode 0600)."),
            ("/usr/lib/systemd/system/keygate.service", "The systemd unit; SIGHUP or systemctl reload keygate re-reads the config."),
            ("/usr/share/doc/keygate/", "README.md, docs/ (a page per task), example configs, and the Wazuh ossec.conf blocks."),
        ],
    ),
    (
        "EXIT STATUS",
        &[
            ("0", "Success. The exec mode (id, ip) always exits 0 and reports errors in its JSON reply, as Wazuh requires."),
            ("1", "A backend failed (check), the socket is in use (serve), or the daemon refused a reload."),
            ("2", "Bad command-line arguments."),
            ("69", "No daemon answers on the control socket (reload, cache, backends)."),
            ("78", "The config is invalid; every problem is printed with its key path."),
        ],
    ),
];

/// keygate.1's SEE ALSO paragraph.
const SEE_ALSO: &str = "systemctl(1), journalctl(1), and Wazuh's documentation of \
                        <auth><key_request> (ossec.conf).";

/// keygate.1: clap_mangen's sections, then [`MAN_SECTIONS`] and
/// [`SEE_ALSO`], then VERSION.
fn main_page(cmd: clap::Command, dir: &Path) -> std::io::Result<()> {
    use clap_mangen::roff::{bold, roman, Roff};
    let man = clap_mangen::Man::new(cmd);
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    let mut roff = Roff::default();
    for (heading, items) in MAN_SECTIONS {
        roff.control("SH", [*heading]);
        for (term, text) in *items {
            roff.control("TP", []);
            roff.text([bold(*term)]);
            roff.text([roman(*text)]);
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(SEE_ALSO)]);
    roff.to_writer(&mut out)?;
    man.render_version_section(&mut out)?;
    std::fs::write(dir.join("keygate.1"), out)
}

fn write(what: Generated, dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut cmd = crate::command();
    match what {
        Generated::Man => {
            // One page per subcommand, then keygate.1 again with FILES,
            // EXIT STATUS and SEE ALSO.
            clap_mangen::generate_to(cmd.clone(), dir)?;
            main_page(cmd.disable_help_subcommand(true), dir)?;
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
        if path.extension().is_some_and(|e| e == "1") {
            println!("{}", path.display());
        }
    }
    Ok(())
}

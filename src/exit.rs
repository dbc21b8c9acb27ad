//! keygate's exit codes: one table every command follows, printed in
//! docs/codes.md and in keygate(1)'s EXIT STATUS (both from [`Code::ALL`];
//! tests/exit_codes.rs checks each command's cells, and that the page says
//! what this module says).
//!
//! The codes above 2 are sysexits(3)'s, as mail and admin tools use them; 2
//! for "differences found" is Terraform's `-detailed-exitcode` and diff's.
//! The exec one-shot (`id`, `ip`) is the exception Wazuh imposes: it always
//! exits 0, and its result is the `error` code of its JSON reply.
//!
//! A command's error says which code it deserves by what its chain holds
//! ([`code_of`]): a config problem, a usage mistake, a permission the
//! system refused, an unreachable service. [`fail`] prints such an error
//! once (each cause once, [`crate::out::chain`]) and returns its code.

use std::process::ExitCode;

/// One exit code of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Everything asked was done.
    Success = 0,
    /// The work could not be done, or not completely.
    Failure = 1,
    /// Differences found (`verify` drift, `sync` changes pending).
    Differences = 2,
    /// The command line is wrong (sysexits' EX_USAGE).
    Usage = 64,
    /// The daemon or a service is not there (EX_UNAVAILABLE).
    Unavailable = 69,
    /// The output could not be written (EX_IOERR).
    Output = 74,
    /// The system or a service refused us (EX_NOPERM).
    Permission = 77,
    /// The configuration is invalid (EX_CONFIG).
    Config = 78,
    /// The output's reader went away (128 + SIGPIPE).
    BrokenPipe = 141,
}

impl Code {
    /// Every code, in the table's order. (A `|` in a text would break the
    /// Markdown table.)
    pub const ALL: [Code; 9] = [
        Code::Success,
        Code::Failure,
        Code::Differences,
        Code::Usage,
        Code::Unavailable,
        Code::Output,
        Code::Permission,
        Code::Config,
        Code::BrokenPipe,
    ];

    /// The number.
    pub const fn number(self) -> u8 {
        self as u8
    }

    /// A name of one or two words (the table's second column).
    pub const fn name(self) -> &'static str {
        match self {
            Code::Success => "success",
            Code::Failure => "failure",
            Code::Differences => "differences found",
            Code::Usage => "usage error",
            Code::Unavailable => "unavailable",
            Code::Output => "output error",
            Code::Permission => "permission denied",
            Code::Config => "configuration error",
            Code::BrokenPipe => "output closed",
        }
    }

    /// When a command exits with it (Markdown: `code` spans only).
    pub const fn meaning(self) -> &'static str {
        match self {
            Code::Success => {
                "Done: `check` found the config valid and every backend answering, `verify` \
                 found the store and the manager in sync, `sync` had nothing to do or applied \
                 every change, `serve` stopped on SIGTERM. The exec one-shot (`id`, `ip`) \
                 always exits 0, as Wazuh requires; its result is the `error` code of its JSON \
                 reply. `--help` and `--version` exit 0."
            }
            Code::Failure => {
                "The work could not be done, or not completely: a backend failed its probe \
                 (`check`), the socket is in use or unsafe (`serve`), the store holds invalid \
                 records or its listing failed midway (`list`, `export`, `verify`), a file \
                 could not be read or written, the Wazuh API refused a change (`sync`), the \
                 cache is disabled (`cache`)."
            }
            Code::Differences => {
                "`verify` found drift between the store and the manager's client.keys; `sync` \
                 without `--apply` has changes pending. As Terraform's `-detailed-exitcode`: 0 \
                 means nothing to do, 1 that the comparison or the plan failed."
            }
            Code::Usage => {
                "The command line is wrong: an unknown subcommand or option, a missing or \
                 malformed argument (`sync --aply`), a word after `serve` other than `id` or \
                 `ip`, a `cache flush` entry that is not `id:...` or `ip:...`, a `--backend` \
                 that names no configured backend."
            }
            Code::Unavailable => {
                "No daemon answers on the control socket (`reload`, `cache`, `backends`), or \
                 the Wazuh API cannot be reached (`sync`)."
            }
            Code::Output => {
                "The output could not be written (a full disk, an I/O error on stdout or \
                 stderr)."
            }
            Code::Permission => {
                "Permission denied: the control socket exists but refuses us (its mode, or \
                 the daemon answers only root and its own user), a file named on the command \
                 line may not be read or written (`verify --client-keys`, `export -o`), or \
                 the Wazuh API refuses the user (`sync`)."
            }
            Code::Config => {
                "The configuration is invalid: the config file is missing, unreadable or \
                 wrong, or a file it names (a password, a CA) cannot be used; every problem is \
                 printed with its key path. Every command but the exec one-shot; `reload` \
                 when the daemon refuses the new config (it keeps the old one)."
            }
            Code::BrokenPipe => {
                "The output's reader went away (`head` after a pipe): the command stops \
                 quietly, as if SIGPIPE had ended it (128 + 13)."
            }
        }
    }
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code.number())
    }
}

/// A mistake on the command line found after parsing (an unknown
/// `--backend`, a malformed `cache flush` entry): exit code 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// The code an error deserves, from the first cause in its chain that
/// decides it: a config problem (78), a usage mistake (64), the Wazuh API
/// refusing the user (77) or out of reach (69), a permission the system
/// refused (77); anything else is a failure (1).
pub fn code_of(error: &anyhow::Error) -> Code {
    for cause in error.chain() {
        if cause.is::<keygate_config::ConfigError>() || cause.is::<keygate_backends::BuildError>() {
            return Code::Config;
        }
        if cause.is::<Usage>() {
            return Code::Usage;
        }
        if let Some(e) = cause.downcast_ref::<keygate_wazuh::Error>() {
            match e {
                keygate_wazuh::Error::Auth { .. } => return Code::Permission,
                keygate_wazuh::Error::Transport { .. } => return Code::Unavailable,
                keygate_wazuh::Error::Setup(_) => return Code::Config,
                _ => {}
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return Code::Permission;
            }
        }
    }
    Code::Failure
}

/// Prints `keygate COMMAND: error` (each cause once) on stderr and returns
/// the code the error deserves. A closed output ends the process quietly
/// with 141.
pub fn fail(command: &str, error: &anyhow::Error) -> ExitCode {
    if crate::store::is_broken_pipe(error) {
        std::process::exit(i32::from(Code::BrokenPipe.number()));
    }
    crate::out::errln!("keygate {command}: {}", crate::out::chain(error));
    code_of(error).into()
}

/// The table as docs/codes.md prints it (Markdown).
#[cfg(test)]
pub fn markdown() -> String {
    let mut out = String::from("| code | name | meaning |\n|---|---|---|\n");
    for code in Code::ALL {
        out.push_str(&format!(
            "| {} | {} | {} |\n",
            code.number(),
            code.name(),
            code.meaning()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    /// docs/codes.md prints this module's table, row for row.
    #[test]
    fn docs_codes_md_prints_the_table() {
        let page = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/codes.md"),
        )
        .unwrap();
        let table = markdown();
        assert!(
            page.contains(&table),
            "docs/codes.md must hold this table (src/exit.rs):\n{table}"
        );
    }

    /// Each kind of cause gets its code, wherever it sits in the chain;
    /// an error that says nothing about its kind is a failure.
    #[test]
    fn an_error_gets_the_code_of_its_cause() {
        let config = keygate_config::load_str("[server]\nnope = 1\n", std::path::Path::new("/"))
            .map(|_| ())
            .unwrap_err();
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let cases: Vec<(anyhow::Error, Code)> = vec![
            (anyhow::Error::new(config), Code::Config),
            (
                anyhow::Error::new(Usage("no backend named 'x'".into())),
                Code::Usage,
            ),
            (
                Err::<(), _>(denied).context("cannot read f").unwrap_err(),
                Code::Permission,
            ),
            (
                Err::<(), _>(missing).context("cannot read f").unwrap_err(),
                Code::Failure,
            ),
            (
                anyhow::Error::new(keygate_wazuh::Error::Transport {
                    call: "GET /".into(),
                    reason: "refused".into(),
                }),
                Code::Unavailable,
            ),
            (
                anyhow::Error::new(keygate_wazuh::Error::Auth {
                    user: "k".into(),
                    detail: "401".into(),
                }),
                Code::Permission,
            ),
            (anyhow::anyhow!("something else"), Code::Failure),
        ];
        for (error, code) in cases {
            assert_eq!(code_of(&error), code, "{error:#}");
        }
    }

    /// The numbers are the table's (sysexits' for 64 and above).
    #[test]
    fn the_numbers_are_the_tables() {
        let numbers: Vec<u8> = Code::ALL.iter().map(|c| c.number()).collect();
        assert_eq!(numbers, [0, 1, 2, 64, 69, 74, 77, 78, 141]);
    }
}

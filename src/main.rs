//! keygate: answers Wazuh's agent key requests from SQL, LDAP, Redis or
//! flat files.
//!
//! One binary, two front ends, exactly as Wazuh's client behaves:
//! - `keygate [--config FILE] [serve]`: the socket daemon (`<socket>` in
//!   ossec.conf; also what Wazuh 3.x's launcher starts from `exec_path`);
//! - `keygate [--config FILE] id 001` / `ip 10.0.0.1`: the exec one-shot
//!   (`<exec_path>`), which asks a running daemon if there is one and
//!   otherwise looks up itself. It prints one JSON line and exits 0, always.
//!
//! `keygate check` validates the config and probes every backend.

mod check;
mod check_wazuh;
mod control;
mod daemon;
#[cfg(test)]
mod docs_tests;
mod exec;
mod exit;
mod export;
mod generate;
mod inserts;
mod list;
mod logging;
mod manpage;
mod metrics;
mod out;
mod preflight;
mod progress;
mod retries;
mod store;
mod sync;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::LazyLock;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use control::Output;
use exit::Code;
use keygate_server::control::ControlRequest;

/// `keygate --version`: the version, then the backend types compiled in
/// (the cargo features, as keygate-config lists them).
static LONG_VERSION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "{}\nbackends: {}",
        env!("CARGO_PKG_VERSION"),
        keygate_config::COMPILED_BACKEND_TYPES.join(", ")
    )
});

/// The CLI as parsed, and as the man pages and completions describe it.
pub fn command() -> clap::Command {
    Cli::command().long_version(LONG_VERSION.as_str())
}

#[derive(Debug, Parser)]
#[command(name = "keygate", version, about = "Wazuh agent key request gateway")]
struct Cli {
    /// Config file (TOML).
    #[arg(long, short = 'c', global = true, env = "KEYGATE_CONFIG", default_value = keygate_config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the socket daemon (the default without a subcommand).
    /// `serve id 001` / `serve ip 10.0.0.1` is the exec one-shot: Wazuh 4.4+
    /// appends those words to an exec_path copied from `ExecStart=... serve`.
    Serve {
        /// `id <value>` or `ip <value>`: answer as the one-shot.
        #[arg(hide = true, allow_hyphen_values = true, trailing_var_arg = true)]
        exec: Vec<String>,
    },
    /// Validate the config, probe every backend, print a table, then check
    /// the Wazuh manager served (its version, its ossec.conf, the records it
    /// will not take); non-zero on any problem.
    Check {
        /// Print JSON for scripts instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Ask the running daemon to re-read its config; prints the problems and
    /// exits non-zero if the new config is refused.
    Reload,
    /// The running daemon's cache.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Per backend: state (up, tripped, probing), lookups, p50/p99
    /// latency, host in use, last error.
    Backends {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Every agent of the store (id, name, ip), then the invalid records.
    List(list::Args),
    /// The store as Wazuh's client.keys (or CSV), written atomically.
    Export(export::Args),
    /// Differences between the store and a manager's client.keys.
    Verify(verify::Args),
    /// Make a Wazuh manager's registry equal to the store, via its API.
    Sync(sync::Args),
    /// Exec mode: look up an agent by id and print one JSON reply.
    Id {
        /// The agent id (digits).
        value: Option<String>,
        /// Anything else is refused.
        #[arg(hide = true, allow_hyphen_values = true, trailing_var_arg = true)]
        extra: Vec<String>,
    },
    /// Exec mode: look up an agent by source address and print one JSON reply.
    Ip {
        /// The IPv4 or IPv6 address.
        value: Option<String>,
        /// Anything else is refused.
        #[arg(hide = true, allow_hyphen_values = true, trailing_var_arg = true)]
        extra: Vec<String>,
    },
    /// Write the man pages or the shell completions into DIR (packaging).
    #[command(hide = true)]
    Generate {
        /// What to write.
        what: generate::Generated,
        /// The directory (created if missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum CacheCommand {
    /// Flush every entry, or one (`id:001`, `ip:10.0.0.1`).
    Flush {
        /// The entry to flush.
        query: Option<String>,
    },
    /// Entries, hits, misses, negative hits, stale served, coalesced waits.
    Stats {
        /// Print JSON for scripts instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    // Wazuh's exec_path call, once per lookup: its start-up time is the
    // product, so it skips building the CLI parser (see exec::lean_call).
    if let Some(call) = exec::lean_call(&args) {
        return exec::main(&call.config, call.kind, Some(call.value), Vec::new());
    }
    // In exec mode stdout and stderr are one pipe to Wazuh: nothing may go to
    // stderr, and even bad arguments get a JSON answer with exit code 0.
    let exec_kind = exec::exec_kind(&args);
    let parsed = command()
        .try_get_matches_from(&args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) => {
            if let Some(kind) = exec_kind {
                return exec::bad_arguments(kind, &e.kind().to_string());
            }
            let _ = e.print();
            // clap's own errors are usage errors; --help and --version are not.
            return if e.use_stderr() {
                Code::Usage
            } else {
                Code::Success
            }
            .into();
        }
    };
    match cli.command {
        None => daemon::main(&cli.config),
        Some(Command::Serve { exec }) => match exec::after_serve(exec) {
            exec::AfterServe::Daemon => daemon::main(&cli.config),
            exec::AfterServe::OneShot(kind, value, extra) => {
                exec::main(&cli.config, kind, value, extra)
            }
            exec::AfterServe::Unexpected(word) => {
                eprintln!("error: unexpected argument '{word}' after 'serve' (only 'id <agent id>' or 'ip <address>' may follow)");
                Code::Usage.into()
            }
        },
        Some(Command::Check { json }) => check::main(&cli.config, json),
        Some(Command::Reload) => control::client(&cli.config, ControlRequest::Reload, Output::Text),
        Some(Command::Backends { json }) => {
            control::client(&cli.config, ControlRequest::Backends, output(json))
        }
        Some(Command::Cache(CacheCommand::Stats { json })) => {
            control::client(&cli.config, ControlRequest::CacheStats, output(json))
        }
        Some(Command::Cache(CacheCommand::Flush { query })) => control::client(
            &cli.config,
            ControlRequest::CacheFlush { query },
            Output::Text,
        ),
        Some(Command::List(args)) => list::main(&cli.config, &args),
        Some(Command::Export(args)) => export::main(&cli.config, &args),
        Some(Command::Verify(args)) => verify::main(&cli.config, &args),
        Some(Command::Sync(args)) => {
            retries::show_on_terminal();
            sync::main(&cli.config, &args)
        }
        Some(Command::Id { value, extra }) => exec::main(&cli.config, "id", value, extra),
        Some(Command::Ip { value, extra }) => exec::main(&cli.config, "ip", value, extra),
        Some(Command::Generate { what, dir }) => generate::main(what, &dir),
    }
}

fn output(json: bool) -> Output {
    if json {
        Output::Json
    } else {
        Output::Text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one-shot's own reading of the command line, and clap's.
    fn both(args: &[&str]) -> (Option<exec::LeanCall>, Option<exec::LeanCall>) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let lean = exec::lean_call(&args);
        let clap = Cli::try_parse_from(&args).ok().and_then(|cli| {
            let (kind, value, extra) = match cli.command? {
                Command::Id { value, extra } => ("id", value, extra),
                Command::Ip { value, extra } => ("ip", value, extra),
                Command::Serve { exec } => match exec::after_serve(exec) {
                    exec::AfterServe::OneShot(kind, value, extra) => (kind, value, extra),
                    _ => return None,
                },
                _ => return None,
            };
            extra.is_empty().then_some(exec::LeanCall {
                config: cli.config,
                kind,
                value: value?,
            })
        });
        (lean, clap)
    }

    /// Every call the lean path takes is parsed by clap to the same config,
    /// kind and value; the shapes Wazuh uses are all taken.
    #[test]
    fn the_lean_one_shot_path_agrees_with_clap() {
        // KEYGATE_CONFIG is not set in the test environment (both would
        // read it the same way, but the expected values below assume it).
        assert!(std::env::var_os("KEYGATE_CONFIG").is_none());
        let taken: &[&[&str]] = &[
            &["keygate", "id", "001"],
            &["keygate", "ip", "10.0.0.1"],
            &["keygate", "--config", "/etc/k.toml", "id", "001"],
            &["keygate", "-c", "/etc/k.toml", "ip", "::1"],
            &["keygate", "--config=/etc/k.toml", "id", "abc"],
            &["keygate", "--config", "/etc/k.toml", "serve", "id", "001"],
            &["keygate", "serve", "ip", "10.0.0.1"],
            &["keygate", "-c", "id", "id", "0001"],
            &["keygate", "--config", "serve", "serve", "id", "1"],
        ];
        for args in taken {
            let (lean, clap) = both(args);
            assert!(lean.is_some(), "{args:?} should take the lean path");
            assert_eq!(lean, clap, "{args:?}");
        }
        // Everything else goes through clap, which explains its errors.
        let left_to_clap: &[&[&str]] = &[
            &["keygate"],
            &["keygate", "serve"],
            &["keygate", "id"],
            &["keygate", "id", "001", "x"],
            &["keygate", "id", "-1"],
            &["keygate", "id", ""],
            &["keygate", "id", "--help"],
            &["keygate", "--help", "id", "001"],
            &["keygate", "--config", "-x", "id", "001"],
            &["keygate", "--config", "", "id", "001"],
            &["keygate", "--config=", "id", "001"],
            &["keygate", "-c", "a", "-c", "b", "id", "001"],
            &["keygate", "-ca", "id", "001"],
            &["keygate", "--verbose", "id", "001"],
            &["keygate", "id", "001", "--config", "x"],
            &["keygate", "serve", "foo", "001"],
            &["keygate", "check"],
            &["keygate", "--config"],
        ];
        for args in left_to_clap {
            let (lean, _) = both(args);
            assert_eq!(lean, None, "{args:?}");
        }
    }
}

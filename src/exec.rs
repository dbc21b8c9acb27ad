//! Exec mode: `keygate [--config FILE] id 001` / `ip 10.0.0.1`.
//!
//! Wazuh runs `exec_path` plus `id 001` without a shell, with stdout and
//! stderr on one pipe, and throws the output away unless the exit code is
//! 0. So: exactly one JSON line on stdout, nothing on stderr, exit 0 for
//! every outcome, errors as JSON.
//!
//! If a daemon listens on the configured socket it is asked first (sharing
//! its warm pools and cache). Only `[server] socket` and `request_timeout`
//! are read for that, so a config broken by an edit does not silence a
//! daemon started from the last good one. Its reply is read as a reply and
//! checked like a backend's answer (valid record, answering this query);
//! anything else is discarded and the lookup is done here, after loading
//! the whole config. Daemon attempt and direct lookup share one deadline,
//! `request_timeout`.

use keygate_config::DaemonAccess;
use keygate_core::backend::humanize;
use keygate_core::{gateway, ErrorCode, Query, Reply, Request};
use keygate_server::client;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use tokio::time::Instant;

/// If the arguments are an exec-mode call, its kind (`id` or `ip`): the
/// first word that is not an option (or an option's value).
pub fn exec_kind(args: &[String]) -> Option<&'static str> {
    let mut words = args.iter().skip(1);
    while let Some(w) = words.next() {
        match w.as_str() {
            "--config" | "-c" => {
                words.next();
            }
            s if s.starts_with('-') => {}
            // `serve id 001` is the one-shot too: see [`after_serve`].
            "serve" => {}
            "id" => return Some("id"),
            "ip" => return Some("ip"),
            _ => return None,
        }
    }
    None
}

/// What the words after `serve` ask for.
#[derive(Debug, PartialEq, Eq)]
pub enum AfterServe {
    /// Nothing: run the daemon.
    Daemon,
    /// `id <value>` or `ip <value>` (an exec_path copied from a unit's
    /// `ExecStart=... serve`, to which Wazuh 4.4+ appends `id 001`): the
    /// one-shot, with its kind, value and any extra words.
    OneShot(&'static str, Option<String>, Vec<String>),
    /// Anything else: the first unexpected word.
    Unexpected(String),
}

/// Reads the words after `serve`.
pub fn after_serve(words: Vec<String>) -> AfterServe {
    let mut words = words.into_iter();
    let Some(first) = words.next() else {
        return AfterServe::Daemon;
    };
    let kind = match first.as_str() {
        "id" => "id",
        "ip" => "ip",
        _ => return AfterServe::Unexpected(first),
    };
    AfterServe::OneShot(kind, words.next(), words.collect())
}

fn emit(reply: &Reply) -> ExitCode {
    let mut line = reply.encode();
    line.push(b'\n');
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(&line).and_then(|()| out.flush());
    ExitCode::SUCCESS
}

/// Answers unusable arguments with code 1, as JSON.
pub fn bad_arguments(kind: &str, why: &str) -> ExitCode {
    emit(&Reply::error(
        ErrorCode::Incomplete,
        format!("invalid arguments for '{kind}': {why}"),
    ))
}

/// Runs one exec-mode lookup.
pub fn main(
    config: &Path,
    kind: &'static str,
    value: Option<String>,
    extra: Vec<String>,
) -> ExitCode {
    // Even a bug must not write a backtrace into Wazuh's pipe.
    std::panic::set_hook(Box::new(|_| {
        let line = Reply::error(ErrorCode::Internal, "internal error").encode();
        let mut out = std::io::stdout().lock();
        let _ = out
            .write_all(&line)
            .and_then(|()| out.write_all(b"\n"))
            .and_then(|()| out.flush());
        std::process::exit(0);
    }));
    let Some(value) = value else {
        return emit(&Reply::error(
            ErrorCode::Incomplete,
            format!(
                "too few arguments: expected '{kind} <{}>'",
                if kind == "id" { "agent id" } else { "address" }
            ),
        ));
    };
    if !extra.is_empty() {
        return emit(&Reply::error(
            ErrorCode::BadRequest,
            format!("too many arguments after '{kind} <value>'"),
        ));
    }
    let query = match Request::from_parts(kind, &value) {
        Ok(q) => q,
        Err(e) => return emit(&Reply::error(e.code(), e.to_string())),
    };
    let access = keygate_config::daemon_access(config);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => {
            return emit(&Reply::error(
                ErrorCode::Internal,
                "cannot start the runtime",
            ))
        }
    };
    let deadline = access.request_timeout;
    let reply = runtime.block_on(async {
        tokio::time::timeout(deadline, one_shot(config, &query, &access))
            .await
            .unwrap_or_else(|_| {
                Reply::error(
                    ErrorCode::Unavailable,
                    format!(
                        "no answer within the request timeout of {} (daemon and direct lookup together)",
                        humanize(deadline)
                    ),
                )
            })
    });
    // Blocking work a driver may have left behind must not keep Wazuh's pipe
    // open past the deadline.
    runtime.shutdown_background();
    emit(&reply)
}

/// The daemon first, then a direct lookup; the caller bounds the whole.
async fn one_shot(config: &Path, query: &Query, access: &DaemonAccess) -> Reply {
    let deadline = Instant::now() + access.request_timeout;
    // A healthy daemon answers in milliseconds (and itself within
    // request_timeout); one that is wedged gets at most half of the deadline,
    // so the direct lookup still has the other half.
    let daemon_share = access.request_timeout / 2;
    let request = query.to_string();
    let discarded = match client::ask(&access.socket, request.as_bytes(), daemon_share).await {
        Ok(raw) => match Reply::decode(&raw, query) {
            Ok(reply) => return reply,
            Err(e) => Some(format!("the daemon's reply was discarded: {e}")),
        },
        Err(client::ClientError::NoDaemon(_)) => None,
        Err(e) => Some(format!("the daemon did not answer: {e}")),
    };
    direct(config, query, deadline, discarded).await
}

/// Loads the whole config (only now: a config broken while a daemon runs
/// does not stop the daemon from answering) and looks up here.
async fn direct(
    config: &Path,
    query: &Query,
    deadline: Instant,
    discarded: Option<String>,
) -> Reply {
    let mut config = match keygate_config::load(config) {
        Ok(c) => c,
        Err(e) => {
            let first = e
                .problems
                .first()
                .map(|p| p.to_string())
                .unwrap_or_default();
            return Reply::error(
                ErrorCode::Internal,
                format!(
                    "configuration error ({} problem(s); run 'keygate check'): {first}",
                    e.problems.len()
                ),
            );
        }
    };
    // One lookup per process: a cache would only add work.
    config.cache = None;
    let _guard = crate::logging::init(&config.log, crate::logging::Fallback::Nowhere).ok();
    if let Some(reason) = discarded {
        tracing::warn!(%reason, "Looking up directly.");
    }
    match config.build_stack(None).await {
        Ok(stack) => {
            let left = deadline.saturating_duration_since(Instant::now());
            keygate_core::audit::Asked::exec()
                .answered(
                    query.to_string().as_bytes(),
                    gateway::answer_query(stack.root.as_ref(), query, left),
                )
                .await
        }
        Err(problems) => Reply::error(
            ErrorCode::Internal,
            format!(
                "cannot build backends: {}",
                problems.first().map(|p| p.to_string()).unwrap_or_default()
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_owned).collect()
    }

    #[test]
    fn exec_kind_skips_the_config_option() {
        assert_eq!(exec_kind(&args("keygate id 001")), Some("id"));
        assert_eq!(
            exec_kind(&args("keygate --config /etc/k.toml ip 10.0.0.1")),
            Some("ip")
        );
        assert_eq!(exec_kind(&args("keygate -c id ip 1")), Some("ip"));
        assert_eq!(exec_kind(&args("keygate --config=/x id")), Some("id"));
        assert_eq!(exec_kind(&args("keygate serve")), None);
        assert_eq!(exec_kind(&args("keygate -c /x serve id 001")), Some("id"));
        assert_eq!(exec_kind(&args("keygate serve ip 10.0.0.1")), Some("ip"));
        assert_eq!(exec_kind(&args("keygate serve foo")), None);
        assert_eq!(exec_kind(&args("keygate --config /x")), None);
    }

    /// `serve` alone is the daemon; `serve id|ip ...` is the one-shot.
    #[test]
    fn words_after_serve() {
        assert_eq!(after_serve(vec![]), AfterServe::Daemon);
        assert_eq!(
            after_serve(args("id 001")),
            AfterServe::OneShot("id", Some("001".into()), vec![])
        );
        assert_eq!(
            after_serve(args("ip 10.0.0.1 x")),
            AfterServe::OneShot("ip", Some("10.0.0.1".into()), vec!["x".into()])
        );
        assert_eq!(
            after_serve(args("ip")),
            AfterServe::OneShot("ip", None, vec![])
        );
        assert_eq!(
            after_serve(args("foo")),
            AfterServe::Unexpected("foo".into())
        );
    }
}

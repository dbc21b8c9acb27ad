//! Exec mode: `keygate [--config FILE] id 001` / `ip 10.0.0.1`.
//!
//! Wazuh runs `exec_path` plus `id 001` without a shell, with stdout and
//! stderr on one pipe, and throws the output away unless the exit code is
//! 0. So: exactly one JSON line on stdout, nothing on stderr, exit 0 for
//! every outcome, errors as JSON. If a daemon answers on the configured
//! socket it is asked (sharing its warm pools and cache); otherwise, or if it
//! does not answer in time, the lookup is done here.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use keygate_core::{gateway, ErrorCode, Reply, Request};
use keygate_server::client;

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
            "id" => return Some("id"),
            "ip" => return Some("ip"),
            _ => return None,
        }
    }
    None
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
    let mut config = match keygate_config::load(config) {
        Ok(c) => c,
        Err(e) => {
            let first = e
                .problems
                .first()
                .map(|p| p.to_string())
                .unwrap_or_default();
            return emit(&Reply::error(
                ErrorCode::Internal,
                format!(
                    "configuration error ({} problem(s); run 'keygate check'): {first}",
                    e.problems.len()
                ),
            ));
        }
    };
    // One lookup per process: a cache would only add work.
    config.cache = None;
    let _guard = crate::logging::init(&config.log, crate::logging::Fallback::Nowhere).ok();
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
    let reply = runtime.block_on(async {
        // Ask the daemon first, bounded so a wedged daemon cannot eat
        // Wazuh's whole timeout; then fall back to a direct lookup.
        let deadline = config.server.request_timeout + Duration::from_secs(1);
        match client::ask(
            &config.server.socket,
            query.to_string().as_bytes(),
            deadline,
        )
        .await
        {
            Ok(raw) => return Ok(raw),
            Err(client::ClientError::NoDaemon(_)) => {}
            Err(error) => tracing::warn!(%error, "Daemon did not answer; looking up directly."),
        }
        match config.build_stack(None).await {
            Ok(stack) => Err(keygate_core::audit::Asked::exec()
                .answered(
                    query.to_string().as_bytes(),
                    gateway::answer_query(
                        stack.root.as_ref(),
                        &query,
                        config.server.request_timeout,
                    ),
                )
                .await),
            Err(problems) => Err(Reply::error(
                ErrorCode::Internal,
                format!(
                    "cannot build backends: {}",
                    problems.first().map(|p| p.to_string()).unwrap_or_default()
                ),
            )),
        }
    });
    match reply {
        // The daemon's reply, forwarded as is (it is already one JSON line).
        Ok(raw) => {
            let mut out = std::io::stdout().lock();
            let _ = out
                .write_all(&raw)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
            ExitCode::SUCCESS
        }
        Err(reply) => emit(&reply),
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
        assert_eq!(exec_kind(&args("keygate --config /x")), None);
    }
}

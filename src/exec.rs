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
//!
//! Wazuh starts this once per lookup, so start-up time is what it costs:
//! main() recognises Wazuh's call before building the CLI parser
//! ([`lean_call`]), the daemon is asked with blocking socket calls, and an
//! async runtime, the full config and logging are only set up when the
//! lookup has to be done here (docs/dev/benchmarks-history.md, "One-shot start").

use keygate_core::backend::humanize;
use keygate_core::{gateway, ErrorCode, Query, Reply, Request};
use keygate_server::client::{self, ClientError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

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
    // Wazuh's contract: exit 0 whatever the reply says.
    crate::exit::Code::Success.into()
}

/// Answers unusable arguments with code 1, as JSON.
pub fn bad_arguments(kind: &str, why: &str) -> ExitCode {
    emit(&Reply::error(
        ErrorCode::Incomplete,
        format!("invalid arguments for '{kind}': {why}"),
    ))
}

/// A one-shot call in the exact shape Wazuh runs it, recognised without
/// building the CLI parser (see [`lean_call`]).
#[derive(Debug, PartialEq, Eq)]
pub struct LeanCall {
    /// `--config`, else `$KEYGATE_CONFIG`, else the default path.
    pub config: PathBuf,
    /// `id` or `ip`.
    pub kind: &'static str,
    /// The value to look up.
    pub value: String,
}

/// Recognises `keygate [--config F | -c F | --config=F] [serve] id|ip VALUE`
/// (what Wazuh runs: exec_path plus `id 001`) without clap: building the
/// whole command line parser costs more than the rest of a one-shot that a
/// daemon answers. Anything else (another option, an extra word, a value
/// that looks like an option, an empty value) returns `None` and goes
/// through clap, so errors and help read exactly as before; for every call
/// this accepts, clap would have parsed the same config, kind and value
/// (a unit test in main.rs compares them).
pub fn lean_call(args: &[String]) -> Option<LeanCall> {
    let mut config: Option<PathBuf> = None;
    let mut i = 1;
    loop {
        let word = args.get(i)?;
        let value = if word == "--config" || word == "-c" {
            i += 2;
            args.get(i - 1)?.as_str()
        } else if let Some(v) = word.strip_prefix("--config=") {
            i += 1;
            v
        } else {
            break;
        };
        // clap refuses a repeated, empty or dash-looking value: let it say so.
        if config.is_some() || value.is_empty() || value.starts_with('-') {
            return None;
        }
        config = Some(PathBuf::from(value));
    }
    if args.get(i)? == "serve" {
        i += 1;
    }
    let kind = match args.get(i)?.as_str() {
        "id" => "id",
        "ip" => "ip",
        _ => return None,
    };
    let value = args.get(i + 1)?;
    if value.is_empty() || value.starts_with('-') || args.len() != i + 2 {
        return None;
    }
    let config = match config {
        Some(c) => c,
        None => match std::env::var_os("KEYGATE_CONFIG") {
            None => PathBuf::from(keygate_config::DEFAULT_CONFIG_PATH),
            Some(v) if !v.is_empty() => PathBuf::from(v),
            Some(_) => return None,
        },
    };
    Some(LeanCall {
        config,
        kind,
        value: value.clone(),
    })
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
        std::process::exit(crate::exit::Code::Success.number().into());
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
    let started = Instant::now();
    let access = keygate_config::daemon_access(config);
    let deadline = started + access.request_timeout;
    // A healthy daemon answers in milliseconds (and itself within
    // request_timeout); one that is wedged gets at most half of the deadline,
    // so the direct lookup still has the other half. Plain blocking socket
    // calls with timeouts: no async runtime is started unless the lookup
    // has to be done here.
    let daemon_share = access.request_timeout / 2;
    let discarded = match ask_daemon(&access.socket, query.to_string().as_bytes(), daemon_share) {
        Ok(raw) => match Reply::decode(&raw, &query) {
            Ok(reply) => return emit(&reply),
            Err(e) => Some(format!("the daemon's reply was discarded: {e}")),
        },
        Err(client::ClientError::NoDaemon(_)) => None,
        Err(e) => Some(format!("the daemon did not answer: {e}")),
    };
    // The direct lookup: the drivers are async, on a runtime of one thread.
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
    let left = deadline.saturating_duration_since(Instant::now());
    let reply = runtime.block_on(async {
        tokio::time::timeout(left, direct(config, &query, deadline, discarded))
            .await
            .unwrap_or_else(|_| {
                Reply::error(
                    ErrorCode::Unavailable,
                    format!(
                        "no answer within the request timeout of {} (daemon and direct lookup together)",
                        humanize(access.request_timeout)
                    ),
                )
            })
    });
    // Blocking work a driver may have left behind must not keep Wazuh's pipe
    // open past the deadline.
    runtime.shutdown_background();
    emit(&reply)
}

/// Asks the daemon on `socket` as Wazuh does (connect, one write, one read of
/// at most 64 KiB), with blocking calls bounded by `limit` in total: the
/// connect by `SO_SNDTIMEO` (a Unix-socket connect to a full backlog waits
/// that long), the write and the read by what is left of it.
fn ask_daemon(socket: &Path, request: &[u8], limit: Duration) -> Result<Vec<u8>, ClientError> {
    use socket2::{Domain, SockAddr, Socket, Type};
    let until = Instant::now() + limit;
    // What is left of `limit`; `None` once it is spent (a zero timeout
    // would mean "wait forever" to the socket calls).
    let left = || Some(until.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero());
    let timed_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    let address = SockAddr::unix(socket).map_err(ClientError::NoDaemon)?;
    let sock = Socket::new(Domain::UNIX, Type::STREAM, None).map_err(ClientError::Io)?;
    let Some(rest) = left() else {
        return Err(ClientError::Timeout(limit));
    };
    sock.set_write_timeout(Some(rest))
        .map_err(ClientError::Io)?;
    if let Err(e) = sock.connect(&address) {
        return Err(if timed_out(&e) {
            ClientError::Timeout(limit)
        } else {
            ClientError::NoDaemon(e)
        });
    }
    let mut stream = std::os::unix::net::UnixStream::from(std::os::fd::OwnedFd::from(sock));
    let io = |e: std::io::Error| {
        if timed_out(&e) {
            ClientError::Timeout(limit)
        } else {
            ClientError::Io(e)
        }
    };
    let Some(rest) = left() else {
        return Err(ClientError::Timeout(limit));
    };
    stream.set_write_timeout(Some(rest)).map_err(io)?;
    stream.write_all(request).map_err(io)?;
    // One read, as Wazuh's client does. A reply (one record) fits in a few
    // hundred bytes: read into a small stack buffer, so the 64 KiB a reply
    // may have are not zeroed and faulted in on every start (13 page faults
    // of ~230). Only a read that fills it is followed by one more read of
    // the rest, up to 64 KiB; our daemon writes a reply in one write, so
    // that is already queued.
    let mut first = [0u8; 4096];
    let n = read_once(&mut stream, &mut first, &left).map_err(io)?;
    if n == 0 {
        return Err(ClientError::Empty);
    }
    let mut reply = first[..n].to_vec();
    if n == first.len() {
        let mut rest = vec![0u8; client::MAX_REPLY_LEN - n];
        let more = read_once(&mut stream, &mut rest, &left).map_err(io)?;
        reply.extend_from_slice(&rest[..more]);
    }
    Ok(reply)
}

/// One `read` with what is left of the deadline as its timeout (retried
/// only when interrupted by a signal).
fn read_once(
    stream: &mut std::os::unix::net::UnixStream,
    buf: &mut [u8],
    left: &impl Fn() -> Option<Duration>,
) -> std::io::Result<usize> {
    loop {
        let Some(rest) = left() else {
            return Err(std::io::ErrorKind::TimedOut.into());
        };
        stream.set_read_timeout(Some(rest))?;
        match stream.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
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

    /// A listener at a fresh path that answers one connection with `reply`
    /// (after reading the request), or never answers with `None`.
    fn listener(reply: Option<Vec<u8>>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 64];
            let _ = conn.read(&mut buf);
            match reply {
                Some(r) => {
                    let _ = conn.write_all(&r);
                }
                None => std::thread::sleep(Duration::from_secs(5)),
            }
        });
        (dir, path)
    }

    /// The blocking client reads a short reply, a reply longer than its
    /// first buffer (whole, up to 64 KiB), reports nobody listening as
    /// NoDaemon and a silent daemon as a timeout within its limit.
    #[test]
    fn ask_daemon_reads_whole_replies_and_keeps_its_deadline() {
        let limit = Duration::from_secs(3);
        let (_d, path) = listener(Some(b"{\"error\":4}".to_vec()));
        assert_eq!(
            ask_daemon(&path, b"id:001", limit).unwrap(),
            b"{\"error\":4}"
        );
        for len in [4095, 4096, 4097, 20_000] {
            let long: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let (_d, path) = listener(Some(long.clone()));
            assert_eq!(ask_daemon(&path, b"id:001", limit).unwrap(), long, "{len}");
        }
        let (_d, path) = listener(Some(Vec::new()));
        assert!(matches!(
            ask_daemon(&path, b"id:001", limit),
            Err(ClientError::Empty)
        ));
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            ask_daemon(&dir.path().join("none.sock"), b"id:001", limit),
            Err(ClientError::NoDaemon(_))
        ));
        let (_d, path) = listener(None);
        let started = Instant::now();
        let silent = ask_daemon(&path, b"id:001", Duration::from_millis(300));
        assert!(matches!(silent, Err(ClientError::Timeout(_))), "{silent:?}");
        assert!(started.elapsed() < Duration::from_secs(3));
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

//! One run of the script: started the way Wazuh starts it (no shell, the
//! argv as configured plus `id 001` / `ip 10.0.0.1`, stdin `/dev/null`),
//! in a process group of its own, with a clean environment. Stdout is read
//! to end of file, capped; stderr is read apart, kept truncated, never
//! parsed. If the run is abandoned (the backend's timeout drops it) or the
//! output is too big, the whole group is killed and the child is reaped.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use keygate_core::BackendError;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use crate::error::io_reason;

/// Most bytes read from stdout: a reply bigger than Wazuh's 64 KiB receive
/// buffer cannot be a valid one.
pub const MAX_STDOUT: usize = 64 * 1024;
/// Bytes of stderr kept for the log; the rest is read and dropped.
pub const MAX_STDERR_KEPT: usize = 1024;

/// What a finished run left.
#[derive(Debug)]
pub struct Output {
    /// Everything written to stdout (at most [`MAX_STDOUT`] bytes).
    pub stdout: Vec<u8>,
    /// The start of stderr (at most [`MAX_STDERR_KEPT`] bytes).
    pub stderr: Vec<u8>,
    /// How the script ended.
    pub status: ExitStatus,
}

/// The child's process group, killed when the run is dropped before the
/// child was reaped (a timeout), and the child then reaped in the
/// background so no zombie is left.
struct Group {
    child: Option<Child>,
    pgid: Option<Pid>,
}

impl Group {
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (already gone) is fine.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        self.kill();
        // The child is dead or dying; wait for it so it is reaped now, not
        // whenever the runtime next gets around to its orphans.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = child.wait().await;
            });
        }
    }
}

/// Runs `argv` (program first) with `args` appended and only `env` in its
/// environment.
pub async fn run(
    argv: &[String],
    args: [&str; 2],
    env: &[(String, OsString)],
) -> Result<Output, BackendError> {
    let (program, rest) = argv
        .split_first()
        .ok_or_else(|| BackendError::Internal("the command is empty".into()))?;
    let mut cmd = Command::new(program);
    cmd.args(rest)
        .args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| spawn_error(program, &e))?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let mut group = Group {
        child: Some(child),
        pgid,
    };
    let (stdout, stderr) = tokio::join!(
        async {
            let out = read_capped(stdout, MAX_STDOUT).await;
            if matches!(out, Err(ReadError::TooBig)) {
                // Kill now: the script's stderr then ends too.
                group.kill();
            }
            out
        },
        drain(stderr, MAX_STDERR_KEPT)
    );
    let status = match group.child.as_mut() {
        Some(child) => child.wait().await,
        None => {
            return Err(BackendError::Internal(
                "the script's process is gone".into(),
            ))
        }
    };
    // Reaped: nothing left for Drop to do.
    group.child = None;
    let status =
        status.map_err(|e| BackendError::Unavailable(format!("waiting for the script: {e}")))?;
    let stdout = match stdout {
        Ok(out) => out,
        Err(ReadError::TooBig) => {
            return Err(BackendError::Internal(format!(
                "the script wrote more than {} KiB to stdout; it was killed",
                MAX_STDOUT / 1024
            )))
        }
        Err(ReadError::Io(e)) => {
            return Err(BackendError::Unavailable(format!(
                "reading the script's output: {}",
                io_reason(&e)
            )))
        }
    };
    Ok(Output {
        stdout,
        stderr,
        status,
    })
}

fn spawn_error(program: &str, e: &std::io::Error) -> BackendError {
    use std::io::ErrorKind as K;
    let what = format!(
        "cannot run {}: {}",
        Path::new(program).display(),
        io_reason(e)
    );
    match e.kind() {
        K::NotFound | K::PermissionDenied | K::InvalidInput => BackendError::Internal(what),
        _ => BackendError::Unavailable(what),
    }
}

enum ReadError {
    TooBig,
    Io(std::io::Error),
}

/// Reads `pipe` to its end; more than `cap` bytes is an error.
async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    cap: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let Some(pipe) = pipe else { return Ok(out) };
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    pipe.take(limit)
        .read_to_end(&mut out)
        .await
        .map_err(ReadError::Io)?;
    if out.len() > cap {
        return Err(ReadError::TooBig);
    }
    Ok(out)
}

/// Reads `pipe` to its end, keeping the first `keep` bytes.
async fn drain(pipe: Option<impl AsyncRead + Unpin>, keep: usize) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(mut pipe) = pipe else { return kept };
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = keep.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The start of a script's stderr as one log-safe line: control characters
/// escaped, cut at [`MAX_STDERR_KEPT`] bytes.
pub fn stderr_text(stderr: &[u8]) -> String {
    let text = String::from_utf8_lossy(stderr);
    let mut out: String = text.trim_end().escape_debug().collect();
    if stderr.len() >= MAX_STDERR_KEPT {
        out.push_str(" [truncated]");
    }
    out
}

//! One run of the script: started the way Wazuh starts it (no shell, the
//! argv as configured plus `id 001` / `ip 10.0.0.1`, stdin `/dev/null`),
//! in a process group of its own, with a clean environment.
//!
//! The reply is one JSON line, so stdout is read up to the end of its first
//! line that is not blank (capped); anything after it is read and dropped
//! until the script itself exits (its status is part of the answer), and
//! the pipe is then closed, so a background child that inherited stdout
//! cannot hold the answer back. The whole process group is then killed, so
//! nothing the script started in that group outlives the lookup. Stderr is read alongside until the script exits,
//! kept truncated, never parsed. If the run is abandoned (the backend's
//! timeout drops it) or the output is too big, the group is killed too and
//! the script is reaped.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};

use futures_util::FutureExt;
use keygate_core::BackendError;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

use crate::error::io_reason;

/// Most bytes read from stdout: a reply bigger than Wazuh's 64 KiB receive
/// buffer cannot be a valid one.
pub const MAX_STDOUT: usize = 64 * 1024;
/// Bytes of stderr kept for the log; the rest is read and dropped.
pub const MAX_STDERR_KEPT: usize = 1024;

/// What a finished run left.
#[derive(Debug)]
pub struct Output {
    /// Stdout up to the end of its first line that is not blank (at most
    /// [`MAX_STDOUT`] bytes); what follows is never read.
    pub stdout: Vec<u8>,
    /// The start of what the script wrote to stderr until it exited (at
    /// most [`MAX_STDERR_KEPT`] bytes).
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
    /// SIGKILL to every process of the group. Only called while the
    /// script is unreaped: its pid, the group's id, cannot have been given
    /// to another process yet.
    fn kill(&self) {
        if let Some(pgid) = self.pgid {
            // ESRCH (already gone) is fine.
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }

    /// Waits until the script has exited, without reaping it (`WNOWAIT`),
    /// so the group can still be killed safely by its id.
    async fn exited(&self) -> std::io::Result<()> {
        let Some(pid) = self.pgid else {
            return Ok(());
        };
        // Listening before the first check: an exit between the check and
        // the wait still wakes it.
        let mut sigchld = signal(SignalKind::child())?;
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        loop {
            match waitid(Id::Pid(pid), flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
                Ok(_) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
            if sigchld.recv().await.is_none() {
                return Err(std::io::Error::other("SIGCHLD is no longer delivered"));
            }
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
    let mut stderr = child.stderr.take();
    let mut group = Group {
        child: Some(child),
        pgid,
    };
    let mut kept = Vec::new();
    let (stdout, exited) = {
        let answer = async {
            let mut stdout = stdout;
            let line = first_line(stdout.as_mut(), MAX_STDOUT).await;
            if matches!(line, Err(ReadError::TooBig)) {
                // Kill now: the script then exits at once.
                group.kill();
            }
            // What the script writes after its reply is read and dropped
            // until it exits (closing the pipe now would kill a chatty
            // script with SIGPIPE); then the pipe is closed, whoever else
            // still holds it.
            let mut rest = Vec::new();
            let discard = drain(stdout.as_mut(), 0, &mut rest);
            let exited = group.exited();
            tokio::pin!(discard, exited);
            let exited = tokio::select! {
                biased;
                done = &mut exited => done,
                () = &mut discard => exited.await,
            };
            (line, exited)
        };
        let stderr = drain(stderr.as_mut(), MAX_STDERR_KEPT, &mut kept);
        tokio::pin!(answer, stderr);
        // Stderr is read while the answer is awaited; its end (or a pipe
        // that never ends) does not decide when the run is over.
        tokio::select! {
            biased;
            done = &mut answer => done,
            () = &mut stderr => answer.await,
        }
    };
    // What the script wrote to stderr just before it exited.
    if let Some(pipe) = stderr.as_mut() {
        drain_ready(pipe, MAX_STDERR_KEPT, &mut kept);
    }
    drop(stderr);
    // The script has exited and is not reaped yet: whatever it left running
    // in its group goes now.
    group.kill();
    let status = match group.child.as_mut() {
        Some(child) => exited.and(child.wait().await),
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
        stderr: kept,
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

/// Reads `pipe` up to the end of its first line that is not blank (or to
/// its end when no such line ends); more than `cap` bytes is an error.
/// What was read past that line is dropped.
async fn first_line(
    pipe: Option<&mut (impl AsyncRead + Unpin)>,
    cap: usize,
) -> Result<Vec<u8>, ReadError> {
    let mut out = Vec::new();
    let Some(pipe) = pipe else {
        return Ok(out);
    };
    let mut buf = [0u8; 4096];
    let mut scanned = 0;
    loop {
        let n = pipe.read(&mut buf).await.map_err(ReadError::Io)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        while let Some(at) = out[scanned..].iter().position(|&b| b == b'\n') {
            let end = scanned + at + 1;
            if end > cap {
                return Err(ReadError::TooBig);
            }
            if !out[..end].iter().all(u8::is_ascii_whitespace) {
                out.truncate(end);
                return Ok(out);
            }
            scanned = end;
        }
        scanned = out.len();
        if out.len() > cap {
            return Err(ReadError::TooBig);
        }
    }
}

/// Appends what `pipe` gives to `kept` up to `keep` bytes, dropping the
/// rest, until its end.
async fn drain(pipe: Option<&mut (impl AsyncRead + Unpin)>, keep: usize, kept: &mut Vec<u8>) {
    let Some(pipe) = pipe else { return };
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => keep_start(kept, &buf[..n], keep),
        }
    }
}

/// What `pipe` has ready now, without waiting (a writer that escaped the
/// group may keep it open forever).
fn drain_ready(pipe: &mut (impl AsyncRead + Unpin), keep: usize, kept: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    while let Some(Ok(n @ 1..)) = pipe.read(&mut buf).now_or_never() {
        keep_start(kept, &buf[..n], keep);
    }
}

fn keep_start(kept: &mut Vec<u8>, more: &[u8], keep: usize) {
    let room = keep.saturating_sub(kept.len());
    kept.extend_from_slice(&more[..more.len().min(room)]);
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

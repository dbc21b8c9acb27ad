//! `type = "exec"`: an existing Wazuh key script (the documentation's
//! Python, PHP or Perl example, edited for a site's database) run as a
//! backend, so it gains keygate's cache, timeouts, breaker, validation,
//! audit and metrics without being rewritten.
//!
//! The script is run the way Wazuh runs `exec_path`: no shell, the
//! configured argv with `id 001` or `ip 10.0.0.1` appended, stdin
//! `/dev/null`, the reply read from stdout: its first line that is not
//! blank (stderr is kept apart, logged truncated at debug level, never
//! parsed). Unlike Wazuh, the child gets a clean environment (only `PATH`,
//! `LANG` and the configured `env`) and its own process group, which is
//! killed as a whole once the script has exited or when the backend's
//! `timeout` ends the lookup; the child is always reaped.
//!
//! The reply's `error` decides the answer: `0` with a valid record is
//! found; `4` is not found (what the documented scripts answer with "No
//! agent key found"); `2` (their "cannot connect to the database") is an
//! outage; `1` and `3` (their "too few arguments" and "bad request type")
//! mean the script does not understand keygate's arguments, a
//! misconfiguration; any other code is an outage. A non-zero exit status,
//! a first line that is not exactly one JSON object, or more than 64 KiB
//! before its end is an error too.

mod reply;
mod run;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use keygate_core::{AgentRecord, BackendError, KeyBackend, Query};
use serde::Deserialize;
use tokio::sync::Semaphore;

use crate::{BackendSpec, BuildError, Problems};

use reply::Reply;

/// The `PATH` a child gets when keygate itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Most scripts `max_concurrent` may allow.
const MAX_CONCURRENT_LIMIT: usize = 1024;

/// `[[backend]] type = "exec"`: a Wazuh key script run once per lookup.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecConfig {
    /// The script and its own arguments, as an argv array (no shell); keygate
    /// appends `id 001` or `ip 10.0.0.1`. A relative path with a `/` is
    /// relative to the config file's directory; a bare name is looked up in
    /// the child's `PATH`.
    pub command: Vec<String>,
    /// How many scripts may run at once (default 4); further lookups wait
    /// for one to finish, within their `timeout`.
    #[serde(default = "default_max_concurrent")]
    pub max_concurrent: usize,
    /// Environment variables for the script, besides `PATH` and `LANG`
    /// (which these may override); nothing else of keygate's environment
    /// is passed on (default none).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

fn default_max_concurrent() -> usize {
    4
}

impl fmt::Debug for ExecConfig {
    /// `env` values may hold database passwords: only the names are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecConfig")
            .field("command", &self.command)
            .field("max_concurrent", &self.max_concurrent)
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .finish()
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

impl ExecConfig {
    /// The child's whole environment: `PATH` and `LANG` from keygate's (a
    /// standard `PATH` when keygate has none), then `env`.
    fn child_env(&self) -> Vec<(String, OsString)> {
        let mut out: BTreeMap<String, OsString> = BTreeMap::new();
        out.insert(
            "PATH".into(),
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        );
        if let Some(lang) = std::env::var_os("LANG") {
            out.insert("LANG".into(), lang);
        }
        for (k, v) in &self.env {
            out.insert(k.clone(), v.into());
        }
        out.into_iter().collect()
    }
}

#[async_trait]
impl BackendSpec for ExecConfig {
    const TYPE: &'static str = "exec";

    fn resolve_paths(&mut self, base: &Path) {
        if let Some(program) = self.command.first_mut() {
            if program.contains('/') && Path::new(program.as_str()).is_relative() {
                *program = base.join(program.as_str()).display().to_string();
            }
        }
    }

    fn validate(&self, problems: &mut Problems<'_>) {
        match self.command.first() {
            None => problems.push("command", "must name the script (an argv array)"),
            Some(p) if p.is_empty() => problems.push("command[0]", "must not be empty"),
            Some(_) => {}
        }
        for (i, arg) in self.command.iter().enumerate() {
            if arg.contains('\0') {
                problems.push(&format!("command[{i}]"), "must not contain a NUL byte");
            }
        }
        if !(1..=MAX_CONCURRENT_LIMIT).contains(&self.max_concurrent) {
            problems.push(
                "max_concurrent",
                format!("must be from 1 to {MAX_CONCURRENT_LIMIT}"),
            );
        }
        for (name, value) in &self.env {
            if !valid_env_name(name) {
                problems.push(
                    &format!("env.{name}"),
                    "a variable name is letters, digits and '_', not starting with a digit",
                );
            }
            if value.contains('\0') {
                problems.push(&format!("env.{name}"), "must not contain a NUL byte");
            }
        }
    }

    async fn build(&self, name: &str) -> Result<Arc<dyn KeyBackend>, BuildError> {
        Ok(Arc::new(ExecBackend {
            name: name.to_owned(),
            argv: self.command.clone(),
            env: self.child_env(),
            slots: Semaphore::new(self.max_concurrent),
        }))
    }
}

/// The exec backend.
pub struct ExecBackend {
    name: String,
    argv: Vec<String>,
    env: Vec<(String, OsString)>,
    slots: Semaphore,
}

impl ExecBackend {
    /// The program file: `argv[0]` itself if it has a `/`, else the first
    /// executable of that name in the child's `PATH`.
    fn program(&self) -> Result<PathBuf, BackendError> {
        let program = self.argv.first().map(String::as_str).unwrap_or_default();
        if program.contains('/') {
            let path = PathBuf::from(program);
            return match executable(&path) {
                Ok(()) => Ok(path),
                Err(why) => Err(BackendError::Internal(format!(
                    "command {}: {why}",
                    path.display()
                ))),
            };
        }
        let path = self
            .env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|p| executable(p).is_ok())
            .ok_or_else(|| {
                BackendError::Internal(format!(
                    "command {program}: not found as an executable in the script's PATH"
                ))
            })
    }
}

/// Whether `path` is a file this process may execute.
fn executable(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| crate::error::io_reason(&e))?;
    if !meta.is_file() {
        return Err("is not a file".into());
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
        .map_err(|_| "is not executable".to_owned())
}

/// How a script's non-zero `error` is answered.
fn failure(code: i64) -> BackendError {
    match code {
        reply::CANNOT_CONNECT => BackendError::Unavailable(
            "the script answered error 2 (it could not reach its database)".into(),
        ),
        1 | 3 => BackendError::Internal(format!(
            "the script answered error {code} (it did not understand keygate's \
             arguments: check that it takes 'id VALUE' / 'ip VALUE')"
        )),
        _ => BackendError::Unavailable(format!("the script answered error {code}")),
    }
}

/// A script's free text, made safe for one log line and cut short.
fn log_text(text: &str) -> String {
    text.chars()
        .take(200)
        .flat_map(char::escape_debug)
        .collect()
}

#[async_trait]
impl KeyBackend for ExecBackend {
    fn name(&self) -> &str {
        &self.name
    }

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| BackendError::Internal("the backend is shutting down".into()))?;
        let value = query.value();
        let out = run::run(&self.argv, [query.kind(), &value], &self.env).await?;
        let result = if out.status.success() {
            match reply::parse(&out.stdout) {
                Ok(Reply::Found(record)) => Ok(Some(record)),
                Ok(Reply::NotFound) => Ok(None),
                Ok(Reply::Failed { code, message }) => {
                    tracing::debug!(backend = %self.name, code, message = %log_text(&message), "Key script answered an error.");
                    Err(failure(code))
                }
                Err(e) => Err(e),
            }
        } else {
            Err(BackendError::Unavailable(match out.status.code() {
                Some(code) => format!("the script exited with status {code}"),
                None => {
                    use std::os::unix::process::ExitStatusExt;
                    let signal = out.status.signal().unwrap_or_default();
                    format!("the script was killed by signal {signal}")
                }
            }))
        };
        // Debug only, whatever the outcome: a script's stderr is its own
        // free text (a traceback may quote a row, key included), so it never
        // reaches the default log level.
        if !out.stderr.is_empty() {
            let stderr = run::stderr_text(&out.stderr);
            tracing::debug!(backend = %self.name, %stderr, "Key script wrote to stderr.");
        }
        result
    }

    /// The command exists and is executable (the script is not run: it
    /// would need a real agent to answer).
    async fn health(&self) -> Result<(), BackendError> {
        self.program().map(|_| ())
    }
}

//! The one mechanism every config table is read through, so a config with
//! ten mistakes gets ten problems, each with its key path.
//!
//! A [`Section`] takes a table's keys one at a time, each with the default
//! the program uses. A value of the wrong type becomes a problem and the
//! default stands in, so the rest of the table is still read and checked;
//! keys nobody asked for are reported as unknown when the section is
//! finished. Adding a key to a table is one call:
//!
//! ```ignore
//! let mut s = Section::new("server", root.take("server"), &mut problems);
//! let read_timeout = s.duration("read_timeout", defaults.read_timeout);
//! if read_timeout.is_zero() {
//!     s.problem("read_timeout", "must be more than 0");
//! }
//! let ok = s.finish();
//! ```
//!
//! Backend tables whose keys are a serde struct of `keygate-backends` go
//! through [`deserialize_all`], which gives the same guarantee for any
//! `Deserialize` type.

use std::fmt::Debug;
use std::time::Duration;

use figment::value::{Dict, Value};
use keygate_backends::{duration, Problem, Problems};
use serde::de::DeserializeOwned;

/// One table being read. See the module doc.
pub(crate) struct Section<'p> {
    path: String,
    table: Dict,
    /// Every key read, with the default it takes when absent (as text).
    known: Vec<(&'static str, Option<String>)>,
    problems: &'p mut Vec<Problem>,
    before: usize,
}

impl<'p> Section<'p> {
    /// The table at `path` (`server`, `backend[2]`); `None` when the file
    /// does not have it, so every key takes its default. A value that is not
    /// a table is a problem.
    pub(crate) fn new(
        path: impl Into<String>,
        value: Option<Value>,
        problems: &'p mut Vec<Problem>,
    ) -> Self {
        let path = path.into();
        let before = problems.len();
        let table = match value {
            None => Dict::new(),
            Some(Value::Dict(_, d)) => d,
            Some(_) => {
                problems.push(Problem {
                    path: path.clone(),
                    message: "must be a table".into(),
                });
                Dict::new()
            }
        };
        Self {
            path,
            table,
            known: Vec::new(),
            problems,
            before,
        }
    }

    /// The key path of `key` in this table.
    pub(crate) fn key_path(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    /// `key`'s value, or `default` when it is absent or has a bad value (a
    /// problem is recorded then).
    pub(crate) fn field<T: DeserializeOwned + Debug>(
        &mut self,
        key: &'static str,
        default: T,
    ) -> T {
        self.known.push((key, Some(format!("{default:?}"))));
        self.take(key).unwrap_or(default)
    }

    /// A duration written as people write them (`"800ms"`, `"5m"`), at
    /// most [`duration::MAX`] (a year): longer is a problem, whatever the
    /// key, so no deadline computed from the config can overflow.
    pub(crate) fn duration(&mut self, key: &'static str, default: Duration) -> Duration {
        let text = humantime::format_duration(default).to_string();
        self.known.push((key, Some(text)));
        let value = self
            .take::<humantime_serde::Serde<Duration>>(key)
            .map(humantime_serde::Serde::into_inner);
        match value.map(duration::check) {
            Some(Ok(d)) => d,
            Some(Err(problem)) => {
                self.problem(key, problem);
                default
            }
            None => default,
        }
    }

    /// `key`'s value if it is given and valid; a bad value is a problem.
    pub(crate) fn optional<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        self.known.push((key, None));
        self.take(key)
    }

    fn take<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        let value = self.table.remove(key)?;
        match value.deserialize::<T>() {
            Ok(v) => Some(v),
            Err(e) => {
                let path = self.key_path(key);
                self.problems.extend(figment_problems(&path, e));
                None
            }
        }
    }

    /// `key`'s value; its absence is a problem.
    pub(crate) fn required<T: DeserializeOwned>(&mut self, key: &'static str) -> Option<T> {
        let present = self.table.contains_key(key);
        let value = self.optional(key);
        if !present {
            self.problem(key, "missing required key");
        }
        value
    }

    /// Records a problem with `key` of this table (`""`: the table itself).
    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.scope().push(key, message);
    }

    /// A [`Problems`] under this table's path, for validators written
    /// against `keygate-backends`' API.
    pub(crate) fn scope(&mut self) -> Problems<'_> {
        Problems::new(self.path.clone(), self.problems)
    }

    /// Hands the keys not read yet to someone else (a backend's own
    /// struct), who reports the unknown ones.
    pub(crate) fn take_rest(&mut self) -> Dict {
        std::mem::take(&mut self.table)
    }

    /// The problem list, for code that reads a nested part on its own.
    pub(crate) fn problems(&mut self) -> &mut Vec<Problem> {
        self.problems
    }

    /// Reports every key nobody read; true when this table had no problem
    /// at all.
    pub(crate) fn finish(self) -> bool {
        for key in self.table.keys() {
            self.problems.push(Problem {
                path: format!("{}.{key}", self.path),
                message: format!(
                    "unknown key; expected one of: {}",
                    self.known
                        .iter()
                        .map(|(k, _)| *k)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        #[cfg(test)]
        READ.with(|r| {
            let table = self.path.split('[').next().unwrap_or_default().to_owned();
            r.borrow_mut().extend(
                self.known
                    .iter()
                    .map(|(k, d)| (table.clone(), *k, d.clone())),
            );
        });
        self.problems.len() == self.before
    }
}

#[cfg(test)]
thread_local! {
    /// Every key a finished section read on this thread: table (`server`,
    /// `backend`), key, default as text. What the README test compares
    /// with the configuration reference.
    pub(crate) static READ: std::cell::RefCell<Vec<(String, &'static str, Option<String>)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Deserializes `table` into `T`, reporting every bad or unknown key rather
/// than the first: serde stops at the first error, so the offending key is
/// recorded, removed, and the rest read again, until it parses or only keys
/// already reported are missing. Without its bad keys the table may still
/// parse (they had defaults): then the value is returned, so the caller can
/// still check the rest of it, while the problems recorded make the
/// section invalid. `None` when it cannot be read at all.
pub(crate) fn deserialize_all<T: DeserializeOwned>(
    mut table: Dict,
    prefix: &str,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    use figment::error::Kind;
    let mut removed: Vec<Vec<String>> = Vec::new();
    // Every round removes a key, so this ends; the bound is a safeguard.
    for _ in 0..=count_keys(&table) {
        let error = match Value::from(table.clone()).deserialize::<T>() {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let mut progressed = false;
        for e in error {
            let mut path: Vec<String> = e.path.clone();
            match &e.kind {
                Kind::UnknownField(f, _) => push_once(&mut path, f.clone()),
                Kind::DuplicateField(f) => push_once(&mut path, f.to_string()),
                Kind::MissingField(f) => {
                    push_once(&mut path, f.to_string());
                    // Missing because we removed its bad value: reported.
                    if removed.iter().any(|r| path.starts_with(r)) {
                        continue;
                    }
                }
                _ => {}
            }
            problems.push(to_problem(prefix, e));
            if let Some(gone) = remove_path(&mut table, &path) {
                removed.push(gone);
                progressed = true;
            }
        }
        if !progressed {
            return None;
        }
    }
    None
}

fn count_keys(table: &Dict) -> usize {
    table
        .values()
        .map(|v| 1 + v.as_dict().map_or(0, count_keys))
        .sum()
}

/// Removes the deepest existing key on `path`; returns the path removed.
fn remove_path(table: &mut Dict, path: &[String]) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    if !rest.is_empty() {
        if let Some(Value::Dict(_, inner)) = table.get_mut(first) {
            if let Some(mut gone) = remove_path(inner, rest) {
                gone.insert(0, first.clone());
                return Some(gone);
            }
        }
    }
    table.remove(first).map(|_| vec![first.clone()])
}

fn push_once(parts: &mut Vec<String>, field: String) {
    if parts.last() != Some(&field) {
        parts.push(field);
    }
}

/// Turns figment's errors into problems with full key paths.
pub(crate) fn figment_problems(prefix: &str, error: figment::Error) -> Vec<Problem> {
    error.into_iter().map(|e| to_problem(prefix, e)).collect()
}

fn to_problem(prefix: &str, e: figment::Error) -> Problem {
    use figment::error::Kind;
    let mut parts: Vec<String> = Vec::new();
    if !prefix.is_empty() {
        parts.push(prefix.to_owned());
    }
    parts.extend(e.path.iter().filter(|p| !p.is_empty()).cloned());
    let message = match &e.kind {
        Kind::UnknownField(field, expected) => {
            push_once(&mut parts, field.clone());
            format!("unknown key; expected one of: {}", expected.join(", "))
        }
        Kind::MissingField(field) => {
            push_once(&mut parts, field.to_string());
            "missing required key".to_owned()
        }
        Kind::DuplicateField(field) => {
            push_once(&mut parts, field.to_string());
            "key given twice".to_owned()
        }
        other => other.to_string(),
    };
    // Array positions read as in the README: `urls[1]`, not `urls.1`.
    let mut path = String::new();
    for part in &parts {
        if part.bytes().all(|b| b.is_ascii_digit()) && !path.is_empty() {
            path.push_str(&format!("[{part}]"));
        } else {
            if !path.is_empty() {
                path.push('.');
            }
            path.push_str(part);
        }
    }
    if path.is_empty() {
        path = "(top level)".to_owned();
    }
    Problem { path, message }
}

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
                // The default, as the key was registered with it, is the
                // example of a valid value the message gives.
                let example = self
                    .known
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == key)
                    .and_then(|(_, default)| default.clone());
                self.problems.extend(
                    e.into_iter()
                        .map(|e| to_problem(&path, e, example.as_deref())),
                );
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
    // Missing keys, each with a stand-in value of the next type to try.
    let mut standing_in: Vec<(Vec<String>, usize)> = Vec::new();
    // Every round removes a key or tries another stand-in, so this ends;
    // the bound is a safeguard.
    for _ in 0..=(count_keys(&table) + 1) * (STAND_INS.len() + 1) {
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
                    // Reported once; a stand-in lets the rest be read and
                    // validated (the caller drops what validation says
                    // about the stand-in itself: its key has a problem).
                    problems.push(to_problem(prefix, e, None));
                    if insert_path(&mut table, &path, STAND_INS[0]()) {
                        standing_in.push((path, 0));
                        progressed = true;
                    }
                    continue;
                }
                _ => {}
            }
            // A stand-in of the wrong type: the next one.
            if let Some((_, tried)) = standing_in.iter_mut().find(|(p, _)| *p == path) {
                *tried += 1;
                if let Some(next) = STAND_INS.get(*tried) {
                    progressed = insert_path(&mut table, &path, next());
                    continue;
                }
                remove_path(&mut table, &path);
                return None;
            }
            problems.push(to_problem(prefix, e, None));
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

/// Values tried, in order, for a missing required key, so that a struct
/// with one missing can still be built and the rest of it checked.
const STAND_INS: &[fn() -> Value] = &[
    || Value::from(String::new()),
    || Value::from(0u32),
    || Value::from(false),
    || Value::from(Vec::<Value>::new()),
    || Value::from(Dict::new()),
];

/// Sets `path` (whose parent tables exist) to `value`; false when a
/// parent is missing or not a table.
fn insert_path(table: &mut Dict, path: &[String], value: Value) -> bool {
    match path {
        [] => false,
        [key] => {
            table.insert(key.clone(), value);
            true
        }
        [first, rest @ ..] => match table.get_mut(first) {
            Some(Value::Dict(_, inner)) => insert_path(inner, rest, value),
            _ => false,
        },
    }
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

/// One figment error as a problem: its full key path, and for a value of
/// the wrong type what is expected with an example (`example`, the key's
/// default as text, when the reader knows it) and what was found.
fn to_problem(prefix: &str, e: figment::Error, example: Option<&str>) -> Problem {
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
        Kind::InvalidType(actual, expected) | Kind::InvalidValue(actual, expected) => {
            format!(
                "expected {}, found {}",
                expectation(expected, example),
                found(actual)
            )
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

/// What serde's name for a type (`usize`, `a boolean`) means for an
/// operator, with an example: `example` (a default as `Debug` prints it,
/// or a duration as humantime writes it) when it reads as TOML, else a
/// generic one.
fn expectation(serde_says: &str, example: Option<&str>) -> String {
    // An enum's default prints as its Rust name (`Continue`): not TOML.
    let example = example.filter(|e| !e.starts_with(|c: char| c.is_ascii_uppercase()));
    let (what, generic) = match serde_says {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" | "i8" | "i16" | "i32" | "i64" | "i128"
        | "isize" => ("a whole number", Some("10")),
        "f32" | "f64" => ("a number", Some("0.5")),
        "a boolean" => return "true or false".to_owned(),
        "a string" | "a borrowed string" | "a character" => ("a string in quotes", None),
        "a sequence" => ("a list in brackets", None),
        "a duration" => {
            let example = example.map_or_else(|| "\"3s\"".to_owned(), |e| format!("{e:?}"));
            return format!("a duration such as {example} (units: ms, s, m, h, d)");
        }
        s if s.starts_with("struct ") || s == "a map" => return "a table".to_owned(),
        s if s.starts_with("enum ") || s == "variant identifier" => {
            return "one of the names documented for this key, in quotes".to_owned()
        }
        other => return other.to_owned(),
    };
    match example.or(generic) {
        Some(example) => format!("{what} such as {example}"),
        None if what.starts_with("a list") => format!("{what} ([...])"),
        None => format!("{what} (\"...\")"),
    }
}

/// A value as the file would write it: `"lots"`, `5`, `true`, a list.
fn found(actual: &figment::error::Actual) -> String {
    use figment::error::Actual;
    match actual {
        Actual::Str(s) => format!("{s:?}"),
        Actual::Bool(b) => b.to_string(),
        Actual::Unsigned(n) => n.to_string(),
        Actual::Signed(n) => n.to_string(),
        Actual::Float(f) => f.to_string(),
        Actual::Seq => "a list".to_owned(),
        Actual::Map => "a table".to_owned(),
        other => other.to_string(),
    }
}

//! `KEYGATE_` environment overrides, merged over the file's tables.
//!
//! `__` separates levels (`KEYGATE_SERVER__SOCKET`). `[[backend]]` entries
//! are an array, which a flat variable name cannot address by itself, so the
//! first level under `BACKEND` selects an entry: its index
//! (`KEYGATE_BACKEND__0__TIMEOUT=3s`) or its name, matched ignoring case
//! (`KEYGATE_BACKEND__INVENTORY__TIMEOUT=3s`).

use figment::providers::Env;
use figment::value::{Dict, Value};
use figment::{Profile, Provider};
use keygate_backends::Problem;

/// Environment variables with this prefix override config keys; `__`
/// separates levels: `KEYGATE_SERVER__SOCKET=/run/k.sock`,
/// `KEYGATE_LOG__LEVEL=debug`, `KEYGATE_BACKEND__0__TIMEOUT=3s`.
/// `KEYGATE_CONFIG` names the file instead.
pub const ENV_PREFIX: &str = "KEYGATE_";

fn provider() -> Env {
    // KEYGATE_CONFIG names the file and KEYGATE_TEST_* belong to the test
    // suite: neither is a config key. figment lowercases the keys.
    Env::prefixed(ENV_PREFIX).split("__").filter(|k| {
        let k = k.as_str().to_ascii_lowercase();
        k != "config" && !k.starts_with("test_")
    })
}

/// The overrides set in the environment, as a table like the file's.
pub(crate) fn overrides() -> Result<Dict, Problem> {
    // Most environments set none: skip figment's provider then (exec mode
    // reads the overrides once per lookup, and the provider costs more than
    // parsing a small config file).
    // The same test figment applies: trimmed, lossy, prefix in any case.
    let prefixed = std::env::vars_os().any(|(k, _)| {
        k.to_string_lossy()
            .trim()
            .as_bytes()
            .get(..ENV_PREFIX.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(ENV_PREFIX.as_bytes()))
    });
    if !prefixed {
        return Ok(Dict::new());
    }
    let mut data = provider().data().map_err(|e| Problem {
        path: "(environment)".into(),
        message: e.to_string(),
    })?;
    Ok(data.remove(&Profile::Default).unwrap_or_default())
}

/// Merges `over` into `base`: tables key by key, anything else replaced.
pub(crate) fn merge(base: &mut Dict, over: Dict) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(Value::Dict(_, inner)), Value::Dict(_, over)) => merge(inner, over),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Applies the environment's overrides to the file's root table. The
/// `backend` part selects entries by index or name; every selector that
/// matches nothing is a problem. Returns where each override went
/// ([`Origins`]), so that a problem with its value names its variable.
pub(crate) fn apply(root: &mut Dict, mut env: Dict, problems: &mut Vec<Problem>) -> Origins {
    let backend = env.remove("backend");
    merge(root, env);
    let mut selected = Vec::new();
    match backend {
        None => {}
        Some(Value::Dict(_, selectors)) => {
            for (selector, value) in selectors {
                if let Some(i) = apply_backend(root, &selector, value, problems) {
                    selected.push((selector, i));
                }
            }
        }
        // A whole array (`KEYGATE_BACKEND='[{...}]'`) replaces the file's.
        Some(other) => {
            root.insert("backend".into(), other);
        }
    }
    Origins::of(&selected)
}

/// Where each `KEYGATE_` variable set went: the key path problems name
/// (`server.max_connections`, `backend[0].timeout`) and the variable as
/// it was written.
#[derive(Debug, Default)]
pub(crate) struct Origins(Vec<(String, String)>);

impl Origins {
    /// The variables of this environment, with the `[[backend]]`
    /// selectors resolved as `selected` says (selector, index).
    fn of(selected: &[(String, usize)]) -> Self {
        let mut origins = Vec::new();
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            let name = name.trim();
            let Some(rest) = name
                .get(..ENV_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
                .and_then(|_| name.get(ENV_PREFIX.len()..))
            else {
                continue;
            };
            let key = rest.replace("__", ".").to_ascii_lowercase();
            let parts: Vec<&str> = key.split('.').collect();
            let path = match parts[..] {
                ["config", ..] => continue,
                [first, ..] if first.starts_with("test_") => continue,
                ["backend", selector, ref keys @ ..] => {
                    let Some((_, i)) = selected.iter().find(|(s, _)| s == selector) else {
                        continue;
                    };
                    let mut path = format!("backend[{i}]");
                    for key in keys {
                        path.push('.');
                        path.push_str(key);
                    }
                    path
                }
                _ => key.clone(),
            };
            origins.push((path, name.to_owned()));
        }
        // The longest path first: the most specific variable names a problem.
        origins.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
        Self(origins)
    }

    /// Names the variable in each problem about a value it set:
    /// `KEYGATE_SERVER__MAX_CONNECTIONS (server.max_connections): ...`.
    pub(crate) fn name(&self, problems: &mut [Problem]) {
        for problem in problems {
            let from = self.0.iter().find(|(path, _)| {
                problem
                    .path
                    .strip_prefix(path.as_str())
                    .is_some_and(|rest| {
                        rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
                    })
            });
            if let Some((_, variable)) = from {
                problem.path = format!("{variable} ({})", problem.path);
            }
        }
    }
}

/// Merges one `KEYGATE_BACKEND__<selector>__...` table into the entry the
/// selector names; returns its index.
fn apply_backend(
    root: &mut Dict,
    selector: &str,
    value: Value,
    problems: &mut Vec<Problem>,
) -> Option<usize> {
    let mut fail = |message: String| {
        problems.push(Problem {
            path: format!("{ENV_PREFIX}BACKEND__{}", selector.to_ascii_uppercase()),
            message,
        });
        None
    };
    let Value::Dict(_, over) = value else {
        return fail("must name a key of the entry, e.g. __TIMEOUT".into());
    };
    let Some(Value::Array(_, entries)) = root.get_mut("backend") else {
        return fail("there is no [[backend]] array in the file to override".into());
    };
    let index = match selector.parse::<usize>() {
        Ok(i) if i < entries.len() => i,
        Ok(_) => {
            return fail(format!(
                "no [[backend]] with that index: the file has {} (counted from 0)",
                entries.len()
            ))
        }
        Err(_) => {
            let matches: Vec<usize> = entries
                .iter()
                .enumerate()
                .filter(|(_, e)| {
                    e.as_dict()
                        .and_then(|d| d.get("name"))
                        .and_then(Value::as_str)
                        .is_some_and(|n| n.eq_ignore_ascii_case(selector))
                })
                .map(|(i, _)| i)
                .collect();
            match matches[..] {
                [i] => i,
                [] => {
                    return fail(
                        "no [[backend]] has this index or name (names are matched ignoring case)"
                            .into(),
                    )
                }
                _ => return fail(
                    "more than one [[backend]] has this name when case is ignored; use the index"
                        .into(),
                ),
            }
        }
    };
    match &mut entries[index] {
        Value::Dict(_, entry) => {
            merge(entry, over);
            Some(index)
        }
        _ => fail(format!("backend[{index}] is not a table")),
    }
}

//! The store as `list`, `export`, `verify` and `sync` see it: one backend
//! (`--backend NAME`) or the whole chain in config order, enumerated as a
//! stream. For an id held by several backends the first one wins, as for a
//! lookup; a second entry for an id inside one backend is reported as
//! invalid. Only ids are remembered (to apply those rules), never records.
//!
//! The listing is complete exactly when the stream ends without an `Err`
//! item: a backend that fails midway (an outage, a paging anomaly, a file
//! rewritten while it is read) yields one `Err` naming it, and the stream
//! ends there. `list`, `export` and `verify` then say "incomplete" and
//! exit 1 ([`Code::Failure`](crate::exit::Code)); `sync` plans nothing
//! from it.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context};
use futures_util::stream::{self, Stream, StreamExt};
use keygate_config::Config;
use keygate_core::{AgentRecord, BackendError, KeyBackend, Listed};
use serde::Serialize;

/// What `list`, `export` and `verify` say when the listing failed after
/// `read` agents.
pub fn incomplete(read: u64, error: &BackendError) -> String {
    format!("the listing is incomplete ({read} agent(s) read before it failed): {error}")
}

/// A stored name that Wazuh's own `OS_IsValidName` refuses: keygate serves
/// it (Wazuh's key-request path inserts it), but Wazuh's API and an
/// agent's own enrollment refuse it, so `list`, `export` and `verify`
/// report it as a warning with the rule it breaks.
#[derive(Debug, Serialize)]
pub struct NameWarning {
    /// The agent id.
    pub id: String,
    /// The name (letters, digits, `-`, `_`, `.`: safe to print).
    pub name: String,
    /// The rule it breaks.
    pub rule: &'static str,
}

impl NameWarning {
    /// The warning for `record`, if its name breaks Wazuh's rule.
    pub fn of(record: &AgentRecord) -> Option<Self> {
        record.name.wazuh_name_rule().map(|rule| Self {
            id: record.id.as_str().to_owned(),
            name: record.name.as_str().to_owned(),
            rule,
        })
    }
}

impl std::fmt::Display for NameWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "agent {} name '{}': {} (keygate serves it; Wazuh's API and agent enrollment refuse it)",
            self.id, self.name, self.rule
        )
    }
}

/// The backends to enumerate, in order.
pub struct Store {
    backends: Vec<(String, Arc<dyn KeyBackend>)>,
}

impl Store {
    /// Builds the named backend, or every backend of the chain.
    pub async fn open(config: &Config, backend: Option<&str>) -> anyhow::Result<Store> {
        let entries: Vec<_> = match backend {
            Some(name) => {
                let Some(entry) = config.backends.iter().find(|b| b.name == name) else {
                    let names: Vec<&str> =
                        config.backends.iter().map(|b| b.name.as_str()).collect();
                    bail!(crate::exit::Usage(format!(
                        "--backend {name}: no backend of that name (configured: {})",
                        names.join(", ")
                    )));
                };
                vec![entry]
            }
            None => config.backends.iter().collect(),
        };
        let mut backends = Vec::new();
        for entry in entries {
            let built = entry
                .build()
                .await
                .with_context(|| format!("backend '{}'", entry.name))?;
            backends.push((entry.name.clone(), built));
        }
        Ok(Store { backends })
    }

    /// A store of given backends (tests).
    #[cfg(test)]
    pub fn of(backends: Vec<(String, Arc<dyn KeyBackend>)>) -> Store {
        Store { backends }
    }

    /// Every agent: first backend wins for an id. An `Err` item ends it.
    pub fn list(&self) -> impl Stream<Item = Result<Listed, BackendError>> + Send + '_ {
        let several = self.backends.len() > 1;
        let mut seen: HashMap<String, usize> = HashMap::new();
        stream::iter(self.backends.iter().enumerate())
            .flat_map(move |(index, (name, backend))| {
                backend.list().map(move |item| (index, name.as_str(), item))
            })
            .filter_map(move |(index, name, item)| {
                let out = match item {
                    Ok(Listed::Record(record)) => {
                        match seen.get(record.id.as_str()) {
                            // Shadowed by an earlier backend: a lookup would
                            // never reach this one.
                            Some(first) if *first != index => None,
                            Some(_) => Some(Ok(Listed::Invalid {
                                at: prefixed(several, name, &format!("id {}", record.id.as_str())),
                                reason: "a second entry for this id in the same backend".into(),
                            })),
                            None => {
                                seen.insert(record.id.as_str().to_owned(), index);
                                Some(Ok(Listed::Record(record)))
                            }
                        }
                    }
                    Ok(Listed::Invalid { at, reason }) => Some(Ok(Listed::Invalid {
                        at: prefixed(several, name, &at),
                        reason,
                    })),
                    Err(e) => Some(Err(BackendError::Chain(vec![(name.to_owned(), e)]))),
                };
                std::future::ready(out)
            })
            .scan(false, |failed, item| {
                // The stream ends after a transport failure.
                if *failed {
                    return std::future::ready(None);
                }
                *failed = item.is_err();
                std::future::ready(Some(item))
            })
    }
}

fn prefixed(several: bool, backend: &str, at: &str) -> String {
    if several {
        format!("backend '{backend}', {at}")
    } else {
        at.to_owned()
    }
}

/// Loads the config and runs `work` on a current-thread runtime; a config
/// problem is an error with every problem listed (a
/// [`keygate_config::ConfigError`], exit code 78).
pub fn run<F, Fut, T>(config_path: &std::path::Path, work: F) -> anyhow::Result<T>
where
    F: FnOnce(Config) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let config = keygate_config::load(config_path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    runtime.block_on(work(config))
}

/// Whether `e` comes from writing to a pipe whose reader has gone
/// (`keygate list | head`): the command then ends quietly.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use keygate_core::AgentRecord;
    use keygate_testkit::Fake;

    fn r(id: &str, name: &str) -> AgentRecord {
        AgentRecord::parse(id, name, "any", "k").unwrap()
    }

    /// The first backend wins for an id; a duplicate inside one backend is
    /// reported; an outage ends the stream with an error naming the backend.
    #[tokio::test]
    async fn first_backend_wins_and_duplicates_are_reported() {
        let a = Fake::empty("a")
            .and(r("001", "from-a"))
            .and(r("001", "again-a"));
        let b = Fake::empty("b")
            .and(r("001", "from-b"))
            .and(r("002", "from-b"));
        let store = Store::of(vec![("a".into(), Arc::new(a)), ("b".into(), Arc::new(b))]);
        let items: Vec<_> = store.list().collect().await;
        let text: Vec<String> = items
            .iter()
            .map(|i| match i {
                Ok(Listed::Record(r)) => format!("{} {}", r.id.as_str(), r.name.as_str()),
                Ok(Listed::Invalid { at, .. }) => format!("invalid {at}"),
                Err(e) => format!("error {e}"),
            })
            .collect();
        assert_eq!(
            text,
            ["001 from-a", "invalid backend 'a', id 001", "002 from-b"]
        );

        let down = Store::of(vec![
            ("up".into(), Arc::new(Fake::empty("up").and(r("001", "x")))),
            ("down".into(), Arc::new(Fake::down("down"))),
        ]);
        let items: Vec<_> = down.list().collect().await;
        assert_eq!(items.len(), 2);
        let e = items[1].as_ref().unwrap_err().to_string();
        assert!(e.contains("backend 'down'"), "{e}");
    }
}

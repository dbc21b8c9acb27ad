//! What the backends log while `keygate check` builds and probes them.
//!
//! The daemon logs the same events when it starts and at the first
//! lookups: an agent file's invalid lines, a host of `urls` that does not
//! answer. `check` installs [`Collected`] as its only subscriber and prints
//! each warning (and error) as one of its own, so nothing the daemon would
//! warn about is missed by a new code path that only logs.

use std::fmt::Debug;
use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The warnings and errors logged so far, each once, in order.
#[derive(Clone, Default)]
pub struct Collected(Arc<Mutex<Vec<String>>>);

impl Collected {
    /// Installs a collector as this process's subscriber (warnings and
    /// errors only). When one is installed already (never, in `check`),
    /// the returned collector stays empty.
    pub fn install() -> Self {
        let collected = Self::default();
        let subscriber =
            tracing_subscriber::registry().with(collected.clone().with_filter(LevelFilter::WARN));
        let _ = tracing::subscriber::set_global_default(subscriber);
        collected
    }

    /// What was logged since the last call.
    pub fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<S: Subscriber> Layer<S> for Collected {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = if fields.rest.is_empty() {
            fields.message
        } else {
            format!("{} ({})", fields.message, fields.rest.join(", "))
        };
        let mut lines = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !lines.contains(&line) {
            lines.push(line);
        }
    }
}

/// An event's message and its other fields as `name=value`.
#[derive(Default)]
struct Fields {
    message: String,
    rest: Vec<String>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.record(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.record(field, format!("{value:?}"));
    }
}

impl Fields {
    fn record(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else {
            self.rest.push(format!("{}={value}", field.name()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Warnings and errors are kept once each with their fields (a
    /// `%`-field as displayed); info lines are not.
    #[test]
    fn warnings_are_collected_once_with_their_fields() {
        let collected = Collected::default();
        let subscriber =
            tracing_subscriber::registry().with(collected.clone().with_filter(LevelFilter::WARN));
        tracing::subscriber::with_default(subscriber, || {
            let path = std::path::Path::new("/x/client.keys");
            for _ in 0..2 {
                tracing::warn!(backend = "keys", path = %path.display(), line = 3, "Agent file line is invalid.");
            }
            tracing::info!("Loaded.");
            tracing::error!("Broken.");
        });
        assert_eq!(
            collected.take(),
            [
                "Agent file line is invalid. (backend=keys, path=/x/client.keys, line=3)",
                "Broken."
            ]
        );
        assert!(collected.take().is_empty());
    }
}

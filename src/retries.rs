//! `keygate sync` on a terminal: each retry of a Wazuh API call is shown as
//! it happens (`retrying GET /agents in 500ms: HTTP 503 (attempt 1)`),
//! above the progress bar, instead of a silent wait that ends in an error
//! many seconds later. Off a terminal nothing is printed (the error, if it
//! comes, says what failed).
//!
//! keygate-wazuh has no retry callback: it logs each retry as a debug
//! event (`"Retrying."` with `call`, `attempt`, `reason`, `wait_ms`), and
//! this layer turns those events into lines. A test drives the real client
//! into a retry, so a change of that event fails here.

use std::fmt::Write as _;
use std::io::IsTerminal;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The events keygate-wazuh logs, and the one that says a retry.
const TARGET: &str = "keygate_wazuh";
const MESSAGE: &str = "Retrying.";

/// Shows retries on stderr while the process runs, when stderr is a
/// terminal.
pub fn show_on_terminal() {
    if !std::io::stderr().is_terminal() {
        return;
    }
    let subscriber = tracing_subscriber::registry()
        .with(Retries::new(|line: &str| crate::progress::print_line(line)));
    // A command sets no other subscriber; if one were set, it stays.
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The layer: calls `print` with one line per retry.
pub struct Retries<P> {
    print: P,
}

impl<P: Fn(&str) + Send + Sync + 'static> Retries<P> {
    /// A layer printing through `print`.
    pub fn new(print: P) -> Self {
        Self { print }
    }
}

impl<S: Subscriber, P: Fn(&str) + Send + Sync + 'static> Layer<S> for Retries<P> {
    fn register_callsite(
        &self,
        metadata: &'static tracing::Metadata<'static>,
    ) -> tracing::subscriber::Interest {
        if metadata.is_event() && metadata.target().starts_with(TARGET) {
            tracing::subscriber::Interest::always()
        } else {
            tracing::subscriber::Interest::never()
        }
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut retry = Retry::default();
        event.record(&mut retry);
        if retry.message == MESSAGE {
            (self.print)(&retry.line());
        }
    }
}

/// A retry event's fields.
#[derive(Default)]
struct Retry {
    message: String,
    call: String,
    reason: String,
    attempt: u64,
    wait_ms: u64,
}

impl Retry {
    fn line(&self) -> String {
        let wait = humantime::format_duration(std::time::Duration::from_millis(self.wait_ms));
        format!(
            "keygate sync: retrying {} in {wait}: {} (attempt {})",
            self.call, self.reason, self.attempt
        )
    }
}

impl Visit for Retry {
    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "attempt" => self.attempt = value,
            "wait_ms" => self.wait_ms = value,
            _ => {}
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_debug(field, &format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let into = match field.name() {
            "message" => &mut self.message,
            "call" => &mut self.call,
            "reason" => &mut self.reason,
            _ => return,
        };
        into.clear();
        let _ = write!(into, "{value:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use keygate_wazuh::{Retry as Backoff, Settings, Wazuh};
    use keygate_wazuh_standin::StandIn;

    /// The real client, answered 429 twice, retries twice: two lines, each
    /// naming the call and the reason, as they happen (before the call
    /// succeeds).
    #[test]
    fn each_retry_of_the_real_client_is_a_line() {
        let standin = StandIn::start("keygate", "Pass-w0rd-of-keygate");
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        standin.write_ca(&ca);
        let client = Wazuh::new(Settings {
            url: standin.url(),
            user: "keygate".into(),
            password: zeroize::Zeroizing::new("Pass-w0rd-of-keygate".into()),
            ca_file: Some(ca),
            insecure: false,
            concurrency: 1,
            timeout: Duration::from_secs(10),
            retry: Backoff {
                attempts: 4,
                base: Duration::from_millis(1),
                max: Duration::from_millis(1),
                throttled_attempts: 4,
                throttled_max: Duration::from_millis(1),
            },
            max_requests_per_minute: 100_000,
        })
        .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let seen = lines.clone();
        let subscriber = tracing_subscriber::registry().with(Retries::new(move |l: &str| {
            seen.lock().unwrap().push(l.to_owned())
        }));
        standin.fail_next_with_429(2);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        tracing::subscriber::with_default(subscriber, || {
            runtime.block_on(client.login()).unwrap();
        });
        let lines = lines.lock().unwrap().clone();
        assert_eq!(lines.len(), 2, "{lines:?}");
        for (n, line) in lines.iter().enumerate() {
            assert!(line.starts_with("keygate sync: retrying POST /"), "{line}");
            assert!(line.contains("HTTP 429"), "{line}");
            assert!(line.ends_with(&format!("(attempt {})", n + 1)), "{line}");
        }
    }
}

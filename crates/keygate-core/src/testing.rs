//! A scriptable in-memory backend for tests of layers (this crate's and
//! downstream ones): fixed records, injected latency and injected outages;
//! and the helpers layer tests need ([`q`], [`settle`], [`logs_of`]).
//!
//! Downstream crates reach this through keygate-testkit, which enables the
//! `testing` feature; it is not part of a release build.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;

use crate::{AgentRecord, BackendError, KeyBackend, Query, Request};

/// Parses a request written as Wazuh sends it (`"id:001"`, `"ip:10.0.0.1"`).
/// Panics on an invalid one: tests write valid requests.
#[allow(clippy::panic)]
pub fn q(s: &str) -> Query {
    Request::parse(s.as_bytes()).unwrap_or_else(|e| panic!("test request {s:?}: {e}"))
}

/// Lets spawned tasks (background refreshes, probes) run to their next
/// await point, under a paused clock too, without advancing time.
pub async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// A fake backend. Clones share their counters and switches.
#[derive(Clone)]
pub struct Fake {
    name: String,
    records: Vec<AgentRecord>,
    delay: Arc<Mutex<Duration>>,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    health_calls: Arc<AtomicUsize>,
    /// An error every lookup answers with, after its delay (outage first).
    failure: Arc<Mutex<Option<BackendError>>>,
    /// Answer every query with the first record, matching or not.
    liar: bool,
    /// Panic (a backend's bug) when asked for this agent id.
    panics_on: Option<String>,
    /// What `current_host()` says.
    host: Option<String>,
}

impl Fake {
    /// A backend that finds nothing.
    pub fn empty(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            records: Vec::new(),
            delay: Arc::new(Mutex::new(Duration::ZERO)),
            down: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
            health_calls: Arc::new(AtomicUsize::new(0)),
            failure: Arc::new(Mutex::new(None)),
            liar: false,
            panics_on: None,
            host: None,
        }
    }

    /// A backend that is unreachable.
    pub fn down(name: &str) -> Self {
        let f = Self::empty(name);
        f.set_down(true);
        f
    }

    /// A backend holding one agent with address `any` and key `key-<id>`.
    /// Panics on an invalid id or name: this is for tests only.
    #[allow(clippy::expect_used)]
    pub fn with(name: &str, id: &str, agent: &str) -> Self {
        let record =
            AgentRecord::parse(id, agent, "any", &format!("key-{id}")).expect("valid fake record");
        Self::empty(name).and(record)
    }

    /// A backend that answers every query with this one agent, as a buggy
    /// query or a misconfigured mapping would.
    pub fn liar(name: &str, id: &str, agent: &str) -> Self {
        let mut f = Self::with(name, id, agent);
        f.liar = true;
        f
    }

    /// Makes every lookup of agent `id` panic, as a backend's bug would.
    pub fn panicking_on(mut self, id: &str) -> Self {
        self.panics_on = Some(id.to_owned());
        self
    }

    /// Adds a record.
    pub fn and(mut self, record: AgentRecord) -> Self {
        self.records.push(record);
        self
    }

    /// Makes every call take `delay` first.
    pub fn delayed(self, delay: Duration) -> Self {
        self.set_delay(delay);
        self
    }

    /// Changes the delay of every later call (clones included).
    pub fn set_delay(&self, delay: Duration) {
        *self.delay.lock().unwrap_or_else(PoisonError::into_inner) = delay;
    }

    /// Makes every later lookup answer with `error` (`None` stops that),
    /// e.g. a bad record or an internal error. An injected outage wins.
    pub fn fail_with(&self, error: Option<BackendError>) {
        *self.failure.lock().unwrap_or_else(PoisonError::into_inner) = error;
    }

    /// Says it is talking to `host` (`current_host()`).
    pub fn at_host(mut self, host: &str) -> Self {
        self.host = Some(host.to_owned());
        self
    }

    /// How many health checks were made.
    pub fn health_calls(&self) -> usize {
        self.health_calls.load(Ordering::SeqCst)
    }

    fn delay(&self) -> Duration {
        *self.delay.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Switches the injected outage on or off.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// How many lookups were made.
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl KeyBackend for Fake {
    fn name(&self) -> &str {
        &self.name
    }

    #[allow(clippy::panic)]
    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if let (Some(bad), Query::Id(id)) = (&self.panics_on, query) {
            if bad == id.as_str() {
                panic!("injected bug: the lookup of {bad} panics");
            }
        }
        let delay = self.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("injected outage".into()));
        }
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(error) = failure {
            return Err(error);
        }
        Ok(self
            .records
            .iter()
            .find(|r| {
                self.liar
                    || match query {
                        Query::Id(id) => r.id.as_str() == id.as_str(),
                        Query::Ip(ip) => r.ip.contains(ip),
                    }
            })
            .cloned())
    }

    fn list(&self) -> crate::ListStream<'_> {
        use futures_util::stream::{self, StreamExt};
        if self.down.load(Ordering::SeqCst) {
            return stream::once(async {
                Err(BackendError::Unavailable("injected outage".into()))
            })
            .boxed();
        }
        stream::iter(
            self.records
                .iter()
                .cloned()
                .map(|r| Ok(crate::Listed::Record(r))),
        )
        .boxed()
    }

    fn current_host(&self) -> Option<String> {
        self.host.clone()
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.health_calls.fetch_add(1, Ordering::SeqCst);
        if self.down.load(Ordering::SeqCst) {
            Err(BackendError::Unavailable("injected outage".into()))
        } else {
            Ok(())
        }
    }
}

/// Runs `f` with every log line it writes on this thread captured (every
/// level, no colours): its output and the lines.
#[allow(clippy::unwrap_used)]
pub async fn logs_of<T>(f: impl std::future::Future<Output = T>) -> (T, String) {
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let output = {
        let _guard = tracing::subscriber::set_default(subscriber);
        f.await
    };
    let bytes = lines
        .0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    (output, String::from_utf8(bytes).unwrap())
}

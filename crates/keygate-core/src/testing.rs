//! A scriptable in-memory backend for tests of layers (this crate's and
//! downstream ones): fixed records, injected latency and injected outages.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{AgentRecord, BackendError, KeyBackend, Query};

/// A fake backend. Clones share their counters and switches.
#[derive(Clone)]
pub struct Fake {
    name: String,
    records: Vec<AgentRecord>,
    delay: Duration,
    down: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    /// Answer every query with the first record, matching or not.
    liar: bool,
}

impl Fake {
    /// A backend that finds nothing.
    pub fn empty(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            records: Vec::new(),
            delay: Duration::ZERO,
            down: Arc::new(AtomicBool::new(false)),
            calls: Arc::new(AtomicUsize::new(0)),
            liar: false,
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

    /// Adds a record.
    pub fn and(mut self, record: AgentRecord) -> Self {
        self.records.push(record);
        self
    }

    /// Makes every call take `delay` first.
    pub fn delayed(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
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

    async fn lookup(&self, query: &Query) -> Result<Option<AgentRecord>, BackendError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        if self.down.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable("injected outage".into()));
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

    async fn health(&self) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) {
            Err(BackendError::Unavailable("injected outage".into()))
        } else {
            Ok(())
        }
    }
}

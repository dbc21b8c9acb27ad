//! What the cache holds: its settings, and one entry with its deadlines.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use crate::AgentRecord;

/// How the cache behaves; see the `[cache]` section of the config.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheSettings {
    /// Most found answers kept.
    pub capacity: u64,
    /// Most not-found answers kept: a budget of their own, so unknown ids
    /// (an enumeration) never push a found answer out.
    pub negative_capacity: u64,
    /// How long a found answer is served without asking the backends.
    pub ttl: Duration,
    /// How long a not-found answer is served without asking the backends
    /// (and kept at all: it is never served stale).
    pub negative_ttl: Duration,
    /// How long past its expiry a found answer may still be served while
    /// the backends fail with an outage.
    pub stale_ttl: Duration,
    /// After this fraction of an entry's lifetime, a hit starts a background
    /// refresh (the hit itself is answered at once). `0` disables it; values
    /// of 1 or more never refresh ahead.
    pub refresh_ahead: f64,
    /// Each entry's lifetime is drawn uniformly from
    /// `[ttl * (1 - jitter), ttl]`, so entries loaded together do not all
    /// expire together. `0` disables it; clamped to `[0, 1]`.
    pub jitter: f64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            capacity: 100_000,
            negative_capacity: 10_000,
            ttl: Duration::from_secs(5 * 60),
            negative_ttl: Duration::from_secs(30),
            stale_ttl: Duration::from_secs(24 * 60 * 60),
            refresh_ahead: 0.75,
            jitter: 0.1,
        }
    }
}

/// The longest any deadline reaches: settings built in code (the config
/// bounds every duration far below this) cannot overflow an [`Instant`].
const FOREVER: Duration = Duration::from_secs(30 * 365 * 86_400);

/// Where an answer came from and when, for what a later event (a flush, a
/// reload, a re-read store) must drop.
#[derive(Clone, Debug, Default)]
pub(super) struct Origin {
    /// The backend that found the record (`None` for not-found, or for a
    /// stack that does not say).
    pub(super) backend: Option<Arc<str>>,
    /// The store's generation when the lookup started (see
    /// [`Store`](super::store::Store)): raised by every flush and reload, so
    /// a lookup that started before one is not stored after it.
    pub(super) generation: u64,
    /// The backends' [`data_version`](crate::KeyBackend::data_version)
    /// when the lookup started: a not-found answer is fresh only while it
    /// is unchanged.
    pub(super) data_version: u64,
}

/// One cached answer and its deadlines.
pub(super) struct Entry {
    /// The answer: a record (code 0) or not-found (code 4).
    pub(super) answer: Option<AgentRecord>,
    /// Where and when it was looked up.
    pub(super) origin: Origin,
    /// After this, a hit also starts a background refresh.
    pub(super) refresh_at: Option<Instant>,
    /// Until this, the entry is served without asking the backends.
    pub(super) expires_at: Instant,
    /// Until this, the entry may be served when the backends are down (and
    /// is kept at all). For a not-found answer, `expires_at`.
    pub(super) stale_until: Instant,
}

impl Entry {
    /// Builds an entry for an answer loaded now, with a jittered lifetime.
    pub(super) fn new(s: &CacheSettings, answer: Option<AgentRecord>, origin: Origin) -> Self {
        let (ttl, stale_ttl) = if answer.is_some() {
            (s.ttl, s.stale_ttl)
        } else {
            (s.negative_ttl, Duration::ZERO)
        };
        let (ttl, stale_ttl) = (ttl.min(FOREVER), stale_ttl.min(FOREVER));
        let jitter = if s.jitter.is_finite() {
            s.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let lifetime = if jitter > 0.0 {
            ttl.mul_f64(1.0 - rand::rng().random_range(0.0..=jitter))
        } else {
            ttl
        };
        let now = Instant::now();
        let refresh_at = (s.refresh_ahead > 0.0 && s.refresh_ahead < 1.0)
            .then(|| now + lifetime.mul_f64(s.refresh_ahead));
        let expires_at = now + lifetime;
        Entry {
            answer,
            origin,
            refresh_at,
            expires_at,
            stale_until: expires_at + stale_ttl,
        }
    }

    /// The same answer, credited to `backend` (a reload renamed it).
    pub(super) fn renamed(&self, backend: Arc<str>) -> Self {
        Entry {
            answer: self.answer.clone(),
            origin: Origin {
                backend: Some(backend),
                ..self.origin.clone()
            },
            refresh_at: self.refresh_at,
            expires_at: self.expires_at,
            stale_until: self.stale_until,
        }
    }
}

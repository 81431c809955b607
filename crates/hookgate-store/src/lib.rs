//! The storage contract. Every backend (SQLite embedded, PostgreSQL for many
//! instances) implements [`Store`] and must pass the [`conformance`] suite,
//! which is where the guarantees are pinned down:
//!
//! * dedupe and enqueue happen in one transaction inside the store;
//! * a 2xx is only answered after [`Store::ingest`] returns, and it returns
//!   only after the write is durable (committed and fsync'd);
//! * at most one event per (source, order key) is `delivering`, and the next
//!   one is claimed only when the one before it is delivered, dead or
//!   superseded (FIFO by storage order);
//! * a claim is a lease: an expired lease makes the event claimable again.
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller, so
//! the rules are tested without sleeping.

use async_trait::async_trait;
use hookgate_core::{EventId, State};

#[cfg(feature = "conformance")]
pub mod conformance;

/// An event to store, with its keys already rendered by the ingest path.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub source: String,
    pub destination: String,
    pub received_at_ms: i64,
    /// The sender's headers, names lowercase, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub dedupe_key: Option<String>,
    /// How long the dedupe key is remembered.
    pub dedupe_window_ms: i64,
    pub order_key: Option<String>,
    pub coalesce_key: Option<String>,
    /// Why a key template could not be rendered, if one could not.
    pub warnings: Vec<String>,
}

/// What [`Store::ingest`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored as a new event; `superseded` pending events were coalesced into it.
    Accepted { id: EventId, superseded: u64 },
    /// The dedupe key was seen within its window: nothing new was stored.
    Duplicate { original: EventId },
}

/// An event claimed for one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub id: EventId,
    pub source: String,
    pub destination: String,
    pub order_key: Option<String>,
    pub received_at_ms: i64,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// This attempt's number, 1-based, counted over the event's whole life
    /// (replays included). It is also the claim's fencing token:
    /// [`Store::finish`] only moves the event while it is current.
    pub attempt: u32,
    /// The attempt's number since the event was stored or last replayed:
    /// what the retry policy's `max_attempts` counts.
    pub round_attempt: u32,
}

/// One delivery attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Attempt {
    pub attempt: u32,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    /// The HTTP status, when the destination answered at all.
    pub status: Option<u16>,
    pub error: Option<String>,
}

/// What happens to an event after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry { at_ms: i64 },
    Dead,
}

/// An event's metadata: what a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: EventId,
    pub source: String,
    pub destination: String,
    pub state: State,
    pub received_at_ms: i64,
    pub updated_at_ms: i64,
    pub dedupe_key: Option<String>,
    pub order_key: Option<String>,
    pub coalesce_key: Option<String>,
    pub warnings: Vec<String>,
    pub duplicates: u64,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<i64>,
    pub superseded_by: Option<EventId>,
}

/// Everything known about one event: its metadata, what the sender sent, and every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDetail {
    pub record: EventRecord,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub attempts: Vec<Attempt>,
}

/// Filters for [`Store::list`]; newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub source: Option<String>,
    pub state: Option<State>,
    pub order_key: Option<String>,
    pub limit: usize,
    /// Opaque: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<EventRecord>,
    pub next_cursor: Option<String>,
}

/// One row of [`Store::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateCount {
    pub source: String,
    pub state: State,
    pub count: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot take writes or answer now (I/O error, disk full,
    /// database down). Ingest answers 503 so the sender retries.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back: a bug or a damaged database.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Dedupe, coalesce and enqueue one event, durably, in one transaction.
    /// Backends batch concurrent calls into one commit (group commit).
    async fn ingest(&self, event: NewEvent) -> Result<Ingested>;

    /// Claim up to `limit` events of `destination` that are due at `now_ms`
    /// and at the head of their order key, under a lease of `lease_ms`.
    async fn claim(&self, destination: &str, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>>;

    /// Record an attempt and move the event on. Ignored (returns false) when
    /// the claim is no longer current: its lease expired and it was re-claimed.
    async fn finish(&self, id: &EventId, attempt: Attempt, verdict: Verdict, now_ms: i64) -> Result<bool>;

    /// The earliest time after `now_ms` at which a pending event of
    /// `destination` falls due, so a dispatcher can sleep until then.
    async fn next_due(&self, destination: &str, now_ms: i64) -> Result<Option<i64>>;

    /// Deliver again: a finished event becomes pending at the end of its order key's queue.
    /// Returns false for an unknown event or one that is still pending or delivering.
    async fn replay(&self, id: &EventId, now_ms: i64) -> Result<bool>;

    async fn get(&self, id: &EventId) -> Result<Option<EventDetail>>;

    async fn list(&self, filter: &ListFilter) -> Result<Page>;

    async fn stats(&self) -> Result<Vec<StateCount>>;

    /// Forget dedupe keys whose window ended before `now_ms`; returns how many.
    async fn purge_expired_dedupe(&self, now_ms: i64) -> Result<u64>;

    /// Cheap liveness check of the backend, for `/readyz`.
    async fn ping(&self) -> Result<()>;

    /// Call `wake(destination)` when another process sharing this backend
    /// stores or replays work for `destination`, so dispatchers need not poll.
    /// A backend only one process can open has nothing to report.
    fn watch_remote(&self, wake: RemoteWake) {
        let _ = wake;
    }
}

/// The callback of [`Store::watch_remote`].
pub type RemoteWake = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

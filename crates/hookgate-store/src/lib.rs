//! The storage contract. Every backend (SQLite embedded, PostgreSQL for many
//! instances) implements [`Store`] and must pass the [`conformance`] suite,
//! which is where the guarantees are pinned down:
//!
//! * an event is stored once, immutable: what the sender sent, its keys, and
//!   each route's verdict; with it, in the same transaction, one **delivery**
//!   per matched route (destination), each with its own lifecycle;
//! * dedupe happens once per source, before routing, in that transaction;
//! * a 2xx is only answered after [`Store::ingest`] returns, and it returns
//!   only after the write is durable (committed and fsync'd);
//! * a **queue** is (destination, source, order key): at most one delivery
//!   of a queue is `delivering`, and the next one is claimed only when the one
//!   before it is delivered, dead or superseded (FIFO by storage order);
//!   queues of different destinations never wait for each other;
//! * coalescing supersedes the `pending` deliveries of the same destination,
//!   source and coalesce key;
//! * a claim is a lease: an expired lease makes the delivery claimable again,
//!   and the attempt number fences a late outcome;
//! * every state change is one that [`State::can_become`] allows (the suite
//!   watches every delivery through every call and checks).
//!
//! Times are milliseconds since the Unix epoch, passed in by the caller, so
//! the rules are tested without sleeping. What is the same for every backend
//! and is not SQL (record parsing, the codecs, cursors, page size) lives
//! here, so a backend writes only its statements.

use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use bytes::Bytes;
use hookgate_core::{DeliveryId, EventId, EventState, Headers, Key, State};
use serde::{Deserialize, Serialize};

pub mod codec;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod mem;
pub mod query;

pub use mem::MemStore;

/// Listing pages hold this many rows at most, whatever the caller asks.
pub const MAX_PAGE: usize = 500;

/// How long an ingest waits for room in a backend's queue before it is
/// refused with [`StoreError::Busy`]. Short: a sender waiting on a stalled
/// disk or database is better told to retry than left holding a connection.
pub const ADMISSION_WAIT: std::time::Duration = std::time::Duration::from_millis(250);

/// An event to store, with its keys rendered and its routes decided by the
/// ingest path.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub id: EventId,
    pub source: String,
    pub received_at_ms: i64,
    /// What the sender sent, minus what ingest removed (hop-by-hop headers, credentials).
    pub headers: Headers,
    pub body: Bytes,
    pub dedupe_key: Option<Key>,
    /// How long the dedupe key is remembered.
    pub dedupe_window_ms: i64,
    /// The source's own keys: shown with the event and listed by. Each
    /// delivery carries the keys its queue uses (a route may override them).
    pub order_key: Option<Key>,
    pub coalesce_key: Option<Key>,
    /// What kind of event the sender says it is (`event_type` template).
    pub event_type: Option<String>,
    /// Why a key template could not be rendered, if one could not.
    pub warnings: Vec<String>,
    /// Each route of the source: matched or not, and why.
    pub routing: Vec<RouteVerdict>,
    /// One per matched route; none: the event is stored unrouted.
    pub deliveries: Vec<NewDelivery>,
    /// The event's trace context (W3C `traceparent`), continued by every attempt.
    pub trace: Option<String>,
}

/// One delivery of a new event: to one destination, by one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub destination: String,
    pub route: String,
    /// The queue's key at that destination (the route's own, or the source's).
    pub order_key: Option<Key>,
    pub coalesce_key: Option<Key>,
}

/// What one route said of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteVerdict {
    pub route: String,
    pub destination: String,
    pub matched: bool,
    /// Why it matched ("matched") or not: the first failing condition.
    pub reason: String,
}

impl RouteVerdict {
    /// What an event stored before routes existed (its routing never
    /// written) was routed by: one route per delivery it was given, its
    /// source's destination, named as its default route is.
    pub fn before_routes(deliveries: &[DeliveryRecord]) -> Vec<RouteVerdict> {
        deliveries
            .iter()
            .map(|d| RouteVerdict {
                route: d.route.clone(),
                destination: d.destination.clone(),
                matched: true,
                reason: "routed to its source's destination before routes existed".into(),
            })
            .collect()
    }

    /// The routing an event's row holds: `None` is an event from before routes.
    pub fn stored(text: Option<&str>, deliveries: &[DeliveryRecord]) -> Result<Vec<RouteVerdict>> {
        match text {
            Some(_) => codec::decode_routing(text),
            None => Ok(RouteVerdict::before_routes(deliveries)),
        }
    }
}

/// What [`Store::ingest`] did with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// Stored as a new event; `superseded` pending deliveries were coalesced into its.
    Accepted { id: EventId, superseded: u64 },
    /// The dedupe key was seen within its window: nothing new was stored.
    Duplicate { original: EventId },
}

/// A delivery claimed for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub delivery: DeliveryId,
    /// The event's id: `webhook-id`, the same on every attempt and replay.
    pub id: EventId,
    pub source: String,
    pub destination: String,
    pub route: String,
    pub order_key: Option<Key>,
    pub received_at_ms: i64,
    pub headers: Headers,
    pub body: Bytes,
    /// This attempt's number, 1-based, counted over the delivery's whole life
    /// (replays included). It is also the claim's fencing token:
    /// [`Store::finish`] only moves the delivery while it is current.
    pub attempt: u32,
    /// The attempt's number since the delivery was made or last replayed:
    /// what the retry policy's `max_attempts` counts.
    pub round_attempt: u32,
    /// The event's trace context.
    pub trace: Option<String>,
}

/// One delivery attempt, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u32,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    /// The HTTP status, when the destination answered at all.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The first bytes of the destination's answer, 2xx included (`[storage] keep_response`).
    pub response: Option<Bytes>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    Retry { at_ms: i64 },
    Dead,
}

impl Verdict {
    /// The state the delivery moves to, and when it is next due (a retry only).
    pub fn next_state(self) -> (State, Option<i64>) {
        match self {
            Verdict::Delivered => (State::Delivered, None),
            Verdict::Retry { at_ms } => (State::Pending, Some(at_ms)),
            Verdict::Dead => (State::Dead, None),
        }
    }
}

/// An event's metadata: what a listing shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: EventId,
    pub source: String,
    /// Its deliveries' states in a word ([`EventState::of`]).
    pub state: EventState,
    pub received_at_ms: i64,
    /// The last time any of its deliveries changed (its arrival, if none did).
    pub updated_at_ms: i64,
    pub dedupe_key: Option<Key>,
    pub order_key: Option<Key>,
    pub coalesce_key: Option<Key>,
    pub event_type: Option<String>,
    pub warnings: Vec<String>,
    /// Copies (the same source and dedupe key) that arrived later and were answered with its id…
    pub duplicates: u64,
    /// …and when the last of them arrived.
    pub last_duplicate_at_ms: Option<i64>,
    /// Attempts of all its deliveries.
    pub attempts: u32,
    /// When its next pending delivery is due.
    pub next_attempt_at_ms: Option<i64>,
    /// The event that superseded one of its deliveries, if one did.
    pub superseded_by: Option<EventId>,
    /// Its deliveries' destinations, in route order.
    pub destinations: Vec<String>,
}

/// One delivery's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: DeliveryId,
    pub event: EventId,
    pub source: String,
    pub destination: String,
    pub route: String,
    pub state: State,
    pub order_key: Option<Key>,
    pub coalesce_key: Option<Key>,
    pub received_at_ms: i64,
    pub updated_at_ms: i64,
    pub attempts: u32,
    pub next_attempt_at_ms: Option<i64>,
    pub superseded_by: Option<EventId>,
    /// The error of its latest attempt (none when it succeeded, or before any):
    /// for a dead delivery, why it died.
    pub last_error: Option<String>,
}

/// Everything known about one event: its metadata, what the sender sent,
/// each route's verdict, and each delivery with every attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventDetail {
    pub record: EventRecord,
    pub headers: Headers,
    pub body: Bytes,
    pub trace: Option<String>,
    pub routing: Vec<RouteVerdict>,
    pub deliveries: Vec<DeliveryDetail>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryDetail {
    pub record: DeliveryRecord,
    pub attempts: Vec<Attempt>,
}

/// Filters for [`Store::list`]; newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub source: Option<String>,
    /// The event's state in a word (its deliveries' summary).
    pub state: Option<EventState>,
    pub order_key: Option<Key>,
    pub dedupe_key: Option<Key>,
    /// Events with a delivery to this destination.
    pub destination: Option<String>,
    /// Received at or after this (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Received before this.
    pub until_ms: Option<i64>,
    /// Clamped to `1..=MAX_PAGE`.
    pub limit: usize,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<Cursor>,
}

/// Filters for [`Store::list_deliveries`]; newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryFilter {
    pub destination: Option<String>,
    pub state: Option<State>,
    pub source: Option<String>,
    pub order_key: Option<Key>,
    /// Its event received at or after this.
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: usize,
    pub cursor: Option<Cursor>,
}

#[derive(Debug, Clone)]
pub struct Page {
    pub events: Vec<EventRecord>,
    pub next_cursor: Option<Cursor>,
}

#[derive(Debug, Clone)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliveryRecord>,
    pub next_cursor: Option<Cursor>,
}

/// Where a listing page ended. Opaque to callers (a row position inside):
/// parsed once at the HTTP edge, so a mistyped one is the caller's error,
/// never the store's. An event page's is the last event's row; a delivery
/// page's is the last delivery's event row and its own (`E.D`): deliveries
/// are listed by their event, newest first, so one event's stay together.
/// A page of a time window (`since`, `until`) with no other filter is in
/// time order, and its cursor starts with the last event's time (`T~E`,
/// `T~E.D`): `query::events_by_time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    row: i64,
    sub: Option<i64>,
    at: Option<i64>,
}

impl Cursor {
    /// The same place, with its event's time: a time-ordered page's cursor.
    pub fn at_time(self, received_at_ms: i64) -> Self {
        Cursor { at: Some(received_at_ms), ..self }
    }

    /// The time of the event the page ended at, if the page was in time order.
    pub fn time(self) -> Option<i64> {
        self.at
    }

    /// The page continues with rows older than `row`.
    pub fn before_row(row: i64) -> Self {
        Cursor { row, sub: None, at: None }
    }

    /// The page continues after (`row`, `sub`) in (`row`, `sub`) descending order.
    pub fn before_pair(row: i64, sub: i64) -> Self {
        Cursor { row, sub: Some(sub), at: None }
    }

    pub fn row(self) -> i64 {
        self.row
    }

    /// The second part of a pair cursor. Callers page on
    /// `(row, sub) < (cursor.row(), cursor.sub())`; a one-part cursor's is
    /// `i64::MIN`, so a delivery listing given one goes on with older events.
    pub fn sub(self) -> i64 {
        self.sub.unwrap_or(i64::MIN)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(at) = self.at {
            write!(f, "{at}~")?;
        }
        match self.sub {
            None => write!(f, "{}", self.row),
            Some(sub) => write!(f, "{}.{sub}", self.row),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor from a previous page: {0:?}")]
pub struct ParseCursorError(String);

impl FromStr for Cursor {
    type Err = ParseCursorError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let positive = |text: &str| text.parse::<i64>().ok().filter(|n| *n > 0);
        let (at, place) = match s.split_once('~') {
            None => (None, s),
            Some((at, place)) => (Some(at.parse::<i64>().ok().filter(|n| *n >= 0)), place),
        };
        let parsed = match place.split_once('.') {
            None => positive(place).map(Cursor::before_row),
            Some((row, sub)) => positive(row).zip(positive(sub)).map(|(row, sub)| Cursor::before_pair(row, sub)),
        };
        let parsed = match at {
            None => parsed,
            Some(at) => parsed.zip(at).map(|(cursor, at)| cursor.at_time(at)),
        };
        parsed.ok_or_else(|| ParseCursorError(s.to_owned()))
    }
}

/// Where a database's schema stands against this hookgate's migrations:
/// what `hookgate check` says before `serve` would migrate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaVersion {
    /// The version the database is at (0: no hookgate tables yet).
    pub at: usize,
    /// The version this hookgate migrates to.
    pub latest: usize,
}

impl fmt::Display for SchemaVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.at, self.latest) {
            (0, 1) => write!(f, "no hookgate tables yet: migration 1 will run at start"),
            (0, latest) => write!(f, "no hookgate tables yet: migrations 1-{latest} will run at start"),
            (at, latest) if at == latest => write!(f, "schema at version {at}, up to date"),
            (at, latest) if at + 1 == latest => {
                write!(f, "schema at version {at}: migration {latest} will run at start")
            }
            (at, latest) if at < latest => {
                write!(f, "schema at version {at}: migrations {}-{latest} will run at start", at + 1)
            }
            (at, latest) => write!(f, "schema at version {at}, made by a newer hookgate (this one knows {latest})"),
        }
    }
}

/// One row of [`Store::stats`]: deliveries by source, destination and state,
/// and unrouted events by source (destination empty, state `unrouted`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct StateCount {
    pub source: String,
    pub destination: String,
    pub state: EventState,
    pub count: u64,
    /// When the oldest event counted here was received (the alert on a
    /// backlog that does not move reads it for the states still owed).
    pub oldest_received_ms: Option<i64>,
}

/// A listed event row as a backend reads it, before its text columns are
/// parsed: each backend fills one from its own query, and the parsing, the
/// same for all, is here. Its deliveries' states and times come beside it.
pub struct RawRecord {
    pub row: i64,
    pub id: String,
    pub source: String,
    pub received_at: i64,
    pub dedupe_key: Option<Vec<u8>>,
    pub order_key: Option<Vec<u8>>,
    pub coalesce_key: Option<Vec<u8>>,
    pub event_type: Option<String>,
    pub warnings: Option<String>,
    pub duplicates: i64,
    pub last_copy_at: Option<i64>,
}

/// One delivery row as a backend reads it.
pub struct RawDelivery {
    pub row: i64,
    pub id: String,
    pub event_row: i64,
    pub event: String,
    pub source: String,
    pub destination: String,
    pub route: String,
    pub state: String,
    pub order_key: Option<Vec<u8>>,
    pub coalesce_key: Option<Vec<u8>>,
    pub received_at: i64,
    pub updated_at: i64,
    pub attempts: i64,
    pub due_at: Option<i64>,
    pub superseded_by: Option<String>,
    pub last_error: Option<String>,
}

impl RawDelivery {
    pub fn parse(self) -> Result<DeliveryRecord> {
        let state: State = self.state.parse().map_err(|e| StoreError::Corrupt(format!("state: {e}")))?;
        Ok(DeliveryRecord {
            id: parse_delivery_id(&self.id)?,
            event: parse_id(&self.event)?,
            source: self.source,
            destination: self.destination,
            route: self.route,
            state,
            order_key: self.order_key.map(Key::from),
            coalesce_key: self.coalesce_key.map(Key::from),
            received_at_ms: self.received_at,
            updated_at_ms: self.updated_at,
            attempts: self.attempts.clamp(0, u32::MAX as i64) as u32,
            next_attempt_at_ms: if state == State::Pending { self.due_at } else { None },
            superseded_by: self.superseded_by.as_deref().map(parse_id).transpose()?,
            last_error: self.last_error,
        })
    }
}

impl RawRecord {
    /// The event's record, summarising `deliveries` (its own, in route order).
    pub fn parse(self, deliveries: &[DeliveryRecord]) -> Result<EventRecord> {
        let next_attempt_at_ms = deliveries.iter().filter_map(|d| d.next_attempt_at_ms).min();
        Ok(EventRecord {
            id: parse_id(&self.id)?,
            source: self.source,
            state: EventState::of(deliveries.iter().map(|d| d.state)),
            received_at_ms: self.received_at,
            updated_at_ms: deliveries.iter().map(|d| d.updated_at_ms).max().unwrap_or(self.received_at),
            dedupe_key: self.dedupe_key.map(Key::from),
            order_key: self.order_key.map(Key::from),
            coalesce_key: self.coalesce_key.map(Key::from),
            event_type: self.event_type,
            warnings: codec::decode_warnings(self.warnings.as_deref())?,
            duplicates: self.duplicates.max(0) as u64,
            last_duplicate_at_ms: self.last_copy_at,
            attempts: deliveries.iter().map(|d| d.attempts).sum(),
            next_attempt_at_ms,
            superseded_by: deliveries.iter().find_map(|d| d.superseded_by.clone()),
            destinations: deliveries.iter().map(|d| d.destination.clone()).collect(),
        })
    }
}

/// A page from rows fetched newest first with `LIMIT limit + 1`: the extra
/// row only says that another page follows. A row that cannot be read is left
/// out with a warning (the page still moves past it), so one damaged row does
/// not hide every page that holds it from the operator looking for it.
pub fn page_of<T>(rows: Vec<(Cursor, Result<T>)>, limit: usize) -> (Vec<T>, Option<Cursor>) {
    let more = rows.len() > limit;
    let mut items = Vec::with_capacity(rows.len().min(limit));
    let mut last = None;
    for (at, parsed) in rows.into_iter().take(limit) {
        last = Some(at);
        match parsed {
            Ok(item) => items.push(item),
            Err(error) => tracing::warn!(row = %at, %error, "a row cannot be read and is left out of the list"),
        }
    }
    (items, if more { last } else { None })
}

/// The page size a filter asks for, within `1..=MAX_PAGE`.
pub fn clamp_limit(limit: usize) -> usize {
    limit.clamp(1, MAX_PAGE)
}

/// An id read back from the database.
pub fn parse_id(text: &str) -> Result<EventId> {
    text.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))
}

pub fn parse_delivery_id(text: &str) -> Result<DeliveryId> {
    text.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))
}

/// A claimed row that cannot be read as a delivery (an id, headers or a value
/// of a type hookgate never writes: edited by hand, or damaged) is left out of the claim, not
/// allowed to fail it: failing would stop every delivery of the destination.
/// The row keeps its lease, so its queue waits (nothing is delivered out
/// of order) until it is mended or deleted; each lease it is claimed again and
/// said again. No attempt is made, so none is counted.
pub fn unreadable_row(rid: i64, error: &StoreError) {
    tracing::error!(
        rid,
        %error,
        "a delivery row cannot be read and is held, with its queue behind it, until it is mended or deleted \
         (rid is the delivery's row id); other deliveries go on"
    );
}

/// A token bucket for a rate limit: it fills at `per_second` tokens a second
/// and holds at most [`Bucket::capacity`], a fifth of a second's worth (at
/// least one token), so a limit holds within a few percent over any second
/// rather than allowing a second's worth at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    pub tokens: f64,
    pub refilled_at_ms: i64,
}

impl Bucket {
    pub const BURST_SECONDS: f64 = 0.2;

    pub fn capacity(per_second: f64) -> f64 {
        (per_second * Self::BURST_SECONDS).max(1.0)
    }

    /// A full bucket.
    pub fn new(per_second: f64, now_ms: i64) -> Bucket {
        Bucket { tokens: Self::capacity(per_second), refilled_at_ms: now_ms }
    }

    /// Refill for the time since the last take, then take up to `want` whole
    /// tokens. A clock that steps back refills nothing.
    pub fn take(&mut self, per_second: f64, want: u32, now_ms: i64) -> u32 {
        let elapsed_ms = (now_ms - self.refilled_at_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed_ms * per_second / 1_000.0).min(Self::capacity(per_second));
        self.refilled_at_ms = self.refilled_at_ms.max(now_ms);
        let taken = (want as f64).min(self.tokens.floor()).max(0.0);
        self.tokens -= taken;
        taken as u32
    }

    pub fn give_back(&mut self, per_second: f64, tokens: u32) {
        self.tokens = (self.tokens + tokens as f64).min(Self::capacity(per_second));
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot take writes or answer now (I/O error, disk full,
    /// database down). Ingest answers 503 so the sender retries.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// The backend is working but its queue is full: the caller waited
    /// [`ADMISSION_WAIT`] and was not let in. Answer 503 so the sender
    /// retries, rather than hold its body in memory without bound.
    #[error("storage busy: {0}")]
    Busy(String),
    /// The disk has less room left than is kept for deliveries: new events
    /// are refused (503, the sender retries) while everything else works.
    #[error("storage full: {0}")]
    Full(String),
    /// A stored row could not be read back: a bug or a damaged database.
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Dedupe, store the event and its deliveries, coalesce, enqueue: durably,
    /// in one transaction. Backends batch concurrent calls into one commit
    /// (group commit). When the backend's queue stays full for
    /// [`ADMISSION_WAIT`], returns [`StoreError::Busy`] without having stored anything.
    async fn ingest(&self, event: NewEvent) -> Result<Ingested>;

    /// Claim up to `limit` deliveries to `destination` that are due at
    /// `now_ms` and at the head of their queue, under a lease of `lease_ms`.
    async fn claim(&self, destination: &str, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>>;

    /// Record an attempt and move the delivery on. Ignored (returns false) when
    /// the claim is no longer current: its lease expired and it was re-claimed.
    async fn finish(&self, delivery: &DeliveryId, attempt: Attempt, verdict: Verdict, now_ms: i64) -> Result<bool>;

    /// The earliest time after `now_ms` at which a pending delivery to
    /// `destination` falls due, so a dispatcher can sleep until then.
    async fn next_due(&self, destination: &str, now_ms: i64) -> Result<Option<i64>>;

    /// Deliver again: every finished delivery of the event becomes pending at
    /// the end of its queue. How many did (none for an unknown event, or one
    /// whose deliveries are all still owed or that has none).
    async fn replay(&self, id: &EventId, now_ms: i64) -> Result<u64>;

    /// Deliver one delivery again; false for an unknown or active one.
    async fn replay_delivery(&self, delivery: &DeliveryId, now_ms: i64) -> Result<bool>;

    /// Route an event again: its verdicts replaced by `routing`, and the
    /// `deliveries` to destinations it has none for added (pending, at the
    /// end of their queues). How many were added; `None` for an unknown event.
    async fn reroute(
        &self,
        id: &EventId,
        routing: Vec<RouteVerdict>,
        deliveries: Vec<NewDelivery>,
        now_ms: i64,
    ) -> Result<Option<u64>>;

    async fn get(&self, id: &EventId) -> Result<Option<EventDetail>>;

    async fn get_delivery(&self, delivery: &DeliveryId) -> Result<Option<DeliveryRecord>>;

    async fn list(&self, filter: &ListFilter) -> Result<Page>;

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<DeliveryPage>;

    async fn stats(&self) -> Result<Vec<StateCount>>;

    /// Delete the dedupe records whose window ended before `now_ms`; returns
    /// how many records, a count of the backend's own (SQLite keeps a stored
    /// event's key with the event, and deletes only those of deleted events
    /// here). Space only: a key whose window ended never dedupes, purged or not.
    async fn purge_expired_dedupe(&self, now_ms: i64, limit: usize) -> Result<u64>;

    /// Retention: delete at most `limit` deliveries in the finished `state`
    /// (delivered, dead or superseded) that got there before `before_ms`,
    /// oldest event first (by the state index, which is ordered by event),
    /// with their attempts, and each event left with no delivery; returns how
    /// many deliveries. Small batches: each is one short write, so ingest
    /// never waits long behind it. Dedupe keys are not touched (they live for
    /// their own window). On a backend shared by many instances, concurrent
    /// calls never fail each other.
    async fn purge_finished(&self, state: State, before_ms: i64, limit: usize) -> Result<u64>;

    /// Retention of unrouted events received before `before_ms`, oldest first, as [`Self::purge_finished`].
    async fn purge_unrouted(&self, before_ms: i64, limit: usize) -> Result<u64>;

    /// Pause (or resume) deliveries to `destination`: while paused, events
    /// are still stored, but none of its deliveries is claimed and none falls
    /// due. Kept in the store, so it survives restarts and holds for every instance.
    async fn set_paused(&self, destination: &str, paused: bool) -> Result<()>;

    /// The destinations paused now.
    async fn paused(&self) -> Result<Vec<String>>;

    /// Take up to `want` tokens from `destination`'s rate limit (`per_second`
    /// tokens a second, a [`Bucket`]) at `now_ms`; how many were given. One
    /// bucket per destination for every instance of a store, so a limit holds
    /// across all of them.
    async fn take_tokens(&self, destination: &str, per_second: f64, want: u32, now_ms: i64) -> Result<u32>;

    /// Put back `tokens` taken but not used (fewer deliveries were due than
    /// tokens taken), up to the bucket's capacity: a limit is what starts, not
    /// what was asked for.
    async fn give_back_tokens(&self, destination: &str, per_second: f64, tokens: u32) -> Result<()>;

    /// Cheap liveness check of the backend, for `/readyz`.
    async fn ping(&self) -> Result<()>;

    /// The time every caller passes in: milliseconds since the Unix epoch by
    /// the clock this backend's guarantees are kept on. One process alone
    /// (SQLite) uses this machine's clock; a backend shared by many instances
    /// (PostgreSQL) uses the database's, so a machine whose clock is off never
    /// judges a lease or a dedupe window differently from the others.
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }

    /// Call `wake` when another process sharing this backend stores or
    /// replays work, so dispatchers need not poll. A backend only one process
    /// can open has nothing to report.
    fn watch_remote(&self, wake: RemoteWake) {
        let _ = wake;
    }
}

/// Which dispatchers have work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake<'a> {
    /// Every destination: news may have been missed (a reconnect), or a change affects all.
    All,
    Destination(&'a str),
}

/// The callback of [`Store::watch_remote`].
pub type RemoteWake = std::sync::Arc<dyn Fn(Wake<'_>) + Send + Sync>;

//! [`MemStore`]: the store's rules as plain synchronous code over ordered
//! maps, one mutex around them. It is the reference model of the protocol:
//! it passes the same conformance suite as SQLite and PostgreSQL, a property
//! test runs random operation sequences on it and on them and compares every
//! answer, and the simulation (`crates/hookgate/tests/simulation`) runs the
//! real dispatcher against it on virtual time. Nothing in it is durable;
//! nothing in it is hashed (ordered maps only), so one sequence of calls
//! always gives one sequence of answers.
//!
//! Events are stored once and never change (but for their duplicate count
//! and, on a reroute, their verdicts); each has one delivery per matched
//! route, which carries the lifecycle. A queue is (destination, source,
//! order key). Where the rules are subtle (promotion of a queue's head,
//! fencing a late outcome) the comments say why, once, here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use hookgate_core::{DeliveryId, EventId, EventState, Headers, Key, State};

use crate::{
    Attempt, Bucket, Claim, Cursor, DeliveryDetail, DeliveryFilter, DeliveryPage, DeliveryRecord, EventDetail,
    EventRecord, Ingested, ListFilter, NewDelivery, NewEvent, Page, RemoteWake, Result, RouteVerdict, StateCount,
    Store, Verdict, clamp_limit,
};

/// Bugs that can be planted on purpose, each breaking one rule of the
/// protocol, so the simulation can show that its checker sees them
/// (`HOOKGATE_SIM_MUTANT`). All off in every real use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planted {
    /// `finish` applies an outcome whatever its attempt number: a late
    /// outcome (its lease ended, the delivery was claimed again) moves it.
    pub no_fencing: bool,
    /// `claim` takes any due active delivery, not only its queue's head.
    pub ignore_head: bool,
    /// Coalescing supersedes `delivering` deliveries too, not only `pending` ones.
    pub supersede_delivering: bool,
    /// A queue is (source, order key), whatever the destination: one
    /// destination's delivery can be the head another's waits behind.
    pub one_queue_for_all_destinations: bool,
}

/// One delivery as [`MemStore::deliveries`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliverySnapshot {
    pub id: DeliveryId,
    pub event: EventId,
    pub destination: String,
    pub state: State,
    pub superseded_by: Option<EventId>,
}

/// The clock a [`MemStore`] answers [`Store::now_ms`] with.
pub type NowMs = Arc<dyn Fn() -> i64 + Send + Sync>;

pub struct MemStore {
    tables: Mutex<Tables>,
    now: NowMs,
    planted: Planted,
}

#[derive(Default)]
struct Tables {
    /// By row id, in storage order (the SQL backends' `rid`).
    events: BTreeMap<i64, EventRow>,
    event_rid: BTreeMap<EventId, i64>,
    deliveries: BTreeMap<i64, DeliveryRow>,
    delivery_rid: BTreeMap<DeliveryId, i64>,
    /// (source, key) → (event id, expires at).
    dedupe: BTreeMap<(String, Vec<u8>), (EventId, i64)>,
    /// (delivery row, attempt) → the attempt.
    attempts: BTreeMap<(i64, u32), Attempt>,
    paused: BTreeSet<String>,
    buckets: BTreeMap<String, Bucket>,
    next_rid: i64,
    next_seq: i64,
    /// [`Planted::one_queue_for_all_destinations`].
    one_queue_for_all_destinations: bool,
}

#[derive(Debug, Clone)]
struct EventRow {
    id: EventId,
    source: String,
    received_at: i64,
    headers: Headers,
    body: Bytes,
    dedupe_key: Option<Key>,
    order_key: Option<Key>,
    coalesce_key: Option<Key>,
    event_type: Option<String>,
    warnings: Vec<String>,
    duplicates: u64,
    last_copy_at: Option<i64>,
    routing: Vec<RouteVerdict>,
    trace: Option<String>,
}

#[derive(Debug, Clone)]
struct DeliveryRow {
    id: DeliveryId,
    event_rid: i64,
    source: String,
    destination: String,
    /// The destination as its queue's identity: its own, but with
    /// [`Planted::one_queue_for_all_destinations`], none.
    queue_destination: String,
    route: String,
    order_key: Option<Key>,
    coalesce_key: Option<Key>,
    /// Queue position: storage order, renewed by a replay.
    seq: i64,
    state: State,
    updated_at: i64,
    /// Attempts over the delivery's life; the current claim's fencing token.
    attempts: u32,
    /// `attempts` at the last replay.
    round_base: u32,
    /// pending: when it is due; delivering: when the lease ends.
    due_at: Option<i64>,
    /// The first active delivery of its queue (always, without an order key).
    head: bool,
    superseded_by: Option<EventId>,
}

impl DeliveryRow {
    fn queue(&self) -> (String, String, Option<Key>) {
        (self.queue_destination.clone(), self.source.clone(), self.order_key.clone())
    }
}

impl MemStore {
    /// An empty store whose clock is `now`.
    pub fn new(now: NowMs) -> MemStore {
        MemStore::with_planted(now, Planted::default())
    }

    /// An empty store with bugs planted (the simulation's mutants).
    pub fn with_planted(now: NowMs, planted: Planted) -> MemStore {
        let tables =
            Tables { one_queue_for_all_destinations: planted.one_queue_for_all_destinations, ..Tables::default() };
        MemStore { tables: Mutex::new(tables), now, planted }
    }

    /// An empty store on this machine's wall clock.
    pub fn on_system_clock() -> MemStore {
        MemStore::new(Arc::new(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
        }))
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every delivery: its event, destination, state and what superseded it,
    /// in storage order (what the simulation's checker reads at the end).
    pub fn deliveries(&self) -> Vec<DeliverySnapshot> {
        let t = self.tables();
        t.deliveries
            .values()
            .map(|d| DeliverySnapshot {
                id: d.id.clone(),
                event: t.events[&d.event_rid].id.clone(),
                destination: d.destination.clone(),
                state: d.state,
                superseded_by: d.superseded_by.clone(),
            })
            .collect()
    }
}

impl Tables {
    /// A time-ordered page's cursor's time: its own, or (a cursor from a
    /// page in row order) its event's, if that is still stored
    /// (`query::after_in_time`).
    fn time_of(&self, cursor: Cursor) -> Option<i64> {
        cursor.time().or_else(|| self.events.get(&cursor.row()).map(|e| e.received_at))
    }

    /// A page's next cursor: in a time-ordered page, with its event's time.
    fn cursor(&self, by_time: bool, cursor: Cursor) -> Cursor {
        if by_time { cursor.at_time(self.events[&cursor.row()].received_at) } else { cursor }
    }

    fn delivery(&mut self, id: &DeliveryId) -> Option<&mut DeliveryRow> {
        let rid = *self.delivery_rid.get(id)?;
        self.deliveries.get_mut(&rid)
    }

    /// Make the first active delivery of a queue its head, if it is not
    /// already (the SQL backends' `promote`). Called wherever a queue's active
    /// set changes: ingest, an outcome that finishes the head, a supersede, a
    /// replay. A late outcome changes nothing, so the head stays where it is.
    fn promote(&mut self, queue: &(String, String, Option<Key>)) {
        if queue.2.is_none() {
            return; // no order key: every delivery is its own queue, and its own head
        }
        let first =
            self.deliveries.values_mut().filter(|d| d.state.is_active() && d.queue() == *queue).min_by_key(|d| d.seq);
        if let Some(first) = first {
            first.head = true;
        }
    }

    /// A new delivery at the end of its queue, due at `now`.
    fn add_delivery(&mut self, event_rid: i64, source: &str, new: &NewDelivery, now: i64) {
        self.next_rid += 1;
        self.next_seq += 1;
        let (rid, seq) = (self.next_rid, self.next_seq);
        let row = DeliveryRow {
            id: new.id.clone(),
            event_rid,
            source: source.to_owned(),
            destination: new.destination.clone(),
            queue_destination: if self.one_queue_for_all_destinations {
                String::new()
            } else {
                new.destination.clone()
            },
            route: new.route.clone(),
            order_key: new.order_key.clone(),
            coalesce_key: new.coalesce_key.clone(),
            seq,
            state: State::Pending,
            updated_at: now,
            attempts: 0,
            round_base: 0,
            due_at: Some(now),
            head: new.order_key.is_none(),
            superseded_by: None,
        };
        let queue = row.queue();
        self.delivery_rid.insert(new.id.clone(), rid);
        self.deliveries.insert(rid, row);
        self.promote(&queue);
    }

    fn delivery_record(&self, rid: i64) -> DeliveryRecord {
        let d = &self.deliveries[&rid];
        let event = &self.events[&d.event_rid];
        DeliveryRecord {
            id: d.id.clone(),
            event: event.id.clone(),
            source: d.source.clone(),
            destination: d.destination.clone(),
            route: d.route.clone(),
            state: d.state,
            order_key: d.order_key.clone(),
            coalesce_key: d.coalesce_key.clone(),
            received_at_ms: event.received_at,
            updated_at_ms: d.updated_at,
            attempts: d.attempts,
            next_attempt_at_ms: if d.state == State::Pending { d.due_at } else { None },
            superseded_by: d.superseded_by.clone(),
            last_error: self.attempts.range((rid, 0)..=(rid, u32::MAX)).next_back().and_then(|(_, a)| a.error.clone()),
        }
    }

    /// An event's deliveries, in the order they were made (its routes' order).
    fn deliveries_of(&self, event_rid: i64) -> Vec<i64> {
        self.deliveries.iter().filter(|(_, d)| d.event_rid == event_rid).map(|(rid, _)| *rid).collect()
    }

    fn record(&self, rid: i64) -> EventRecord {
        let e = &self.events[&rid];
        let deliveries: Vec<DeliveryRecord> =
            self.deliveries_of(rid).into_iter().map(|d| self.delivery_record(d)).collect();
        EventRecord {
            id: e.id.clone(),
            source: e.source.clone(),
            state: EventState::of(deliveries.iter().map(|d| d.state)),
            received_at_ms: e.received_at,
            updated_at_ms: deliveries.iter().map(|d| d.updated_at_ms).max().unwrap_or(e.received_at),
            dedupe_key: e.dedupe_key.clone(),
            order_key: e.order_key.clone(),
            coalesce_key: e.coalesce_key.clone(),
            event_type: e.event_type.clone(),
            warnings: e.warnings.clone(),
            duplicates: e.duplicates,
            last_duplicate_at_ms: e.last_copy_at,
            attempts: deliveries.iter().map(|d| d.attempts).sum(),
            next_attempt_at_ms: deliveries.iter().filter_map(|d| d.next_attempt_at_ms).min(),
            superseded_by: deliveries.iter().find_map(|d| d.superseded_by.clone()),
            destinations: deliveries.iter().map(|d| d.destination.clone()).collect(),
        }
    }

    fn replay_row(&mut self, rid: i64, now_ms: i64) -> bool {
        self.next_seq += 1;
        let seq = self.next_seq;
        let d = self.deliveries.get_mut(&rid).expect("a delivery row");
        if d.state.is_active() {
            return false;
        }
        d.state = State::Pending;
        d.seq = seq;
        d.round_base = d.attempts;
        d.due_at = Some(now_ms);
        d.superseded_by = None;
        d.updated_at = now_ms;
        d.head = d.order_key.is_none();
        let queue = d.queue();
        self.promote(&queue);
        true
    }

    /// Delete an event, its deliveries, their attempts.
    fn delete_event(&mut self, rid: i64) {
        for d in self.deliveries_of(rid) {
            self.delete_delivery(d);
        }
        if let Some(event) = self.events.remove(&rid) {
            self.event_rid.remove(&event.id);
        }
    }

    fn delete_delivery(&mut self, rid: i64) {
        if let Some(d) = self.deliveries.remove(&rid) {
            self.delivery_rid.remove(&d.id);
            let attempts: Vec<_> = self.attempts.range((rid, 0)..=(rid, u32::MAX)).map(|(k, _)| *k).collect();
            for key in attempts {
                self.attempts.remove(&key);
            }
        }
    }
}

#[async_trait]
impl Store for MemStore {
    /// Dedupe (the `dedupe` upsert: a live key answers with its original, an
    /// expired one is taken over), store the event, then each delivery:
    /// coalescing first (every *pending* delivery of its destination, source
    /// and coalesce key is superseded, and a superseded head hands its queue
    /// on), then the delivery at the end of its queue.
    async fn ingest(&self, event: NewEvent) -> Result<Ingested> {
        let mut t = self.tables();
        let now = event.received_at_ms;
        if let Some(key) = &event.dedupe_key {
            let slot = (event.source.clone(), key.as_bytes().to_vec());
            match t.dedupe.get(&slot) {
                Some((original, expires_at)) if *expires_at > now => {
                    let original = original.clone();
                    if let Some(rid) = t.event_rid.get(&original).copied() {
                        let row = t.events.get_mut(&rid).expect("an event row");
                        row.duplicates += 1;
                        row.last_copy_at = Some(row.last_copy_at.map_or(now, |at| at.max(now)));
                    }
                    return Ok(Ingested::Duplicate { original });
                }
                _ => {
                    t.dedupe.insert(slot, (event.id.clone(), now.saturating_add(event.dedupe_window_ms)));
                }
            }
        }
        t.next_rid += 1;
        let event_rid = t.next_rid;
        t.event_rid.insert(event.id.clone(), event_rid);
        t.events.insert(
            event_rid,
            EventRow {
                id: event.id.clone(),
                source: event.source.clone(),
                received_at: now,
                headers: event.headers,
                body: event.body,
                dedupe_key: event.dedupe_key,
                order_key: event.order_key,
                coalesce_key: event.coalesce_key,
                event_type: event.event_type,
                warnings: event.warnings,
                duplicates: 0,
                last_copy_at: None,
                routing: event.routing,
                trace: event.trace,
            },
        );
        let mut superseded = 0;
        for new in &event.deliveries {
            if let Some(key) = &new.coalesce_key {
                let supersedes = |d: &DeliveryRow| {
                    d.state == State::Pending || (self.planted.supersede_delivering && d.state == State::Delivering)
                };
                let mut orphaned = BTreeSet::new();
                for d in t.deliveries.values_mut() {
                    let same = d.destination == new.destination && d.source == event.source;
                    if same && d.coalesce_key.as_ref() == Some(key) && supersedes(d) {
                        d.state = State::Superseded;
                        d.superseded_by = Some(event.id.clone());
                        d.updated_at = now;
                        d.due_at = None;
                        d.head = false;
                        superseded += 1;
                        orphaned.insert(d.queue());
                    }
                }
                let own_destination =
                    if t.one_queue_for_all_destinations { String::new() } else { new.destination.clone() };
                let own = (own_destination, event.source.clone(), new.order_key.clone());
                for queue in orphaned.iter().filter(|q| **q != own) {
                    t.promote(queue);
                }
            }
            t.add_delivery(event_rid, &event.source, new, now);
        }
        Ok(Ingested::Accepted { id: event.id, superseded })
    }

    /// Due heads of the destination's queues, soonest first (`due_at`, then
    /// `seq`), leased until `now + lease`; their attempt counted. A
    /// `delivering` head is due again when its lease ends: the claim that
    /// held it is over.
    async fn claim(&self, destination: &str, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>> {
        let mut t = self.tables();
        if t.paused.contains(destination) {
            return Ok(Vec::new());
        }
        let ignore_head = self.planted.ignore_head;
        let mut due: Vec<(i64, i64, i64)> = t
            .deliveries
            .iter()
            .filter(|(_, d)| d.destination == destination && (d.head || ignore_head) && d.state.is_active())
            .filter_map(|(rid, d)| d.due_at.filter(|at| *at <= now_ms).map(|at| (at, d.seq, *rid)))
            .collect();
        due.sort_unstable();
        let mut claims = Vec::new();
        for (_, _, rid) in due.into_iter().take(limit) {
            let d = t.deliveries.get_mut(&rid).expect("a row just listed");
            d.state = State::Delivering;
            d.attempts += 1;
            d.due_at = Some(now_ms.saturating_add(lease_ms));
            d.updated_at = now_ms;
            let d = d.clone();
            let event = &t.events[&d.event_rid];
            claims.push(Claim {
                delivery: d.id.clone(),
                id: event.id.clone(),
                source: d.source.clone(),
                destination: d.destination.clone(),
                route: d.route.clone(),
                order_key: d.order_key.clone(),
                received_at_ms: event.received_at,
                headers: event.headers.clone(),
                body: event.body.clone(),
                attempt: d.attempts,
                round_attempt: d.attempts - d.round_base,
                trace: event.trace.clone(),
            });
        }
        Ok(claims)
    }

    /// The attempt is recorded whatever happens (it happened); the delivery
    /// moves only while the claim is current — `delivering`, with this
    /// attempt's number — which fences an outcome whose lease ended. A
    /// finished head hands its queue on; a retried one stays its head.
    async fn finish(&self, delivery: &DeliveryId, attempt: Attempt, verdict: Verdict, now_ms: i64) -> Result<bool> {
        let mut t = self.tables();
        let Some(&rid) = t.delivery_rid.get(delivery) else { return Ok(false) };
        t.attempts.entry((rid, attempt.attempt)).or_insert_with(|| attempt.clone());
        let (state, due_at) = verdict.next_state();
        let no_fencing = self.planted.no_fencing;
        let d = t.delivery(delivery).expect("a delivery row");
        let current = d.state == State::Delivering && (d.attempts == attempt.attempt || no_fencing);
        if !current {
            return Ok(false);
        }
        d.state = state;
        d.due_at = due_at;
        d.updated_at = now_ms;
        d.head = state == State::Pending;
        let queue = d.queue();
        if state != State::Pending {
            t.promote(&queue);
        }
        Ok(true)
    }

    async fn next_due(&self, destination: &str, now_ms: i64) -> Result<Option<i64>> {
        let t = self.tables();
        if t.paused.contains(destination) {
            return Ok(None);
        }
        Ok(t.deliveries
            .values()
            .filter(|d| d.destination == destination && d.head && d.state.is_active())
            .filter_map(|d| d.due_at)
            .filter(|at| *at > now_ms)
            .min())
    }

    /// Each finished delivery goes to the back of its queue (a new `seq`), due
    /// now, its attempts counted afresh for `max_attempts`.
    async fn replay(&self, id: &EventId, now_ms: i64) -> Result<u64> {
        let mut t = self.tables();
        let Some(&event_rid) = t.event_rid.get(id) else { return Ok(0) };
        let mut replayed = 0;
        for rid in t.deliveries_of(event_rid) {
            if t.replay_row(rid, now_ms) {
                replayed += 1;
            }
        }
        Ok(replayed)
    }

    async fn replay_delivery(&self, delivery: &DeliveryId, now_ms: i64) -> Result<bool> {
        let mut t = self.tables();
        let Some(&rid) = t.delivery_rid.get(delivery) else { return Ok(false) };
        Ok(t.replay_row(rid, now_ms))
    }

    /// The new deliveries go to the end of their queues, without coalescing
    /// (an old event must not supersede a newer one's delivery).
    async fn reroute(
        &self,
        id: &EventId,
        routing: Vec<RouteVerdict>,
        deliveries: Vec<NewDelivery>,
        now_ms: i64,
    ) -> Result<Option<u64>> {
        let mut t = self.tables();
        let Some(&event_rid) = t.event_rid.get(id) else { return Ok(None) };
        let has: BTreeSet<String> =
            t.deliveries_of(event_rid).into_iter().map(|rid| t.deliveries[&rid].destination.clone()).collect();
        let event = t.events.get_mut(&event_rid).expect("an event row");
        event.routing = routing;
        let source = event.source.clone();
        let mut added = 0;
        for new in deliveries.iter().filter(|d| !has.contains(&d.destination)) {
            t.add_delivery(event_rid, &source, new, now_ms);
            added += 1;
        }
        Ok(Some(added))
    }

    async fn get(&self, id: &EventId) -> Result<Option<EventDetail>> {
        let t = self.tables();
        let Some(&rid) = t.event_rid.get(id) else { return Ok(None) };
        let e = &t.events[&rid];
        let deliveries = t
            .deliveries_of(rid)
            .into_iter()
            .map(|d| DeliveryDetail {
                record: t.delivery_record(d),
                attempts: t.attempts.range((d, 0)..=(d, u32::MAX)).map(|(_, a)| a.clone()).collect(),
            })
            .collect();
        Ok(Some(EventDetail {
            record: t.record(rid),
            headers: e.headers.clone(),
            body: e.body.clone(),
            trace: e.trace.clone(),
            routing: e.routing.clone(),
            deliveries,
        }))
    }

    async fn get_delivery(&self, delivery: &DeliveryId) -> Result<Option<DeliveryRecord>> {
        let t = self.tables();
        Ok(t.delivery_rid.get(delivery).map(|rid| t.delivery_record(*rid)))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Page> {
        let t = self.tables();
        let limit = clamp_limit(filter.limit);
        // A window is listed by time, then row (`query::events_by_time`); else by row.
        let by_time = crate::query::events_by_time(filter);
        let place = |rid: i64| if by_time { (t.events[&rid].received_at, rid) } else { (0, rid) };
        let below = match filter.cursor {
            None => Some((i64::MAX, i64::MAX)),
            Some(cursor) if by_time => t.time_of(cursor).map(|at| (at, cursor.row())),
            Some(cursor) => Some((0, cursor.row())),
        };
        let mut matching: Vec<i64> =
            t.events
                .iter()
                .filter(|(rid, _)| below.is_some_and(|below| place(**rid) < below))
                .filter(|(rid, e)| {
                    filter.source.as_ref().is_none_or(|s| &e.source == s)
                        && filter.order_key.as_ref().is_none_or(|k| {
                            // Events with a delivery queued under the key.
                            t.deliveries_of(**rid).iter().any(|d| t.deliveries[d].order_key.as_ref() == Some(k))
                        })
                        && filter.dedupe_key.as_ref().is_none_or(|k| e.dedupe_key.as_ref() == Some(k))
                        && filter.since_ms.is_none_or(|at| e.received_at >= at)
                        && filter.until_ms.is_none_or(|at| e.received_at < at)
                        && filter.destination.as_ref().is_none_or(|dest| {
                            t.deliveries_of(**rid).iter().any(|d| &t.deliveries[d].destination == dest)
                        })
                        && filter.state.is_none_or(|s| t.record(**rid).state == s)
                })
                .map(|(rid, _)| *rid)
                .collect();
        matching.sort_unstable_by_key(|rid| std::cmp::Reverse(place(*rid)));
        matching.truncate(limit + 1);
        let more = matching.len() > limit;
        let shown: Vec<i64> = matching.into_iter().take(limit).collect();
        let next_cursor = if more { shown.last().map(|rid| t.cursor(by_time, Cursor::before_row(*rid))) } else { None };
        Ok(Page { events: shown.into_iter().map(|rid| t.record(rid)).collect(), next_cursor })
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<DeliveryPage> {
        let t = self.tables();
        let limit = clamp_limit(filter.limit);
        // A window is listed by its events' time, then event, then delivery (`query::deliveries_by_time`).
        let by_time = crate::query::deliveries_by_time(filter);
        let at = |event_rid: i64| if by_time { t.events[&event_rid].received_at } else { 0 };
        let below = match filter.cursor {
            None => Some((i64::MAX, i64::MAX, i64::MAX)),
            Some(c) if by_time => t.time_of(c).map(|at| (at, c.row(), c.sub())),
            Some(c) => Some((0, c.row(), c.sub())),
        };
        let mut matching: Vec<(i64, i64, i64)> = t
            .deliveries
            .iter()
            .filter(|(rid, d)| {
                let received = t.events[&d.event_rid].received_at;
                below.is_some_and(|below| (at(d.event_rid), d.event_rid, **rid) < below)
                    && filter.destination.as_ref().is_none_or(|dest| &d.destination == dest)
                    && filter.state.is_none_or(|s| d.state == s)
                    && filter.source.as_ref().is_none_or(|s| &d.source == s)
                    && filter.order_key.as_ref().is_none_or(|k| d.order_key.as_ref() == Some(k))
                    && filter.since_ms.is_none_or(|at| received >= at)
                    && filter.until_ms.is_none_or(|at| received < at)
            })
            .map(|(rid, d)| (at(d.event_rid), d.event_rid, *rid))
            .collect();
        matching.sort_unstable_by(|a, b| b.cmp(a));
        let more = matching.len() > limit;
        matching.truncate(limit);
        let next_cursor = if more {
            matching.last().map(|(_, e, rid)| t.cursor(by_time, Cursor::before_pair(*e, *rid)))
        } else {
            None
        };
        Ok(DeliveryPage {
            deliveries: matching.into_iter().map(|(_, _, rid)| t.delivery_record(rid)).collect(),
            next_cursor,
        })
    }

    async fn stats(&self) -> Result<Vec<StateCount>> {
        let t = self.tables();
        // A count and the oldest event's row (its time is read from the row, as the SQL stores do).
        let mut counts: BTreeMap<(String, String, EventState), (u64, i64)> = BTreeMap::new();
        let mut count = |key: (String, String, EventState), event_rid: i64| {
            let entry = counts.entry(key).or_insert((0, event_rid));
            entry.0 += 1;
            entry.1 = entry.1.min(event_rid);
        };
        for d in t.deliveries.values() {
            count((d.source.clone(), d.destination.clone(), d.state.into()), d.event_rid);
        }
        // Unrouted events: the earliest time itself (`MIN(received_at)`, which their index serves).
        let mut unrouted_since: BTreeMap<&str, i64> = BTreeMap::new();
        for (rid, e) in &t.events {
            if t.deliveries_of(*rid).is_empty() {
                count((e.source.clone(), String::new(), EventState::Unrouted), *rid);
                let since = unrouted_since.entry(&e.source).or_insert(e.received_at);
                *since = (*since).min(e.received_at);
            }
        }
        Ok(counts
            .into_iter()
            .map(|((source, destination, state), (count, oldest))| StateCount {
                oldest_received_ms: if state == EventState::Unrouted {
                    unrouted_since.get(source.as_str()).copied()
                } else {
                    t.events.get(&oldest).map(|e| e.received_at)
                },
                source,
                destination,
                state,
                count,
            })
            .collect())
    }

    async fn purge_expired_dedupe(&self, now_ms: i64, limit: usize) -> Result<u64> {
        let mut t = self.tables();
        let mut expired: Vec<(i64, (String, Vec<u8>))> =
            t.dedupe.iter().filter(|(_, (_, at))| *at <= now_ms).map(|(k, (_, at))| (*at, k.clone())).collect();
        expired.sort();
        let gone: Vec<_> = expired.into_iter().take(limit).map(|(_, k)| k).collect();
        for key in &gone {
            t.dedupe.remove(key);
        }
        Ok(gone.len() as u64)
    }

    async fn purge_finished(&self, state: State, before_ms: i64, limit: usize) -> Result<u64> {
        debug_assert!(!state.is_active(), "only finished deliveries are purged");
        let mut t = self.tables();
        // Oldest event first (what the SQL backends' state index is ordered by).
        let mut old: Vec<(i64, i64)> = t
            .deliveries
            .iter()
            .filter(|(_, d)| d.state == state && d.updated_at < before_ms)
            .map(|(rid, d)| (d.event_rid, *rid))
            .collect();
        old.sort();
        let gone: Vec<i64> = old.into_iter().take(limit).map(|(_, rid)| rid).collect();
        let events: BTreeSet<i64> = gone.iter().map(|rid| t.deliveries[rid].event_rid).collect();
        for rid in &gone {
            t.delete_delivery(*rid);
        }
        // An event goes with its last delivery.
        for event_rid in events {
            if t.deliveries_of(event_rid).is_empty() {
                t.delete_event(event_rid);
            }
        }
        Ok(gone.len() as u64)
    }

    async fn purge_unrouted(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let mut t = self.tables();
        let gone: Vec<i64> = t
            .events
            .iter()
            .filter(|(rid, e)| e.received_at < before_ms && t.deliveries_of(**rid).is_empty())
            .map(|(rid, _)| *rid)
            .take(limit)
            .collect();
        for rid in &gone {
            t.delete_event(*rid);
        }
        Ok(gone.len() as u64)
    }

    async fn set_paused(&self, destination: &str, paused: bool) -> Result<()> {
        let mut t = self.tables();
        if paused {
            t.paused.insert(destination.to_owned());
        } else {
            t.paused.remove(destination);
        }
        Ok(())
    }

    async fn paused(&self) -> Result<Vec<String>> {
        Ok(self.tables().paused.iter().cloned().collect())
    }

    async fn take_tokens(&self, destination: &str, per_second: f64, want: u32, now_ms: i64) -> Result<u32> {
        let mut t = self.tables();
        let bucket = t.buckets.entry(destination.to_owned()).or_insert_with(|| Bucket::new(per_second, now_ms));
        Ok(bucket.take(per_second, want, now_ms))
    }

    async fn give_back_tokens(&self, destination: &str, per_second: f64, tokens: u32) -> Result<()> {
        if let Some(bucket) = self.tables().buckets.get_mut(destination) {
            bucket.give_back(per_second, tokens);
        }
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        (self.now)()
    }

    fn watch_remote(&self, wake: RemoteWake) {
        let _ = wake;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::conformance_tests!(MemStore::on_system_clock());
}

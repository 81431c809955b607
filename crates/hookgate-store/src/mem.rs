//! [`MemStore`]: the store's rules as plain synchronous code over ordered
//! maps, one mutex around them. It is the reference model of the protocol:
//! it passes the same conformance suite as SQLite and PostgreSQL, a property
//! test runs random operation sequences on it and on them and compares every
//! answer, and the simulation (`crates/hookgate/tests/simulation`) runs the
//! real dispatcher against it on virtual time. Nothing in it is durable;
//! nothing in it is hashed (ordered maps only), so one sequence of calls
//! always gives one sequence of answers.
//!
//! Each method says which statement of the SQL backends it mirrors; where the
//! rules are subtle (promotion of a queue's head, fencing a late outcome) the
//! comments say why, once, here.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use hookgate_core::{EventId, Headers, Key, State};

use crate::{
    Attempt, Bucket, Claim, Cursor, EventDetail, EventRecord, Ingested, ListFilter, NewEvent, Page, RemoteWake, Result,
    StateCount, Store, Verdict, page_limit,
};

/// Bugs that can be planted on purpose, each breaking one rule of the
/// protocol, so the simulation can show that its checker sees them
/// (`HOOKGATE_SIM_MUTANT`). All off in every real use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Planted {
    /// `finish` applies an outcome whatever its attempt number: a late
    /// outcome (its lease ended, the event was claimed again) moves the event.
    pub no_fencing: bool,
    /// `claim` takes any due active event, not only its queue's head.
    pub ignore_head: bool,
    /// Coalescing supersedes `delivering` events too, not only `pending` ones.
    pub supersede_delivering: bool,
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
    events: BTreeMap<i64, Row>,
    by_id: BTreeMap<EventId, i64>,
    /// (source, key) → (event id, expires at).
    dedupe: BTreeMap<(String, Vec<u8>), (EventId, i64)>,
    /// (event id, attempt) → the attempt.
    attempts: BTreeMap<(EventId, u32), Attempt>,
    paused: BTreeSet<String>,
    buckets: BTreeMap<String, Bucket>,
    next_rid: i64,
    next_seq: i64,
}

#[derive(Debug, Clone)]
struct Row {
    id: EventId,
    /// Queue position: storage order, renewed by a replay.
    seq: i64,
    source: String,
    destination: String,
    state: State,
    received_at: i64,
    updated_at: i64,
    headers: Headers,
    body: Bytes,
    dedupe_key: Option<Key>,
    order_key: Option<Key>,
    coalesce_key: Option<Key>,
    warnings: Vec<String>,
    duplicates: u64,
    /// Attempts over the event's life; the current claim's fencing token.
    attempts: u32,
    /// `attempts` at the last replay.
    round_base: u32,
    /// pending: when it is due; delivering: when the lease ends.
    due_at: Option<i64>,
    /// The first active event of its queue (always, without an order key).
    head: bool,
    superseded_by: Option<EventId>,
}

impl MemStore {
    /// An empty store whose clock is `now`.
    pub fn new(now: NowMs) -> MemStore {
        MemStore::with_planted(now, Planted::default())
    }

    /// An empty store with bugs planted (the simulation's mutants).
    pub fn with_planted(now: NowMs, planted: Planted) -> MemStore {
        MemStore { tables: Mutex::default(), now, planted }
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

    /// Every event's state, in storage order: what the simulation's checker reads at the end.
    pub fn states(&self) -> Vec<(EventId, State, Option<EventId>)> {
        self.tables().events.values().map(|r| (r.id.clone(), r.state, r.superseded_by.clone())).collect()
    }
}

impl Tables {
    fn row(&mut self, id: &EventId) -> Option<&mut Row> {
        let rid = *self.by_id.get(id)?;
        self.events.get_mut(&rid)
    }

    /// Make the first active event of a queue its head, if it is not already
    /// (the SQL backends' `promote`). Called wherever a queue's active set
    /// changes: ingest, an outcome that finishes the head, a supersede, a
    /// replay. A late outcome changes nothing, so the head stays where it is.
    fn promote(&mut self, source: &str, order_key: &Key) {
        let first = self
            .events
            .values_mut()
            .filter(|r| r.source == source && r.order_key.as_ref() == Some(order_key) && r.state.is_active())
            .min_by_key(|r| r.seq);
        if let Some(first) = first {
            first.head = true;
        }
    }

    fn record(&self, rid: i64) -> EventRecord {
        let r = &self.events[&rid];
        EventRecord {
            id: r.id.clone(),
            source: r.source.clone(),
            destination: r.destination.clone(),
            state: r.state,
            received_at_ms: r.received_at,
            updated_at_ms: r.updated_at,
            dedupe_key: r.dedupe_key.clone(),
            order_key: r.order_key.clone(),
            coalesce_key: r.coalesce_key.clone(),
            warnings: r.warnings.clone(),
            duplicates: r.duplicates,
            attempts: r.attempts,
            next_attempt_at_ms: if r.state == State::Pending { r.due_at } else { None },
            superseded_by: r.superseded_by.clone(),
        }
    }
}

#[async_trait]
impl Store for MemStore {
    /// Dedupe (the `dedupe` upsert: a live key answers with its original, an
    /// expired one is taken over), coalesce (every *pending* event of the
    /// coalesce key is superseded, and a superseded head hands its queue on),
    /// then the new event at the end of its queue.
    async fn ingest(&self, event: NewEvent) -> Result<Ingested> {
        let mut t = self.tables();
        let now = event.received_at_ms;
        if let Some(key) = &event.dedupe_key {
            let slot = (event.source.clone(), key.as_bytes().to_vec());
            match t.dedupe.get(&slot) {
                Some((original, expires_at)) if *expires_at > now => {
                    let original = original.clone();
                    if let Some(row) = t.row(&original) {
                        row.duplicates += 1;
                    }
                    return Ok(Ingested::Duplicate { original });
                }
                _ => {
                    t.dedupe.insert(slot, (event.id.clone(), now.saturating_add(event.dedupe_window_ms)));
                }
            }
        }
        let mut superseded = 0;
        if let Some(key) = &event.coalesce_key {
            let supersedes = |r: &Row| {
                r.state == State::Pending || (self.planted.supersede_delivering && r.state == State::Delivering)
            };
            let mut orphaned = BTreeSet::new();
            for row in t.events.values_mut() {
                if row.source == event.source && row.coalesce_key.as_ref() == Some(key) && supersedes(row) {
                    row.state = State::Superseded;
                    row.superseded_by = Some(event.id.clone());
                    row.updated_at = now;
                    row.due_at = None;
                    row.head = false;
                    superseded += 1;
                    if let Some(order_key) = &row.order_key {
                        orphaned.insert(order_key.clone());
                    }
                }
            }
            for order_key in orphaned.iter().filter(|k| Some(*k) != event.order_key.as_ref()) {
                t.promote(&event.source, order_key);
            }
        }
        t.next_rid += 1;
        t.next_seq += 1;
        let (rid, seq) = (t.next_rid, t.next_seq);
        t.by_id.insert(event.id.clone(), rid);
        t.events.insert(
            rid,
            Row {
                id: event.id.clone(),
                seq,
                source: event.source.clone(),
                destination: event.destination.clone(),
                state: State::Pending,
                received_at: now,
                updated_at: now,
                headers: event.headers,
                body: event.body,
                dedupe_key: event.dedupe_key,
                order_key: event.order_key.clone(),
                coalesce_key: event.coalesce_key,
                warnings: event.warnings,
                duplicates: 0,
                attempts: 0,
                round_base: 0,
                due_at: Some(now),
                head: event.order_key.is_none(),
                superseded_by: None,
            },
        );
        if let Some(order_key) = &event.order_key {
            t.promote(&event.source, order_key);
        }
        Ok(Ingested::Accepted { id: event.id, superseded })
    }

    /// Due heads of the destination, soonest first (`due_at`, then `seq`),
    /// leased until `now + lease`; their attempt counted. A `delivering`
    /// head is due again when its lease ends: the claim that held it is over.
    async fn claim(&self, destination: &str, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>> {
        let mut t = self.tables();
        if t.paused.contains(destination) {
            return Ok(Vec::new());
        }
        let ignore_head = self.planted.ignore_head;
        let mut due: Vec<(i64, i64, i64)> = t
            .events
            .iter()
            .filter(|(_, r)| r.destination == destination && (r.head || ignore_head) && r.state.is_active())
            .filter_map(|(rid, r)| r.due_at.filter(|at| *at <= now_ms).map(|at| (at, r.seq, *rid)))
            .collect();
        due.sort_unstable();
        let mut claims = Vec::new();
        for (_, _, rid) in due.into_iter().take(limit) {
            let r = t.events.get_mut(&rid).expect("a row just listed");
            r.state = State::Delivering;
            r.attempts += 1;
            r.due_at = Some(now_ms.saturating_add(lease_ms));
            r.updated_at = now_ms;
            claims.push(Claim {
                id: r.id.clone(),
                source: r.source.clone(),
                destination: r.destination.clone(),
                order_key: r.order_key.clone(),
                received_at_ms: r.received_at,
                headers: r.headers.clone(),
                body: r.body.clone(),
                attempt: r.attempts,
                round_attempt: r.attempts - r.round_base,
            });
        }
        Ok(claims)
    }

    /// The attempt is recorded whatever happens (it happened); the event
    /// moves only while the claim is current — `delivering`, with this
    /// attempt's number — which fences an outcome whose lease ended. A
    /// finished head hands its queue on; a retried one stays its head.
    async fn finish(&self, id: &EventId, attempt: Attempt, verdict: Verdict, now_ms: i64) -> Result<bool> {
        let mut t = self.tables();
        t.attempts.entry((id.clone(), attempt.attempt)).or_insert_with(|| attempt.clone());
        let (state, due_at) = verdict.next_state();
        let no_fencing = self.planted.no_fencing;
        let Some(row) = t.row(id) else { return Ok(false) };
        let current = row.state == State::Delivering && (row.attempts == attempt.attempt || no_fencing);
        if !current {
            return Ok(false);
        }
        row.state = state;
        row.due_at = due_at;
        row.updated_at = now_ms;
        row.head = state == State::Pending;
        let queue = (row.source.clone(), row.order_key.clone());
        if let (source, Some(order_key)) = queue
            && state != State::Pending
        {
            t.promote(&source, &order_key);
        }
        Ok(true)
    }

    async fn next_due(&self, destination: &str, now_ms: i64) -> Result<Option<i64>> {
        let t = self.tables();
        if t.paused.contains(destination) {
            return Ok(None);
        }
        Ok(t.events
            .values()
            .filter(|r| r.destination == destination && r.head && r.state.is_active())
            .filter_map(|r| r.due_at)
            .filter(|at| *at > now_ms)
            .min())
    }

    /// A finished event goes to the back of its queue (a new `seq`), due now,
    /// its attempts counted afresh for `max_attempts`.
    async fn replay(&self, id: &EventId, now_ms: i64) -> Result<bool> {
        let mut t = self.tables();
        t.next_seq += 1;
        let seq = t.next_seq;
        let Some(row) = t.row(id) else { return Ok(false) };
        if row.state.is_active() {
            return Ok(false);
        }
        row.state = State::Pending;
        row.seq = seq;
        row.round_base = row.attempts;
        row.due_at = Some(now_ms);
        row.superseded_by = None;
        row.updated_at = now_ms;
        row.head = row.order_key.is_none();
        let queue = (row.source.clone(), row.order_key.clone());
        if let (source, Some(order_key)) = queue {
            t.promote(&source, &order_key);
        }
        Ok(true)
    }

    async fn get(&self, id: &EventId) -> Result<Option<EventDetail>> {
        let t = self.tables();
        let Some(&rid) = t.by_id.get(id) else { return Ok(None) };
        let row = &t.events[&rid];
        let attempts = t.attempts.range((id.clone(), 0)..=(id.clone(), u32::MAX)).map(|(_, a)| a.clone()).collect();
        Ok(Some(EventDetail { record: t.record(rid), headers: row.headers.clone(), body: row.body.clone(), attempts }))
    }

    async fn list(&self, filter: &ListFilter) -> Result<Page> {
        let t = self.tables();
        let limit = page_limit(filter);
        let below = filter.cursor.map_or(i64::MAX, Cursor::row);
        let matching: Vec<i64> = t
            .events
            .range(..below)
            .rev()
            .filter(|(_, r)| {
                filter.source.as_ref().is_none_or(|s| &r.source == s)
                    && filter.state.is_none_or(|s| r.state == s)
                    && filter.order_key.as_ref().is_none_or(|k| r.order_key.as_ref() == Some(k))
                    && filter.dedupe_key.as_ref().is_none_or(|k| r.dedupe_key.as_ref() == Some(k))
                    && filter.since_ms.is_none_or(|at| r.received_at >= at)
                    && filter.until_ms.is_none_or(|at| r.received_at < at)
            })
            .map(|(rid, _)| *rid)
            .take(limit + 1)
            .collect();
        let more = matching.len() > limit;
        let shown: Vec<i64> = matching.into_iter().take(limit).collect();
        let next_cursor = if more { shown.last().map(|rid| Cursor::before_row(*rid)) } else { None };
        Ok(Page { events: shown.into_iter().map(|rid| t.record(rid)).collect(), next_cursor })
    }

    async fn stats(&self) -> Result<Vec<StateCount>> {
        let t = self.tables();
        let mut counts: BTreeMap<(String, State), u64> = BTreeMap::new();
        for r in t.events.values() {
            *counts.entry((r.source.clone(), r.state)).or_default() += 1;
        }
        Ok(counts.into_iter().map(|((source, state), count)| StateCount { source, state, count }).collect())
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
        debug_assert!(!state.is_active(), "only finished events are purged");
        let mut t = self.tables();
        let mut old: Vec<(i64, i64)> = t
            .events
            .iter()
            .filter(|(_, r)| r.state == state && r.updated_at < before_ms)
            .map(|(rid, r)| (r.updated_at, *rid))
            .collect();
        old.sort();
        let gone: Vec<i64> = old.into_iter().take(limit).map(|(_, rid)| rid).collect();
        for rid in &gone {
            let row = t.events.remove(rid).expect("a row just listed");
            t.by_id.remove(&row.id);
            let attempts: Vec<_> =
                t.attempts.range((row.id.clone(), 0)..=(row.id.clone(), u32::MAX)).map(|(k, _)| k.clone()).collect();
            for key in attempts {
                t.attempts.remove(&key);
            }
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

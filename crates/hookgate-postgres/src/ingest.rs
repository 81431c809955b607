//! Group commit on PostgreSQL: ingests waiting at the same moment share one
//! transaction, and each step of it is one set-based statement over the
//! whole batch (arrays unnested server-side), not one per event. A batch:
//! finds the queues its coalesce keys reach; takes the advisory locks of all
//! its queues ((destination, source, order key)), dedupe and coalesce keys,
//! in one sorted order; in one statement, claims its dedupe keys, stores the
//! winning events, then their deliveries (choosing heads), superseding what they coalesce;
//! hands on the queues whose heads were superseded; commits; then announces the
//! destinations with new work (see `notify.rs`). The statements after the
//! first are pipelined: one round trip. Batches run in lanes ([`Lanes`]),
//! one in flight per lane, so one commit's round trip does not stall the next.
//!
//! No deadlock: every row a batch updates is reached under one of those
//! locks (a queue's rows and head, a coalesce key's pending rows, a dedupe
//! key's row and count), and they are all taken before any row. A batch
//! that fails on a statement (not on the connection) is split in halves and
//! retried, so one event the database refuses never fails the others.

use std::collections::{BTreeSet, HashMap};

use deadpool_postgres::Pool;
use hookgate_store::{Ingested, NewDelivery, NewEvent, Result, codec, parse_id};
use tokio::sync::{mpsc, oneshot};

use crate::notify::Notifier;
use crate::{BatchError, lock_key};

/// Events per transaction, at most.
pub const MAX_BATCH: usize = 512;
/// Ingests waiting for a batch, at most, in all lanes together: four full
/// batches. Beyond, a caller waits `ADMISSION_WAIT` and is then refused
/// (busy), not queued without bound.
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

pub struct Pending {
    pub event: NewEvent,
    pub reply: oneshot::Sender<Result<Ingested>>,
}

/// Batches are formed and committed in lanes, one batch in flight per lane,
/// each on a connection of its own. An event's lane follows its queue (its
/// order key; else its dedupe key): two batches in flight at once then hold
/// different queues' locks, instead of each waiting for the other's commit
/// (with a thousand keys, two batches of a hundred events shared some key
/// nearly always, and ran one after the other).
pub struct Lanes {
    lanes: Vec<mpsc::Sender<Pending>>,
}

impl Lanes {
    pub fn start(pool: Pool, lanes: usize, notifier: Notifier) -> Self {
        let lanes = lanes.max(1);
        let capacity = (QUEUE_CAPACITY / lanes).max(MAX_BATCH);
        let lanes = (0..lanes)
            .map(|_| {
                let (tx, rx) = mpsc::channel(capacity);
                tokio::spawn(lane(pool.clone(), rx, notifier.clone()));
                tx
            })
            .collect();
        Lanes { lanes }
    }

    pub fn lane_for(&self, event: &NewEvent) -> &mpsc::Sender<Pending> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        event.source.hash(&mut hasher);
        match (&event.order_key, &event.dedupe_key) {
            (Some(key), _) | (None, Some(key)) => key.as_bytes().hash(&mut hasher),
            (None, None) => event.id.as_str().hash(&mut hasher),
        }
        &self.lanes[(hasher.finish() % self.lanes.len() as u64) as usize]
    }
}

async fn lane(pool: Pool, mut queue: mpsc::Receiver<Pending>, notifier: Notifier) {
    // While a batch commits, arrivals pile up in the queue and the next batch gets bigger.
    while let Some(first) = queue.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let events: Vec<&NewEvent> = batch.iter().map(|p| &p.event).collect();
        let outcomes = commit_isolating(&pool, &events).await;
        let destinations: BTreeSet<&str> = events
            .iter()
            .zip(&outcomes)
            .filter(|(_, outcome)| matches!(outcome, Ok(Ingested::Accepted { .. })))
            .flat_map(|(event, _)| event.deliveries.iter().map(|d| d.destination.as_str()))
            .collect();
        destinations.into_iter().for_each(|d| notifier.work_for(d));
        for (pending, outcome) in batch.into_iter().zip(outcomes) {
            let _ = pending.reply.send(outcome);
        }
    }
}

/// Commit a batch; if the database refuses one of its statements, commit
/// each half on its own, and so on down, so the events it refuses are found
/// in a few transactions and every other event is stored.
fn commit_isolating<'a>(
    pool: &'a Pool,
    events: &'a [&'a NewEvent],
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<Result<Ingested>>> + Send + 'a>> {
    Box::pin(async move {
        match commit(pool, events).await {
            Ok(outcomes) => outcomes.into_iter().map(Ok).collect(),
            Err(BatchError::Statement(error)) if events.len() > 1 => {
                tracing::debug!(%error, events = events.len(), "ingest batch refused; committing its halves apart");
                let (left, right) = events.split_at(events.len() / 2);
                let mut outcomes = commit_isolating(pool, left).await;
                outcomes.extend(commit_isolating(pool, right).await);
                outcomes
            }
            Err(error) => {
                if let (BatchError::Statement(_), [event]) = (&error, events) {
                    tracing::error!(event = %event.id, %error, "the database refused an event");
                } else {
                    // A lost connection or a database gone: every caller hears it, and the
                    // HTTP side logs the fault once for all of them (`FaultLog`), not per batch.
                    tracing::debug!(%error, events = events.len(), "ingest batch failed");
                }
                events.iter().map(|_| Err(error.clone().into_store_error())).collect()
            }
        }
    })
}

/// What a batch sends: each dedupe key once (the first copy in the batch
/// stands for the others, which are answered as its duplicates), in batch order.
struct Plan<'a> {
    /// Events sent to the database, with how many copies of it the batch holds.
    sent: Vec<(&'a NewEvent, i32)>,
    /// For every event of the batch, its place in `sent` (its own, or its first copy's).
    stands_for: Vec<usize>,
}

impl<'a> Plan<'a> {
    fn new(events: &[&'a NewEvent]) -> Self {
        let mut first: HashMap<(&str, &[u8]), usize> = HashMap::new();
        let mut sent: Vec<(&'a NewEvent, i32)> = Vec::with_capacity(events.len());
        let mut stands_for = Vec::with_capacity(events.len());
        for event in events {
            let copy_of = event.dedupe_key.as_ref().and_then(|k| first.get(&(event.source.as_str(), k.as_bytes())));
            match copy_of {
                Some(&n) => {
                    sent[n].1 += 1;
                    stands_for.push(n);
                }
                None => {
                    if let Some(key) = &event.dedupe_key {
                        first.insert((event.source.as_str(), key.as_bytes()), sent.len());
                    }
                    stands_for.push(sent.len());
                    sent.push((*event, 1));
                }
            }
        }
        Plan { sent, stands_for }
    }
}

/// The queues of waiting deliveries a batch's coalesce keys would supersede:
/// their locks are taken too, so their heads can be handed on.
const QUEUES_OF_COALESCED: &str = "SELECT DISTINCT d.destination, d.source, d.order_key
     FROM unnest($1::text[], $2::text[], $3::bytea[]) AS k(destination, source, coalesce_key)
     JOIN deliveries d ON d.destination = k.destination AND d.source = k.source AND d.coalesce_key = k.coalesce_key
     WHERE d.state = 'pending' AND d.order_key IS NOT NULL";

/// The arrays `STORE` takes, by name (`crate::named`): the statement says
/// `$order_keys`, the binding `("order_keys", &order)`, and both are numbered
/// from this list. `STORE_LEAN` takes the same but the held queues (`lean_arrays`).
const STORE_ARRAYS: [&str; 30] = [
    "ord",
    "ids",
    "sources",
    "received",
    "headers",
    "bodies",
    "dedupe_keys",
    "order_keys",
    "coalesce_keys",
    "event_types",
    "warnings",
    "routings",
    "traces",
    "copies",
    "unrouted",
    "d_ord",
    "d_ids",
    "d_destinations",
    "d_routes",
    "d_order_keys",
    "d_coalesce_keys",
    "held_destinations",
    "held_sources",
    "held_keys",
    "d_place",
    "expiry",
    "now",
    "d_sources",
    "d_received",
    "d_event_ids",
];

/// What `STORE_LEAN` binds: `STORE_ARRAYS` but the held queues (it supersedes nothing).
fn lean_arrays() -> &'static [&'static str] {
    static LEAN: std::sync::OnceLock<Vec<&str>> = std::sync::OnceLock::new();
    LEAN.get_or_init(|| STORE_ARRAYS.iter().copied().filter(|name| !name.starts_with("held_")).collect())
}

/// `STORE` and `STORE_LEAN` with their names numbered, once.
fn store_statement(lean: bool) -> &'static str {
    static FULL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    static LEAN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if lean {
        LEAN.get_or_init(|| crate::named::numbered(STORE_LEAN, lean_arrays()))
    } else {
        FULL.get_or_init(|| crate::named::numbered(STORE, &STORE_ARRAYS))
    }
}

/// The start both store statements share: claim each dedupe key, or take
/// over an expired one (a live key is left alone); which events won their
/// key (those whose claim returned) and, for the others, the event holding
/// it (read from the statement's snapshot, taken under the key's lock:
/// nobody changes a live key meanwhile); store the winners (written once,
/// never updated); the deliveries wanted for them, each with its event's
/// place, time and id. The batch sends each (source, dedupe key) once
/// (`Plan`), so no key is claimed twice in the statement.
macro_rules! store_events {
    () => {
        "WITH claimed AS (
        INSERT INTO dedupe AS d (source, key, event_id, expires_at)
        SELECT k.source, k.key, k.id, k.expires_at
        FROM unnest($sources::text[], $dedupe_keys::bytea[], $ids::text[], $expiry::bigint[])
             AS k(source, key, id, expires_at)
        WHERE k.key IS NOT NULL
        ON CONFLICT (source, key) DO UPDATE SET event_id = EXCLUDED.event_id, expires_at = EXCLUDED.expires_at
        WHERE d.expires_at <= $now::bigint
        RETURNING d.event_id
     ), input AS (
        -- `IN`, a hashed subplan: write connections plan without hash joins
        -- (`INDEXED_PLANS`), and a join with `claimed` would be a nested loop.
        -- A winner's row id is drawn here, in batch order, so its deliveries find it by
        -- place (`rids`), not by a join with the insert's `RETURNING`.
        SELECT i.*, CASE WHEN i.dedupe_key IS NULL THEN NULL WHEN i.won THEN i.id ELSE d.event_id END AS holder,
               CASE WHEN i.won THEN nextval('events_rid_seq') END AS rid
        FROM (SELECT i.*, (i.dedupe_key IS NULL OR i.id IN (SELECT event_id FROM claimed)) AS won
              FROM unnest($ord::bigint[], $ids::text[], $sources::text[], $received::bigint[], $headers::bytea[],
                          $bodies::bytea[], $dedupe_keys::bytea[], $order_keys::bytea[], $coalesce_keys::bytea[],
                          $event_types::text[], $warnings::text[], $routings::text[], $traces::text[],
                          $copies::int[], $unrouted::smallint[])
                   AS i(ord, id, source, now, headers, body, dedupe_key, order_key, coalesce_key, event_type,
                        warnings, routing, trace, copies, unrouted)) i
        LEFT JOIN dedupe d ON NOT i.won AND d.source = i.source AND d.key = i.dedupe_key
     ), stored AS (
        SELECT * FROM input WHERE won
     ), events_stored AS (
        INSERT INTO events (rid, id, source, received_at, headers, body, dedupe_key, order_key, coalesce_key,
                            event_type, warnings, routing, trace, unrouted)
        SELECT rid, id, source, now, headers, body, dedupe_key, order_key, coalesce_key, event_type, warnings,
               routing, trace, unrouted
        FROM stored
     ), rids AS MATERIALIZED (
        -- Each sent event's row id at its place (`ord` is 0, 1, 2…), NULL where it lost its key.
        SELECT array_agg(rid ORDER BY ord) AS of FROM input
     ), wanted AS (
        -- Write connections plan without hash joins, so joining two of the batch's
        -- row sets is a nested loop (~50 ms at 512 events, under the batch's locks):
        -- a delivery takes its event's source, time and id from arrays beside its
        -- own, and its row id from `rids` by place.
        SELECT w.*, rids.of[w.ord + 1] AS event_rid
        FROM unnest($d_ord::bigint[], $d_ids::text[], $d_destinations::text[], $d_routes::text[],
                    $d_order_keys::bytea[], $d_coalesce_keys::bytea[], $d_place::bigint[], $d_sources::text[],
                    $d_received::bigint[], $d_event_ids::text[])
             AS w(ord, id, destination, route, order_key, coalesce_key, place, source, now, event_id)
        CROSS JOIN rids
        WHERE rids.of[w.ord + 1] IS NOT NULL
     ), base AS MATERIALIZED (
        SELECT nextval('deliveries_seq') * 1048576 AS seq
     ), "
    };
}

/// A new delivery's queue when it is stored: one index probe (LIMIT keeps it
/// a per-row lookup, never a scan of every queue), from the queue's newest
/// end (its oldest entries are those of delivered rows, dead until vacuum
/// comes by). `busy.rid IS NULL`: nothing in the queue is owed.
macro_rules! busy_queue {
    () => {
        "LEFT JOIN LATERAL (
            SELECT f.rid FROM deliveries f
            WHERE f.destination = s.destination AND f.source = s.source AND f.order_key = s.order_key
              AND f.state IN ('pending', 'delivering')
            ORDER BY f.seq DESC LIMIT 1
        ) busy ON true"
    };
}

/// The end of a deliveries insert: rows in batch order, so each event's
/// deliveries take their row ids in its routes' order (the order an event's
/// deliveries are read back in). Without it they come in whatever order the
/// plan leaves them (the queue numbering sorts them by destination).
macro_rules! in_route_order {
    () => {
        "
        ORDER BY s.place
     )"
    };
}

/// Count the copies: each holder's, the batch's own copies of an event it
/// stored included. Only rows that add a copy are looked at (a winner alone
/// in the batch adds none).
macro_rules! count_copies {
    () => {
        ", counted AS (
        INSERT INTO event_duplicates AS n (event_id, n, last_at)
        SELECT holder, SUM(CASE WHEN won THEN copies - 1 ELSE copies END), MAX(now)
        FROM input WHERE dedupe_key IS NOT NULL AND holder IS NOT NULL AND (NOT won OR copies > 1)
          -- A key outlives its event (retention): a copy of a deleted event counts nowhere.
          -- (An original stored by this very statement is not in `events` to it yet.)
          AND (EXISTS (SELECT 1 FROM stored s WHERE s.id = input.holder)
               OR EXISTS (SELECT 1 FROM events e WHERE e.id = input.holder))
        GROUP BY holder HAVING SUM(CASE WHEN won THEN copies - 1 ELSE copies END) > 0
        ON CONFLICT (event_id) DO UPDATE SET n = n.n + EXCLUDED.n, last_at = GREATEST(n.last_at, EXCLUDED.last_at)
     )"
    };
}

/// Everything after the locks, set-based, for a batch that coalesces: the
/// dedupe keys, the events and their deliveries (`store_events!`); each delivery supersedes
/// the waiting deliveries its destination, source and coalesce key name (in
/// queues this batch holds the lock of), and is stored last in its queue
/// (choosing heads); count the copies. One row per event sent: its place,
/// whether it was stored, its id or its original's, and how many deliveries
/// it superseded.
const STORE: &str = concat!(
    store_events!(),
    "chain AS (
        -- Within the batch, each delivery of a coalesce key is superseded by the next
        -- one's event, and the first supersedes what waits outside the batch (`nth`).
        -- Windows over `wanted` itself: a join between two of the batch's row sets would
        -- be a nested loop (write connections plan without hash joins).
        SELECT w.*, CASE WHEN w.coalesce_key IS NOT NULL THEN lead(w.event_id) OVER k END AS superseded_by,
               CASE WHEN w.coalesce_key IS NOT NULL THEN row_number() OVER k END AS nth
        FROM wanted w
        -- (`place` after `ord`: an event's deliveries in route order, should two share a key.)
        WINDOW k AS (PARTITION BY w.destination, w.source, w.coalesce_key ORDER BY w.ord, w.place)
     ), held AS (
        SELECT * FROM unnest($held_destinations::text[], $held_sources::text[], $held_keys::bytea[])
             AS h(destination, source, order_key)
     ), superseded AS (
        -- A queue this batch does not hold the lock of is left alone. (`IN` in an
        -- expression: a hashed subplan, not a scan of `held` per row.)
        UPDATE deliveries e
           SET state = 'superseded', superseded_by = c.event_id, updated_at = c.now, due_at = NULL, head = false
          FROM chain c
         WHERE c.nth = 1 AND e.destination = c.destination AND e.source = c.source
           AND e.coalesce_key = c.coalesce_key AND e.state = 'pending'
           AND (e.order_key IS NULL
                OR (e.destination, e.source, e.order_key) IN (SELECT destination, source, order_key FROM held))
        RETURNING c.ord
     ), placed AS (
        -- Each new delivery left pending, with its place among the batch's own left
        -- pending in its queue (1: the first).
        SELECT c.*, count(*) FILTER (WHERE c.superseded_by IS NULL)
                    OVER (PARTITION BY c.destination, c.source, c.order_key ORDER BY c.ord, c.place
                          ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS waiting_place
        FROM chain c
     ), inserted AS (
        INSERT INTO deliveries (id, event_rid, source, destination, route, order_key, coalesce_key, seq, state,
                                updated_at, due_at, superseded_by, head)
        SELECT s.id, s.event_rid, s.source, s.destination, s.route, s.order_key, s.coalesce_key, base.seq + s.place,
               CASE WHEN s.superseded_by IS NULL THEN 'pending' ELSE 'superseded' END, s.now,
               CASE WHEN s.superseded_by IS NULL THEN s.now END, s.superseded_by,
               -- A head: without an order key, or first of the batch's in a queue with no
               -- active delivery (the queue's lock is held: no one else changes that meanwhile).
               s.superseded_by IS NULL AND (s.order_key IS NULL OR (s.waiting_place = 1 AND busy.rid IS NULL))
        FROM placed s CROSS JOIN base
        ",
    busy_queue!(),
    in_route_order!(),
    count_copies!(),
    "
     -- One row per event sent, and what it superseded: the waiting deliveries it took the
     -- place of, and those of the batch before it (its own deliveries that are not the
     -- first of their key). Grouped, not a count per event (a loop over the batch per row).
     SELECT u.ord, bool_or(u.won), max(u.answer), sum(u.superseding)
     FROM (SELECT ord, won, CASE WHEN won THEN id ELSE holder END AS answer, 0 AS superseding FROM input
           UNION ALL SELECT ord, NULL, NULL, 1 FROM superseded
           UNION ALL SELECT ord, NULL, NULL, 1 FROM chain WHERE nth > 1) u
     GROUP BY u.ord"
);

/// `STORE` for a batch with no coalesce key, which supersedes nothing: every
/// delivery is stored pending, last in its queue, a head when it is the
/// batch's first in a queue with nothing owed. The same rows as `STORE` gives
/// such a batch, from a plan without the coalescing steps, whose start and
/// per-event subqueries were a good part of a small batch's cost.
const STORE_LEAN: &str = concat!(
    store_events!(),
    "inserted AS (
        INSERT INTO deliveries (id, event_rid, source, destination, route, order_key, coalesce_key, seq, state,
                                updated_at, due_at, head)
        SELECT s.id, s.event_rid, s.source, s.destination, s.route, s.order_key, s.coalesce_key, base.seq + s.place,
               'pending', s.now, s.now, s.order_key IS NULL OR (s.nth = 1 AND busy.rid IS NULL)
        FROM (SELECT w.*, row_number() OVER (PARTITION BY w.destination, w.source, w.order_key ORDER BY w.ord, w.place)
                          AS nth
              FROM wanted w) s
        CROSS JOIN base
        ",
    busy_queue!(),
    in_route_order!(),
    count_copies!(),
    "
     SELECT i.ord, i.won, CASE WHEN i.won THEN i.id ELSE i.holder END, 0::bigint FROM input i"
);

async fn commit(pool: &Pool, events: &[&NewEvent]) -> Result<Vec<Ingested>, BatchError> {
    let plan = Plan::new(events);
    let client = pool.get().await.map_err(|e| BatchError::Connection(crate::explain(&e)))?;
    let sent = &plan.sent;
    // Every delivery sent, with its event's place in `sent` and its own place in the
    // batch (its queue position within the batch: `seq` grows in batch order per queue).
    let deliveries: Vec<(i64, &NewDelivery)> =
        sent.iter().enumerate().flat_map(|(n, (e, _))| e.deliveries.iter().map(move |d| (n as i64, d))).collect();

    // The queues this batch changes: its own, and those of the deliveries it may supersede.
    let mut queues: BTreeSet<(String, String, Vec<u8>)> = deliveries
        .iter()
        .filter_map(|(n, d)| {
            let source = &sent[*n as usize].0.source;
            d.order_key.as_ref().map(|k| (d.destination.clone(), source.clone(), k.as_bytes().to_vec()))
        })
        .collect();
    let coalescing: Vec<&(i64, &NewDelivery)> = deliveries.iter().filter(|(_, d)| d.coalesce_key.is_some()).collect();
    if !coalescing.is_empty() {
        let destinations: Vec<&str> = coalescing.iter().map(|(_, d)| d.destination.as_str()).collect();
        let sources: Vec<&str> = coalescing.iter().map(|(n, _)| sent[*n as usize].0.source.as_str()).collect();
        let keys: Vec<&[u8]> =
            coalescing.iter().filter_map(|(_, d)| d.coalesce_key.as_ref().map(|k| k.as_bytes())).collect();
        // Read before the transaction, without locks: a queue that gains a waiting
        // delivery of the key meanwhile is not locked, and its delivery is not superseded.
        let statement = client.prepare_cached(QUEUES_OF_COALESCED).await?;
        for row in client.query(&statement, &[&destinations, &sources, &keys]).await? {
            queues.insert((row.get(0), row.get(1), row.get(2)));
        }
    }
    let mut locks: BTreeSet<i64> =
        queues.iter().map(|(destination, source, key)| lock_key("o", &[destination, source], key)).collect();
    for (e, _) in sent {
        locks.extend(e.dedupe_key.as_ref().map(|k| lock_key("d", &[&e.source], k.as_bytes())));
    }
    for (n, d) in &coalescing {
        let source = &sent[*n as usize].0.source;
        locks.extend(d.coalesce_key.as_ref().map(|k| lock_key("c", &[&d.destination, source], k.as_bytes())));
    }
    let locks: Vec<i64> = locks.into_iter().collect();

    // Until when each event's dedupe key holds (unused without a key).
    let expiry: Vec<i64> = sent.iter().map(|(e, _)| e.received_at_ms.saturating_add(e.dedupe_window_ms)).collect();
    // A key is taken over when it expired before the earliest event of the batch arrived:
    // a copy that came within the batch's span (milliseconds) after its window ended may be
    // called a duplicate, never the reverse (SQLite judges each event at its own arrival).
    let now = sent.iter().map(|(e, _)| e.received_at_ms).min().unwrap_or_default();

    let ord: Vec<i64> = (0..sent.len() as i64).collect();
    let ids: Vec<&str> = sent.iter().map(|(e, _)| e.id.as_str()).collect();
    let sources: Vec<&str> = sent.iter().map(|(e, _)| e.source.as_str()).collect();
    let received: Vec<i64> = sent.iter().map(|(e, _)| e.received_at_ms).collect();
    let headers: Vec<Vec<u8>> = sent.iter().map(|(e, _)| codec::encode_headers(&e.headers)).collect();
    let bodies: Vec<&[u8]> = sent.iter().map(|(e, _)| &e.body[..]).collect();
    let key = |k: &Option<hookgate_core::Key>| k.as_ref().map(|k| k.as_bytes().to_vec());
    let dedupe: Vec<Option<Vec<u8>>> = sent.iter().map(|(e, _)| key(&e.dedupe_key)).collect();
    let order: Vec<Option<Vec<u8>>> = sent.iter().map(|(e, _)| key(&e.order_key)).collect();
    let coalesce: Vec<Option<Vec<u8>>> = sent.iter().map(|(e, _)| key(&e.coalesce_key)).collect();
    let event_types: Vec<Option<&str>> = sent.iter().map(|(e, _)| e.event_type.as_deref()).collect();
    let warnings: Vec<Option<String>> = sent.iter().map(|(e, _)| codec::encode_warnings(&e.warnings)).collect();
    let routings: Vec<String> = sent.iter().map(|(e, _)| codec::encode_routing(&e.routing)).collect();
    let traces: Vec<Option<&str>> = sent.iter().map(|(e, _)| e.trace.as_deref()).collect();
    let copies: Vec<i32> = sent.iter().map(|(_, n)| *n).collect();
    let unrouted: Vec<i16> = sent.iter().map(|(e, _)| i16::from(e.deliveries.is_empty())).collect();
    let d_ord: Vec<i64> = deliveries.iter().map(|(n, _)| *n).collect();
    // Places below the 2^20 a batch's positions are spaced by (`STORE`'s `base`).
    debug_assert!(deliveries.len() < 1 << 20, "a batch's deliveries fit its queue positions");
    let d_place: Vec<i64> = (0..deliveries.len() as i64).collect();
    let d_ids: Vec<&str> = deliveries.iter().map(|(_, d)| d.id.as_str()).collect();
    let d_destinations: Vec<&str> = deliveries.iter().map(|(_, d)| d.destination.as_str()).collect();
    let d_routes: Vec<&str> = deliveries.iter().map(|(_, d)| d.route.as_str()).collect();
    let d_order_keys: Vec<Option<Vec<u8>>> = deliveries.iter().map(|(_, d)| key(&d.order_key)).collect();
    let d_coalesce_keys: Vec<Option<Vec<u8>>> = deliveries.iter().map(|(_, d)| key(&d.coalesce_key)).collect();
    let d_sources: Vec<&str> = deliveries.iter().map(|(n, _)| sent[*n as usize].0.source.as_str()).collect();
    let d_received: Vec<i64> = deliveries.iter().map(|(n, _)| sent[*n as usize].0.received_at_ms).collect();
    let d_event_ids: Vec<&str> = deliveries.iter().map(|(n, _)| sent[*n as usize].0.id.as_str()).collect();
    let held_destinations: Vec<&str> = queues.iter().map(|(d, _, _)| d.as_str()).collect();
    let held_sources: Vec<&str> = queues.iter().map(|(_, s, _)| s.as_str()).collect();
    let held_keys: Vec<&[u8]> = queues.iter().map(|(_, _, k)| k.as_slice()).collect();

    // A batch with no coalesce key supersedes nothing: the lean statement.
    let lean = coalescing.is_empty();
    let binds: [(&str, &(dyn tokio_postgres::types::ToSql + Sync)); 30] = [
        ("ord", &ord),
        ("ids", &ids),
        ("sources", &sources),
        ("received", &received),
        ("headers", &headers),
        ("bodies", &bodies),
        ("dedupe_keys", &dedupe),
        ("order_keys", &order),
        ("coalesce_keys", &coalesce),
        ("event_types", &event_types),
        ("warnings", &warnings),
        ("routings", &routings),
        ("traces", &traces),
        ("copies", &copies),
        ("unrouted", &unrouted),
        ("d_ord", &d_ord),
        ("d_ids", &d_ids),
        ("d_destinations", &d_destinations),
        ("d_routes", &d_routes),
        ("d_order_keys", &d_order_keys),
        ("d_coalesce_keys", &d_coalesce_keys),
        ("held_destinations", &held_destinations),
        ("held_sources", &held_sources),
        ("held_keys", &held_keys),
        ("d_place", &d_place),
        ("expiry", &expiry),
        ("now", &now),
        ("d_sources", &d_sources),
        ("d_received", &d_received),
        ("d_event_ids", &d_event_ids),
    ];
    let names: &[&str] = if lean { lean_arrays() } else { &STORE_ARRAYS };
    let binds: Vec<_> = binds.into_iter().filter(|(name, _)| names.contains(name)).collect();
    let store_params = crate::named::by_name(names, &binds);
    let (lock, store, promote) = futures_util::try_join!(
        client.prepare_cached("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k"),
        client.prepare_cached(store_statement(lean)),
        client.prepare_cached(crate::PROMOTE),
    )?;
    let promote_after = vec![0i64; held_keys.len()];
    // One round trip: BEGIN, the locks (unnest keeps the array's sorted order),
    // the dedupe keys, events and deliveries (one statement), the heads of the queues
    // coalescing reached, COMMIT, sent back to back; so the locks are held for
    // the statements' time, not for round trips. After a statement fails the
    // rest are refused and COMMIT ends the transaction as a rollback.
    let pipeline = futures_util::try_join!(
        client.batch_execute("BEGIN"),
        async { if locks.is_empty() { Ok(0) } else { client.execute(&lock, &[&locks]).await } },
        client.query(&store, &store_params[..]),
        async {
            // The heads of superseded deliveries hand their queues on (`STORE` chose
            // the batch's heads seeing them still waiting).
            if coalescing.is_empty() {
                Ok(0)
            } else {
                client.execute(&promote, &[&held_destinations, &held_sources, &held_keys, &promote_after]).await
            }
        },
        client.batch_execute("COMMIT"),
    );
    let rows = match pipeline {
        Ok((_, _, rows, _, _)) => rows,
        Err(error) => {
            crate::end_transaction(&client).await;
            return Err(error.into());
        }
    };
    let mut answers: Vec<Option<Ingested>> = vec![None; sent.len()];
    for row in &rows {
        let ord = row.get::<_, i64>(0) as usize;
        // No event id would be a copy whose original the statement could not see: an error
        // for this batch (split and retried), never a panic that stops the lane.
        let id = row
            .try_get::<_, Option<&str>>(2)
            .ok()
            .flatten()
            .ok_or_else(|| BatchError::Statement("a copy's original was not found".into()))
            .and_then(|id| parse_id(id).map_err(|e| BatchError::Statement(e.to_string())))?;
        let answer = if row.get::<_, bool>(1) {
            Ingested::Accepted { id, superseded: row.get::<_, i64>(3) as u64 }
        } else {
            Ingested::Duplicate { original: id }
        };
        if let Some(slot) = answers.get_mut(ord) {
            *slot = Some(answer);
        }
    }
    let answers: Vec<Ingested> = answers
        .into_iter()
        .map(|a| a.ok_or_else(|| BatchError::Statement("an event of the batch had no answer".into())))
        .collect::<Result<_, _>>()?;
    // Copies within the batch: duplicates of what their first copy came to.
    Ok(plan
        .stands_for
        .iter()
        .enumerate()
        .map(|(n, &first)| match &answers[first] {
            Ingested::Accepted { id, .. } if plan.sent[first].0.id != events[n].id => {
                Ingested::Duplicate { original: id.clone() }
            }
            answer => answer.clone(),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use hookgate_core::Key;
    use hookgate_store::conformance::{T0, event, routed, to};
    use hookgate_store::{Ingested, NewEvent, Store};

    use super::commit;
    use crate::PostgresStore;
    use crate::test_support::fresh;

    fn with_key(key: &str, at: i64, window_ms: i64) -> NewEvent {
        routed(NewEvent { dedupe_key: Some(Key::from(key)), dedupe_window_ms: window_ms, ..event("src", at) })
    }

    /// One transaction for exactly these events, as a lane commits a batch.
    async fn batch(store: &PostgresStore, events: &[&NewEvent]) -> Vec<Ingested> {
        commit(&store.durable, events).await.expect("the batch commits")
    }

    /// A batch that takes over an expired key with two copies of one event:
    /// the first is stored, the second is its duplicate, and the copy is
    /// counted on the new event, none on the expired one.
    #[tokio::test]
    async fn a_batch_taking_over_an_expired_key_counts_its_copies_on_the_new_event() {
        let Some(store) = fresh().await else { return };
        let old = with_key("k", T0, 1_000);
        assert!(matches!(batch(&store, &[&old]).await[..], [Ingested::Accepted { .. }]));
        let new = with_key("k", T0 + 1_000, 1_000);
        let copy = NewEvent { id: hookgate_core::EventId::generate(), ..new.clone() };
        let answers = batch(&store, &[&new, &copy]).await;
        assert_eq!(
            answers,
            vec![
                Ingested::Accepted { id: new.id.clone(), superseded: 0 },
                Ingested::Duplicate { original: new.id.clone() }
            ]
        );
        let store = &store;
        let duplicates = |id| async move { store.get(id).await.unwrap().unwrap().record.duplicates };
        assert_eq!(duplicates(&new.id).await, 1, "the copy counts on the event that took the key");
        assert_eq!(duplicates(&old.id).await, 0, "and not on the one whose window ended");
    }

    /// Each key's expiry is its own event's, whatever events without a key
    /// stand between them in the batch.
    #[tokio::test]
    async fn each_key_expires_with_its_own_event_in_a_mixed_batch() {
        let Some(store) = fresh().await else { return };
        let plain = |at| routed(event("src", at));
        let (e0, e1, e2, e3) = (plain(T0), with_key("k1", T0 + 10, 100), plain(T0 + 15), with_key("k3", T0 + 20, 300));
        let answers = batch(&store, &[&e0, &e1, &e2, &e3]).await;
        assert!(answers.iter().all(|a| matches!(a, Ingested::Accepted { .. })), "{answers:?}");
        let client = store.durable.get().await.unwrap();
        let rows = client.query("SELECT key, expires_at FROM dedupe ORDER BY key", &[]).await.unwrap();
        let expiries: Vec<(Vec<u8>, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(expiries, vec![(b"k1".to_vec(), T0 + 110), (b"k3".to_vec(), T0 + 320)]);
    }

    /// A batch judges a key's expiry at its earliest arrival: a copy that came
    /// after the window ended, in a batch with an earlier event, is still a
    /// duplicate (never the reverse: a copy inside the window is never stored).
    #[tokio::test]
    async fn a_batch_judges_expiry_at_its_earliest_arrival() {
        let Some(store) = fresh().await else { return };
        let original = with_key("k", T0 + 50, 100);
        batch(&store, &[&original]).await;
        let earlier = routed(event("src", T0 + 100));
        let late_copy = with_key("k", T0 + 200, 100);
        let answers = batch(&store, &[&earlier, &late_copy]).await;
        assert_eq!(answers[1], Ingested::Duplicate { original: original.id.clone() });
        // Alone, the same copy finds the window ended and takes the key.
        let answers = batch(&store, &[&late_copy]).await;
        assert_eq!(answers, vec![Ingested::Accepted { id: late_copy.id.clone(), superseded: 0 }]);
    }

    /// A batch whose copy (a loser) comes before its winners: each winner's
    /// deliveries are its own, with its source and time, and row ids follow
    /// the batch's order.
    #[tokio::test]
    async fn each_delivery_of_a_batch_belongs_to_its_own_event() {
        let Some(store) = fresh().await else { return };
        let holder = with_key("held", T0, 60_000);
        batch(&store, &[&holder]).await;
        let copy = with_key("held", T0 + 1, 60_000);
        let two = to("crm", routed(NewEvent { source: "s1".into(), ..with_key("fresh", T0 + 2, 60_000) }));
        let one = routed(event("s2", T0 + 3));
        let answers = batch(&store, &[&copy, &two, &one]).await;
        assert_eq!(answers[0], Ingested::Duplicate { original: holder.id.clone() });
        for (event, answer) in [(&two, &answers[1]), (&one, &answers[2])] {
            assert_eq!(*answer, Ingested::Accepted { id: event.id.clone(), superseded: 0 });
            let stored = store.get(&event.id).await.unwrap().unwrap();
            let ids: Vec<_> = stored.deliveries.iter().map(|d| d.record.id.clone()).collect();
            assert_eq!(ids, event.deliveries.iter().map(|d| d.id.clone()).collect::<Vec<_>>(), "{}", event.id);
            for delivery in &stored.deliveries {
                let record = &delivery.record;
                assert_eq!((&record.event, &record.source), (&event.id, &event.source));
                assert_eq!(
                    (record.updated_at_ms, record.next_attempt_at_ms),
                    (event.received_at_ms, Some(event.received_at_ms))
                );
            }
        }
        assert_eq!(store.get(&holder.id).await.unwrap().unwrap().deliveries.len(), 1, "the copy added none");
        let client = store.durable.get().await.unwrap();
        let rid = |id: &hookgate_core::EventId| {
            let (client, id) = (&client, id.as_str().to_owned());
            async move { client.query_one("SELECT rid FROM events WHERE id = $1", &[&id]).await.unwrap().get::<_, i64>(0) }
        };
        assert!(rid(&holder.id).await < rid(&two.id).await && rid(&two.id).await < rid(&one.id).await);
    }

    /// A batch that coalesces, inside itself and with deliveries already
    /// waiting, in several queues and on two destinations, leaves the store as
    /// the reference store does taking the same events one at a time: the
    /// same answers, each delivery's state and successor, and the same heads.
    #[tokio::test]
    async fn a_coalescing_batch_ends_as_the_same_events_one_at_a_time() {
        let Some(store) = fresh().await else { return };
        // Every call names its time; the reference store's own clock is never read here.
        let reference = hookgate_store::MemStore::new(std::sync::Arc::new(|| T0));
        let thin = |n: i64, order: Option<&str>, coalesce: Option<&str>| NewEvent {
            order_key: order.map(Key::from),
            coalesce_key: coalesce.map(Key::from),
            ..event("src", T0 + n)
        };
        let both = |e: NewEvent| to("crm", routed(e));
        // Before the batch: two heads, which a claim puts in flight (not to be superseded).
        let before = [routed(thin(0, Some("A"), Some("c1"))), both(thin(1, Some("B"), Some("c1")))];
        // Then, waiting: one behind a head in flight, one head of its own, another source's
        // of the same coalesce key (never superseded by this one's), one without an order
        // key (superseded all the same), one whose dedupe key a copy in the batch finds held.
        let other = |e: NewEvent| NewEvent { source: "other".into(), ..e };
        let dedupe = |key: &str, e: NewEvent| NewEvent { dedupe_key: Some(Key::from(key)), ..e };
        let later = [
            routed(thin(3, Some("A"), Some("c1"))),
            to("crm", thin(4, Some("C"), Some("c2"))),
            routed(other(thin(5, Some("B"), Some("c1")))),
            routed(thin(6, None, Some("c5"))),
            routed(dedupe("k7", thin(7, Some("F"), None))),
        ];
        let batched = [
            both(thin(10, Some("B"), Some("c1"))),
            routed(thin(11, Some("A"), None)),
            both(thin(12, Some("B"), Some("c1"))),
            to("crm", thin(13, Some("C"), Some("c2"))),
            routed(thin(14, None, Some("c1"))),
            routed(dedupe("k6", thin(15, Some("A"), Some("c3")))),
            routed(dedupe("k6", thin(16, Some("A"), Some("c3")))),
            // A queue of the batch's own: its first is superseded, the next is its head.
            routed(thin(17, Some("D"), Some("c4"))),
            routed(thin(18, Some("D"), Some("c4"))),
            routed(thin(19, Some("D"), None)),
            routed(thin(20, Some("E"), Some("c5"))),
            routed(other(thin(21, Some("G"), Some("c1")))),
            routed(dedupe("k7", thin(22, Some("F"), Some("c1")))),
        ];
        let mut expected = Vec::new();
        let mut answers = Vec::new();
        for e in &before {
            expected.push(reference.ingest(e.clone()).await.unwrap());
            answers.extend(batch(&store, &[e]).await);
        }
        let claimed = |s: Vec<hookgate_store::Claim>| {
            let mut ids: Vec<String> = s.into_iter().map(|c| c.delivery.as_str().to_owned()).collect();
            ids.sort();
            ids
        };
        assert_eq!(
            claimed(reference.claim("app", T0 + 2, 100, 60_000).await.unwrap()),
            claimed(store.claim("app", T0 + 2, 100, 60_000).await.unwrap())
        );
        for e in &later {
            expected.push(reference.ingest(e.clone()).await.unwrap());
            answers.extend(batch(&store, &[e]).await);
        }
        for e in &batched {
            expected.push(reference.ingest(e.clone()).await.unwrap());
        }
        answers.extend(batch(&store, &batched.iter().collect::<Vec<_>>()).await);
        assert_eq!(answers, expected);
        assert!(expected.iter().any(|a| matches!(a, Ingested::Accepted { superseded: 2, .. })), "{expected:?}");

        let view = |detail: Option<hookgate_store::EventDetail>| {
            detail.map(|d| {
                d.deliveries
                    .into_iter()
                    .map(|d| (d.record.id, d.record.state, d.record.superseded_by))
                    .collect::<Vec<_>>()
            })
        };
        for e in before.iter().chain(&later).chain(&batched) {
            assert_eq!(view(store.get(&e.id).await.unwrap()), view(reference.get(&e.id).await.unwrap()), "{}", e.id);
        }
        for destination in ["app", "crm"] {
            assert_eq!(
                claimed(store.claim(destination, T0 + 100, 100, 60_000).await.unwrap()),
                claimed(reference.claim(destination, T0 + 100, 100, 60_000).await.unwrap()),
                "the heads of {destination}"
            );
        }
    }

    /// Every array `STORE` names is bound, and every one bound is named.
    #[test]
    fn the_store_statements_number_every_array_they_name() {
        // Whitespace flattened: the statements' lines break where they fit.
        let flat = |lean| super::store_statement(lean).split_whitespace().collect::<Vec<_>>().join(" ");
        let has_every = |statement: &str, parts: &[&str]| {
            for part in parts {
                assert!(statement.contains(part), "{part}");
            }
        };
        has_every(
            &flat(false),
            &[
                "unnest($1::bigint[], $2::text[], $3::text[]",
                "unnest($16::bigint[], $17::text[], $18::text[], $19::text[], $20::bytea[], $21::bytea[], $25::bigint[], \
             $28::text[], $29::bigint[], $30::text[])",
                "unnest($22::text[], $23::text[], $24::bytea[])",
                "unnest($3::text[], $7::bytea[], $2::text[], $26::bigint[])",
                "d.expires_at <= $27::bigint",
            ],
        );
        let lean = flat(true);
        has_every(
            &lean,
            &[
                "unnest($1::bigint[], $2::text[], $3::text[]",
                "unnest($16::bigint[], $17::text[], $18::text[], $19::text[], $20::bytea[], $21::bytea[], $22::bigint[], \
             $25::text[], $26::bigint[], $27::text[])",
                "unnest($3::text[], $7::bytea[], $2::text[], $23::bigint[])",
                "d.expires_at <= $24::bigint",
            ],
        );
        assert!(!lean.contains("$28"), "the lean statement binds no held queues");
    }
}

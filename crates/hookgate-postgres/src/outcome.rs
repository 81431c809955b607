//! Recording attempt outcomes in batches: every outcome waiting at the same
//! moment goes into one transaction of set-based statements (arrays unnested
//! server-side), so a busy dispatcher costs a few round trips per batch
//! instead of one per delivery.
//! A batch the database refuses is recorded again one outcome at a time, so
//! one bad row never leaves the others unrecorded (and redelivered forever).
//! Replies are matched by (delivery, attempt): two attempts of one delivery
//! in one batch (a late one whose lease ended, and the current one) each
//! hear whether *their* claim moved the delivery.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use deadpool_postgres::Pool;
use hookgate_core::DeliveryId;
use hookgate_store::{Attempt, Result};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::{BatchError, lock_key};

/// Outcomes per statement, at most.
const MAX_BATCH: usize = 256;
/// Statements in flight at once.
const CONCURRENT_BATCHES: usize = 2;
/// Outcomes waiting, at most; callers wait beyond that.
const QUEUE_CAPACITY: usize = 4_096;

pub struct Outcome {
    pub delivery: DeliveryId,
    pub attempt: Attempt,
    pub state: &'static str,
    pub due_at: Option<i64>,
    pub now_ms: i64,
    /// Whether the delivery moved (its claim was still current).
    pub reply: oneshot::Sender<Result<bool>>,
}

pub fn start(pool: Pool) -> mpsc::Sender<Outcome> {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    tokio::spawn(collect(pool, rx, Arc::new(Semaphore::new(CONCURRENT_BATCHES))));
    tx
}

async fn collect(pool: Pool, mut queue: mpsc::Receiver<Outcome>, slots: Arc<Semaphore>) {
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else { return };
        let Some(first) = queue.recv().await else { return };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let pool = pool.clone();
        tokio::spawn(async move {
            match record(&pool, &batch).await {
                Ok(moved) => reply(batch, &moved),
                Err(BatchError::Statement(error)) if batch.len() > 1 => {
                    tracing::warn!(%error, outcomes = batch.len(), "outcome batch refused; recording one by one");
                    for outcome in batch {
                        match record(&pool, std::slice::from_ref(&outcome)).await {
                            Ok(moved) => reply(vec![outcome], &moved),
                            Err(error) => {
                                tracing::error!(delivery = %outcome.delivery, %error, "the database refused an outcome");
                                let _ = outcome.reply.send(Err(error.into_store_error()));
                            }
                        }
                    }
                }
                Err(error) => {
                    for outcome in batch {
                        let _ = outcome.reply.send(Err(error.clone().into_store_error()));
                    }
                }
            }
            drop(slot);
        });
    }
}

fn reply(batch: Vec<Outcome>, moved: &HashSet<(String, i32)>) {
    for outcome in batch {
        let key = (outcome.delivery.as_str().to_owned(), outcome.attempt.attempt as i32);
        let _ = outcome.reply.send(Ok(moved.contains(&key)));
    }
}

/// One transaction: record every attempt (whether or not its claim is still
/// current; with its delivery, so one retention deleted records nothing),
/// move each delivery whose claim is, and hand on the head of each queue a
/// delivery left (delivered or dead). That last part runs under the queues'
/// advisory locks, as ingest's does: an ingest deciding that its delivery
/// is not a head (it saw this one still active) and this outcome looking
/// for the next head (not seeing that uncommitted delivery) must not
/// interleave, or the queue would stall with no head. Returns the
/// (delivery, attempt) pairs that moved their delivery.
async fn record(pool: &Pool, batch: &[Outcome]) -> Result<HashSet<(String, i32)>, BatchError> {
    let client = pool.get().await.map_err(|e| BatchError::Connection(crate::explain(&e)))?;
    let leaving: Vec<&str> = batch.iter().filter(|o| !is_active(o.state)).map(|o| o.delivery.as_str()).collect();
    // The queues that may need a new head, locked as ingest locks them. Read before the
    // transaction: a delivery's queue never changes.
    let mut queues: BTreeSet<(String, String, Vec<u8>)> = BTreeSet::new();
    if !leaving.is_empty() {
        let statement = client
            .prepare_cached(
                "SELECT destination, source, order_key FROM deliveries
                 WHERE id = ANY($1::text[]) AND order_key IS NOT NULL",
            )
            .await?;
        for row in client.query(&statement, &[&leaving]).await? {
            queues.insert((row.get(0), row.get(1), row.get(2)));
        }
    }
    let locks: BTreeSet<i64> =
        queues.iter().map(|(destination, source, key)| lock_key("o", &[destination, source], key)).collect();
    let locks: Vec<i64> = locks.into_iter().collect();

    let (lock, statement) = futures_util::try_join!(
        client.prepare_cached("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k"),
        client.prepare_cached(
            "WITH input AS (
                SELECT * FROM unnest($1::text[], $2::int[], $3::bigint[], $4::bigint[], $5::int[], $6::text[],
                                     $7::text[], $8::bigint[], $9::bigint[], $10::bytea[])
                    AS t(id, attempt, started_at, duration_ms, status, error, state, due_at, now_ms, response)
             ), recorded AS (
                INSERT INTO attempts (delivery_rid, attempt, started_at, duration_ms, status, error, response)
                SELECT d.rid, i.attempt, i.started_at, i.duration_ms, i.status, i.error, i.response
                FROM input i JOIN deliveries d ON d.id = i.id
                ON CONFLICT DO NOTHING
             ), moved AS (
                UPDATE deliveries e
                   SET state = input.state, due_at = input.due_at, updated_at = input.now_ms,
                       head = e.head AND input.state IN ('pending', 'delivering')
                FROM input
                WHERE e.id = input.id AND e.state = 'delivering' AND e.attempts = input.attempt
                RETURNING e.id, input.attempt, e.destination, e.source, e.order_key, e.seq, e.state
             ), promoted AS (
                -- The next head of each queue a moved delivery left (only a moved one: a late
                -- outcome whose delivery was replayed, and so is owed again further back in its
                -- queue, must not make that delivery a second head). The first still owed after
                -- it, as the statement began: the one it left is the only one of its queue in
                -- flight, so nothing this statement moves is that one.
                UPDATE deliveries n SET head = true
                FROM moved m
                CROSS JOIN LATERAL (
                    SELECT f.rid FROM deliveries f
                    WHERE f.destination = m.destination AND f.source = m.source AND f.order_key = m.order_key
                      AND f.seq > m.seq AND f.state IN ('pending', 'delivering')
                    ORDER BY f.seq LIMIT 1
                ) first
                WHERE m.order_key IS NOT NULL AND m.state NOT IN ('pending', 'delivering')
                  AND n.rid = first.rid AND NOT n.head
             )
             SELECT id, attempt FROM moved",
        ),
    )?;
    let ids: Vec<&str> = batch.iter().map(|o| o.delivery.as_str()).collect();
    let attempts: Vec<i32> = batch.iter().map(|o| o.attempt.attempt as i32).collect();
    let started: Vec<i64> = batch.iter().map(|o| o.attempt.started_at_ms).collect();
    let durations: Vec<i64> = batch.iter().map(|o| o.attempt.duration_ms).collect();
    let statuses: Vec<Option<i32>> = batch.iter().map(|o| o.attempt.status.map(i32::from)).collect();
    // Text cannot hold NUL; the dispatcher already escapes it, this is the last line.
    let errors: Vec<Option<String>> =
        batch.iter().map(|o| o.attempt.error.as_deref().map(|e| e.replace('\0', "\\0"))).collect();
    let states: Vec<&str> = batch.iter().map(|o| o.state).collect();
    let due: Vec<Option<i64>> = batch.iter().map(|o| o.due_at).collect();
    let now: Vec<i64> = batch.iter().map(|o| o.now_ms).collect();
    let responses: Vec<Option<&[u8]>> = batch.iter().map(|o| o.attempt.response.as_deref()).collect();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 10] =
        [&ids, &attempts, &started, &durations, &statuses, &errors, &states, &due, &now, &responses];
    // One round trip, BEGIN to COMMIT (as ingest's, see there): the locks
    // (sorted), the outcomes, the heads.
    let pipeline = futures_util::try_join!(
        client.batch_execute("BEGIN"),
        async { if locks.is_empty() { Ok(0) } else { client.execute(&lock, &[&locks]).await } },
        client.query(&statement, &params),
        client.batch_execute("COMMIT"),
    );
    match pipeline {
        Ok((_, _, rows, _)) => Ok(rows.iter().map(|row| (row.get::<_, String>(0), row.get::<_, i32>(1))).collect()),
        Err(error) => {
            crate::end_transaction(&client).await;
            Err(error.into())
        }
    }
}

fn is_active(state: &str) -> bool {
    matches!(state, "pending" | "delivering")
}

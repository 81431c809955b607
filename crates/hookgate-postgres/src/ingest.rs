//! Group commit on PostgreSQL: ingests waiting at the same moment share one
//! transaction. A batch takes the advisory locks of all its order, dedupe and
//! coalesce keys first, in one sorted order, then pipelines one
//! `hookgate_ingest()` call per event, and commits; then the destinations with
//! new work are announced (see `notify.rs`). Up to `batches` batches run at
//! once on their own connections, so one commit's round trip does not stall
//! the next batch.
//!
//! No deadlock: every row a batch updates is reached under one of those
//! locks (a queue's rows, a coalesce key's pending rows, a dedupe key's count
//! in `event_duplicates`), and they are all taken before any row. A batch
//! that fails on a statement (not on the connection) is retried one event per
//! transaction, so one event the database refuses never fails the others.

use std::collections::BTreeSet;
use std::sync::Arc;

use deadpool_postgres::Pool;
use futures_util::future::try_join_all;
use hookgate_core::EventId;
use hookgate_store::{Ingested, NewEvent, Result, codec, parse_id};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::notify::Notifier;
use crate::{BatchError, lock_key};

/// Events per transaction, at most.
pub const MAX_BATCH: usize = 512;
/// Ingests waiting for a batch, at most: four full batches. Beyond, a caller
/// waits `ADMISSION_WAIT` and is then refused (busy), not queued without bound.
const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

pub struct Pending {
    pub event: NewEvent,
    pub reply: oneshot::Sender<Result<Ingested>>,
}

pub fn start(pool: Pool, batches: usize, notifier: Notifier) -> mpsc::Sender<Pending> {
    let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
    tokio::spawn(collect(pool, rx, Arc::new(Semaphore::new(batches)), notifier));
    tx
}

async fn collect(pool: Pool, mut queue: mpsc::Receiver<Pending>, slots: Arc<Semaphore>, notifier: Notifier) {
    loop {
        // Wait for a free slot first: while every slot is busy, arrivals pile
        // up in the queue and the next batch gets bigger.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = queue.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let (pool, notifier) = (pool.clone(), notifier.clone());
        tokio::spawn(async move {
            let events: Vec<&NewEvent> = batch.iter().map(|p| &p.event).collect();
            let outcomes = commit_isolating(&pool, &events).await;
            let destinations: BTreeSet<&str> = events
                .iter()
                .zip(&outcomes)
                .filter(|(_, outcome)| matches!(outcome, Ok(Ingested::Accepted { .. })))
                .map(|(event, _)| event.destination.as_str())
                .collect();
            destinations.into_iter().for_each(|d| notifier.work_for(d));
            for (pending, outcome) in batch.into_iter().zip(outcomes) {
                let _ = pending.reply.send(outcome);
            }
            drop(slot);
        });
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
                    tracing::warn!(%error, events = events.len(), "ingest batch failed");
                }
                events.iter().map(|_| Err(error.clone().into_store_error())).collect()
            }
        }
    })
}

async fn commit(pool: &Pool, events: &[&NewEvent]) -> Result<Vec<Ingested>, BatchError> {
    let mut client = pool.get().await.map_err(|e| BatchError::Connection(e.to_string()))?;
    let tx = client.transaction().await?;
    let locks: BTreeSet<i64> = events
        .iter()
        .flat_map(|e| {
            let order = e.order_key.as_ref().map(|k| lock_key("o", &e.source, k.as_bytes()));
            let dedupe = e.dedupe_key.as_ref().map(|k| lock_key("d", &e.source, k.as_bytes()));
            let coalesce = e.coalesce_key.as_ref().map(|k| lock_key("c", &e.source, k.as_bytes()));
            order.into_iter().chain(dedupe).chain(coalesce)
        })
        .collect();
    let locks: Vec<i64> = locks.into_iter().collect();
    if !locks.is_empty() {
        // unnest keeps the array's (sorted) order, so locks are taken in that order.
        let lock = tx.prepare_cached("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k").await?;
        tx.execute(&lock, &[&locks]).await?;
    }
    let statement = tx
        .prepare_cached(
            "SELECT o_status, o_id, o_superseded FROM hookgate_ingest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await?;
    let encoded: Vec<(Vec<u8>, Option<String>)> =
        events.iter().map(|e| (codec::encode_headers(&e.headers), codec::encode_warnings(&e.warnings))).collect();
    // Sent back to back on one connection (pipelined), answered in order.
    let calls = events.iter().zip(&encoded).map(|(e, (headers, warnings))| {
        let tx = &tx;
        let statement = &statement;
        async move {
            tx.query_one(
                statement,
                &[
                    &e.id.as_str(),
                    &e.source,
                    &e.destination,
                    &e.received_at_ms,
                    headers,
                    &&e.body[..],
                    &e.dedupe_key.as_ref().map(|k| k.as_bytes()),
                    &e.dedupe_window_ms,
                    &e.order_key.as_ref().map(|k| k.as_bytes()),
                    &e.coalesce_key.as_ref().map(|k| k.as_bytes()),
                    warnings,
                ],
            )
            .await
        }
    });
    let rows = try_join_all(calls).await?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in &rows {
        let status: String = row.get(0);
        let id: EventId = parse_id(row.get::<_, &str>(1)).map_err(|e| BatchError::Statement(e.to_string()))?;
        outcomes.push(match status.as_str() {
            "accepted" => Ingested::Accepted { id, superseded: row.get::<_, i64>(2) as u64 },
            _ => Ingested::Duplicate { original: id },
        });
    }
    tx.commit().await?;
    Ok(outcomes)
}

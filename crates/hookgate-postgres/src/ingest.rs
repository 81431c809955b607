//! Group commit on PostgreSQL: ingests waiting at the same moment share one
//! transaction. A batch takes the advisory locks of all its queues and dedupe
//! keys first, in one sorted order (so two batches never deadlock), then
//! pipelines one `hookgate_ingest()` call per event, and commits; then the
//! destinations with new work are announced (see `notify.rs`). Up to `batches` batches run at once on their
//! own connections, so one commit's round trip does not stall the next batch.

use std::collections::BTreeSet;
use std::sync::Arc;

use deadpool_postgres::Pool;
use futures_util::future::try_join_all;
use hookgate_core::EventId;
use hookgate_store::{Ingested, NewEvent, Result, StoreError, codec, parse_id};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::notify::Notifier;
use crate::{lock_key, unavailable};

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
            match commit(&pool, &events).await {
                Ok(outcomes) => {
                    let destinations: BTreeSet<&str> = events
                        .iter()
                        .zip(&outcomes)
                        .filter(|(_, outcome)| matches!(outcome, Ingested::Accepted { .. }))
                        .map(|(event, _)| event.destination.as_str())
                        .collect();
                    destinations.into_iter().for_each(|d| notifier.work_for(d));
                    for (pending, outcome) in batch.into_iter().zip(outcomes) {
                        let _ = pending.reply.send(Ok(outcome));
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, events = batch.len(), "ingest batch failed");
                    for pending in batch {
                        let _ = pending.reply.send(Err(StoreError::Unavailable(error.to_string())));
                    }
                }
            }
            drop(slot);
        });
    }
}

async fn commit(pool: &Pool, events: &[&NewEvent]) -> Result<Vec<Ingested>> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let tx = client.transaction().await.map_err(unavailable)?;
    let locks: BTreeSet<i64> = events
        .iter()
        .flat_map(|e| {
            let order = e.order_key.as_ref().map(|k| lock_key("o", &e.source, k.as_bytes()));
            let dedupe = e.dedupe_key.as_ref().map(|k| lock_key("d", &e.source, k.as_bytes()));
            order.into_iter().chain(dedupe)
        })
        .collect();
    let locks: Vec<i64> = locks.into_iter().collect();
    if !locks.is_empty() {
        // unnest keeps the array's (sorted) order, so locks are taken in that order.
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k")
            .await
            .map_err(unavailable)?;
        tx.execute(&lock, &[&locks]).await.map_err(unavailable)?;
    }
    let statement = tx
        .prepare_cached(
            "SELECT o_status, o_id, o_superseded FROM hookgate_ingest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .await
        .map_err(unavailable)?;
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
    let rows = try_join_all(calls).await.map_err(unavailable)?;
    let mut outcomes = Vec::with_capacity(rows.len());
    for row in &rows {
        let status: String = row.get(0);
        let id: EventId = parse_id(row.get::<_, &str>(1))?;
        outcomes.push(match status.as_str() {
            "accepted" => Ingested::Accepted { id, superseded: row.get::<_, i64>(2) as u64 },
            _ => Ingested::Duplicate { original: id },
        });
    }
    tx.commit().await.map_err(unavailable)?;
    Ok(outcomes)
}

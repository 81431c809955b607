//! The head flag under contention. An ingest that finds a queue's head
//! still active and an outcome finishing that head, racing, must not
//! both leave the queue without a head (each not seeing the other's
//! uncommitted row): both take the queue's lock. The first test fills
//! and drains queues on two instances and checks nothing stalls; the
//! second checks the lock itself.

use std::sync::Arc;

use hookgate_store::conformance::{T0, event, routed};
use hookgate_store::{Store, Verdict};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queues_filled_on_one_instance_and_drained_on_another_never_stall() {
    const WRITERS: usize = 8;
    const EACH: usize = 200;
    let Some(url) = fresh_schema_url().await else { return };
    let filler: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 8).await.unwrap());
    let drainer: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 8).await.unwrap());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let filler = filler.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let mut new = event("src", T0);
                    new.order_key = Some(if (w + n) % 2 == 0 { "even" } else { "odd" }.into());
                    filler.ingest(routed(new)).await.unwrap();
                }
            })
        })
        .collect();
    let (mut delivered, mut idle) = (0, 0);
    // Ends when all are delivered, or after 1,000 claims in a row found nothing: a stall.
    while delivered < WRITERS * EACH && idle < 1_000 {
        let claims = drainer.claim("app", T0, 10, 60_000).await.unwrap();
        idle = if claims.is_empty() { idle + 1 } else { 0 };
        let finishes = claims.iter().map(|claim| {
            let attempt = hookgate_store::conformance::ok_attempt(claim.attempt, T0);
            drainer.finish(&claim.delivery, attempt, Verdict::Delivered, T0)
        });
        for moved in futures_util::future::join_all(finishes).await {
            assert!(moved.unwrap());
            delivered += 1;
        }
        if idle > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(delivered, WRITERS * EACH, "a queue stalled with events waiting and no head");
}

/// The race itself is a window of a fraction of a millisecond, which the
/// test above may not hit; this one checks its cure directly: recording
/// an outcome that finishes a queue's head waits for that queue's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_a_head_waits_for_its_queues_lock() {
    let Some(url) = fresh_schema_url().await else { return };
    let store = Arc::new(PostgresStore::connect(&url, 4).await.unwrap());
    let mut new = event("src", T0);
    new.order_key = Some("q".into());
    store.ingest(routed(new)).await.unwrap();
    let claim = store.claim("app", T0, 10, 60_000).await.unwrap().pop().unwrap();

    // Stand in for an ingest of queue "q" in progress: hold its lock.
    let (mut holder, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let tx = holder.transaction().await.unwrap();
    let lock = hookgate_postgres::lock_key("o", &[hookgate_store::conformance::DEST, "src"], b"q");
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock]).await.unwrap();

    let finishing = {
        let store = store.clone();
        tokio::spawn(async move {
            let attempt = hookgate_store::conformance::ok_attempt(claim.attempt, T0);
            store.finish(&claim.delivery, attempt, Verdict::Delivered, T0).await
        })
    };
    // Advisory locks show in pg_locks as classid/objid halves of the key.
    let (high, low) = ((lock >> 32) as u32, lock as u32);
    loop {
        assert!(!finishing.is_finished(), "the outcome was recorded while its queue's lock was held");
        let waiting: i64 = tx
            .query_one(
                "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
                   AND classid::bigint = $1 AND objid::bigint = $2",
                &[&i64::from(high), &i64::from(low)],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    tx.rollback().await.unwrap();
    assert!(finishing.await.unwrap().unwrap(), "recorded once the lock is free");
}

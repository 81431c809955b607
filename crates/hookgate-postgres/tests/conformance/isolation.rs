//! One row the database refuses fails that event alone: the batch it
//! shared with others is retried without it (ingest in halves, outcomes
//! one by one). The refusal is made real with a CHECK constraint the test
//! adds to its own schema.

use std::sync::Arc;

use hookgate_store::conformance::{DEST, T0, event, routed};
use hookgate_store::{Attempt, Ingested, Store};

use super::*;

async fn refuse(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute(sql).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_event_fails_alone_in_its_batch() {
    let Some(url) = fresh_schema_url().await else { return };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 8).await.unwrap());
    refuse(&url, "ALTER TABLE events ADD CONSTRAINT no_poison CHECK (source <> 'poison')").await;
    // All at once, so the poisoned one lands in batches with the others.
    let ingests: Vec<_> = (0..60)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.ingest(routed(event(if n == 30 { "poison" } else { "src" }, T0))).await })
        })
        .collect();
    let mut results = Vec::new();
    for ingest in ingests {
        results.push(ingest.await.unwrap());
    }
    for (n, result) in results.iter().enumerate() {
        match (n, result) {
            (30, result) => assert!(result.is_err(), "the refused event is refused"),
            (_, Ok(Ingested::Accepted { .. })) => {}
            (n, other) => panic!("event {n} failed beside the refused one: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refused_outcome_fails_alone_in_its_batch() {
    let Some(url) = fresh_schema_url().await else { return };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 8).await.unwrap());
    for _ in 0..40 {
        store.ingest(routed(event("src", T0))).await.unwrap();
    }
    let claims = store.claim(DEST, T0, 100, 60_000).await.unwrap();
    assert_eq!(claims.len(), 40);
    refuse(&url, "ALTER TABLE attempts ADD CONSTRAINT no_poison CHECK (error IS DISTINCT FROM 'poison')").await;
    let finishes: Vec<_> = claims
        .iter()
        .enumerate()
        .map(|(n, claim)| {
            let (store, id, attempt) = (store.clone(), claim.delivery.clone(), claim.attempt);
            let error = (n == 20).then(|| "poison".to_owned());
            tokio::spawn(async move {
                let attempt =
                    Attempt { attempt, started_at_ms: T0, duration_ms: 1, status: Some(500), error, response: None };
                store.finish(&id, attempt, hookgate_store::Verdict::Dead, T0).await
            })
        })
        .collect();
    for (n, finish) in finishes.into_iter().enumerate() {
        let result = finish.await.unwrap();
        if n == 20 {
            assert!(result.is_err(), "the refused outcome is refused");
        } else {
            assert!(result.unwrap(), "outcome {n} was recorded beside the refused one");
        }
    }
}

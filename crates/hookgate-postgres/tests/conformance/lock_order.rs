//! Races that could deadlock batches against each other (PostgreSQL
//! aborts one side of a deadlock: a whole batch of senders would get 503).

use std::sync::Arc;

use hookgate_core::EventId;
use hookgate_store::conformance::{T0, event, routed};
use hookgate_store::{Ingested, NewEvent, Store, Verdict};

use super::*;

async fn two() -> Option<(Arc<dyn Store>, Arc<dyn Store>)> {
    let url = fresh_schema_url().await?;
    let a = PostgresStore::connect(&url, 8).await.unwrap();
    let b = PostgresStore::connect(&url, 8).await.unwrap();
    Some((Arc::new(a), Arc::new(b)))
}

/// Copies of events whose deliveries are being recorded at the same time:
/// the copies bump each original's duplicate count while outcome batches
/// update the same rows, in other orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_of_events_being_finished_never_deadlock() {
    let (a, b) = or_skip!(two().await);
    for round in 0..5 {
        let mut originals = Vec::new();
        for n in 0..100 {
            let mut new = event("src", T0);
            new.dedupe_key = Some(format!("r{round}-k{n}").into());
            let Ingested::Accepted { id, .. } = a.ingest(routed(new.clone())).await.unwrap() else { panic!() };
            originals.push((id, new));
        }
        let claims = a.claim("app", T0, 500, 60_000).await.unwrap();
        assert_eq!(claims.len(), 100);
        let finishing = {
            let a = a.clone();
            tokio::spawn(async move {
                let finishes = claims.into_iter().map(|claim| {
                    let a = a.clone();
                    async move {
                        let attempt = hookgate_store::conformance::ok_attempt(claim.attempt, T0);
                        a.finish(&claim.delivery, attempt, Verdict::Delivered, T0).await
                    }
                });
                futures_util::future::join_all(finishes).await
            })
        };
        let copies = originals.iter().rev().enumerate().map(|(n, (_, new))| {
            let store = if n % 2 == 0 { a.clone() } else { b.clone() };
            let copy = NewEvent { id: EventId::generate(), ..new.clone() };
            async move { store.ingest(routed(copy)).await }
        });
        let copies = futures_util::future::join_all(copies).await;
        for result in finishing.await.unwrap() {
            assert!(result.unwrap(), "round {round}: an outcome failed");
        }
        for copy in copies {
            assert!(matches!(copy, Ok(Ingested::Duplicate { .. })), "round {round}: {copy:?}");
        }
    }
}

/// Batches that supersede the same coalesce keys in opposite orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coalescing_in_opposite_orders_never_deadlocks() {
    let (a, b) = or_skip!(two().await);
    let thin = |key: &str, order: &str| {
        let mut new = event("src", T0);
        new.coalesce_key = Some(key.into());
        new.order_key = Some(order.into());
        new
    };
    for round in 0..20 {
        // Pending events for every key, each of its own queue, so every new one supersedes.
        for k in 0..8 {
            a.ingest(routed(thin(&format!("c{k}"), &format!("seed{round}-{k}")))).await.unwrap();
        }
        let forward = (0..8).map(|k| {
            let a = a.clone();
            let new = thin(&format!("c{k}"), &format!("f{round}-{k}"));
            async move { a.ingest(routed(new)).await }
        });
        let backward = (0..8).rev().map(|k| {
            let b = b.clone();
            let new = thin(&format!("c{k}"), &format!("b{round}-{k}"));
            async move { b.ingest(routed(new)).await }
        });
        let (f, b_) = tokio::join!(futures_util::future::join_all(forward), futures_util::future::join_all(backward));
        for result in f.into_iter().chain(b_) {
            assert!(result.is_ok(), "round {round}: {result:?}");
        }
    }
}

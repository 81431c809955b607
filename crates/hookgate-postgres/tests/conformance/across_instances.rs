//! Two stores on one schema stand for two hookgate processes.

use std::collections::HashMap;
use std::sync::Arc;

use hookgate_core::EventId;
use hookgate_store::conformance::{T0, event, routed};
use hookgate_store::{Attempt, Ingested, Store, Verdict, Wake};

use super::*;

async fn pair() -> Option<(Arc<dyn Store>, Arc<dyn Store>)> {
    let url = fresh_schema_url().await?;
    // Connecting at once also exercises concurrent migration.
    let (a, b) = tokio::join!(PostgresStore::connect(&url, 8), PostgresStore::connect(&url, 8));
    Some((Arc::new(a.unwrap()), Arc::new(b.unwrap())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn copies_racing_on_two_instances_store_one() {
    let (a, b) = or_skip!(pair().await);
    for round in 0..20 {
        let barrier = Arc::new(tokio::sync::Barrier::new(8));
        let tasks: Vec<_> = (0..8)
            .map(|n| {
                let store = if n % 2 == 0 { a.clone() } else { b.clone() };
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    let mut copy = event("stripe", T0);
                    copy.dedupe_key = Some(format!("evt_{round}").into());
                    barrier.wait().await;
                    store.ingest(routed(copy)).await.unwrap()
                })
            })
            .collect();
        let mut accepted = Vec::new();
        let mut originals = Vec::new();
        for task in tasks {
            match task.await.unwrap() {
                Ingested::Accepted { id, .. } => accepted.push(id),
                Ingested::Duplicate { original } => originals.push(original),
            }
        }
        assert_eq!(accepted.len(), 1, "round {round}");
        assert!(originals.iter().all(|o| *o == accepted[0]));
    }
}

/// Retention on every instance at once: no errors, each event deleted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retention_on_two_instances_never_fails_either() {
    let (a, b) = or_skip!(pair().await);
    for _ in 0..300 {
        a.ingest(routed(event("src", T0))).await.unwrap();
    }
    let claims = a.claim("app", T0, 500, 60_000).await.unwrap();
    for claim in &claims {
        let attempt =
            Attempt { attempt: 1, started_at_ms: T0, duration_ms: 1, status: Some(200), error: None, response: None };
        assert!(a.finish(&claim.delivery, attempt, Verdict::Delivered, T0 + 1).await.unwrap());
    }
    // Each instance keeps at it until nothing is left: a round that finds the
    // other instance holding retention's turn purges nothing (and must not fail).
    let purge = |store: Arc<dyn Store>| async move {
        let mut purged = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !store.stats().await.unwrap().is_empty() && std::time::Instant::now() < deadline {
            purged += store.purge_finished(hookgate_core::State::Delivered, T0 + 2, 7).await.unwrap();
            tokio::task::yield_now().await;
        }
        purged
    };
    let (from_a, from_b) = tokio::join!(purge(a.clone()), purge(b.clone()));
    assert_eq!(from_a + from_b, 300, "every event deleted exactly once ({from_a} + {from_b})");
    assert!(a.stats().await.unwrap().is_empty());
}

/// An event stored through one instance wakes the other's dispatcher
/// (LISTEN/NOTIFY), so it need not poll.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_stored_on_one_instance_wakes_the_other() {
    let (a, b) = or_skip!(pair().await);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    a.watch_remote(Arc::new(move |which: Wake<'_>| {
        if let Wake::Destination(destination) = which {
            let _ = tx.send(destination.to_owned());
        }
    }));
    // The listener may still be connecting (it announces itself with
    // Wake::All): store again until a wake-up for the destination arrives.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let new = hookgate_store::conformance::to("billing", event("src", T0));
        b.ingest(new).await.unwrap();
        let wait = tokio::time::timeout(std::time::Duration::from_millis(300), async {
            while let Some(destination) = rx.recv().await {
                if destination == "billing" {
                    return true;
                }
            }
            false
        });
        if wait.await == Ok(true) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no wake-up for billing from the other instance");
    }
}

/// Two dispatchers claiming the same keys as fast as they can: never two
/// events of one key in flight, and each key's events finish in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claimers_on_two_instances_keep_one_in_flight_per_key() {
    let (a, b) = or_skip!(pair().await);
    let mut sent: HashMap<String, Vec<EventId>> = HashMap::new();
    for n in 0..40 {
        let key = format!("k{}", n % 4);
        let mut new = event("src", T0);
        new.order_key = Some(key.as_str().into());
        let store = if n % 2 == 0 { &a } else { &b };
        match store.ingest(routed(new)).await.unwrap() {
            Ingested::Accepted { id, .. } => sent.entry(key).or_default().push(id),
            other => panic!("{other:?}"),
        }
    }
    let in_flight: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
    let finished: Arc<std::sync::Mutex<Vec<(String, EventId)>>> = Arc::default();
    let workers: Vec<_> = [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .map(|store| {
            let (in_flight, finished) = (in_flight.clone(), finished.clone());
            tokio::spawn(async move {
                for _ in 0..400 {
                    let claims = store.claim("app", T0, 4, 60_000).await.unwrap();
                    // Counted as granted, the whole batch at once: two of one key in one
                    // claim, or one granted while another waits in a worker's batch, overlap.
                    for claim in &claims {
                        let key = claim.order_key.clone().unwrap().to_text_lossy();
                        let mut map = in_flight.lock().unwrap();
                        let n = map.entry(key.clone()).or_default();
                        *n += 1;
                        assert_eq!(*n, 1, "two events of {key} in flight");
                    }
                    for claim in claims {
                        let key = claim.order_key.clone().unwrap().to_text_lossy();
                        // The delivery: a claim of the same key granted while this one is
                        // in the app's hands is an overlap. (Counting past the finish would
                        // flag a claim the store rightly grants once the outcome commits.)
                        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                        *in_flight.lock().unwrap().get_mut(&key).unwrap() -= 1;
                        let attempt = hookgate_store::conformance::ok_attempt(claim.attempt, T0);
                        finished.lock().unwrap().push((key.clone(), claim.id.clone()));
                        assert!(store.finish(&claim.delivery, attempt, Verdict::Delivered, T0).await.unwrap());
                    }
                    if finished.lock().unwrap().len() == 40 {
                        break;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    let finished = finished.lock().unwrap();
    assert_eq!(finished.len(), 40);
    for (key, ids) in &sent {
        let order: Vec<_> = finished.iter().filter(|(k, _)| k == key).map(|(_, id)| id.clone()).collect();
        assert_eq!(&order, ids, "{key} finished in storage order");
    }
}

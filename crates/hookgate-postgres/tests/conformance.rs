//! The store conformance suite on PostgreSQL: each test in a schema of its
//! own. Needs HOOKGATE_TEST_POSTGRES_URL (`.ci/run` sets it and starts the
//! server); without it the tests say so and pass, so `cargo test` works on a
//! machine with Rust alone.

use hookgate_postgres::PostgresStore;

async fn fresh() -> Option<PostgresStore> {
    let url = fresh_schema_url().await?;
    Some(PostgresStore::connect(&url, 8).await.expect("connect store"))
}

/// A URL whose connections use a new, empty schema.
async fn fresh_schema_url() -> Option<String> {
    let Ok(url) = std::env::var("HOOKGATE_TEST_POSTGRES_URL") else {
        hookgate_store::conformance::skip("HOOKGATE_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!("hg_test_{}", uuid::Uuid::now_v7().simple());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{separator}options=-c%20search_path%3D{schema}"))
}

macro_rules! or_skip {
    ($store:expr) => {
        match $store {
            Some(store) => store,
            None => return,
        }
    };
}

hookgate_store::conformance_tests!(or_skip!(fresh().await));

mod across_instances {
    //! Two stores on one schema stand for two hookgate processes.

    use std::collections::HashMap;
    use std::sync::Arc;

    use hookgate_core::EventId;
    use hookgate_store::conformance::{T0, event};
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
                        store.ingest(copy).await.unwrap()
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
            a.ingest(event("src", T0)).await.unwrap();
        }
        let claims = a.claim("app", T0, 500, 60_000).await.unwrap();
        for claim in &claims {
            let attempt = Attempt { attempt: 1, started_at_ms: T0, duration_ms: 1, status: Some(200), error: None };
            assert!(a.finish(&claim.id, attempt, Verdict::Delivered, T0 + 1).await.unwrap());
        }
        let purge = |store: Arc<dyn Store>| async move {
            let mut purged = 0;
            for _ in 0..100 {
                purged += store.purge_finished(hookgate_core::State::Delivered, T0 + 2, 7).await.unwrap();
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
            let mut new = event("src", T0);
            new.destination = "billing".into();
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
            match store.ingest(new).await.unwrap() {
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
                            let attempt = Attempt {
                                attempt: claim.attempt,
                                started_at_ms: T0,
                                duration_ms: 2,
                                status: Some(200),
                                error: None,
                            };
                            finished.lock().unwrap().push((key.clone(), claim.id.clone()));
                            assert!(store.finish(&claim.id, attempt, Verdict::Delivered, T0).await.unwrap());
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
}

mod lock_order {
    //! Races that could deadlock batches against each other (PostgreSQL
    //! aborts one side of a deadlock: a whole batch of senders would get 503).

    use std::sync::Arc;

    use hookgate_core::EventId;
    use hookgate_store::conformance::{T0, event};
    use hookgate_store::{Attempt, Ingested, NewEvent, Store, Verdict};

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
                let Ingested::Accepted { id, .. } = a.ingest(new.clone()).await.unwrap() else { panic!() };
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
                            let attempt = Attempt {
                                attempt: claim.attempt,
                                started_at_ms: T0,
                                duration_ms: 1,
                                status: Some(200),
                                error: None,
                            };
                            a.finish(&claim.id, attempt, Verdict::Delivered, T0).await
                        }
                    });
                    futures_util::future::join_all(finishes).await
                })
            };
            let copies = originals.iter().rev().enumerate().map(|(n, (_, new))| {
                let store = if n % 2 == 0 { a.clone() } else { b.clone() };
                let copy = NewEvent { id: EventId::generate(), ..new.clone() };
                async move { store.ingest(copy).await }
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
                a.ingest(thin(&format!("c{k}"), &format!("seed{round}-{k}"))).await.unwrap();
            }
            let forward = (0..8).map(|k| {
                let a = a.clone();
                let new = thin(&format!("c{k}"), &format!("f{round}-{k}"));
                async move { a.ingest(new).await }
            });
            let backward = (0..8).rev().map(|k| {
                let b = b.clone();
                let new = thin(&format!("c{k}"), &format!("b{round}-{k}"));
                async move { b.ingest(new).await }
            });
            let (f, b_) =
                tokio::join!(futures_util::future::join_all(forward), futures_util::future::join_all(backward));
            for result in f.into_iter().chain(b_) {
                assert!(result.is_ok(), "round {round}: {result:?}");
            }
        }
    }
}

mod heads {
    //! The head flag under contention. An ingest that finds a queue's head
    //! still active and an outcome finishing that head, racing, must not
    //! both leave the queue without a head (each not seeing the other's
    //! uncommitted row): both take the queue's lock. The first test fills
    //! and drains queues on two instances and checks nothing stalls; the
    //! second checks the lock itself.

    use std::sync::Arc;

    use hookgate_store::conformance::{T0, event};
    use hookgate_store::{Attempt, Store, Verdict};

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
                        filler.ingest(new).await.unwrap();
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
                let attempt = Attempt {
                    attempt: claim.attempt,
                    started_at_ms: T0,
                    duration_ms: 1,
                    status: Some(200),
                    error: None,
                };
                drainer.finish(&claim.id, attempt, Verdict::Delivered, T0)
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
        store.ingest(new).await.unwrap();
        let claim = store.claim("app", T0, 10, 60_000).await.unwrap().pop().unwrap();

        // Stand in for an ingest of queue "q" in progress: hold its lock.
        let (mut holder, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let tx = holder.transaction().await.unwrap();
        let lock = hookgate_postgres::lock_key("o", "src", b"q");
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock]).await.unwrap();

        let finishing = {
            let store = store.clone();
            tokio::spawn(async move {
                let attempt = Attempt {
                    attempt: claim.attempt,
                    started_at_ms: T0,
                    duration_ms: 1,
                    status: Some(200),
                    error: None,
                };
                store.finish(&claim.id, attempt, Verdict::Delivered, T0).await
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
}

mod clock_skew {
    //! An instance whose clock is wrong must not judge leases by it.

    use hookgate_store::conformance::event;
    use hookgate_store::{Ingested, Store};

    use super::*;

    fn ten_seconds_ahead() -> i64 {
        hookgate_postgres::system_ms() + 10_000
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_clock_running_ahead_takes_no_live_lease() {
        let Some(url) = fresh_schema_url().await else { return };
        let honest = PostgresStore::connect(&url, 4).await.unwrap();
        let ahead = PostgresStore::connect_with_clock(&url, 4, ten_seconds_ahead).await.unwrap();

        let mut new = event("src", honest.now_ms());
        new.order_key = Some("K".into());
        let Ingested::Accepted { id, .. } = honest.ingest(new).await.unwrap() else { panic!() };
        let claims = honest.claim("app", honest.now_ms(), 10, 5_000).await.unwrap();
        assert_eq!(claims.len(), 1);
        // By its own clock the 5 s lease ended 5 s ago; by the database's it is live.
        let stolen = ahead.claim("app", ahead.now_ms(), 10, 5_000).await.unwrap();
        assert!(stolen.is_empty(), "an instance 10 s ahead took the live lease of {id}");
        let skew = (ahead.now_ms() - honest.now_ms()).abs();
        assert!(skew < 1_000, "both read the database's clock (apart by {skew} ms)");
    }
}

mod claim_cost {
    //! A claim walks queue heads only: with 5,000 events blocked behind a
    //! head in flight it reads as many buffers as with none (before the head
    //! flag, each claim stepped over the whole blocked backlog: 6 events/s
    //! drained on 4 order keys).

    use std::sync::Arc;

    use hookgate_postgres::{CLAIM, INDEXED_PLANS};
    use hookgate_store::Store;
    use hookgate_store::conformance::{DEST, T0, event};

    use super::*;

    /// Shared buffers (hit + read) the claim touches, from its plan's top
    /// node, run on a connection set up as the store's write connections are,
    /// and rolled back.
    async fn buffers_of_a_claim(url: &str) -> u64 {
        let mut config: tokio_postgres::Config = url.parse().unwrap();
        let given = config.get_options().unwrap_or_default().to_owned();
        config.options(format!("{given} {INDEXED_PLANS}"));
        let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute("BEGIN").await.unwrap();
        let explain = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {CLAIM}");
        let lines: Vec<String> = client
            .query(&explain, &[&DEST, &T0, &10i64, &(T0 + 60_000)])
            .await
            .unwrap()
            .iter()
            .map(|row| row.get(0))
            .collect();
        client.batch_execute("ROLLBACK").await.unwrap();
        assert!(lines[0].contains("rows=0"), "nothing is due: the only head is in flight\n{}", lines.join("\n"));
        let buffers = lines.iter().find(|l| l.trim_start().starts_with("Buffers: shared")).expect("a Buffers line");
        buffers
            .split_whitespace()
            .filter_map(|part| part.strip_prefix("hit=").or_else(|| part.strip_prefix("read=")))
            .map(|n| n.trim_end_matches(',').parse::<u64>().unwrap())
            .sum()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_claim_costs_the_same_however_deep_the_blocked_backlog() {
        let Some(url) = fresh_schema_url().await else { return };
        let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 8).await.unwrap());
        let keyed = || {
            let mut new = event("src", T0);
            new.order_key = Some("tenant-1".into());
            new
        };
        store.ingest(keyed()).await.unwrap();
        assert_eq!(store.claim(DEST, T0, 10, 60_000).await.unwrap().len(), 1);
        let shallow = buffers_of_a_claim(&url).await;
        let writers: Vec<_> = (0..20)
            .map(|_| {
                let (store, keyed) = (store.clone(), keyed);
                tokio::spawn(async move {
                    for _ in 0..250 {
                        store.ingest(keyed()).await.unwrap();
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap();
        }
        let deep = buffers_of_a_claim(&url).await;
        eprintln!("claim: {shallow} buffers with no blocked events, {deep} with 5,000");
        assert!(deep <= shallow + 2, "a claim read {deep} buffers with 5,000 blocked events, {shallow} with none");
    }
}

mod isolation {
    //! One row the database refuses fails that event alone: the batch it
    //! shared with others is retried without it (ingest in halves, outcomes
    //! one by one). The refusal is made real with a CHECK constraint the test
    //! adds to its own schema.

    use std::sync::Arc;

    use hookgate_store::conformance::{DEST, T0, event};
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
                tokio::spawn(async move { store.ingest(event(if n == 30 { "poison" } else { "src" }, T0)).await })
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
            store.ingest(event("src", T0)).await.unwrap();
        }
        let claims = store.claim(DEST, T0, 100, 60_000).await.unwrap();
        assert_eq!(claims.len(), 40);
        refuse(&url, "ALTER TABLE attempts ADD CONSTRAINT no_poison CHECK (error IS DISTINCT FROM 'poison')").await;
        let finishes: Vec<_> = claims
            .iter()
            .enumerate()
            .map(|(n, claim)| {
                let (store, id, attempt) = (store.clone(), claim.id.clone(), claim.attempt);
                let error = (n == 20).then(|| "poison".to_owned());
                tokio::spawn(async move {
                    let attempt = Attempt { attempt, started_at_ms: T0, duration_ms: 1, status: Some(500), error };
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
}

mod orphans {
    //! A dedupe key outlives its event (retention deletes events, keys keep
    //! their window): a copy arriving then is a duplicate of an event that is
    //! gone, and must not leave a duplicate count for it that nothing deletes.

    use hookgate_core::State;
    use hookgate_store::conformance::{DEST, T0, event};
    use hookgate_store::{Attempt, Ingested, Store, Verdict};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_copy_of_a_deleted_event_leaves_no_duplicate_count() {
        let Some(url) = fresh_schema_url().await else { return };
        let store = PostgresStore::connect(&url, 4).await.unwrap();
        let mut original = event("src", T0);
        original.dedupe_key = Some("evt_1".into());
        let Ingested::Accepted { id, .. } = store.ingest(original.clone()).await.unwrap() else { panic!() };
        let claim = store.claim(DEST, T0, 1, 60_000).await.unwrap().pop().unwrap();
        let attempt =
            Attempt { attempt: claim.attempt, started_at_ms: T0, duration_ms: 1, status: Some(200), error: None };
        assert!(store.finish(&id, attempt, Verdict::Delivered, T0).await.unwrap());
        assert_eq!(store.purge_finished(State::Delivered, T0 + 1, 10).await.unwrap(), 1);
        let copy = hookgate_store::NewEvent { id: hookgate_core::EventId::generate(), ..original };
        assert!(matches!(store.ingest(copy).await.unwrap(), Ingested::Duplicate { .. }), "the key is remembered");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let left: i64 = client.query_one("SELECT COUNT(*) FROM event_duplicates", &[]).await.unwrap().get(0);
        assert_eq!(left, 0, "a duplicate count for an event that is gone");
    }
}

mod vacuum {
    //! Every claim and outcome leaves a dead row version whose entry stays in
    //! the heads index until a vacuum, and a claim's walk steps over them (see
    //! migration 3). The schema asks autovacuum to come early for the queue
    //! table, unthrottled; whether it runs at all is the server's setting
    //! (`autovacuum = on`).

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_table_is_vacuumed_early_and_unthrottled() {
        let Some(url) = fresh_schema_url().await else { return };
        let _store = PostgresStore::connect(&url, 1).await.unwrap();
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        let options: Vec<String> = client
            .query_one("SELECT reloptions FROM pg_class WHERE oid = 'events'::regclass", &[])
            .await
            .unwrap()
            .get(0);
        for expected in [
            "autovacuum_vacuum_scale_factor=0.01",
            "autovacuum_vacuum_threshold=1000",
            "autovacuum_vacuum_cost_delay=0",
            "autovacuum_analyze_scale_factor=0.02",
        ] {
            assert!(options.iter().any(|o| o == expected), "{expected} missing from {options:?}");
        }
    }
}

mod unreadable {
    //! A row hookgate cannot read (an id or headers it never writes) is held
    //! with its order key's queue; it does not fail every claim of the
    //! destination (a first seeding by hand stopped all deliveries that way).

    use hookgate_store::conformance::{DEST, T0, event};
    use hookgate_store::{Ingested, NewEvent, Store};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unreadable_row_holds_its_queue_and_no_other() {
        let Some(url) = fresh_schema_url().await else { return };
        let store = PostgresStore::connect(&url, 4).await.unwrap();
        let mut ids = Vec::new();
        for key in ["bad-id", "bad-headers", "good", "bad-id"] {
            let new = NewEvent { order_key: Some(key.into()), ..event("src", T0) };
            let Ingested::Accepted { id, .. } = store.ingest(new).await.unwrap() else { panic!() };
            ids.push(id);
        }
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.execute("UPDATE events SET id = 'evt_edited_by_hand' WHERE id = $1", &[&ids[0].as_str()]).await.unwrap();
        client.execute("UPDATE events SET headers = '\\xff' WHERE id = $1", &[&ids[1].as_str()]).await.unwrap();
        let claimed = store.claim(DEST, T0, 10, 60_000).await.unwrap();
        assert_eq!(claimed.iter().map(|claim| &claim.id).collect::<Vec<_>>(), [&ids[2]]);
        let states: Vec<(String, String, i32)> = client
            .query("SELECT id, state, attempts FROM events ORDER BY seq", &[])
            .await
            .unwrap()
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .collect();
        let expected = [
            ("evt_edited_by_hand", "delivering", 0),
            (ids[1].as_str(), "delivering", 0),
            (ids[2].as_str(), "delivering", 1),
            (ids[3].as_str(), "pending", 0),
        ]
        .map(|(id, state, attempts)| (id.to_owned(), state.to_owned(), attempts));
        assert_eq!(states, expected, "the unreadable rows are leased, not attempted; the event behind one waits");
        assert!(store.claim(DEST, T0 + 1, 10, 60_000).await.unwrap().is_empty(), "nothing else is due");
        let listed = store.list(&hookgate_store::ListFilter { limit: 2, ..Default::default() }).await.unwrap();
        let cursor = listed.next_cursor.expect("a second page");
        let rest = hookgate_store::ListFilter { limit: 2, cursor: Some(cursor), ..Default::default() };
        let listed: Vec<_> = listed.events.into_iter().chain(store.list(&rest).await.unwrap().events).collect();
        let listed: Vec<_> = listed.iter().map(|record| &record.id).collect();
        assert_eq!(listed, [&ids[3], &ids[2], &ids[1]], "a list leaves out the row it cannot read, and goes on");
    }
}

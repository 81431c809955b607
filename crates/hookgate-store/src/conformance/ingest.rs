use super::*;

/// Everything comes back as it went in, byte for byte: keys, header values and
/// bodies may hold NUL and bytes that are not UTF-8.
pub async fn ingest_round_trips(store: Arc<dyn Store>) {
    let mut new = keyed("cus_1", T0);
    new.order_key = Some(Key::from(b"cus\x00\xff1".as_slice()));
    new.dedupe_key = Some(Key::from(b"evt\x00a".as_slice()));
    new.coalesce_key = Some(key("changed:cus_1"));
    new.warnings = vec!["order_key: json.x is missing".into()];
    new.body = Bytes::from_static(&[0, 159, 146, 150, b'{']);
    new.headers.push("x-raw", b"caf\xe9\x00".as_slice());
    let id = accept(&*store, new.clone()).await;
    assert_eq!(id, new.id);
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.record.state, hookgate_core::EventState::Pending);
    assert_eq!(got.record.source, "src");
    assert_eq!(got.record.destinations, [DEST]);
    assert_eq!(got.deliveries.len(), 1);
    assert_eq!(got.deliveries[0].record.state, State::Pending);
    assert_eq!(got.deliveries[0].record.order_key, new.order_key, "the delivery's queue key: the source's here");
    assert_eq!(got.record.received_at_ms, T0);
    assert_eq!(got.record.dedupe_key, new.dedupe_key);
    assert_eq!(got.record.order_key, new.order_key);
    assert_eq!(got.record.coalesce_key, new.coalesce_key);
    assert_eq!(got.record.warnings, new.warnings);
    assert_eq!((got.record.duplicates, got.record.last_duplicate_at_ms), (0, None));
    assert_eq!(got.record.attempts, 0);
    assert_eq!(got.headers, new.headers, "header values are stored byte for byte");
    assert_eq!(got.body, new.body, "bodies are stored byte for byte");
    assert!(got.deliveries[0].attempts.is_empty());
    assert_eq!(
        got.routing,
        vec![RouteVerdict {
            route: "src->app".into(),
            destination: DEST.into(),
            matched: true,
            reason: "matched".into()
        }]
    );
    assert!(store.get(&EventId::generate()).await.unwrap().is_none());
    let claims = store.claim(DEST, T0, 10, LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!((&claims[0].headers, &claims[0].body, &claims[0].order_key), (&new.headers, &new.body, &new.order_key));
    let listed = store.list(&ListFilter { order_key: new.order_key.clone(), limit: 10, ..Default::default() }).await;
    assert_eq!(listed.unwrap().events.len(), 1, "a key with NUL and non-UTF-8 bytes filters exactly");
}

pub async fn duplicate_points_at_original(store: Arc<dyn Store>) {
    let mut first = event("src", T0);
    first.dedupe_key = Some(key("evt_1"));
    let original = accept(&*store, first.clone()).await;
    for n in 1..=2 {
        let copy = NewEvent { id: EventId::generate(), received_at_ms: T0 + n, ..first.clone() };
        let copy_id = copy.id.clone();
        assert_eq!(store.ingest(routed(copy)).await.unwrap(), Ingested::Duplicate { original: original.clone() });
        assert!(store.get(&copy_id).await.unwrap().is_none(), "a duplicate stores nothing new");
    }
    let record = store.get(&original).await.unwrap().unwrap().record;
    assert_eq!((record.duplicates, record.last_duplicate_at_ms), (2, Some(T0 + 2)), "how many copies, the last when");
}

pub async fn concurrent_duplicates_store_one(store: Arc<dyn Store>) {
    const COPIES: usize = 64;
    let barrier = Arc::new(tokio::sync::Barrier::new(COPIES));
    let tasks: Vec<_> = (0..COPIES)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut copy = event("src", T0);
                copy.dedupe_key = Some(key("evt_race"));
                barrier.wait().await;
                store.ingest(routed(copy)).await.expect("ingest")
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
    assert_eq!(accepted.len(), 1, "exactly one copy is stored");
    assert!(originals.iter().all(|o| *o == accepted[0]));
    let page = store.list(&ListFilter { limit: 500, ..Default::default() }).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].duplicates, (COPIES - 1) as u64);
}

pub async fn dedupe_window_expires(store: Arc<dyn Store>) {
    let mut first = event("src", T0);
    first.dedupe_key = Some(key("k"));
    first.dedupe_window_ms = 1_000;
    let original = accept(&*store, first.clone()).await;
    let inside = NewEvent { id: EventId::generate(), received_at_ms: T0 + 999, ..first.clone() };
    assert_eq!(store.ingest(routed(inside)).await.unwrap(), Ingested::Duplicate { original });
    let after = NewEvent { id: EventId::generate(), received_at_ms: T0 + 1_000, ..first.clone() };
    let after_id = after.id.clone();
    assert_eq!(accept(&*store, after).await, after_id, "the window has ended: a new event");
    let again = NewEvent { id: EventId::generate(), received_at_ms: T0 + 1_001, ..first };
    assert_eq!(store.ingest(routed(again)).await.unwrap(), Ingested::Duplicate { original: after_id });
}

pub async fn dedupe_is_per_source(store: Arc<dyn Store>) {
    let mut a = event("stripe", T0);
    a.dedupe_key = Some(key("evt_1"));
    let b = NewEvent { id: EventId::generate(), source: "github".into(), ..a.clone() };
    accept(&*store, a).await;
    accept(&*store, b).await;
}

pub async fn purge_forgets_expired_keys(store: Arc<dyn Store>) {
    let mut first = event("src", T0);
    first.dedupe_key = Some(key("k"));
    first.dedupe_window_ms = 1_000;
    let original = accept(&*store, first.clone()).await;
    assert_eq!(store.purge_expired_dedupe(T0 + 999, 100).await.unwrap(), 0, "a live key is never purged");
    let inside = NewEvent { id: EventId::generate(), received_at_ms: T0 + 999, ..first.clone() };
    assert_eq!(store.ingest(routed(inside)).await.unwrap(), Ingested::Duplicate { original }, "the key is still live");
    // Records deleted: each backend's own count (SQLite keeps a stored event's key with it).
    assert!(store.purge_expired_dedupe(T0 + 1_000, 100).await.unwrap() <= 1);
    // Forgotten: the same key is a new event (checked by taking its place, not by the count alone).
    let again = NewEvent { id: EventId::generate(), received_at_ms: T0 + 1_000, ..first };
    let again_id = again.id.clone();
    assert_eq!(accept(&*store, again).await, again_id);
    store.ping().await.unwrap();
}

pub async fn coalesce_supersedes_only_pending(store: Arc<dyn Store>) {
    let thin = |at| NewEvent { coalesce_key: Some(key("changed:42")), ..keyed("42", at) };
    let c1 = accept(&*store, thin(T0)).await;
    let other = accept(&*store, NewEvent { coalesce_key: Some(key("changed:43")), ..keyed("43", T0) }).await;
    let c2_event = thin(T0 + 1);
    let c2 = c2_event.id.clone();
    assert_eq!(store.ingest(routed(c2_event)).await.unwrap(), Ingested::Accepted { id: c2.clone(), superseded: 1 });
    let detail = store.get(&c1).await.unwrap().unwrap();
    assert_eq!(detail.deliveries[0].record.state, State::Superseded);
    assert_eq!(detail.deliveries[0].record.superseded_by, Some(c2.clone()));
    assert_eq!(detail.record.superseded_by, Some(c2.clone()));
    assert_eq!(state_of(&*store, &other).await, State::Pending, "other keys are untouched");
    assert_eq!(claim_ids(&*store, T0 + 1).await, sorted(vec![c2.clone(), other]));
    // c3 arrives while c2 is being delivered: c2 keeps going, c3 waits and is delivered after.
    let c3_event = thin(T0 + 2);
    let c3 = c3_event.id.clone();
    assert_eq!(store.ingest(routed(c3_event)).await.unwrap(), Ingested::Accepted { id: c3.clone(), superseded: 0 });
    assert_eq!(state_of(&*store, &c2).await, State::Delivering);
    assert_eq!(claim_ids(&*store, T0 + 2).await, vec![]);
    assert!(finish(&*store, &c2, ok_attempt(1, T0 + 1), Verdict::Delivered, T0 + 3).await);
    assert_eq!(claim_ids(&*store, T0 + 3).await, vec![c3]);
}

/// A coalesce key need not follow the order key: superseding the head of
/// another key's queue must let that queue move on.
pub async fn coalesce_across_order_keys_hands_the_queue_on(store: Arc<dyn Store>) {
    let a1 = accept(&*store, NewEvent { coalesce_key: Some(key("c")), ..keyed("A", T0) }).await;
    let a2 = accept(&*store, keyed("A", T0)).await;
    let b1 = accept(&*store, NewEvent { coalesce_key: Some(key("c")), ..keyed("B", T0) }).await;
    assert_eq!(state_of(&*store, &a1).await, State::Superseded);
    assert_eq!(claim_ids(&*store, T0).await, sorted(vec![a2, b1]));
}

/// Retention deletes finished events of one state that finished before a
/// time (with their attempts), a batch at a time, and nothing else. Their
/// dedupe keys stay for their own window: a copy is still a duplicate.
pub async fn retention_deletes_only_old_finished_events(store: Arc<dyn Store>) {
    let mut delivered = Vec::new();
    for n in 0..5 {
        let mut new = keyed(&format!("D{n}"), T0);
        new.dedupe_key = Some(key(&format!("d{n}")));
        delivered.push((accept(&*store, new.clone()).await, new));
    }
    let dead = accept(&*store, keyed("X", T0)).await;
    let pending = accept(&*store, keyed("P", T0 + 50)).await;
    assert_eq!(store.claim(DEST, T0, 6, LEASE).await.unwrap().len(), 6);
    for (n, (id, _)) in delivered.iter().enumerate() {
        assert!(finish(&*store, id, ok_attempt(1, T0), Verdict::Delivered, T0 + 10 + n as i64).await);
    }
    assert!(finish(&*store, &dead, failed_attempt(1, T0), Verdict::Dead, T0 + 10).await);

    // Finished at T0+10..T0+14: "before T0+13" takes the first three, two per call.
    assert_eq!(store.purge_finished(State::Delivered, T0 + 13, 2).await.unwrap(), 2);
    assert_eq!(store.purge_finished(State::Delivered, T0 + 13, 2).await.unwrap(), 1);
    assert_eq!(store.purge_finished(State::Delivered, T0 + 13, 2).await.unwrap(), 0);
    for (n, (id, _)) in delivered.iter().enumerate() {
        let kept = store.get(id).await.unwrap();
        assert_eq!(kept.is_some(), n >= 3, "delivered event {n}");
    }
    assert_eq!(state_of(&*store, &dead).await, State::Dead, "another state is kept");
    assert_eq!(state_of(&*store, &pending).await, State::Pending, "active events are never purged");
    let stats = store.stats().await.unwrap();
    let finished = hookgate_core::EventState::Delivered;
    assert_eq!(stats.iter().find(|s| s.state == finished).map(|s| s.count), Some(2));

    // The deleted event's key is still remembered: its copy is a duplicate.
    let (gone, original) = &delivered[0];
    let copy = NewEvent { id: EventId::generate(), received_at_ms: T0 + 20, ..original.clone() };
    assert_eq!(store.ingest(routed(copy)).await.unwrap(), Ingested::Duplicate { original: gone.clone() });
    assert_eq!(store.purge_finished(State::Dead, T0 + 11, 10).await.unwrap(), 1);
    assert!(store.get(&dead).await.unwrap().is_none());
}

/// Many events of one coalesce key (and copies of some) arriving at once,
/// which a batching store takes in one go: exactly one is left waiting, every
/// other stored one points (through the others) at it, each copy is a
/// duplicate of its original, and the queue has that one head.
pub async fn concurrent_coalescing_leaves_one_waiting(store: Arc<dyn Store>) {
    const EVENTS: usize = 40;
    const COPIES: usize = 10;
    let thin = |n: usize| NewEvent {
        coalesce_key: Some(key("changed:7")),
        dedupe_key: Some(key(&format!("e{n}"))),
        ..keyed("7", T0)
    };
    let barrier = Arc::new(tokio::sync::Barrier::new(EVENTS + COPIES));
    let tasks: Vec<_> = (0..EVENTS + COPIES)
        .map(|n| {
            let (store, barrier) = (store.clone(), barrier.clone());
            let new = thin(n % EVENTS);
            tokio::spawn(async move {
                barrier.wait().await;
                (n % EVENTS, store.ingest(routed(new)).await.expect("ingest"))
            })
        })
        .collect();
    let (mut stored, mut copies, mut superseded) = (std::collections::HashMap::new(), Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            (n, Ingested::Accepted { id, superseded: s }) => {
                assert!(stored.insert(n, id).is_none(), "one event stored per dedupe key");
                superseded += s;
            }
            (n, Ingested::Duplicate { original }) => copies.push((n, original)),
        }
    }
    assert_eq!((stored.len(), copies.len()), (EVENTS, COPIES));
    for (n, original) in copies {
        assert_eq!(original, stored[&n], "a copy is a duplicate of its own original");
    }
    let mut waiting = Vec::new();
    let mut next = std::collections::HashMap::new();
    for id in stored.values() {
        let record = store.get(id).await.unwrap().unwrap().deliveries.remove(0).record;
        match record.state {
            State::Pending => waiting.push(id.clone()),
            State::Superseded => {
                next.insert(id.clone(), record.superseded_by.expect("superseded by another event"));
            }
            other => panic!("{id} is {other:?}"),
        }
    }
    assert_eq!(waiting.len(), 1, "exactly one event is left waiting");
    assert_eq!(superseded, (EVENTS - 1) as u64, "each stored event but one was superseded once");
    for start in next.keys() {
        let (mut at, mut hops) = (start.clone(), 0);
        while let Some(by) = next.get(&at) {
            (at, hops) = (by.clone(), hops + 1);
            assert!(hops <= EVENTS, "superseded_by goes round in a circle");
        }
        assert_eq!(at, waiting[0], "every superseded event leads to the one waiting");
    }
    assert_eq!(claim_ids(&*store, T0).await, waiting, "the queue's one head");
    assert!(finish(&*store, &waiting[0], ok_attempt(1, T0), Verdict::Delivered, T0 + 1).await);
    assert_eq!(claim_ids(&*store, T0 + 1).await, vec![]);
}

/// A queue filled and drained at the same time never stalls: an ingest that
/// finds the head still active and an outcome finishing that head, racing,
/// must leave the queue with a head. Events go out one at a time per key,
/// each key's in the order they were stored.
pub async fn a_queue_filled_while_draining_never_stalls(store: Arc<dyn Store>) {
    const WRITERS: usize = 4;
    const EACH: usize = 50;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for n in 0..EACH {
                    let key_name = if (w + n) % 2 == 0 { "even" } else { "odd" };
                    accept(&*store, keyed(key_name, T0)).await;
                    tokio::task::yield_now().await;
                }
            })
        })
        .collect();
    let (mut delivered, mut idle_rounds) = (0, 0);
    // Bounded by rounds without progress, not by time: a stalled queue ends the loop.
    while delivered < WRITERS * EACH && idle_rounds < 2_000 {
        let claims = store.claim(DEST, T0, 10, LEASE).await.expect("claim");
        let mut keys: Vec<_> = claims.iter().map(|c| c.order_key.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), claims.len(), "two events of one key claimed at once");
        idle_rounds = if claims.is_empty() { idle_rounds + 1 } else { 0 };
        for claim in claims {
            let moved = store.finish(&claim.delivery, ok_attempt(claim.attempt, T0), Verdict::Delivered, T0).await;
            assert!(moved.unwrap());
            delivered += 1;
        }
        if idle_rounds > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(delivered, WRITERS * EACH, "a queue stalled with events still waiting");
}

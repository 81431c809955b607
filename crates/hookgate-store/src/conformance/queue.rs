use super::*;

pub async fn order_key_is_fifo_one_at_a_time(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    let k2 = accept(&*store, keyed("K", T0)).await;
    let k3 = accept(&*store, keyed("K", T0)).await;
    let l1 = accept(&*store, keyed("L", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, sorted(vec![k1.clone(), l1]));
    assert_eq!(claim_ids(&*store, T0).await, vec![], "K's head is in flight");
    assert!(finish(&*store, &k1, ok_attempt(1, T0), Verdict::Delivered, T0 + 1).await);
    assert_eq!(state_of(&*store, &k1).await, State::Delivered);
    assert_eq!(claim_ids(&*store, T0 + 1).await, vec![k2.clone()]);
    assert!(finish(&*store, &k2, ok_attempt(1, T0), Verdict::Delivered, T0 + 2).await);
    assert_eq!(claim_ids(&*store, T0 + 2).await, vec![k3]);
}

pub async fn retry_holds_the_key_until_due(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    let k2 = accept(&*store, keyed("K", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    let retry = Verdict::Retry { at_ms: T0 + 1_000 };
    assert!(finish(&*store, &k1, failed_attempt(1, T0), retry, T0 + 10).await);
    assert_eq!(state_of(&*store, &k1).await, State::Pending);
    assert_eq!(claim_ids(&*store, T0 + 999).await, vec![], "k2 waits behind k1's retry");
    let claims = store.claim(DEST, T0 + 1_000, 10, LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!((claims[0].id.clone(), claims[0].attempt, claims[0].round_attempt), (k1.clone(), 2, 2));
    assert!(finish(&*store, &k1, ok_attempt(2, T0 + 1_000), Verdict::Delivered, T0 + 1_001).await);
    assert_eq!(claim_ids(&*store, T0 + 1_001).await, vec![k2]);
    let detail = store.get(&k1).await.unwrap().unwrap();
    assert_eq!(detail.deliveries[0].attempts, vec![failed_attempt(1, T0), ok_attempt(2, T0 + 1_000)]);
}

pub async fn dead_does_not_block_the_key(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    let k2 = accept(&*store, keyed("K", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    assert!(finish(&*store, &k1, failed_attempt(1, T0), Verdict::Dead, T0 + 1).await);
    assert_eq!(state_of(&*store, &k1).await, State::Dead);
    assert_eq!(claim_ids(&*store, T0 + 1).await, vec![k2]);
}

pub async fn keyless_events_run_in_parallel(store: Arc<dyn Store>) {
    let a = accept(&*store, event("src", T0)).await;
    let b = accept(&*store, event("src", T0)).await;
    let c = accept(&*store, event("src", T0 + 5)).await;
    assert_eq!(claim_ids(&*store, T0 + 5).await, sorted(vec![a, b, c]));
    let limited = accept(&*store, event("src", T0)).await;
    accept(&*store, event("src", T0)).await;
    let claims = store.claim(DEST, T0, 1, LEASE).await.unwrap();
    assert_eq!(claims.len(), 1, "limit is respected");
    assert_eq!(claims[0].id, limited, "storage order first");
}

/// A late outcome (its lease ended, the event was claimed again) moves
/// nothing: not the event, and not the queue behind it either — the event
/// is still its queue's head, and what comes after it waits, even while it
/// waits for a retry.
pub async fn expired_lease_is_reclaimed_and_old_claim_fenced(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    let k2 = accept(&*store, keyed("K", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    assert_eq!(claim_ids(&*store, T0 + LEASE - 1).await, vec![], "lease still held");
    let again = store.claim(DEST, T0 + LEASE, 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1, "only the head comes back, never the one behind it");
    assert_eq!((again[0].id.clone(), again[0].attempt), (k1.clone(), 2));
    let stale = finish(&*store, &k1, ok_attempt(1, T0), Verdict::Delivered, T0 + LEASE + 1).await;
    assert!(!stale, "the first claim lost its lease");
    assert_eq!(state_of(&*store, &k1).await, State::Delivering);
    assert_eq!(claim_ids(&*store, T0 + LEASE + 1).await, vec![], "a late outcome lets nothing past the head");
    let retry_at = T0 + LEASE + 1_000;
    let current = failed_attempt(2, T0 + LEASE);
    assert!(finish(&*store, &k1, current, Verdict::Retry { at_ms: retry_at }, T0 + LEASE + 2).await);
    assert_eq!(claim_ids(&*store, retry_at - 1).await, vec![], "the one behind waits for the head's retry");
    assert_eq!(claim_ids(&*store, retry_at).await, vec![k1.clone()]);
    assert!(finish(&*store, &k1, ok_attempt(3, retry_at), Verdict::Delivered, retry_at + 1).await);
    assert_eq!(state_of(&*store, &k1).await, State::Delivered);
    assert_eq!(claim_ids(&*store, retry_at + 1).await, vec![k2], "then the queue goes on");
}

pub async fn replay_goes_to_the_back_of_the_queue(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    assert_eq!(store.replay(&k1, T0).await.unwrap(), 0, "pending events are not replayed");
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    assert!(finish(&*store, &k1, failed_attempt(1, T0), Verdict::Dead, T0 + 1).await);
    let k2 = accept(&*store, keyed("K", T0 + 2)).await;
    assert_eq!(store.replay(&k1, T0 + 3).await.unwrap(), 1);
    assert_eq!(state_of(&*store, &k1).await, State::Pending);
    assert_eq!(claim_ids(&*store, T0 + 3).await, vec![k2.clone()], "k2 was stored before the replay");
    assert!(finish(&*store, &k2, ok_attempt(1, T0 + 3), Verdict::Delivered, T0 + 4).await);
    let claims = store.claim(DEST, T0 + 4, 10, LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!((claims[0].id.clone(), claims[0].attempt, claims[0].round_attempt), (k1.clone(), 2, 1));
    assert_eq!(store.replay(&EventId::generate(), T0).await.unwrap(), 0);
}

pub async fn next_due_reports_the_earliest_wakeup(store: Arc<dyn Store>) {
    assert_eq!(store.next_due(DEST, T0).await.unwrap(), None);
    let k1 = accept(&*store, keyed("K", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    assert_eq!(store.next_due(DEST, T0).await.unwrap(), Some(T0 + LEASE), "the lease's end");
    finish(&*store, &k1, failed_attempt(1, T0), Verdict::Retry { at_ms: T0 + 500 }, T0 + 1).await;
    assert_eq!(store.next_due(DEST, T0 + 1).await.unwrap(), Some(T0 + 500));
    assert_eq!(store.next_due("elsewhere", T0 + 1).await.unwrap(), None);
}

pub async fn claim_is_per_destination(store: Arc<dyn Store>) {
    let here = accept(&*store, keyed("K", T0)).await;
    let there = accept(&*store, to("billing", keyed("M", T0))).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![here]);
    let claims = store.claim("billing", T0, 10, LEASE).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![there]);
}

/// Two outcomes of one event at once: a late one from a claim whose lease
/// ended, and the current one. Each hears whether *it* moved the event
/// (twenty events at once, so a batching backend puts pairs in one batch).
pub async fn a_late_outcome_beside_the_current_one_hears_the_truth(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..20 {
        ids.push(accept(&*store, keyed(&format!("K{n}"), T0)).await);
    }
    assert_eq!(claim_ids(&*store, T0).await, sorted(ids.clone()));
    let again = store.claim(DEST, T0 + LEASE, 100, LEASE).await.unwrap();
    assert!(again.iter().all(|c| c.attempt == 2) && again.len() == 20);
    let finishes = ids.iter().flat_map(|id| {
        let late = finish(&*store, id, ok_attempt(1, T0), Verdict::Delivered, T0 + LEASE + 1);
        let current = finish(&*store, id, ok_attempt(2, T0 + LEASE), Verdict::Delivered, T0 + LEASE + 1);
        [late, current]
    });
    let moved: Vec<bool> = futures_util::future::join_all(finishes).await;
    for (n, pair) in moved.chunks(2).enumerate() {
        assert_eq!(pair, [false, true], "event {n}: only the current claim moved it");
    }
    for id in &ids {
        assert_eq!(state_of(&*store, id).await, State::Delivered);
        assert_eq!(
            store.get(id).await.unwrap().unwrap().deliveries[0].attempts.len(),
            2,
            "both attempts are on record"
        );
    }
}

/// A late outcome for a delivery that was replayed meanwhile (owed again, at
/// the back of its queue) moves nothing, and makes it no second head: the
/// queue's head stays the one delivery claimable. (PostgreSQL promoted from
/// the replayed delivery's new place; the differential found it.)
pub async fn a_late_outcome_of_a_replayed_delivery_makes_no_second_head(store: Arc<dyn Store>) {
    let first = accept(&*store, keyed("K", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![first.clone()]);
    let second = accept(&*store, keyed("K", T0 + 1)).await;
    assert!(finish(&*store, &first, ok_attempt(1, T0), Verdict::Dead, T0 + 2).await, "the first dies");
    let delivery = delivery_to(&*store, &first, DEST).await;
    assert!(store.replay_delivery(&delivery, T0 + 3).await.unwrap(), "replayed: behind the second");
    // The same claim's outcome again, late (a retry of a lost answer, say).
    assert!(!finish(&*store, &first, ok_attempt(1, T0), Verdict::Delivered, T0 + 4).await, "fenced");
    assert_eq!(claim_ids(&*store, T0 + 5).await, vec![second.clone()], "one head: the second, not the replayed first");
    assert!(finish(&*store, &second, ok_attempt(1, T0 + 5), Verdict::Delivered, T0 + 6).await);
    assert_eq!(claim_ids(&*store, T0 + 7).await, vec![first], "then the replayed one");
}

/// A paused destination still takes events; nothing of it is claimed until
/// it resumes, then its queues go on in order.
pub async fn a_paused_destination_is_not_claimed(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    let k2 = accept(&*store, keyed("K", T0)).await;
    store.set_paused(DEST, true).await.unwrap();
    assert!(store.paused().await.unwrap().contains(&DEST.to_owned()));
    let k3 = accept(&*store, keyed("K", T0 + 1)).await;
    assert_eq!(claim_ids(&*store, T0 + 10).await, vec![], "paused: nothing is claimed");
    assert_eq!(store.next_due(DEST, T0 + 10).await.unwrap(), None, "paused: nothing falls due");
    let elsewhere = accept(&*store, to("billing", keyed("M", T0))).await;
    assert_eq!(store.claim("billing", T0, 10, LEASE).await.unwrap()[0].id, elsewhere, "other destinations go on");
    store.set_paused(DEST, true).await.unwrap(); // pausing twice is pausing
    store.set_paused(DEST, false).await.unwrap();
    assert!(store.paused().await.unwrap().is_empty());
    for expected in [k1, k2, k3] {
        let claims = store.claim(DEST, T0 + 10, 10, LEASE).await.unwrap();
        assert_eq!(claims.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![expected.clone()], "in order");
        assert!(finish(&*store, &expected, ok_attempt(1, T0), Verdict::Delivered, T0 + 10).await);
    }
}

/// A rate limit's bucket: full at first (a fifth of a second's worth), then
/// refilled at the rate, never past full; one bucket per destination.
pub async fn rate_limit_tokens_refill_at_the_rate(store: Arc<dyn Store>) {
    let take = |want: u32, at: i64| store.take_tokens(DEST, 50.0, want, at);
    assert_eq!(take(100, T0).await.unwrap(), 10, "a full bucket: 0.2 s at 50/s");
    assert_eq!(take(100, T0).await.unwrap(), 0, "empty");
    assert_eq!(take(100, T0 + 100).await.unwrap(), 5, "refilled for 100 ms");
    assert_eq!(take(2, T0 + 200).await.unwrap(), 2, "no more than wanted");
    assert_eq!(take(100, T0 + 200).await.unwrap(), 3, "the rest of that refill");
    assert_eq!(take(100, T0 + 150).await.unwrap(), 0, "a clock that steps back refills nothing");
    assert_eq!(take(100, T0 + 60_000).await.unwrap(), 10, "never past full");
    store.give_back_tokens(DEST, 50.0, 4).await.unwrap();
    assert_eq!(take(100, T0 + 60_000).await.unwrap(), 4, "unused tokens given back");
    store.give_back_tokens(DEST, 50.0, 1_000).await.unwrap();
    assert_eq!(take(100, T0 + 60_000).await.unwrap(), 10, "never past full, given back either");
    assert_eq!(store.take_tokens("billing", 50.0, 100, T0).await.unwrap(), 10, "a bucket per destination");
}

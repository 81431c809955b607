//! The suite every [`Store`] backend must pass. A backend runs it with
//! [`conformance_tests!`](crate::conformance_tests), giving an expression that
//! builds a fresh, empty store (its own file, database or schema) per test.

use std::sync::Arc;

use hookgate_core::{EventId, State};

use crate::{Attempt, Ingested, ListFilter, NewEvent, Store, Verdict};

/// A fixed "now" far from zero, so window and lease arithmetic is visible.
pub const T0: i64 = 1_800_000_000_000;
const LEASE: i64 = 30_000;
const DEST: &str = "app";

/// Generates one `#[tokio::test]` per conformance case.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            ingest_round_trips, duplicate_points_at_original, concurrent_duplicates_store_one,
            dedupe_window_expires, dedupe_is_per_source, order_key_is_fifo_one_at_a_time,
            retry_holds_the_key_until_due, dead_does_not_block_the_key, keyless_events_run_in_parallel,
            expired_lease_is_reclaimed_and_old_claim_fenced, coalesce_supersedes_only_pending,
            coalesce_across_order_keys_hands_the_queue_on,
            replay_goes_to_the_back_of_the_queue,
            list_pages_newest_first_with_filters, stats_count_by_source_and_state,
            next_due_reports_the_earliest_wakeup, purge_forgets_expired_keys, claim_is_per_destination);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store = $make;
                $crate::conformance::$case(std::sync::Arc::new(store)).await;
            }
        )*
    };
}

pub fn event(source: &str, at: i64) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        source: source.to_owned(),
        destination: DEST.to_owned(),
        received_at_ms: at,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"hello":"world"}"#.to_vec(),
        dedupe_key: None,
        dedupe_window_ms: 60_000,
        order_key: None,
        coalesce_key: None,
        warnings: vec![],
    }
}

fn keyed(order_key: &str, at: i64) -> NewEvent {
    NewEvent { order_key: Some(order_key.to_owned()), ..event("src", at) }
}

async fn accept(store: &dyn Store, event: NewEvent) -> EventId {
    match store.ingest(event).await.expect("ingest") {
        Ingested::Accepted { id, .. } => id,
        other => panic!("expected accepted, got {other:?}"),
    }
}

async fn claim_ids(store: &dyn Store, now: i64) -> Vec<EventId> {
    let mut ids: Vec<_> = store.claim(DEST, now, 100, LEASE).await.expect("claim").into_iter().map(|c| c.id).collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<EventId>) -> Vec<EventId> {
    ids.sort();
    ids
}

fn ok_attempt(attempt: u32, at: i64) -> Attempt {
    Attempt { attempt, started_at_ms: at, duration_ms: 5, status: Some(200), error: None }
}

fn failed_attempt(attempt: u32, at: i64) -> Attempt {
    Attempt { attempt, started_at_ms: at, duration_ms: 7, status: Some(500), error: Some("HTTP 500".into()) }
}

async fn state_of(store: &dyn Store, id: &EventId) -> State {
    store.get(id).await.expect("get").expect("event exists").record.state
}

pub async fn ingest_round_trips(store: Arc<dyn Store>) {
    let mut new = keyed("cus_1", T0);
    new.dedupe_key = Some("evt_a".into());
    new.coalesce_key = Some("changed:cus_1".into());
    new.warnings = vec!["order_key: json.x is missing".into()];
    new.body = vec![0, 159, 146, 150, b'{'];
    let id = accept(&*store, new.clone()).await;
    assert_eq!(id, new.id);
    let got = store.get(&id).await.unwrap().unwrap();
    assert_eq!(got.record.state, State::Pending);
    assert_eq!(got.record.source, "src");
    assert_eq!(got.record.destination, DEST);
    assert_eq!(got.record.received_at_ms, T0);
    assert_eq!(got.record.dedupe_key.as_deref(), Some("evt_a"));
    assert_eq!(got.record.order_key.as_deref(), Some("cus_1"));
    assert_eq!(got.record.coalesce_key.as_deref(), Some("changed:cus_1"));
    assert_eq!(got.record.warnings, new.warnings);
    assert_eq!(got.record.duplicates, 0);
    assert_eq!(got.record.attempts, 0);
    assert_eq!(got.headers, new.headers);
    assert_eq!(got.body, new.body, "bodies are stored byte for byte");
    assert!(got.attempts.is_empty());
    assert!(store.get(&EventId::generate()).await.unwrap().is_none());
}

pub async fn duplicate_points_at_original(store: Arc<dyn Store>) {
    let mut first = event("src", T0);
    first.dedupe_key = Some("evt_1".into());
    let original = accept(&*store, first.clone()).await;
    for n in 1..=2 {
        let copy = NewEvent { id: EventId::generate(), received_at_ms: T0 + n, ..first.clone() };
        let copy_id = copy.id.clone();
        assert_eq!(store.ingest(copy).await.unwrap(), Ingested::Duplicate { original: original.clone() });
        assert!(store.get(&copy_id).await.unwrap().is_none(), "a duplicate stores nothing new");
    }
    assert_eq!(store.get(&original).await.unwrap().unwrap().record.duplicates, 2);
}

pub async fn concurrent_duplicates_store_one(store: Arc<dyn Store>) {
    const COPIES: usize = 64;
    let barrier = Arc::new(tokio::sync::Barrier::new(COPIES));
    let tasks: Vec<_> = (0..COPIES)
        .map(|_| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                let mut copy = event("src", T0);
                copy.dedupe_key = Some("evt_race".into());
                barrier.wait().await;
                store.ingest(copy).await.expect("ingest")
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
    first.dedupe_key = Some("k".into());
    first.dedupe_window_ms = 1_000;
    let original = accept(&*store, first.clone()).await;
    let inside = NewEvent { id: EventId::generate(), received_at_ms: T0 + 999, ..first.clone() };
    assert_eq!(store.ingest(inside).await.unwrap(), Ingested::Duplicate { original });
    let after = NewEvent { id: EventId::generate(), received_at_ms: T0 + 1_000, ..first.clone() };
    let after_id = after.id.clone();
    assert_eq!(accept(&*store, after).await, after_id, "the window has ended: a new event");
    let again = NewEvent { id: EventId::generate(), received_at_ms: T0 + 1_001, ..first };
    assert_eq!(store.ingest(again).await.unwrap(), Ingested::Duplicate { original: after_id });
}

pub async fn dedupe_is_per_source(store: Arc<dyn Store>) {
    let mut a = event("stripe", T0);
    a.dedupe_key = Some("evt_1".into());
    let b = NewEvent { id: EventId::generate(), source: "github".into(), ..a.clone() };
    accept(&*store, a).await;
    accept(&*store, b).await;
}

pub async fn order_key_is_fifo_one_at_a_time(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    let k2 = accept(&*store, keyed("K", T0)).await;
    let k3 = accept(&*store, keyed("K", T0)).await;
    let l1 = accept(&*store, keyed("L", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, sorted(vec![k1.clone(), l1]));
    assert_eq!(claim_ids(&*store, T0).await, vec![], "K's head is in flight");
    assert!(store.finish(&k1, ok_attempt(1, T0), Verdict::Delivered, T0 + 1).await.unwrap());
    assert_eq!(state_of(&*store, &k1).await, State::Delivered);
    assert_eq!(claim_ids(&*store, T0 + 1).await, vec![k2.clone()]);
    assert!(store.finish(&k2, ok_attempt(1, T0), Verdict::Delivered, T0 + 2).await.unwrap());
    assert_eq!(claim_ids(&*store, T0 + 2).await, vec![k3]);
}

pub async fn retry_holds_the_key_until_due(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    let k2 = accept(&*store, keyed("K", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    let retry = Verdict::Retry { at_ms: T0 + 1_000 };
    assert!(store.finish(&k1, failed_attempt(1, T0), retry, T0 + 10).await.unwrap());
    assert_eq!(state_of(&*store, &k1).await, State::Pending);
    assert_eq!(claim_ids(&*store, T0 + 999).await, vec![], "k2 waits behind k1's retry");
    let claims = store.claim(DEST, T0 + 1_000, 10, LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!((claims[0].id.clone(), claims[0].attempt, claims[0].round_attempt), (k1.clone(), 2, 2));
    assert!(store.finish(&k1, ok_attempt(2, T0 + 1_000), Verdict::Delivered, T0 + 1_001).await.unwrap());
    assert_eq!(claim_ids(&*store, T0 + 1_001).await, vec![k2]);
    let detail = store.get(&k1).await.unwrap().unwrap();
    assert_eq!(detail.attempts, vec![failed_attempt(1, T0), ok_attempt(2, T0 + 1_000)]);
}

pub async fn dead_does_not_block_the_key(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    let k2 = accept(&*store, keyed("K", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    assert!(store.finish(&k1, failed_attempt(1, T0), Verdict::Dead, T0 + 1).await.unwrap());
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

pub async fn expired_lease_is_reclaimed_and_old_claim_fenced(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    accept(&*store, keyed("K", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    assert_eq!(claim_ids(&*store, T0 + LEASE - 1).await, vec![], "lease still held");
    let again = store.claim(DEST, T0 + LEASE, 10, LEASE).await.unwrap();
    assert_eq!(again.len(), 1, "only the head comes back, never the one behind it");
    assert_eq!((again[0].id.clone(), again[0].attempt), (k1.clone(), 2));
    let stale = store.finish(&k1, ok_attempt(1, T0), Verdict::Delivered, T0 + LEASE + 1).await.unwrap();
    assert!(!stale, "the first claim lost its lease");
    assert_eq!(state_of(&*store, &k1).await, State::Delivering);
    assert!(store.finish(&k1, ok_attempt(2, T0 + LEASE), Verdict::Delivered, T0 + LEASE + 2).await.unwrap());
    assert_eq!(state_of(&*store, &k1).await, State::Delivered);
}

pub async fn coalesce_supersedes_only_pending(store: Arc<dyn Store>) {
    let thin = |at| NewEvent { coalesce_key: Some("changed:42".into()), ..keyed("42", at) };
    let c1 = accept(&*store, thin(T0)).await;
    let other = accept(&*store, NewEvent { coalesce_key: Some("changed:43".into()), ..keyed("43", T0) }).await;
    let c2_event = thin(T0 + 1);
    let c2 = c2_event.id.clone();
    assert_eq!(store.ingest(c2_event).await.unwrap(), Ingested::Accepted { id: c2.clone(), superseded: 1 });
    let detail = store.get(&c1).await.unwrap().unwrap();
    assert_eq!(detail.record.state, State::Superseded);
    assert_eq!(detail.record.superseded_by, Some(c2.clone()));
    assert_eq!(state_of(&*store, &other).await, State::Pending, "other keys are untouched");
    assert_eq!(claim_ids(&*store, T0 + 1).await, sorted(vec![c2.clone(), other]));
    // c3 arrives while c2 is being delivered: c2 keeps going, c3 waits and is delivered after.
    let c3_event = thin(T0 + 2);
    let c3 = c3_event.id.clone();
    assert_eq!(store.ingest(c3_event).await.unwrap(), Ingested::Accepted { id: c3.clone(), superseded: 0 });
    assert_eq!(state_of(&*store, &c2).await, State::Delivering);
    assert_eq!(claim_ids(&*store, T0 + 2).await, vec![]);
    assert!(store.finish(&c2, ok_attempt(1, T0 + 1), Verdict::Delivered, T0 + 3).await.unwrap());
    assert_eq!(claim_ids(&*store, T0 + 3).await, vec![c3]);
}

/// A coalesce key need not follow the order key: superseding the head of
/// another key's queue must let that queue move on.
pub async fn coalesce_across_order_keys_hands_the_queue_on(store: Arc<dyn Store>) {
    let a1 = accept(&*store, NewEvent { coalesce_key: Some("c".into()), ..keyed("A", T0) }).await;
    let a2 = accept(&*store, keyed("A", T0)).await;
    let b1 = accept(&*store, NewEvent { coalesce_key: Some("c".into()), ..keyed("B", T0) }).await;
    assert_eq!(state_of(&*store, &a1).await, State::Superseded);
    assert_eq!(claim_ids(&*store, T0).await, sorted(vec![a2, b1]));
}

pub async fn replay_goes_to_the_back_of_the_queue(store: Arc<dyn Store>) {
    let k1 = accept(&*store, keyed("K", T0)).await;
    assert!(!store.replay(&k1, T0).await.unwrap(), "pending events are not replayed");
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    assert!(store.finish(&k1, failed_attempt(1, T0), Verdict::Dead, T0 + 1).await.unwrap());
    let k2 = accept(&*store, keyed("K", T0 + 2)).await;
    assert!(store.replay(&k1, T0 + 3).await.unwrap());
    assert_eq!(state_of(&*store, &k1).await, State::Pending);
    assert_eq!(claim_ids(&*store, T0 + 3).await, vec![k2.clone()], "k2 was stored before the replay");
    assert!(store.finish(&k2, ok_attempt(1, T0 + 3), Verdict::Delivered, T0 + 4).await.unwrap());
    let claims = store.claim(DEST, T0 + 4, 10, LEASE).await.unwrap();
    assert_eq!(claims.len(), 1);
    assert_eq!((claims[0].id.clone(), claims[0].attempt, claims[0].round_attempt), (k1.clone(), 2, 1));
    assert!(!store.replay(&EventId::generate(), T0).await.unwrap());
}

pub async fn list_pages_newest_first_with_filters(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(accept(&*store, keyed(if n % 2 == 0 { "even" } else { "odd" }, T0 + n)).await);
    }
    accept(&*store, event("other", T0)).await;
    let first = store.list(&ListFilter { source: Some("src".into()), limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(first.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![ids[4].clone(), ids[3].clone()]);
    let cursor = first.next_cursor.expect("more pages");
    let second = store
        .list(&ListFilter { source: Some("src".into()), limit: 10, cursor: Some(cursor), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(second.events.len(), 3);
    assert!(second.next_cursor.is_none());
    let odd = store.list(&ListFilter { order_key: Some("odd".into()), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(odd.events.len(), 2);
    store.claim(DEST, T0 + 10, 100, LEASE).await.unwrap();
    let delivering =
        store.list(&ListFilter { state: Some(State::Delivering), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(delivering.events.len(), 3, "one per order key, and the keyless one");
}

pub async fn stats_count_by_source_and_state(store: Arc<dyn Store>) {
    accept(&*store, keyed("K", T0)).await;
    accept(&*store, keyed("K", T0)).await;
    accept(&*store, event("other", T0)).await;
    store.claim(DEST, T0, 100, LEASE).await.unwrap();
    let mut stats = store.stats().await.unwrap();
    stats.sort_by(|a, b| (&a.source, a.state.as_str()).cmp(&(&b.source, b.state.as_str())));
    let got: Vec<_> = stats.iter().map(|s| (s.source.as_str(), s.state, s.count)).collect();
    assert_eq!(got, vec![("other", State::Delivering, 1), ("src", State::Delivering, 1), ("src", State::Pending, 1)]);
}

pub async fn next_due_reports_the_earliest_wakeup(store: Arc<dyn Store>) {
    assert_eq!(store.next_due(DEST, T0).await.unwrap(), None);
    let k1 = accept(&*store, keyed("K", T0)).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![k1.clone()]);
    assert_eq!(store.next_due(DEST, T0).await.unwrap(), Some(T0 + LEASE), "the lease's end");
    store.finish(&k1, failed_attempt(1, T0), Verdict::Retry { at_ms: T0 + 500 }, T0 + 1).await.unwrap();
    assert_eq!(store.next_due(DEST, T0 + 1).await.unwrap(), Some(T0 + 500));
    assert_eq!(store.next_due("elsewhere", T0 + 1).await.unwrap(), None);
}

pub async fn purge_forgets_expired_keys(store: Arc<dyn Store>) {
    let mut first = event("src", T0);
    first.dedupe_key = Some("k".into());
    first.dedupe_window_ms = 1_000;
    accept(&*store, first).await;
    assert_eq!(store.purge_expired_dedupe(T0 + 999).await.unwrap(), 0);
    assert_eq!(store.purge_expired_dedupe(T0 + 1_000).await.unwrap(), 1);
    store.ping().await.unwrap();
}

pub async fn claim_is_per_destination(store: Arc<dyn Store>) {
    let here = accept(&*store, keyed("K", T0)).await;
    let there = accept(&*store, NewEvent { destination: "billing".into(), ..keyed("M", T0) }).await;
    assert_eq!(claim_ids(&*store, T0).await, vec![here]);
    let claims = store.claim("billing", T0, 10, LEASE).await.unwrap();
    assert_eq!(claims.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![there]);
}

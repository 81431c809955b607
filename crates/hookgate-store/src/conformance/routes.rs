//! One event, several destinations: each delivery a lifecycle of its own,
//! each destination its own queues; and events no route matched.

use hookgate_core::EventState;

use super::*;
use crate::{DeliveryFilter, StateCount};

const BILLING: &str = "billing";

fn fanned(order_key: &str, at: i64) -> NewEvent {
    to(BILLING, to(DEST, keyed(order_key, at)))
}

async fn claimed(store: &dyn Store, destination: &str, now: i64) -> Vec<EventId> {
    let mut ids: Vec<_> =
        store.claim(destination, now, 100, LEASE).await.expect("claim").into_iter().map(|c| c.id).collect();
    ids.sort();
    ids
}

async fn finish_at(
    store: &dyn Store,
    id: &EventId,
    destination: &str,
    attempt: Attempt,
    verdict: Verdict,
    now: i64,
) -> bool {
    let delivery = delivery_to(store, id, destination).await;
    store.finish(&delivery, attempt, verdict, now).await.expect("finish")
}

/// Each destination has its own queue of a key: one in flight at each at
/// once, FIFO at each, and neither waits for the other.
pub async fn each_destination_has_its_own_queues(store: Arc<dyn Store>) {
    let k1 = accept(&*store, fanned("K", T0)).await;
    let k2 = accept(&*store, fanned("K", T0)).await;
    let detail = store.get(&k1).await.unwrap().unwrap();
    assert_eq!(detail.deliveries.len(), 2, "one delivery per route");
    assert_eq!(detail.record.destinations, [DEST, BILLING]);
    assert_ne!(detail.deliveries[0].record.id, detail.deliveries[1].record.id);
    assert_eq!(claimed(&*store, DEST, T0).await, vec![k1.clone()]);
    assert_eq!(claimed(&*store, BILLING, T0).await, vec![k1.clone()], "k1 at billing too, at the same time");
    assert_eq!(claimed(&*store, DEST, T0).await, vec![], "k2 waits behind k1 at the app");
    assert!(finish_at(&*store, &k1, BILLING, ok_attempt(1, T0), Verdict::Delivered, T0 + 1).await);
    assert_eq!(
        claimed(&*store, BILLING, T0 + 1).await,
        vec![k2.clone()],
        "billing goes on; the app's k1 holds only the app"
    );
    assert_eq!(claimed(&*store, DEST, T0 + 1).await, vec![]);
    let detail = store.get(&k1).await.unwrap().unwrap();
    assert_eq!(detail.record.state, EventState::Delivering, "one delivered, one delivering: delivering");
    assert!(finish_at(&*store, &k1, DEST, failed_attempt(1, T0), Verdict::Dead, T0 + 2).await);
    assert_eq!(store.get(&k1).await.unwrap().unwrap().record.state, EventState::Dead, "one delivered, one dead: dead");
    assert_eq!(claimed(&*store, DEST, T0 + 2).await, vec![k2]);
}

/// An event's deliveries are read back in its routes' order, not sorted by
/// destination: routed to "zeta" and then "alpha", with and without an order
/// key, its destinations say zeta first.
pub async fn deliveries_keep_their_routes_order(store: Arc<dyn Store>) {
    for event in [event("src", T0), keyed("K", T0)] {
        let id = accept(&*store, to("alpha", to("zeta", event))).await;
        let detail = store.get(&id).await.unwrap().unwrap();
        assert_eq!(detail.record.destinations, ["zeta", "alpha"]);
        let destinations: Vec<&str> = detail.deliveries.iter().map(|d| d.record.destination.as_str()).collect();
        assert_eq!(destinations, ["zeta", "alpha"]);
    }
}

/// A slow, failing, dead, paused destination never delays another.
pub async fn a_stuck_destination_never_delays_another(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(accept(&*store, fanned("K", T0 + n)).await);
    }
    // The app: its head fails and waits a long while for its retry, then the app is paused.
    assert_eq!(claimed(&*store, DEST, T0).await, vec![ids[0].clone()]);
    assert!(
        finish_at(&*store, &ids[0], DEST, failed_attempt(1, T0), Verdict::Retry { at_ms: T0 + 3_600_000 }, T0 + 1)
            .await
    );
    store.set_paused(DEST, true).await.unwrap();
    // Billing drains its whole queue meanwhile, in order.
    for (n, id) in ids.iter().enumerate() {
        let now = T0 + 10 + n as i64;
        assert_eq!(claimed(&*store, BILLING, now).await, vec![id.clone()], "billing's {n}th, in order");
        assert!(finish_at(&*store, id, BILLING, ok_attempt(1, now), Verdict::Delivered, now).await);
    }
    let billing_done = DeliveryFilter {
        destination: Some(BILLING.into()),
        state: Some(State::Delivered),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(store.list_deliveries(&billing_done).await.unwrap().deliveries.len(), 4);
    let app_owed =
        DeliveryFilter { destination: Some(DEST.into()), state: Some(State::Pending), limit: 10, ..Default::default() };
    assert_eq!(store.list_deliveries(&app_owed).await.unwrap().deliveries.len(), 4, "the app's queue is untouched");
    assert_eq!(store.next_due(BILLING, T0 + 20).await.unwrap(), None);
}

/// Coalescing supersedes the pending deliveries of its own destination; a
/// delivery in flight at another is left alone, and the new one waits behind it there.
pub async fn coalescing_is_per_destination(store: Arc<dyn Store>) {
    let thin = |at| NewEvent { coalesce_key: Some(key("changed:7")), ..keyed("7", at) };
    let c1 = accept(&*store, to(BILLING, to(DEST, thin(T0)))).await;
    assert_eq!(claimed(&*store, BILLING, T0).await, vec![c1.clone()], "billing has c1 in flight");
    let c2_event = to(BILLING, to(DEST, thin(T0 + 1)));
    let c2 = c2_event.id.clone();
    assert_eq!(store.ingest(c2_event).await.unwrap(), Ingested::Accepted { id: c2.clone(), superseded: 1 });
    assert_eq!(state_at(&*store, &c1, DEST).await, State::Superseded, "the app's c1 had not started");
    assert_eq!(state_at(&*store, &c1, BILLING).await, State::Delivering, "billing's had");
    assert_eq!(claimed(&*store, DEST, T0 + 1).await, vec![c2.clone()]);
    assert_eq!(claimed(&*store, BILLING, T0 + 1).await, vec![], "billing's c2 waits behind its c1");
    assert!(finish_at(&*store, &c1, BILLING, ok_attempt(1, T0), Verdict::Delivered, T0 + 2).await);
    assert_eq!(claimed(&*store, BILLING, T0 + 2).await, vec![c2]);
}

/// An event no route matched is stored, with each route's reason, listed as
/// unrouted and counted; a reroute adds what today's routes give it.
pub async fn unrouted_events_are_kept_with_their_reasons(store: Arc<dyn Store>) {
    let verdict = |destination: &str, reason: &str| RouteVerdict {
        route: format!("src->{destination}"),
        destination: destination.into(),
        matched: false,
        reason: reason.into(),
    };
    let new = NewEvent {
        routing: vec![verdict(DEST, "json.amount: 500 is not >= 10000"), verdict(BILLING, "the route is disabled")],
        ..keyed("K", T0)
    };
    let id = new.id.clone();
    assert!(matches!(store.ingest(new).await.unwrap(), Ingested::Accepted { .. }));
    let detail = store.get(&id).await.unwrap().unwrap();
    assert_eq!(detail.record.state, EventState::Unrouted);
    assert!(detail.deliveries.is_empty());
    assert_eq!(detail.routing[0].reason, "json.amount: 500 is not >= 10000", "each route's reason is kept");
    assert_eq!(claimed(&*store, DEST, T0).await, vec![], "nothing to deliver");
    let unrouted = ListFilter { state: Some(EventState::Unrouted), limit: 10, ..Default::default() };
    let listed: Vec<EventId> = store.list(&unrouted).await.unwrap().events.into_iter().map(|e| e.id).collect();
    assert_eq!(listed, std::slice::from_ref(&id));
    let stats = store.stats().await.unwrap();
    assert!(stats.contains(&StateCount {
        source: "src".into(),
        destination: String::new(),
        state: EventState::Unrouted,
        count: 1,
        oldest_received_ms: Some(T0),
    }));
    assert_eq!(store.replay(&id, T0).await.unwrap(), 0, "nothing to replay");

    // Routed again: a delivery to the app, at the end of its queue.
    let behind = accept(&*store, keyed("K", T0 + 1)).await;
    let again = to(DEST, keyed("K", T0));
    assert_eq!(store.reroute(&id, again.routing.clone(), again.deliveries.clone(), T0 + 2).await.unwrap(), Some(1));
    assert_eq!(
        store.reroute(&id, again.routing.clone(), again.deliveries, T0 + 2).await.unwrap(),
        Some(0),
        "only what is missing"
    );
    // The queue's oldest owed event is the rerouted one (received first, queued last).
    let stats = store.stats().await.unwrap();
    let owed: Vec<_> = stats.iter().filter(|s| s.destination == DEST && s.state.is_owed()).collect();
    assert_eq!(owed.iter().map(|s| s.count).sum::<u64>(), 2, "{stats:?}");
    assert_eq!(owed.iter().filter_map(|s| s.oldest_received_ms).min(), Some(T0), "{stats:?}");
    let detail = store.get(&id).await.unwrap().unwrap();
    assert_eq!((detail.record.state, detail.routing.clone()), (EventState::Pending, again.routing));
    assert_eq!(claimed(&*store, DEST, T0 + 2).await, vec![behind.clone()], "stored before the reroute: first");
    assert!(finish(&*store, &behind, ok_attempt(1, T0), Verdict::Delivered, T0 + 3).await);
    assert_eq!(claimed(&*store, DEST, T0 + 3).await, vec![id.clone()]);
    assert_eq!(store.reroute(&EventId::generate(), vec![], vec![], T0).await.unwrap(), None);
    assert!(store.list(&unrouted).await.unwrap().events.is_empty(), "no longer unrouted");
}

/// A replay of an event replays its finished deliveries and leaves one still
/// owed alone; a delivery is replayed on its own too.
pub async fn replays_are_per_delivery(store: Arc<dyn Store>) {
    let id = accept(&*store, fanned("K", T0)).await;
    claimed(&*store, DEST, T0).await;
    assert!(finish_at(&*store, &id, DEST, ok_attempt(1, T0), Verdict::Delivered, T0 + 1).await);
    assert_eq!(store.replay(&id, T0 + 2).await.unwrap(), 1, "billing's is still owed: only the app's");
    assert_eq!(state_at(&*store, &id, DEST).await, State::Pending);
    let billing = delivery_to(&*store, &id, BILLING).await;
    assert!(!store.replay_delivery(&billing, T0 + 2).await.unwrap(), "pending: not replayed");
    claimed(&*store, BILLING, T0 + 2).await;
    assert!(store.finish(&billing, failed_attempt(1, T0), Verdict::Dead, T0 + 3).await.unwrap());
    assert!(store.replay_delivery(&billing, T0 + 4).await.unwrap());
    let claims = store.claim(BILLING, T0 + 4, 10, LEASE).await.unwrap();
    assert_eq!((claims[0].delivery.clone(), claims[0].attempt, claims[0].round_attempt), (billing, 2, 1));
}

/// Retention deletes deliveries; an event goes with its last one, and an
/// unrouted event by its own rule.
pub async fn an_event_goes_with_its_last_delivery(store: Arc<dyn Store>) {
    let id = accept(&*store, fanned("K", T0)).await;
    for destination in [DEST, BILLING] {
        claimed(&*store, destination, T0).await;
    }
    assert!(finish_at(&*store, &id, DEST, ok_attempt(1, T0), Verdict::Delivered, T0 + 1).await);
    assert!(finish_at(&*store, &id, BILLING, failed_attempt(1, T0), Verdict::Dead, T0 + 1).await);
    assert_eq!(store.purge_finished(State::Delivered, T0 + 10, 10).await.unwrap(), 1);
    let detail = store.get(&id).await.unwrap().expect("kept: its dead delivery is");
    assert_eq!(detail.deliveries.len(), 1);
    assert_eq!(store.purge_finished(State::Dead, T0 + 10, 10).await.unwrap(), 1);
    assert!(store.get(&id).await.unwrap().is_none(), "gone with its last delivery");

    let unrouted = event("src", T0);
    let unrouted_id = unrouted.id.clone();
    store.ingest(NewEvent { routing: vec![], ..unrouted }).await.unwrap();
    assert_eq!(store.purge_unrouted(T0, 10).await.unwrap(), 0, "not old enough");
    assert_eq!(store.purge_unrouted(T0 + 1, 10).await.unwrap(), 1);
    assert!(store.get(&unrouted_id).await.unwrap().is_none());
}

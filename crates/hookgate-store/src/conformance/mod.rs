//! The suite every [`Store`] backend must pass. A backend runs it with
//! [`conformance_tests!`](crate::conformance_tests), giving an expression that
//! builds a fresh, empty store (its own file, database or schema) per test.
//! Every case runs on the store wrapped in [`Audited`], which checks each
//! state change the store makes against [`State::can_become`].

mod audit;
pub mod differential;
mod ingest;
pub mod migrated;
mod queue;
mod read;
mod routes;

use std::sync::Arc;

use bytes::Bytes;
use hookgate_core::{DeliveryId, EventId, Key, State};

pub use audit::Audited;
pub use ingest::*;
pub use queue::*;
pub use read::*;
pub use routes::*;

use crate::{Attempt, Ingested, ListFilter, NewDelivery, NewEvent, RouteVerdict, Store, Verdict};

/// The variable under which a test that would skip (no PostgreSQL, no
/// browser, no root, no sender library) fails instead. `.ci/run` sets it: in
/// CI a skip is a failure, never a pass that checked nothing.
pub const NO_SKIP: &str = "HOOKGATE_NO_SKIP";

/// Say why a test does not run here, and let it pass; under [`NO_SKIP`], fail it.
pub fn skip(reason: &str) {
    if std::env::var_os(NO_SKIP).is_some_and(|v| !v.is_empty() && v != "0") {
        panic!("this test would be skipped ({reason}), and {NO_SKIP} is set: in CI a skip is a failure");
    }
    eprintln!("skipped: {reason}");
}

/// A fixed "now" far from zero, so window and lease arithmetic is visible.
pub const T0: i64 = 1_800_000_000_000;
const LEASE: i64 = 30_000;
pub const DEST: &str = "app";

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
            list_pages_newest_first_with_filters, a_window_is_listed_in_time_order_across_pages,
            stats_count_by_source_and_state,
            next_due_reports_the_earliest_wakeup, purge_forgets_expired_keys, claim_is_per_destination,
            a_late_outcome_beside_the_current_one_hears_the_truth,
            a_late_outcome_of_a_replayed_delivery_makes_no_second_head, retention_deletes_only_old_finished_events,
            a_paused_destination_is_not_claimed, rate_limit_tokens_refill_at_the_rate,
            concurrent_coalescing_leaves_one_waiting,
            each_destination_has_its_own_queues, deliveries_keep_their_routes_order,
            a_stuck_destination_never_delays_another,
            coalescing_is_per_destination, unrouted_events_are_kept_with_their_reasons, replays_are_per_delivery,
            an_event_goes_with_its_last_delivery,
            a_queue_filled_while_draining_never_stalls);
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let store = $make;
                let audited = std::sync::Arc::new($crate::conformance::Audited::new(store));
                $crate::conformance::$case(audited.clone()).await;
                audited.check().await;
            }
        )*
    };
}

/// An event with no delivery yet: [`routed`] (or [`accept`], which routes an
/// event that has none) gives it one to [`DEST`].
pub fn event(source: &str, at: i64) -> NewEvent {
    NewEvent {
        id: EventId::generate(),
        source: source.to_owned(),
        received_at_ms: at,
        headers: [("content-type", b"application/json".as_slice())].into_iter().collect(),
        body: Bytes::from_static(br#"{"hello":"world"}"#),
        dedupe_key: None,
        dedupe_window_ms: 60_000,
        order_key: None,
        coalesce_key: None,
        event_type: None,
        warnings: vec![],
        routing: vec![],
        deliveries: vec![],
        trace: None,
    }
}

/// `event` with a delivery to `destination`, its queue keys the event's own.
pub fn to(destination: &str, mut event: NewEvent) -> NewEvent {
    let route = format!("{}->{destination}", event.source);
    event.routing.push(RouteVerdict {
        route: route.clone(),
        destination: destination.to_owned(),
        matched: true,
        reason: "matched".into(),
    });
    event.deliveries.push(NewDelivery {
        id: DeliveryId::generate(),
        destination: destination.to_owned(),
        route,
        order_key: event.order_key.clone(),
        coalesce_key: event.coalesce_key.clone(),
    });
    event
}

/// An event with one delivery to [`DEST`] (if it has none yet).
pub fn routed(event: NewEvent) -> NewEvent {
    if event.deliveries.is_empty() && event.routing.is_empty() { to(DEST, event) } else { event }
}

fn keyed(order_key: &str, at: i64) -> NewEvent {
    NewEvent { order_key: Some(key(order_key)), ..event("src", at) }
}

fn key(text: &str) -> Key {
    Key::from(text)
}

/// Ingest (routed to [`DEST`] if the event names no route), expecting it stored.
async fn accept(store: &dyn Store, event: NewEvent) -> EventId {
    match store.ingest(routed(event)).await.expect("ingest") {
        Ingested::Accepted { id, .. } => id,
        other => panic!("expected accepted, got {other:?}"),
    }
}

/// The events of the deliveries to [`DEST`] claimed at `now`.
async fn claim_ids(store: &dyn Store, now: i64) -> Vec<EventId> {
    let mut ids: Vec<_> = store.claim(DEST, now, 100, LEASE).await.expect("claim").into_iter().map(|c| c.id).collect();
    ids.sort();
    ids
}

fn sorted(mut ids: Vec<EventId>) -> Vec<EventId> {
    ids.sort();
    ids
}

/// An attempt the app answered 200, started at `at`.
pub fn ok_attempt(attempt: u32, at: i64) -> Attempt {
    Attempt { attempt, started_at_ms: at, duration_ms: 5, status: Some(200), error: None, response: None }
}

pub fn failed_attempt(attempt: u32, at: i64) -> Attempt {
    Attempt {
        attempt,
        started_at_ms: at,
        duration_ms: 7,
        status: Some(500),
        error: Some("HTTP 500".into()),
        response: Some(Bytes::from_static(b"boom")),
    }
}

/// The delivery of an event to `destination`.
async fn delivery_to(store: &dyn Store, id: &EventId, destination: &str) -> DeliveryId {
    let detail = store.get(id).await.expect("get").expect("event exists");
    detail.deliveries.iter().find(|d| d.record.destination == destination).expect("a delivery there").record.id.clone()
}

/// Record the outcome of the event's delivery to [`DEST`].
async fn finish(store: &dyn Store, id: &EventId, attempt: Attempt, verdict: Verdict, now: i64) -> bool {
    let delivery = delivery_to(store, id, DEST).await;
    store.finish(&delivery, attempt, verdict, now).await.expect("finish")
}

/// The state of the event's delivery to [`DEST`].
async fn state_of(store: &dyn Store, id: &EventId) -> State {
    state_at(store, id, DEST).await
}

async fn state_at(store: &dyn Store, id: &EventId, destination: &str) -> State {
    let detail = store.get(id).await.expect("get").expect("event exists");
    detail.deliveries.iter().find(|d| d.record.destination == destination).expect("a delivery there").record.state
}

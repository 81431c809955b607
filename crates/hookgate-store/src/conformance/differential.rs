//! The differential test: random sequences of operations — key collisions,
//! claims at any time, stale outcomes, replays, pauses, retention — run on
//! [`MemStore`](crate::MemStore) and on a real backend, every answer written
//! to a transcript, the two transcripts compared. The conformance suite pins
//! the cases someone thought of; this finds the ones nobody did, and keeps
//! the reference model and the SQL saying the same thing.

use std::fmt::Write;

use proptest::prelude::*;

use hookgate_core::DeliveryId;

use super::*;
use crate::DeliveryFilter;

/// One call on a store. Indexes (`event`, `claim`) pick among the events
/// ingested and the claims made so far, modulo their number.
#[derive(Debug, Clone)]
pub enum Op {
    /// `routes`: a bit per destination the event is delivered to (none: unrouted).
    /// `late`: received 1.5 s before it is stored (a request that waited), so
    /// rows and times disagree.
    Ingest {
        source: u8,
        dedupe: Option<u8>,
        order: Option<u8>,
        coalesce: Option<u8>,
        routes: u8,
        late: bool,
    },
    Claim {
        destination: u8,
        limit: usize,
        lease_ms: i64,
    },
    /// The outcome of a claim made earlier: `stale` sends an attempt number
    /// that is not the claim's (a fencing check); a late outcome happens by
    /// itself when the claim's lease ended and the delivery was claimed again.
    Finish {
        claim: usize,
        verdict: u8,
        retry_in_ms: i64,
        stale: bool,
    },
    Replay {
        event: usize,
    },
    ReplayDelivery {
        claim: usize,
    },
    /// Route an event again to every destination (those it lacks get a delivery).
    Reroute {
        event: usize,
    },
    Advance {
        ms: i64,
    },
    Pause {
        destination: u8,
        paused: bool,
    },
    NextDue {
        destination: u8,
    },
    Get {
        event: usize,
    },
    GetDelivery {
        claim: usize,
    },
    List {
        source: Option<u8>,
        state: Option<u8>,
        order: Option<u8>,
        destination: Option<u8>,
        limit: usize,
    },
    ListDeliveries {
        destination: Option<u8>,
        state: Option<u8>,
        /// A queue key: an event's `o0`-`o2`, or the second destination's own `g0`-`g1`.
        order: Option<u8>,
        limit: usize,
    },
    /// A time window (ms back from now), events' or deliveries' pages: two of
    /// them, the first from the kept cursor if `resume`; with a source, or not.
    ListWindow {
        since_back: Option<i64>,
        until_back: Option<i64>,
        source: Option<u8>,
        limit: usize,
        deliveries: bool,
        resume: bool,
    },
    Stats,
    PurgeFinished {
        state: u8,
        older_than_ms: i64,
        limit: usize,
    },
    PurgeDedupe {
        limit: usize,
    },
    PurgeUnrouted {
        older_than_ms: i64,
        limit: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let small = || proptest::option::of(0u8..3);
    prop_oneof![
        6 => (0u8..2, small(), small(), small(), prop_oneof![Just(1u8), Just(2), Just(3), Just(0)], proptest::bool::weighted(0.2))
            .prop_map(|(source, dedupe, order, coalesce, routes, late)| Op::Ingest { source, dedupe, order, coalesce, routes, late }),
        5 => (0u8..2, 1usize..5, prop_oneof![Just(1_000i64), Just(30_000)])
            .prop_map(|(destination, limit, lease_ms)| Op::Claim { destination, limit, lease_ms }),
        5 => (any::<usize>(), 0u8..3, 0i64..5_000, proptest::bool::weighted(0.1))
            .prop_map(|(claim, verdict, retry_in_ms, stale)| Op::Finish { claim, verdict, retry_in_ms, stale }),
        1 => any::<usize>().prop_map(|event| Op::Replay { event }),
        1 => any::<usize>().prop_map(|claim| Op::ReplayDelivery { claim }),
        1 => any::<usize>().prop_map(|event| Op::Reroute { event }),
        2 => (proptest::option::of(0u8..2), proptest::option::of(0u8..5), proptest::option::of(0u8..5), 1usize..6)
            .prop_map(|(destination, state, order, limit)| Op::ListDeliveries { destination, state, order, limit }),
        3 => prop_oneof![Just(0i64), 1i64..2_000, Just(30_000)].prop_map(|ms| Op::Advance { ms }),
        1 => (0u8..2, any::<bool>()).prop_map(|(destination, paused)| Op::Pause { destination, paused }),
        1 => (0u8..2).prop_map(|destination| Op::NextDue { destination }),
        2 => any::<usize>().prop_map(|event| Op::Get { event }),
        1 => any::<usize>().prop_map(|claim| Op::GetDelivery { claim }),
        2 => (proptest::option::of(0u8..2), proptest::option::of(0u8..6), small(), proptest::option::of(0u8..2), 1usize..6)
            .prop_map(|(source, state, order, destination, limit)| Op::List { source, state, order, destination, limit }),
        3 => (proptest::option::of(0i64..5_000), proptest::option::of(0i64..3_000), proptest::option::of(0u8..2), 1usize..6, any::<bool>(), any::<bool>())
            .prop_map(|(since_back, until_back, source, limit, deliveries, resume)| {
                Op::ListWindow { since_back, until_back, source, limit, deliveries, resume }
            }),
        1 => Just(Op::Stats),
        1 => (2u8..5, 0i64..60_000, 1usize..4)
            .prop_map(|(state, older_than_ms, limit)| Op::PurgeFinished { state, older_than_ms, limit }),
        1 => (1usize..4).prop_map(|limit| Op::PurgeDedupe { limit }),
        1 => (0i64..60_000, 1usize..4).prop_map(|(older_than_ms, limit)| Op::PurgeUnrouted { older_than_ms, limit }),
    ]
}

/// Sequences of up to `len` operations.
pub fn ops(len: usize) -> impl Strategy<Value = Vec<Op>> {
    proptest::collection::vec(op(), 1..len)
}

/// The destinations, in route order. The second sorts before the first
/// ("analytics" < "app"), so a backend that read an event's deliveries back
/// by destination instead of in route order says so in the transcript.
fn destination(n: u8) -> String {
    if n == 0 { DEST.to_owned() } else { format!("analytics{n}") }
}

/// Run `ops` on `store` from an empty start; every answer, one line each.
pub async fn transcript(store: &dyn Store, ops: &[Op]) -> String {
    let mut out = String::new();
    let mut now = T0;
    let mut events: Vec<EventId> = Vec::new();
    let mut claims: Vec<crate::Claim> = Vec::new();
    // The last first page's next cursor, events' and deliveries', kept across operations: a
    // window may go on from one made by a page in the other order, or whose event is gone since.
    let mut event_cursor: Option<crate::Cursor> = None;
    let mut delivery_cursor: Option<crate::Cursor> = None;
    for (n, op) in ops.iter().enumerate() {
        let _ = write!(out, "{n} {op:?} -> ");
        let said = match op {
            Op::Ingest { source, dedupe, order, coalesce, routes, late } => {
                let mut random = [0u8; 10];
                random[..8].copy_from_slice(&(n as u64).to_be_bytes());
                let mut new = NewEvent {
                    id: EventId::from_parts(now as u64, random),
                    source: format!("src{source}"),
                    dedupe_key: dedupe.map(|k| key(&format!("d{k}"))),
                    dedupe_window_ms: 10_000,
                    order_key: order.map(|k| key(&format!("o{k}"))),
                    coalesce_key: coalesce.map(|k| key(&format!("c{k}"))),
                    ..event("src", if *late { now - 1_500 } else { now })
                };
                for d in (0..2u8).filter(|d| routes & (1 << d) != 0) {
                    new = to(&destination(d), new);
                }
                // The second destination's route has an order key of its own, coarser than the source's.
                for delivery in new.deliveries.iter_mut().filter(|d| d.destination == destination(1)) {
                    delivery.order_key = order.map(|k| key(&format!("g{}", k % 2)));
                }
                for (m, delivery) in new.deliveries.iter_mut().enumerate() {
                    random[8] = m as u8 + 1;
                    delivery.id = DeliveryId::from_parts(now as u64, random);
                }
                let answer = store.ingest(new.clone()).await;
                if matches!(answer, Ok(Ingested::Accepted { .. })) {
                    events.push(new.id);
                }
                format!("{answer:?}")
            }
            Op::Claim { destination: d, limit, lease_ms } => {
                match store.claim(&destination(*d), now, *limit, *lease_ms).await {
                    Ok(mut got) => {
                        got.sort_by(|a, b| a.id.cmp(&b.id));
                        let shown: Vec<String> =
                            got.iter().map(|c| format!("{}#{}/{}", c.id, c.attempt, c.round_attempt)).collect();
                        claims.extend(got);
                        format!("{shown:?}")
                    }
                    Err(error) => format!("error {error}"),
                }
            }
            Op::Finish { claim, verdict, retry_in_ms, stale } => match claims.get(claim % claims.len().max(1)) {
                None => "no claim yet".to_owned(),
                Some(c) => {
                    let verdict = match verdict {
                        0 => Verdict::Delivered,
                        1 => Verdict::Retry { at_ms: now + retry_in_ms },
                        _ => Verdict::Dead,
                    };
                    let attempt = if *stale { c.attempt + 7 } else { c.attempt };
                    let record = Attempt {
                        attempt,
                        started_at_ms: now,
                        duration_ms: 3,
                        status: Some(500),
                        error: None,
                        response: None,
                    };
                    format!("{:?}", store.finish(&c.delivery, record, verdict, now).await)
                }
            },
            Op::Replay { event } => match events.get(event % events.len().max(1)) {
                None => "no event yet".to_owned(),
                Some(id) => format!("{:?}", store.replay(id, now).await),
            },
            Op::ReplayDelivery { claim } => match claims.get(claim % claims.len().max(1)) {
                None => "no claim yet".to_owned(),
                Some(c) => format!("{:?}", store.replay_delivery(&c.delivery, now).await),
            },
            Op::Reroute { event } => match events.get(event % events.len().max(1)) {
                None => "no event yet".to_owned(),
                Some(id) => {
                    let mut routes = crate::conformance::event("src", now);
                    for d in 0..2u8 {
                        routes = to(&destination(d), routes);
                    }
                    for (m, delivery) in routes.deliveries.iter_mut().enumerate() {
                        let mut random = [0u8; 10];
                        random[..8].copy_from_slice(&(n as u64).to_be_bytes());
                        random[9] = m as u8 + 1;
                        delivery.id = DeliveryId::from_parts(now as u64, random);
                    }
                    // The queue keys of the rerouted event's own source: none, for this test.
                    format!("{:?}", store.reroute(id, routes.routing, routes.deliveries, now).await)
                }
            },
            Op::ListDeliveries { destination: d, state, order, limit } => {
                let queue_key = |k: u8| if k < 3 { key(&format!("o{k}")) } else { key(&format!("g{}", k - 3)) };
                let filter = DeliveryFilter {
                    destination: d.map(destination),
                    state: state.map(|s| State::ALL[s as usize]),
                    order_key: order.map(queue_key),
                    limit: *limit,
                    ..Default::default()
                };
                // Two pages: the cursor must carry on where the first ended.
                match store.list_deliveries(&filter).await {
                    Ok(page) => {
                        delivery_cursor = page.next_cursor.or(delivery_cursor);
                        let next = match page.next_cursor {
                            Some(cursor) => {
                                let filter = DeliveryFilter { cursor: Some(cursor), ..filter.clone() };
                                format!("{:?}", store.list_deliveries(&filter).await.map(|p| p.deliveries))
                            }
                            None => "no more".into(),
                        };
                        format!("{:?} then {next}", page.deliveries)
                    }
                    Err(error) => format!("error {error}"),
                }
            }
            Op::Advance { ms } => {
                now += ms;
                format!("now {now}")
            }
            Op::Pause { destination: d, paused } => format!("{:?}", store.set_paused(&destination(*d), *paused).await),
            Op::NextDue { destination: d } => format!("{:?}", store.next_due(&destination(*d), now).await),
            Op::GetDelivery { claim } => match claims.get(claim % claims.len().max(1)) {
                None => "no claim yet".to_owned(),
                Some(c) => format!("{:?}", store.get_delivery(&c.delivery).await),
            },
            Op::Get { event } => match events.get(event % events.len().max(1)) {
                None => "no event yet".to_owned(),
                Some(id) => format!("{:?}", store.get(id).await),
            },
            Op::List { source, state, order, destination, limit } => {
                let filter = ListFilter {
                    source: source.map(|s| format!("src{s}")),
                    state: state.map(|s| hookgate_core::EventState::ALL[s as usize]),
                    order_key: order.map(|k| key(&format!("o{k}"))),
                    destination: destination.map(self::destination),
                    limit: *limit,
                    ..Default::default()
                };
                match store.list(&filter).await {
                    Ok(page) => {
                        event_cursor = page.next_cursor.or(event_cursor);
                        let next = match page.next_cursor {
                            Some(cursor) => {
                                let filter = ListFilter { cursor: Some(cursor), ..filter.clone() };
                                format!("{:?}", store.list(&filter).await.map(|p| p.events))
                            }
                            None => "no more".into(),
                        };
                        format!("{:?} then {next}", page.events)
                    }
                    Err(error) => format!("error {error}"),
                }
            }
            Op::ListWindow { since_back, until_back, source, limit, deliveries, resume } => {
                let (since_ms, until_ms) = (since_back.map(|b| now - b), until_back.map(|b| now - b + 1));
                let source = source.map(|s| format!("src{s}"));
                if *deliveries {
                    let cursor = if *resume { delivery_cursor } else { None };
                    let filter =
                        DeliveryFilter { since_ms, until_ms, source, cursor, limit: *limit, ..Default::default() };
                    let page = |filter: DeliveryFilter| async move {
                        store.list_deliveries(&filter).await.map(|p| {
                            let ids: Vec<String> = p.deliveries.iter().map(|d| d.id.to_string()).collect();
                            (ids, p.next_cursor)
                        })
                    };
                    match page(filter.clone()).await {
                        Ok((first, Some(cursor))) => {
                            delivery_cursor = Some(cursor);
                            let next = page(DeliveryFilter { cursor: Some(cursor), ..filter }).await;
                            format!("{first:?} then {:?}", next.map(|(ids, _)| ids))
                        }
                        other => format!("{:?}", other.map(|(ids, _)| ids)),
                    }
                } else {
                    let cursor = if *resume { event_cursor } else { None };
                    let filter = ListFilter { since_ms, until_ms, source, cursor, limit: *limit, ..Default::default() };
                    let page = |filter: ListFilter| async move {
                        store.list(&filter).await.map(|p| {
                            let ids: Vec<String> = p.events.iter().map(|e| e.id.to_string()).collect();
                            (ids, p.next_cursor)
                        })
                    };
                    match page(filter.clone()).await {
                        Ok((first, Some(cursor))) => {
                            event_cursor = Some(cursor);
                            let next = page(ListFilter { cursor: Some(cursor), ..filter }).await;
                            format!("{first:?} then {:?}", next.map(|(ids, _)| ids))
                        }
                        other => format!("{:?}", other.map(|(ids, _)| ids)),
                    }
                }
            }
            Op::Stats => match store.stats().await {
                Ok(mut counts) => {
                    counts.sort();
                    format!("{counts:?}")
                }
                Err(error) => format!("error {error}"),
            },
            Op::PurgeFinished { state, older_than_ms, limit } => {
                let state = State::ALL[*state as usize];
                format!("{:?}", store.purge_finished(state, now - older_than_ms, *limit).await)
            }
            // How many records a purge deletes is each backend's own (SQLite keeps a stored
            // event's key with the event); what it changes is judged by the ingests after it.
            Op::PurgeDedupe { limit } => format!("{:?}", store.purge_expired_dedupe(now, *limit).await.map(drop)),
            Op::PurgeUnrouted { older_than_ms, limit } => {
                format!("{:?}", store.purge_unrouted(now - older_than_ms, *limit).await)
            }
        };
        let _ = writeln!(out, "{said}");
    }
    out
}

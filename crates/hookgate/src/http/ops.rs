//! For operators and orchestrators, without a token: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hookgate_core::EventState;

use super::{ApiError, HttpState};
use crate::metrics;

pub async fn healthy() -> &'static str {
    "ok\n"
}

/// How long `/readyz` waits for storage: a stalled database must fail
/// readiness, not hang the probe.
const READY_WAIT: Duration = Duration::from_secs(2);

/// Ready when storage answers, within `READY_WAIT`.
pub async fn ready(State(state): State<Arc<HttpState>>) -> Result<&'static str, ApiError> {
    let answer = match tokio::time::timeout(READY_WAIT, state.store.ping()).await {
        Ok(answer) => answer.map_err(ApiError::from),
        Err(_) => Err(ApiError::Unavailable(format!("storage did not answer within {READY_WAIT:?}"))),
    };
    match answer {
        Ok(()) => {
            state.readiness.ok();
            Ok("ready\n")
        }
        Err(error) => {
            if let ApiError::Unavailable(detail) = &error {
                state.readiness.failed(detail);
            }
            Err(error)
        }
    }
}

pub async fn metrics(State(state): State<Arc<HttpState>>) -> Response {
    // Queue depth comes from the store (so it is right whichever instance
    // stored or delivered the events), through the snapshot: however often
    // scrapes come, the store counts at most once a second.
    let snapshot = state.stats.get(&state.store).await;
    let snapshot_at = snapshot.as_ref().map(|s| s.taken_at_ms);
    let counts = snapshot.map(|s| s.counts).unwrap_or_default();
    // One series per queue there is: (source, destination) of every route, each state owed.
    for (source, destination) in state.sources.values().flat_map(|s| s.routes.iter().map(move |r| (s, r))) {
        for owed in [EventState::Pending, EventState::Delivering] {
            let count = counts
                .iter()
                .filter(|c| c.source == source.name && c.destination == destination.destination && c.state == owed)
                .map(|c| c.count)
                .sum::<u64>();
            ::metrics::gauge!(
                metrics::QUEUE_DEPTH,
                "source" => source.name.clone(), "destination" => destination.destination.clone(), "state" => owed.as_str()
            )
            .set(count as f64);
        }
        // The oldest event still owed to the queue (0 with none): a backlog that does not move grows it.
        let oldest = counts
            .iter()
            .filter(|c| c.source == source.name && c.destination == destination.destination && c.state.is_owed())
            .filter_map(|c| c.oldest_received_ms)
            .min();
        let taken_at = snapshot_at.unwrap_or_else(|| state.clock.now_ms());
        let age = oldest.map_or(0.0, |at| (taken_at - at).max(0) as f64 / 1_000.0);
        ::metrics::gauge!(
            metrics::OLDEST_PENDING,
            "source" => source.name.clone(), "destination" => destination.destination.clone()
        )
        .set(age);
    }
    // This instance's breakers (each instance has its own view of an app).
    let now = tokio::time::Instant::now();
    for destination in &state.destinations {
        let open = destination.live.breaker.circuit(now) != crate::steering::Circuit::Closed;
        ::metrics::gauge!(metrics::CIRCUIT_OPEN, "destination" => destination.name.clone()).set(if open {
            1.0
        } else {
            0.0
        });
    }
    // Readiness, as /readyz judges it.
    let ready = matches!(tokio::time::timeout(READY_WAIT, state.store.ping()).await, Ok(Ok(())));
    ::metrics::gauge!(metrics::READY).set(if ready { 1.0 } else { 0.0 });
    // Pauses too, from the store: a pause made on another instance, or before a restart, shows.
    if let Ok(Ok(paused)) = tokio::time::timeout(READY_WAIT, state.store.paused()).await {
        for destination in &state.destinations {
            let value = if paused.contains(&destination.name) { 1.0 } else { 0.0 };
            ::metrics::gauge!(metrics::PAUSED, "destination" => destination.name.clone()).set(value);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::handle().render()).into_response()
}

//! For operators and orchestrators, without a token: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use hookgate_core::State as EventState;

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
    let counts = state.stats.get(&state.store).await.map(|s| s.counts).unwrap_or_default();
    for source in state.sources.keys() {
        for event_state in [EventState::Pending, EventState::Delivering] {
            let count = counts.iter().find(|c| &c.source == source && c.state == event_state).map_or(0, |c| c.count);
            ::metrics::gauge!(metrics::QUEUE_DEPTH, "source" => source.clone(), "state" => event_state.as_str())
                .set(count as f64);
        }
    }
    // Pauses too, from the store: a pause made on another instance, or before a restart, shows.
    if let Ok(Ok(paused)) = tokio::time::timeout(READY_WAIT, state.store.paused()).await {
        for destination in &state.destinations {
            let value = if paused.contains(&destination.name) { 1.0 } else { 0.0 };
            ::metrics::gauge!(metrics::PAUSED, "destination" => destination.name.clone()).set(value);
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::handle().render()).into_response()
}

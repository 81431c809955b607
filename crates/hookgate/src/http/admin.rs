//! The admin API, behind the bearer token. Every parameter is parsed here,
//! at the edge, into its type: a bad one is a 400 naming it, never a store
//! error.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hookgate_core::{EventId, Key, State as EventState};
use hookgate_store::{Cursor, ListFilter};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{ApiError, HttpState};
use crate::api::{
    BulkReplayed, DestinationStatus, Destinations, EventPage, EventSummary, EventView, Paused, Replayed, Stats,
};
use crate::wake::Wake;

/// Events per page when the caller does not say.
const DEFAULT_PAGE: usize = 50;
/// Events one bulk replay call moves, at most; the answer says if more remain.
const MAX_BULK_REPLAY: u64 = 10_000;

pub fn router(state: Arc<HttpState>) -> Router<Arc<HttpState>> {
    Router::new()
        .route("/events", get(list))
        .route("/events/{id}", get(show))
        .route("/events/{id}/replay", post(replay_one))
        .route("/replay", post(replay_many))
        .route("/stats", get(stats))
        .route("/destinations", get(destinations))
        .route("/destinations/{name}/pause", post(pause))
        .route("/destinations/{name}/resume", post(resume))
        .layer(middleware::from_fn_with_state(state, authorize))
}

async fn authorize(State(state): State<Arc<HttpState>>, request: Request, next: Next) -> Response {
    let Some(expected) = &state.admin_token else {
        return ApiError::Unauthorized("the admin API is disabled: set [admin] token".into()).into_response();
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // An empty token never matches, whatever is configured (config refuses empty ones too).
    if !given.is_empty() && bool::from(given.as_bytes().ct_eq(expected.expose().as_bytes())) {
        next.run(request).await
    } else {
        ApiError::Unauthorized("missing or wrong bearer token".into()).into_response()
    }
}

/// `name`'s value parsed as `T`, or a 400 naming `name`.
fn param<T: FromStr>(name: &str, value: Option<&str>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    value.map(|v| v.parse().map_err(|e| ApiError::bad_param(name, e))).transpose()
}

fn event_id(id: &str) -> Result<EventId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound(format!("no event {id:?}")))
}

#[derive(Deserialize)]
struct ListQuery {
    source: Option<String>,
    state: Option<String>,
    order_key: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

async fn list(State(state): State<Arc<HttpState>>, Query(q): Query<ListQuery>) -> Result<Json<EventPage>, ApiError> {
    let limit: usize = param("limit", q.limit.as_deref())?.unwrap_or(DEFAULT_PAGE);
    if limit == 0 {
        return Err(ApiError::bad_param("limit", "must be at least 1"));
    }
    let filter = ListFilter {
        source: q.source,
        state: param("state", q.state.as_deref())?,
        order_key: q.order_key.map(Key::from),
        limit,
        cursor: param::<Cursor>("cursor", q.cursor.as_deref())?,
    };
    let page = state.store.list(&filter).await?;
    Ok(Json(EventPage {
        events: page.events.iter().map(EventSummary::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

async fn show(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> Result<Json<EventView>, ApiError> {
    let detail =
        state.store.get(&event_id(&id)?).await?.ok_or_else(|| ApiError::NotFound(format!("no event {id:?}")))?;
    Ok(Json(EventView::from(&detail)))
}

async fn replay_one(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> Result<Json<Replayed>, ApiError> {
    let event_id = event_id(&id)?;
    if !state.store.replay(&event_id, state.store.now_ms()).await? {
        return match state.store.get(&event_id).await? {
            None => Err(ApiError::NotFound(format!("no event {id:?}"))),
            Some(d) => Err(ApiError::BadRequest(format!(
                "event is {}: only delivered, dead or superseded events are replayed",
                d.record.state
            ))),
        };
    }
    state.waker.wake(Wake::All);
    Ok(Json(Replayed { id: event_id.to_string(), status: EventState::Pending }))
}

#[derive(Deserialize)]
struct ReplayQuery {
    source: Option<String>,
    state: Option<String>,
}

/// Replay every event matching the filter (default: every dead event).
async fn replay_many(
    State(state): State<Arc<HttpState>>,
    Query(q): Query<ReplayQuery>,
) -> Result<Json<BulkReplayed>, ApiError> {
    let wanted: EventState = param("state", q.state.as_deref())?.unwrap_or(EventState::Dead);
    if wanted.is_active() {
        return Err(ApiError::bad_param("state", format!("{wanted} events are already owed a delivery")));
    }
    let mut filter = ListFilter { source: q.source, state: Some(wanted), limit: 500, ..Default::default() };
    let mut replayed = 0;
    let more = 'pages: loop {
        let page = state.store.list(&filter).await?;
        for event in &page.events {
            if replayed == MAX_BULK_REPLAY {
                break 'pages true;
            }
            if state.store.replay(&event.id, state.store.now_ms()).await? {
                replayed += 1;
            }
        }
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break false,
        }
    };
    state.waker.wake(Wake::All);
    Ok(Json(BulkReplayed { replayed, more }))
}

/// From the shared snapshot (at most a second old), never a count per request.
async fn stats(State(state): State<Arc<HttpState>>) -> Result<Json<Stats>, ApiError> {
    let snapshot = state
        .stats
        .get(&*state.store)
        .await
        .ok_or_else(|| ApiError::Unavailable("events could not be counted yet".into()))?;
    let mut stats = Stats { counted_at_ms: Some(snapshot.taken_at_ms), ..Stats::default() };
    for count in snapshot.counts {
        stats.sources.entry(count.source).or_default().insert(count.state, count.count);
    }
    Ok(Json(stats))
}

/// Queue depth from the shared snapshot (every instance's events); the
/// breaker and the last minute from this instance's dispatchers.
async fn destinations(State(state): State<Arc<HttpState>>) -> Result<Json<Destinations>, ApiError> {
    let paused = state.store.paused().await?;
    let snapshot = state.stats.get(&*state.store).await;
    let counts = snapshot.as_ref().map(|s| s.counts.as_slice()).unwrap_or_default();
    let now = std::time::Instant::now();
    let destinations = state
        .destinations
        .iter()
        .map(|d| {
            let of = |wanted: EventState| -> u64 {
                counts.iter().filter(|c| c.state == wanted && d.sources.contains(&c.source)).map(|c| c.count).sum()
            };
            let minute = d.live.recent.last_minute(d.live.second(now));
            DestinationStatus {
                name: d.name.clone(),
                url: d.url.clone(),
                paused: paused.contains(&d.name),
                circuit: d.live.breaker.circuit(now),
                rate_limit: d.rate_limit.map(|r| r.to_string()),
                queue_depth: of(EventState::Pending) + of(EventState::Delivering),
                in_flight: of(EventState::Delivering),
                delivered_last_minute: minute.delivered,
                failed_last_minute: minute.failed,
                latency_p50_ms: minute.p50_ms,
                latency_p99_ms: minute.p99_ms,
            }
        })
        .collect();
    Ok(Json(Destinations { destinations }))
}

async fn pause(state: State<Arc<HttpState>>, name: Path<String>) -> Result<Json<Paused>, ApiError> {
    set_paused(state, name, true).await
}

async fn resume(state: State<Arc<HttpState>>, name: Path<String>) -> Result<Json<Paused>, ApiError> {
    set_paused(state, name, false).await
}

/// Pausing holds for every instance and across restarts (it is kept in the store).
async fn set_paused(
    State(state): State<Arc<HttpState>>,
    Path(name): Path<String>,
    paused: bool,
) -> Result<Json<Paused>, ApiError> {
    if !state.destinations.iter().any(|d| d.name == name) {
        return Err(ApiError::NotFound(format!("no destination {name:?}")));
    }
    state.store.set_paused(&name, paused).await?;
    if !paused {
        state.waker.wake(Wake::Destination(&name));
    }
    tracing::info!(destination = %name, paused, "deliveries {}", if paused { "paused" } else { "resumed" });
    Ok(Json(Paused { name, paused }))
}

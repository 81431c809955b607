//! The admin API (bearer token) and `/metrics`.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use hookgate_core::{EventId, State as EventState};
use hookgate_store::{EventDetail, EventRecord, ListFilter};
use serde::Deserialize;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::app::Shared;
use crate::{metrics, now_ms};

/// Events per page when the caller does not say.
const DEFAULT_PAGE: usize = 50;
/// Events one bulk replay call moves, at most; the answer says if more remain.
const MAX_BULK_REPLAY: usize = 10_000;

pub(super) fn router(shared: Arc<Shared>) -> Router<Arc<Shared>> {
    Router::new()
        .route("/events", get(list))
        .route("/events/{id}", get(show))
        .route("/events/{id}/replay", post(replay_one))
        .route("/replay", post(replay_many))
        .route("/stats", get(stats))
        .layer(middleware::from_fn_with_state(shared, authorize))
}

async fn authorize(State(shared): State<Arc<Shared>>, request: Request, next: Next) -> Response {
    let Some(expected) = shared.config.admin_token.as_deref() else {
        return ApiError::Unauthorized("the admin API is disabled: set [admin] token".into()).into_response();
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::Unauthorized("missing or wrong bearer token".into()).into_response()
    }
}

#[derive(Deserialize)]
struct ListQuery {
    source: Option<String>,
    state: Option<String>,
    order_key: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
}

fn parse_state(state: Option<&str>) -> Result<Option<EventState>, ApiError> {
    state.map(|s| s.parse().map_err(|e| ApiError::BadRequest(format!("{e}")))).transpose()
}

fn parse_id(id: &str) -> Result<EventId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound(format!("no event {id:?}")))
}

async fn list(State(shared): State<Arc<Shared>>, Query(q): Query<ListQuery>) -> Result<Json<Value>, ApiError> {
    let filter = ListFilter {
        source: q.source,
        state: parse_state(q.state.as_deref())?,
        order_key: q.order_key,
        limit: q.limit.unwrap_or(DEFAULT_PAGE),
        cursor: q.cursor,
    };
    let page = shared.store.list(&filter).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok(Json(json!({
        "events": page.events.iter().map(record_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor,
    })))
}

async fn show(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let detail = shared
        .store
        .get(&parse_id(&id)?)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?
        .ok_or_else(|| ApiError::NotFound(format!("no event {id:?}")))?;
    Ok(Json(detail_json(&detail)))
}

async fn replay_one(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<Value>, ApiError> {
    let event_id = parse_id(&id)?;
    let replayed = shared.store.replay(&event_id, now_ms()).await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    if !replayed {
        return match shared.store.get(&event_id).await.map_err(|e| ApiError::Unavailable(e.to_string()))? {
            None => Err(ApiError::NotFound(format!("no event {id:?}"))),
            Some(d) => Err(ApiError::BadRequest(format!(
                "event is {}: only delivered, dead or superseded events are replayed",
                d.record.state
            ))),
        };
    }
    shared.wake_all();
    Ok(Json(json!({ "id": id, "status": "pending" })))
}

#[derive(Deserialize)]
struct ReplayQuery {
    source: Option<String>,
    state: Option<String>,
}

/// Replay every event matching the filter (default: every dead event).
async fn replay_many(State(shared): State<Arc<Shared>>, Query(q): Query<ReplayQuery>) -> Result<Json<Value>, ApiError> {
    let state = parse_state(q.state.as_deref())?.unwrap_or(EventState::Dead);
    if state.is_active() {
        return Err(ApiError::BadRequest(format!("{state} events are already owed a delivery")));
    }
    let unavailable = |e: hookgate_store::StoreError| ApiError::Unavailable(e.to_string());
    let mut filter = ListFilter { source: q.source, state: Some(state), limit: 500, ..Default::default() };
    let mut replayed = 0;
    loop {
        let page = shared.store.list(&filter).await.map_err(unavailable)?;
        for event in &page.events {
            if replayed == MAX_BULK_REPLAY {
                shared.wake_all();
                return Ok(Json(json!({ "replayed": replayed, "more": true })));
            }
            if shared.store.replay(&event.id, now_ms()).await.map_err(unavailable)? {
                replayed += 1;
            }
        }
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    shared.wake_all();
    Ok(Json(json!({ "replayed": replayed, "more": false })))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Result<Json<Value>, ApiError> {
    let counts = shared.store.stats().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let mut by_source = serde_json::Map::new();
    for count in counts {
        let entry = by_source.entry(count.source).or_insert_with(|| json!({}));
        entry[count.state.as_str()] = json!(count.count);
    }
    Ok(Json(json!({ "sources": by_source })))
}

pub(super) async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    // Queue depth is read from the store at scrape time, so it is right
    // whichever instance stored or delivered the events.
    if let Ok(counts) = shared.store.stats().await {
        for source in shared.sources.keys() {
            for state in [EventState::Pending, EventState::Delivering] {
                let count = counts.iter().find(|c| &c.source == source && c.state == state).map_or(0, |c| c.count);
                ::metrics::gauge!(metrics::QUEUE_DEPTH, "source" => source.clone(), "state" => state.as_str())
                    .set(count as f64);
            }
        }
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], metrics::handle().render()).into_response()
}

fn record_json(r: &EventRecord) -> Value {
    json!({
        "id": r.id.as_str(),
        "source": r.source,
        "destination": r.destination,
        "state": r.state.as_str(),
        "received_at_ms": r.received_at_ms,
        "updated_at_ms": r.updated_at_ms,
        "dedupe_key": r.dedupe_key,
        "order_key": r.order_key,
        "coalesce_key": r.coalesce_key,
        "warnings": r.warnings,
        "duplicates": r.duplicates,
        "attempt_count": r.attempts,
        "next_attempt_at_ms": r.next_attempt_at_ms,
        "superseded_by": r.superseded_by.as_ref().map(EventId::as_str),
    })
}

fn detail_json(d: &EventDetail) -> Value {
    let mut value = record_json(&d.record);
    value["headers"] = json!(d.headers);
    match std::str::from_utf8(&d.body) {
        Ok(text) => value["body"] = json!(text),
        Err(_) => value["body_base64"] = json!(base64::engine::general_purpose::STANDARD.encode(&d.body)),
    }
    value["attempts"] = json!(d.attempts);
    value
}

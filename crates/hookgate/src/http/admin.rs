//! The admin API, behind the bearer token. Every parameter is parsed here,
//! at the edge, into its type: a bad one is a 400 naming it, never a store
//! error.

use std::str::FromStr;
use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hookgate_core::{DeliveryId, EventId, EventState, Key, RequestView, State as DeliveryState};
use hookgate_store::{Cursor, DeliveryFilter, ListFilter};
use serde::Deserialize;
use utoipa::{IntoParams, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, HttpState};
use crate::api::{
    BulkReplayed, DeliveryPage, DeliveryReplayed, DeliverySummary, DestinationStatus, Destinations, ErrorBody,
    EventPage, EventSummary, EventView, Paused, ReplayFilter, Replayed, Rerouted, RoutingView, Stats,
};
use crate::wake::Wake;

/// Events per page when the caller does not say.
const DEFAULT_PAGE: usize = 50;
/// Events one bulk replay call moves, at most; the answer says if more remain.
const MAX_BULK_REPLAY: u64 = 10_000;

/// The admin API's routes and, from the same registrations, its OpenAPI
/// document: a route cannot be served without being described.
pub fn router(state: Arc<HttpState>) -> (Router<Arc<HttpState>>, utoipa::openapi::OpenApi) {
    let (router, mut api) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(list))
        .routes(routes!(show))
        .routes(routes!(replay_one))
        .routes(routes!(reroute))
        .routes(routes!(list_deliveries))
        .routes(routes!(replay_delivery))
        .routes(routes!(replay_many))
        .routes(routes!(stats))
        .routes(routes!(destinations))
        .routes(routes!(pause))
        .routes(routes!(resume))
        .layer(middleware::from_fn_with_state(state, authorize))
        .split_for_parts();
    // Served beside the routes it describes, without the token (it holds nothing secret).
    api.paths.add_path_operation(
        "/openapi.json",
        vec![utoipa::openapi::HttpMethod::Get],
        utoipa::openapi::path::OperationBuilder::new()
            .operation_id(Some("openapi"))
            .summary(Some("This document."))
            .security(utoipa::openapi::security::SecurityRequirement::default())
            .response("200", utoipa::openapi::Response::new("The OpenAPI 3.1 document."))
            .build(),
    );
    (router, api)
}

#[derive(OpenApi)]
#[openapi(
    info(title = "hookgate admin API", description = "Look at stored events, replay them, steer deliveries."),
    servers((url = "/api")),
    modifiers(&BearerToken),
    security(("admin_token" = [])),
    components(schemas(ErrorBody)),
)]
struct ApiDoc;

/// Every route takes `Authorization: Bearer <[admin] token>`.
struct BearerToken;

impl utoipa::Modify for BearerToken {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = api.components.get_or_insert_with(Default::default);
        let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("the [admin] token")).build();
        components.add_security_scheme("admin_token", SecurityScheme::Http(bearer));
    }
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
    if expected.matches(given.as_bytes()) {
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

fn delivery_id(id: &str) -> Result<DeliveryId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound(format!("no delivery {id:?}")))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListQuery {
    source: Option<String>,
    /// The event's state in a word: pending, delivering, delivered, dead,
    /// superseded, or unrouted (see `EventSummary.state`).
    state: Option<String>,
    /// Events with a delivery to this destination.
    destination: Option<String>,
    order_key: Option<String>,
    dedupe_key: Option<String>,
    /// Received at or after: RFC 3339 or milliseconds since the epoch.
    since: Option<String>,
    /// Received before: RFC 3339 or milliseconds since the epoch.
    until: Option<String>,
    /// Events per page (default 50).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A time parameter: RFC 3339 (`2026-11-29T10:00:00Z`) or milliseconds since the epoch.
pub struct Time(pub i64);

impl FromStr for Time {
    type Err = String;
    fn from_str(text: &str) -> Result<Time, String> {
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
            return text.parse().map(Time).map_err(|_| format!("{text:?} is too large"));
        }
        let at = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
            .map_err(|_| format!("{text:?} is not a time like 2026-11-29T10:00:00Z or milliseconds since the epoch"))?;
        Ok(Time((at.unix_timestamp_nanos() / 1_000_000) as i64))
    }
}

/// Events, newest first, paged: by row, or, for a time window (`since`,
/// `until`) with no other filter, by time received.
#[utoipa::path(get, path = "/events", params(ListQuery), responses(
    (status = 200, body = EventPage),
    (status = 400, description = "a bad parameter, named", body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 503, description = "storage unavailable", body = ErrorBody),
))]
async fn list(State(state): State<Arc<HttpState>>, Query(q): Query<ListQuery>) -> Result<Json<EventPage>, ApiError> {
    let limit: usize = param("limit", q.limit.as_deref())?.unwrap_or(DEFAULT_PAGE);
    if limit == 0 {
        return Err(ApiError::bad_param("limit", "must be at least 1"));
    }
    let filter = ListFilter {
        source: q.source,
        state: param("state", q.state.as_deref())?,
        destination: q.destination,
        order_key: q.order_key.map(Key::from),
        dedupe_key: q.dedupe_key.map(Key::from),
        since_ms: param::<Time>("since", q.since.as_deref())?.map(|t| t.0),
        until_ms: param::<Time>("until", q.until.as_deref())?.map(|t| t.0),
        limit,
        cursor: param::<Cursor>("cursor", q.cursor.as_deref())?,
    };
    time_order_cursor(hookgate_store::query::events_by_time(&filter), filter.cursor)?;
    let page = state.store.list(&filter).await?;
    Ok(Json(EventPage {
        events: page.events.iter().map(EventSummary::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// A time window alone is listed by time received, and its pages' cursors
/// carry the time (`T~E`); a cursor from a page in row order (no time) is
/// refused there, not read as "after its event's time", which would end the
/// listing in silence were that event deleted since.
fn time_order_cursor(by_time: bool, cursor: Option<Cursor>) -> Result<(), ApiError> {
    match cursor {
        Some(cursor) if by_time && cursor.time().is_none() => Err(ApiError::bad_param(
            "cursor",
            "is from a page listed in row order; a time window alone is listed by time received: \
             start it again without a cursor",
        )),
        _ => Ok(()),
    }
}

/// One event: what the sender sent, its keys, each route's verdict, each delivery with its attempts.
#[utoipa::path(get, path = "/events/{id}", params(("id" = String, Path, description = "an event id")), responses(
    (status = 200, body = EventView),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
async fn show(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> Result<Json<EventView>, ApiError> {
    let detail =
        state.store.get(&event_id(&id)?).await?.ok_or_else(|| ApiError::NotFound(format!("no event {id:?}")))?;
    let mut view = EventView::from(&detail);
    view.verified_by = state.sources.get(&detail.record.source).map(|s| s.scheme.name().as_str().to_owned());
    Ok(Json(view))
}

/// Deliver an event again (same webhook id): each of its finished
/// deliveries (delivered, dead or superseded) goes to the back of its queue.
#[utoipa::path(post, path = "/events/{id}/replay", params(("id" = String, Path, description = "an event id")), responses(
    (status = 200, body = Replayed),
    (status = 400, description = "every delivery of the event is still owed (or it has none)", body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
async fn replay_one(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> Result<Json<Replayed>, ApiError> {
    let event_id = event_id(&id)?;
    let replayed = state.store.replay(&event_id, state.clock.now_ms()).await?;
    if replayed == 0 {
        return match state.store.get(&event_id).await? {
            None => Err(ApiError::NotFound(format!("no event {id:?}"))),
            Some(d) if d.deliveries.is_empty() => Err(ApiError::BadRequest(
                "event is unrouted: it has no delivery to replay (reroute it: POST /api/events/{id}/reroute)".into(),
            )),
            Some(d) => Err(ApiError::BadRequest(format!(
                "event is {}: only delivered, dead or superseded deliveries are replayed",
                d.record.state
            ))),
        };
    }
    state.waker.wake(Wake::All);
    Ok(Json(Replayed { id: event_id.to_string(), status: EventState::Pending, deliveries: replayed }))
}

/// Route an event again by today's routes: its verdicts are replaced, and
/// a delivery is added (pending, at the back of its queue) to each
/// destination it matches now and had none for. Deliveries it has are left
/// as they are (replay them to deliver again). The query string is not
/// stored: a filter on `query.*` sees it missing.
#[utoipa::path(post, path = "/events/{id}/reroute", params(("id" = String, Path, description = "an event id")), responses(
    (status = 200, body = Rerouted),
    (status = 400, description = "its source is no longer configured", body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
async fn reroute(State(state): State<Arc<HttpState>>, Path(id): Path<String>) -> Result<Json<Rerouted>, ApiError> {
    let event_id = event_id(&id)?;
    let detail = state.store.get(&event_id).await?.ok_or_else(|| ApiError::NotFound(format!("no event {id:?}")))?;
    let source = state.sources.get(&detail.record.source).ok_or_else(|| {
        ApiError::BadRequest(format!("its source {:?} is no longer configured", detail.record.source))
    })?;
    let view = RequestView::new(&detail.headers, &detail.body, b"", &source.dedupe_ignore);
    let routed = crate::routing::route(source, &view, &detail.record.order_key, &detail.record.coalesce_key);
    let routing: Vec<RoutingView> = routed.routing.iter().map(RoutingView::from).collect();
    let destinations: Vec<String> = routed.deliveries.iter().map(|d| d.destination.clone()).collect();
    let added = state
        .store
        .reroute(&event_id, routed.routing, routed.deliveries, state.clock.now_ms())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no event {id:?}")))?;
    for destination in &destinations {
        state.waker.wake(Wake::Destination(destination));
    }
    let trace_id = crate::telemetry::context::of_event(detail.trace.as_deref(), event_id.as_str()).trace_hex();
    tracing::info!(event_id = %event_id, source = %detail.record.source, trace_id, added, "rerouted");
    Ok(Json(Rerouted { id: event_id.to_string(), added, routing }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct DeliveryQuery {
    destination: Option<String>,
    /// pending, delivering, delivered, dead or superseded.
    state: Option<String>,
    source: Option<String>,
    /// The key of its queue at the destination.
    order_key: Option<String>,
    /// Its event received at or after: RFC 3339 or milliseconds since the epoch.
    since: Option<String>,
    /// Its event received before.
    until: Option<String>,
    /// Deliveries per page (default 50).
    limit: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Deliveries, by event newest first, paged: a destination's queue
/// (`state=pending`) or dead letters (`state=dead`); a time window alone is
/// by its events' time received.
#[utoipa::path(get, path = "/deliveries", params(DeliveryQuery), responses(
    (status = 200, body = DeliveryPage),
    (status = 400, description = "a bad parameter, named", body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 503, description = "storage unavailable", body = ErrorBody),
))]
async fn list_deliveries(
    State(state): State<Arc<HttpState>>,
    Query(q): Query<DeliveryQuery>,
) -> Result<Json<DeliveryPage>, ApiError> {
    let limit: usize = param("limit", q.limit.as_deref())?.unwrap_or(DEFAULT_PAGE);
    if limit == 0 {
        return Err(ApiError::bad_param("limit", "must be at least 1"));
    }
    let filter = DeliveryFilter {
        destination: q.destination,
        state: param("state", q.state.as_deref())?,
        source: q.source,
        order_key: q.order_key.map(Key::from),
        since_ms: param::<Time>("since", q.since.as_deref())?.map(|t| t.0),
        until_ms: param::<Time>("until", q.until.as_deref())?.map(|t| t.0),
        limit,
        cursor: param::<Cursor>("cursor", q.cursor.as_deref())?,
    };
    time_order_cursor(hookgate_store::query::deliveries_by_time(&filter), filter.cursor)?;
    let page = state.store.list_deliveries(&filter).await?;
    Ok(Json(DeliveryPage {
        deliveries: page.deliveries.iter().map(DeliverySummary::from).collect(),
        next_cursor: page.next_cursor.map(|c| c.to_string()),
    }))
}

/// Deliver one finished delivery again, to its destination only (same
/// webhook id, a new attempt at the back of its queue).
#[utoipa::path(post, path = "/deliveries/{id}/replay", params(("id" = String, Path, description = "a delivery id")), responses(
    (status = 200, body = DeliveryReplayed),
    (status = 400, description = "the delivery is still owed", body = ErrorBody),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
async fn replay_delivery(
    State(state): State<Arc<HttpState>>,
    Path(id): Path<String>,
) -> Result<Json<DeliveryReplayed>, ApiError> {
    let delivery = delivery_id(&id)?;
    if !state.store.replay_delivery(&delivery, state.clock.now_ms()).await? {
        return match state.store.get_delivery(&delivery).await? {
            None => Err(ApiError::NotFound(format!("no delivery {id:?}"))),
            Some(d) => Err(ApiError::BadRequest(format!(
                "delivery is {}: only delivered, dead or superseded deliveries are replayed",
                d.state
            ))),
        };
    }
    let event = state.store.get_delivery(&delivery).await?.map(|d| d.event.to_string()).unwrap_or_default();
    state.waker.wake(Wake::All);
    Ok(Json(DeliveryReplayed { id: delivery.to_string(), event, status: DeliveryState::Pending }))
}

/// Replay every delivery matching the filter (default: every dead one),
/// each queue's in their original order: the matching deliveries are
/// gathered first, then replayed oldest first, so each goes to the back of
/// its queue behind the one stored before it.
#[utoipa::path(post, path = "/replay", params(ReplayFilter), request_body(content = Option<ReplayFilter>), responses(
    (status = 200, body = BulkReplayed),
    (status = 400, description = "a bad filter, named", body = ErrorBody),
    (status = 401, body = ErrorBody),
))]
async fn replay_many(
    State(state): State<Arc<HttpState>>,
    query: Result<Query<ReplayFilter>, axum::extract::rejection::QueryRejection>,
    body: axum::body::Bytes,
) -> Result<Json<BulkReplayed>, ApiError> {
    // Read here rather than by extractors, so a bad filter is a 400 naming what
    // is wrong in our own error body (an extractor would answer 415 or 422 in text).
    let query = query.map_err(|e| ApiError::BadRequest(format!("query: {}", e.body_text())))?.0;
    let f = if body.iter().all(u8::is_ascii_whitespace) {
        query
    } else {
        // One place says what is replayed: a filter in the query beside a body would be
        // ignored in silence (and replay what the caller meant to leave alone).
        let in_query = query.named();
        if !in_query.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "the filter is in the body and in the query ({}): give it in one of them",
                in_query.join(", ")
            )));
        }
        let json = &mut serde_json::Deserializer::from_slice(&body);
        let filter = serde_path_to_error::deserialize::<_, ReplayFilter>(&mut *json).map_err(|e| {
            match e.path().to_string().as_str() {
                "." => ApiError::BadRequest(format!("filter: {}", e.inner())),
                field => ApiError::BadRequest(format!("{field}: {}", e.inner())),
            }
        })?;
        json.end().map_err(|e| ApiError::BadRequest(format!("filter: {e}")))?;
        filter
    };
    let wanted: DeliveryState = param("state", f.state.as_deref())?.unwrap_or(DeliveryState::Dead);
    if wanted.is_active() {
        return Err(ApiError::bad_param("state", format!("{wanted} deliveries are already owed")));
    }
    if f.limit == Some(0) {
        return Err(ApiError::bad_param("limit", "must be at least 1"));
    }
    if let Some(destination) = &f.destination
        && !state.destinations.iter().any(|d| &d.name == destination)
    {
        return Err(ApiError::bad_param("destination", format!("no destination is named {destination:?}")));
    }
    let most = f.limit.unwrap_or(MAX_BULK_REPLAY).min(MAX_BULK_REPLAY);
    let mut filter = DeliveryFilter {
        destination: f.destination,
        source: f.source,
        state: Some(wanted),
        order_key: f.order_key.map(Key::from),
        since_ms: param::<Time>("since", f.since.as_deref())?.map(|t| t.0),
        until_ms: param::<Time>("until", f.until.as_deref())?.map(|t| t.0),
        limit: 500,
        ..Default::default()
    };
    let mut matching = Vec::new();
    let more = loop {
        let page = state.store.list_deliveries(&filter).await?;
        let left = (most - matching.len() as u64) as usize;
        let cut = page.deliveries.len() > left;
        matching.extend(page.deliveries.into_iter().take(left).map(|d| d.id));
        match page.next_cursor {
            _ if cut => break true,
            Some(_) if matching.len() as u64 == most => break true,
            Some(cursor) => filter.cursor = Some(cursor),
            None => break false,
        }
    };
    let mut replayed = 0;
    // Listed newest first: replay oldest first.
    for id in matching.iter().rev() {
        if state.store.replay_delivery(id, state.clock.now_ms()).await? {
            replayed += 1;
        }
    }
    state.waker.wake(Wake::All);
    Ok(Json(BulkReplayed { replayed, more }))
}

/// Deliveries by source and state, and by destination and state; unrouted
/// events by source: from the shared snapshot (never a count per request).
#[utoipa::path(get, path = "/stats", responses((status = 200, body = Stats), (status = 401, body = ErrorBody)))]
async fn stats(State(state): State<Arc<HttpState>>) -> Result<Json<Stats>, ApiError> {
    let snapshot = state
        .stats
        .get(&state.store)
        .await
        .ok_or_else(|| ApiError::Unavailable("events could not be counted yet".into()))?;
    let mut stats = Stats { counted_at_ms: Some(snapshot.taken_at_ms), ..Stats::default() };
    for count in snapshot.counts {
        *stats.sources.entry(count.source).or_default().entry(count.state).or_default() += count.count;
        if let Some(state) = count.state.delivery_state() {
            *stats.destinations.entry(count.destination).or_default().entry(state).or_default() += count.count;
        }
    }
    Ok(Json(stats))
}

/// Queue depth from the shared snapshot (every instance's deliveries); the
/// breaker and the last minute from this instance's dispatchers.
#[utoipa::path(get, path = "/destinations", responses(
    (status = 200, body = Destinations),
    (status = 401, body = ErrorBody),
))]
async fn destinations(State(state): State<Arc<HttpState>>) -> Result<Json<Destinations>, ApiError> {
    let paused = state.store.paused().await?;
    let snapshot = state.stats.get(&state.store).await;
    let counts = snapshot.as_ref().map(|s| s.counts.as_slice()).unwrap_or_default();
    let now = tokio::time::Instant::now();
    let destinations = state
        .destinations
        .iter()
        .map(|d| {
            let of = |wanted: EventState| -> u64 {
                counts.iter().filter(|c| c.state == wanted && c.destination == d.name).map(|c| c.count).sum()
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
                dead: of(EventState::Dead),
                delivered_last_minute: minute.delivered,
                failed_last_minute: minute.failed,
                latency_p50_ms: minute.p50_ms,
                latency_p99_ms: minute.p99_ms,
            }
        })
        .collect();
    Ok(Json(Destinations { destinations }))
}

/// Stop deliveries to a destination (events are still stored), on every instance.
#[utoipa::path(post, path = "/destinations/{name}/pause", params(("name" = String, Path)), responses(
    (status = 200, body = Paused),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
async fn pause(state: State<Arc<HttpState>>, name: Path<String>) -> Result<Json<Paused>, ApiError> {
    set_paused(state, name, true).await
}

/// Deliver again: the backlog first, in order.
#[utoipa::path(post, path = "/destinations/{name}/resume", params(("name" = String, Path)), responses(
    (status = 200, body = Paused),
    (status = 401, body = ErrorBody),
    (status = 404, body = ErrorBody),
))]
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

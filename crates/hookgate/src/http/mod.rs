//! The HTTP edge: one router for ingest, the admin API, metrics and health.
//! Handlers see only [`HttpState`]; they know nothing of how the server is
//! assembled. Every error leaves through [`ApiError`]: 4xx with a detail for
//! the caller, 5xx logged here and opaque to the caller.

mod admin;
mod body;
mod console;
mod ingest;
mod ops;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hookgate_core::Secret;
use hookgate_store::{Store, StoreError};

use crate::api::ErrorBody;
use crate::clock::Clock;
use crate::config::Source;
use crate::faults::FaultLog;
use crate::loud::LoudLog;
use crate::stats::StatsCache;
use crate::wake::Waker;

pub use body::BodyLimits;

/// What the handlers need, and nothing more.
pub struct HttpState {
    pub sources: HashMap<String, Arc<Source>>,
    /// The configured destinations, as the admin API shows them.
    pub destinations: Vec<DestinationInfo>,
    /// `None`: the admin API answers 401 to everything.
    pub admin_token: Option<Secret>,
    pub body: BodyLimits,
    pub store: Arc<dyn Store>,
    /// The server's one clock (`crate::clock`): stored times, and a sender's signed timestamp judged against it.
    pub clock: Arc<dyn Clock>,
    pub waker: Waker,
    /// Counts by source and state, refreshed in the background.
    pub stats: StatsCache,
    /// Storage faults met by ingest, logged once rather than per refused request.
    pub faults: Arc<FaultLog>,
    /// …and by `/readyz`, in a log of its own.
    pub readiness: Arc<FaultLog>,
    /// Refused requests, told at WARN a line per source every few seconds.
    pub refusals: LoudLog,
    /// Each event's ingest span.
    pub telemetry: crate::telemetry::Telemetry,
}

/// A configured destination, and its dispatcher's live state.
pub struct DestinationInfo {
    pub name: String,
    /// Without its password.
    pub url: String,
    pub rate_limit: Option<crate::config::RateLimit>,
    pub live: Arc<crate::steering::Live>,
}

/// Admin request bodies (a replay filter) are small.
const ADMIN_MAX_BODY: usize = 64 * 1024;

pub fn router(state: Arc<HttpState>) -> Router {
    // Ingest reads its body itself, within `BodyLimits`.
    // With a trailing slash too: a sender's URL field is easy to end with one, and a 404 for it
    // would look like a wrong source name.
    let ingest = Router::new()
        .route("/in/{source}", post(ingest::receive).get(ingest::challenge))
        .route("/in/{source}/", post(ingest::receive).get(ingest::challenge));
    let (admin, api) = admin::router(state.clone());
    let document = Arc::new(api.to_json().expect("the OpenAPI document serializes"));
    let admin = admin
        .route(
            "/openapi.json",
            get(move || async move { ([(axum::http::header::CONTENT_TYPE, "application/json")], (*document).clone()) }),
        )
        .layer(DefaultBodyLimit::max(ADMIN_MAX_BODY))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(state.body.timeout));
    Router::new()
        .merge(ingest)
        .nest("/api", admin)
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthy))
        .route("/readyz", get(ops::ready))
        .merge(console::router())
        .layer(axum::middleware::map_response(nosniff))
        .with_state(state)
}

/// Every answer says `nosniff`: a browser must never run an answer as a
/// script (the challenge echo, a sender's reflected text) whatever its type,
/// so the console's CSP does not depend on every handler choosing its type well.
async fn nosniff(mut response: Response) -> Response {
    response.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    response
}

#[derive(Debug)]
pub enum ApiError {
    NotFound(String),
    Unauthorized(String),
    /// A request parameter or body the caller got wrong; the message names it.
    BadRequest(String),
    PayloadTooLarge(usize),
    MethodNotAllowed(String),
    /// Storage failed: 503, so a sender retries. The detail is logged, not sent.
    Unavailable(String),
    /// Too much in flight (bodies in memory, the store's queue): 503 with
    /// `Retry-After`, so the sender comes back when it has drained.
    Busy(&'static str),
    /// The request body did not arrive within `body_timeout`.
    BodyTimeout(std::time::Duration),
    /// A bug or a damaged database: 500. The detail is logged, not sent.
    Internal(String),
}

impl ApiError {
    /// A bad value for one named parameter: `cursor: not a cursor …`.
    pub fn bad_param(name: &str, problem: impl std::fmt::Display) -> ApiError {
        ApiError::BadRequest(format!("{name}: {problem}"))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(detail) => ApiError::Unavailable(detail),
            StoreError::Busy(_) => ApiError::Busy("storage queue full"),
            StoreError::Full(_) => ApiError::Busy("disk almost full"),
            StoreError::Corrupt(detail) => ApiError::Internal(detail),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match self {
            ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, m),
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, m),
            ApiError::MethodNotAllowed(m) => (StatusCode::METHOD_NOT_ALLOWED, m),
            ApiError::PayloadTooLarge(limit) => {
                (StatusCode::PAYLOAD_TOO_LARGE, format!("body is larger than max_body ({limit} bytes)"))
            }
            ApiError::Unavailable(detail) => {
                // Told once per fault by `FaultLog` where requests meet storage; this is the detail.
                tracing::debug!(%detail, "storage unavailable");
                let body = Json(ErrorBody { error: "storage unavailable, retry later".into() });
                return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], body).into_response();
            }
            ApiError::Busy(what) => {
                tracing::debug!(what, "shedding load");
                let body = Json(ErrorBody { error: format!("busy ({what}), retry later") });
                return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], body).into_response();
            }
            ApiError::BodyTimeout(limit) => {
                let body = Json(ErrorBody { error: format!("the request body did not arrive within {limit:?}") });
                return (StatusCode::REQUEST_TIMEOUT, [(header::CONNECTION, "close")], body).into_response();
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error".to_owned())
            }
        };
        (status, Json(ErrorBody { error: message })).into_response()
    }
}

//! The HTTP edge: one router for ingest, the admin API, metrics and health.
//! Every error leaves through [`ApiError`]: 4xx with a detail for the caller,
//! 5xx logged here and opaque to the caller.

mod admin;
mod ingest;

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::app::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let max_body = shared.config.max_body_bytes;
    let ingest = Router::new()
        .route("/in/{source}", post(ingest::receive).get(ingest::challenge))
        .layer(DefaultBodyLimit::max(max_body));
    Router::new()
        .merge(ingest)
        .nest("/api", admin::router(shared.clone()))
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(shared)
}

async fn ready(State(shared): State<Arc<Shared>>) -> Result<&'static str, ApiError> {
    shared.store.ping().await.map_err(|e| ApiError::Unavailable(e.to_string()))?;
    Ok("ready\n")
}

#[derive(Debug)]
pub(crate) enum ApiError {
    NotFound(String),
    Unauthorized(String),
    BadRequest(String),
    PayloadTooLarge(usize),
    MethodNotAllowed(String),
    /// Storage failed: 503, so a sender retries. The detail is logged, not sent.
    Unavailable(String),
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
                tracing::error!(%detail, "storage unavailable");
                let body = Json(serde_json::json!({"error": "storage unavailable, retry later"}));
                return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], body).into_response();
            }
        };
        (status, Json(serde_json::json!({ "error": message }))).into_response()
    }
}

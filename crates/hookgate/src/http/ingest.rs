//! `POST /in/{source}`: verify, render keys, store durably, answer.
//! Dedupe and enqueue happen inside the store in one transaction; this
//! handler never checks before it inserts.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use bytes::Bytes;
use hookgate_core::{EventId, RequestView, Template};
use hookgate_store::{Ingested, NewEvent};
use hookgate_verify::Signed;
use serde_json::{Value, json};

use super::ApiError;
use crate::app::Shared;
use crate::config::Source;
use crate::{metrics, now_ms};

pub(super) async fn receive(
    State(shared): State<Arc<Shared>>,
    Path(source_name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let source = shared
        .sources
        .get(&source_name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown source {source_name:?}")))?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            reject(source, "too_large");
            ApiError::PayloadTooLarge(shared.config.max_body_bytes)
        } else {
            reject(source, "unreadable_body");
            ApiError::BadRequest(rejection.body_text())
        }
    })?;
    let headers = lowercase_headers(&headers);
    let received_at_ms = now_ms();

    let query = query.unwrap_or_default();
    let signed = Signed { headers: &headers, body: &body, query: &query, now: received_at_ms / 1_000 };
    if let Err(error) = hookgate_verify::verify(&source.scheme, &source.secrets, source.tolerance_secs, &signed) {
        reject(source, error.reason());
        tracing::info!(source = %source.name, reason = error.reason(), "signature rejected");
        return Err(ApiError::Unauthorized(format!("{}: {error}", error.reason())));
    }

    if let Some(challenge) = slack_url_verification(source, &body) {
        // Slack's one-time handshake: answered, never stored or delivered.
        return Ok(Json(json!({ "challenge": challenge })));
    }
    let keys = render_keys(source, &headers, &body, &query);
    if !keys.warnings.is_empty() {
        tracing::warn!(source = %source.name, warnings = ?keys.warnings, "stored with keys missing");
    }

    let event = NewEvent {
        id: EventId::generate(),
        source: source.name.clone(),
        destination: source.destination.clone(),
        received_at_ms,
        headers,
        body: body.to_vec(),
        dedupe_key: keys.dedupe,
        dedupe_window_ms: source.dedupe_window_ms,
        order_key: keys.order,
        coalesce_key: keys.coalesce,
        warnings: keys.warnings,
    };
    let outcome = shared.store.ingest(event).await.map_err(|e| {
        ::metrics::counter!(metrics::UNAVAILABLE, "source" => source.name.clone()).increment(1);
        ApiError::Unavailable(e.to_string())
    })?;
    let label = source.name.clone();
    match outcome {
        Ingested::Accepted { id, superseded } => {
            shared.wake(&source.destination);
            ::metrics::counter!(metrics::RECEIVED, "source" => label.clone()).increment(1);
            if superseded > 0 {
                ::metrics::counter!(metrics::SUPERSEDED, "source" => label.clone()).increment(superseded);
            }
            ::metrics::histogram!(metrics::ACK_SECONDS, "source" => label).record(started.elapsed().as_secs_f64());
            Ok(Json(json!({ "id": id.as_str(), "status": "accepted" })))
        }
        Ingested::Duplicate { original } => {
            ::metrics::counter!(metrics::DUPLICATES, "source" => label).increment(1);
            Ok(Json(json!({ "id": original.as_str(), "status": "duplicate" })))
        }
    }
}

/// The `challenge` of a signed Slack `url_verification` request.
fn slack_url_verification(source: &Source, body: &[u8]) -> Option<String> {
    if source.scheme != hookgate_verify::Scheme::Slack {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    (value["type"] == "url_verification").then(|| value["challenge"].as_str().map(str::to_owned)).flatten()
}

/// `GET /in/{source}`: the echo handshake some senders make before they deliver.
pub(super) async fn challenge(
    State(shared): State<Arc<Shared>>,
    Path(source_name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<String, ApiError> {
    let source = shared
        .sources
        .get(&source_name)
        .ok_or_else(|| ApiError::NotFound(format!("unknown source {source_name:?}")))?;
    let Some(challenge) = &source.challenge else {
        return Err(ApiError::MethodNotAllowed("this source takes POST only (no challenge is configured)".into()));
    };
    let query = query.unwrap_or_default();
    let param =
        |name: &str| form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
    if let Some((token_param, expected)) = &challenge.token {
        let given = param(token_param).unwrap_or_default();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), expected.as_bytes())) {
            reject(source, "bad_challenge_token");
            return Err(ApiError::Unauthorized(format!("bad_credentials: {token_param} does not match")));
        }
    }
    param(&challenge.param).ok_or_else(|| ApiError::BadRequest(format!("missing query parameter {}", challenge.param)))
}

struct Keys {
    dedupe: Option<String>,
    order: Option<String>,
    coalesce: Option<String>,
    /// One line per key whose template could not be rendered: the event is
    /// stored anyway, with that key empty, and the line shows on the event.
    warnings: Vec<String>,
}

fn render_keys(source: &Source, headers: &[(String, String)], body: &[u8], query: &str) -> Keys {
    let view = RequestView::new(headers, body, query, &source.dedupe_ignore);
    let mut warnings = Vec::new();
    let mut render = |name: &str, template: &Option<Template>| {
        let template = template.as_ref()?;
        template
            .render(&view)
            .map_err(|missing| warnings.push(format!("{name} {:?} not rendered: {missing}", template.as_str())))
            .ok()
    };
    let dedupe = render("dedupe_key", &source.dedupe_key);
    let order = render("order_key", &source.order_key);
    let coalesce = render("coalesce_key", &source.coalesce_key);
    Keys { dedupe, order, coalesce, warnings }
}

fn reject(source: &Source, reason: &'static str) {
    ::metrics::counter!(metrics::REJECTED, "source" => source.name.clone(), "reason" => reason).increment(1);
}

/// Names lowercase (HTTP names are case-insensitive), values as text. A value
/// that is not valid UTF-8 is kept with its invalid bytes replaced.
fn lowercase_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

//! `POST /in/{source}`: verify, render keys, store durably, answer.
//! Dedupe and enqueue happen inside the store in one transaction; this
//! handler never checks before it inserts.

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use hookgate_core::{EventId, Headers, Key, RequestView, Template, urlencoded};
use hookgate_store::{Ingested, NewEvent, StoreError};
use hookgate_verify::{Scheme, Signed, TokenAt};
use serde_json::{Value, json};

use super::body::{self, BodyError};
use super::{ApiError, HttpState};
use crate::config::Source;
use crate::telemetry::{self, Span, SpanKind, TraceContext, Value as SpanValue};
use crate::wake::Wake;
use crate::{metrics, routing};

/// How long an ingest waits for the store's answer once let in. Far beyond a
/// healthy commit (milliseconds, a few hundred under the worst fsync); a
/// stalled database is answered 503 within it, so the sender retries, rather
/// than holding the sender, its connection and its body (and past many
/// senders' own timeouts: 30 s was, and a stall went unanswered).
const STORE_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Bodies larger than this are verified on the blocking pool: a MAC or an
/// Ed25519 check over a megabyte takes milliseconds, too long for an async worker.
const VERIFY_INLINE_BYTES: usize = 64 * 1024;

pub async fn receive(
    State(state): State<Arc<HttpState>>,
    Path(source_name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let started = Instant::now();
    let source =
        state.sources.get(&source_name).ok_or_else(|| ApiError::NotFound(format!("unknown source {source_name:?}")))?;
    // Held until the answer: the body's bytes count against the budget while it waits for the store.
    let held = match body::read(&state.body, &headers, body).await {
        Ok(held) => held,
        Err(BodyError::TooLarge) => {
            reject(
                &state,
                source,
                "too_large",
                &format!("the body is over server.max_body ({} bytes)", state.body.max_bytes),
            );
            return Err(ApiError::PayloadTooLarge(state.body.max_bytes));
        }
        Err(BodyError::Busy(unread)) => {
            shed(source, "inflight_bytes");
            body::discard(unread, state.body.max_bytes).await;
            return Err(ApiError::Busy("too many request bodies in memory"));
        }
        Err(BodyError::Timeout) => {
            reject(
                &state,
                source,
                "body_timeout",
                &format!("the body did not arrive within server.body_timeout ({:?})", state.body.timeout),
            );
            return Err(ApiError::BodyTimeout(state.body.timeout));
        }
        Err(BodyError::Unreadable(detail)) => {
            reject(&state, source, "unreadable_body", &detail);
            return Err(ApiError::BadRequest(format!("the request body could not be read: {detail}")));
        }
    };
    let body = held.bytes.clone();
    let headers = as_received(&headers);
    // One clock (the store's): the time stored, and the one a sender's signed timestamp is judged against.
    let received_at_ms = state.clock.now_ms();
    let query = query.unwrap_or_default();

    if let Err(error) = verify(source, &headers, &body, &query, received_at_ms / 1_000).await {
        reject(&state, source, error.reason(), &format!("{error}{}", hint(&error)));
        return Err(ApiError::Unauthorized(format!("{}: {error}", error.reason())));
    }
    if let Some(challenge) = source.scheme.handshake(&body) {
        // A sender's one-time handshake: answered, never stored or delivered.
        return Ok(Json(json!({ "challenge": challenge })));
    }
    // Keys and routes may read any header; what is stored and forwarded is what the policy keeps.
    let view = RequestView::new(&headers, &body, query.as_bytes(), &source.dedupe_ignore);
    let mut keys = render_keys(source, &view);
    let routed = routing::route(source, &view, &keys.order, &keys.coalesce);
    drop(view);
    // The event's trace: the sender's continued, or a new one; every attempt joins it.
    let (trace, sender_span) =
        telemetry::context::for_ingest(headers.get("traceparent"), state.telemetry.sample_ratio(), rand::random);
    let headers = forwardable(headers, &source.scheme);
    keys.warnings.extend(routed.warnings);

    let id = EventId::generate();
    if !keys.warnings.is_empty() {
        tracing::warn!(
            event_id = %id, source = %source.name, trace_id = trace.trace_hex(), warnings = ?keys.warnings,
            "stored with keys missing"
        );
    }
    let destinations: Vec<String> = routed.deliveries.iter().map(|d| d.destination.clone()).collect();
    let event = NewEvent {
        id,
        source: source.name.clone(),
        received_at_ms,
        headers,
        body,
        dedupe_key: keys.dedupe,
        dedupe_window_ms: source.dedupe_window_ms,
        order_key: keys.order,
        coalesce_key: keys.coalesce,
        event_type: routed.event_type,
        warnings: keys.warnings,
        routing: routed.routing,
        deliveries: routed.deliveries,
        trace: Some(trace.header()),
    };
    let stored = match tokio::time::timeout(STORE_ANSWER_WAIT, state.store.ingest(event)).await {
        Ok(stored) => stored,
        // Perhaps stored after all: a sender's retry is then answered as a duplicate (with a dedupe key).
        Err(_) => Err(StoreError::Unavailable(format!("storage did not answer within {STORE_ANSWER_WAIT:?}"))),
    };
    let outcome = stored.inspect_err(|error| match error {
        StoreError::Unavailable(detail) => {
            ::metrics::counter!(metrics::UNAVAILABLE, "source" => source.name.clone()).increment(1);
            state.faults.failed(detail);
        }
        StoreError::Busy(_) => shed(source, "storage_queue"),
        // Told once when it begins and once when it ends, by the store.
        StoreError::Full(_) => shed(source, "disk_full"),
        StoreError::Corrupt(_) => {}
    })?;
    state.faults.ok();
    drop(held);
    if state.telemetry.records(&trace) {
        state.telemetry.record(ingest_span(source, &outcome, trace, sender_span, received_at_ms, started.elapsed()));
    }
    let label = source.name.clone();
    match outcome {
        Ingested::Accepted { id, superseded } => {
            for destination in &destinations {
                state.waker.wake(Wake::Destination(destination));
            }
            ::metrics::counter!(metrics::RECEIVED, "source" => label.clone()).increment(1);
            if destinations.is_empty() {
                ::metrics::counter!(metrics::UNROUTED, "source" => label.clone()).increment(1);
            }
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

/// The event's ingest span: a server span, the root of the event's trace or
/// a child of the sender's. A duplicate's span says which event it copied
/// (and lives in its own request's trace: the original's is not read back).
fn ingest_span(
    source: &Source,
    outcome: &Ingested,
    context: TraceContext,
    parent: Option<[u8; 8]>,
    received_at_ms: i64,
    took: std::time::Duration,
) -> Span {
    let mut attributes = vec![
        ("hookgate.source", SpanValue::from(source.name.as_str())),
        ("hookgate.verified_by", SpanValue::from(source.scheme.name().as_str())),
        ("http.request.method", SpanValue::from("POST")),
    ];
    match outcome {
        Ingested::Accepted { id, superseded } => {
            attributes.push(("hookgate.event_id", SpanValue::from(id.as_str())));
            attributes.push(("hookgate.outcome", SpanValue::from("accepted")));
            attributes.push(("hookgate.superseded", SpanValue::Int(*superseded as i64)));
        }
        Ingested::Duplicate { original } => {
            attributes.push(("hookgate.event_id", SpanValue::from(original.as_str())));
            attributes.push(("hookgate.outcome", SpanValue::from("duplicate")));
        }
    }
    let start = telemetry::unix_nano(received_at_ms);
    Span {
        context,
        parent,
        name: format!("ingest {}", source.name),
        kind: SpanKind::Server,
        start_unix_nano: start,
        end_unix_nano: start.saturating_add(took.as_nanos() as u64),
        attributes,
        error: None,
    }
}

/// Check the request's signature; over a large body, on the blocking pool.
async fn verify(
    source: &Arc<Source>,
    headers: &Headers,
    body: &Bytes,
    query: &str,
    now: i64,
) -> Result<(), hookgate_verify::VerifyError> {
    let check = move |source: &Source, headers: &Headers, body: &[u8], query: &str| {
        let signed = Signed { headers, body, query: query.as_bytes(), now };
        hookgate_verify::verify(&source.scheme, &source.secrets, source.tolerance_secs, &signed)
    };
    if body.len() <= VERIFY_INLINE_BYTES {
        return check(source, headers, body, query);
    }
    let (source, headers, body, query) = (source.clone(), headers.clone(), body.clone(), query.to_owned());
    tokio::task::spawn_blocking(move || check(&source, &headers, &body, &query))
        .await
        .unwrap_or(Err(hookgate_verify::VerifyError::Malformed("verification did not finish")))
}

/// `GET /in/{source}`: the echo handshake some senders make before they deliver.
pub async fn challenge(
    State(state): State<Arc<HttpState>>,
    Path(source_name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<impl axum::response::IntoResponse, ApiError> {
    let source =
        state.sources.get(&source_name).ok_or_else(|| ApiError::NotFound(format!("unknown source {source_name:?}")))?;
    let Some(challenge) = &source.challenge else {
        return Err(ApiError::MethodNotAllowed("this source takes POST only (no challenge is configured)".into()));
    };
    let query = query.unwrap_or_default();
    let param = |name: &str| urlencoded::find(query.as_bytes(), name.as_bytes());
    if let Some((token_param, expected)) = &challenge.token {
        let given = param(token_param).unwrap_or_default();
        if !expected.matches(&given) {
            reject(&state, source, "bad_challenge_token", &format!("{token_param} does not match challenge.token"));
            return Err(ApiError::Unauthorized(format!("bad_credentials: {token_param} does not match")));
        }
    }
    let echo = param(&challenge.param)
        .ok_or_else(|| ApiError::BadRequest(format!("missing query parameter {}", challenge.param)))?;
    // Plain text (with `nosniff` on every answer): the echo is the caller's own bytes, and
    // must never be taken for a script or a page.
    Ok(([(axum::http::header::CONTENT_TYPE, "text/plain; charset=utf-8")], echo))
}

struct Keys {
    dedupe: Option<Key>,
    order: Option<Key>,
    coalesce: Option<Key>,
    /// One line per key whose template could not be rendered: the event is
    /// stored anyway, with that key empty, and the line shows on the event.
    warnings: Vec<String>,
}

fn render_keys(source: &Source, view: &RequestView<'_>) -> Keys {
    let mut warnings = Vec::new();
    let mut render = |name: &str, template: &Option<Template>| {
        let template = template.as_ref()?;
        template
            .render(view)
            .map_err(|missing| warnings.push(format!("{name} {:?} not rendered: {missing}", template.as_str())))
            .ok()
    };
    let dedupe = render("dedupe_key", &source.dedupe_key);
    let order = render("order_key", &source.order_key);
    let coalesce = render("coalesce_key", &source.coalesce_key);
    Keys { dedupe, order, coalesce, warnings }
}

/// A refused request: counted, and told at WARN (at most a line per source
/// every few seconds, with how many went unsaid: a sender with the wrong
/// secret is loud, but cannot fill the log). Neither the body nor a secret is logged.
fn reject(state: &HttpState, source: &Source, reason: &'static str, detail: &str) {
    ::metrics::counter!(metrics::REJECTED, "source" => source.name.clone(), "reason" => reason).increment(1);
    if let Some(unsaid) = state.refusals.admit(&source.name) {
        tracing::warn!(source = %source.name, reason, "request refused: {detail}{}", crate::loud::and_more(unsaid));
    }
}

/// What to look at, for the refusals a configuration causes.
fn hint(error: &hookgate_verify::VerifyError) -> &'static str {
    use hookgate_verify::VerifyError;
    match error {
        VerifyError::BadSignature | VerifyError::BadCredentials => {
            " (is verify.secret the sender's current secret for this endpoint?)"
        }
        VerifyError::StaleTimestamp => " (the sender's clock or ours is off, or the request was replayed late)",
        VerifyError::MissingHeader(_) => " (is this source's verify.scheme the one the sender signs with?)",
        _ => "",
    }
}

/// A request answered 503 to shed load (`inflight_bytes`, `storage_queue`).
fn shed(source: &Source, reason: &'static str) {
    ::metrics::counter!(metrics::SHED, "source" => source.name.clone(), "reason" => reason).increment(1);
}

/// What is stored and forwarded of the sender's headers: everything but its
/// credentials and what only made sense on its connection. The sender's
/// secrets never leave hookgate and are never stored; signature headers
/// (`stripe-signature`, …) stay: they are MACs, not secrets, and let the app
/// check the original if it wants.
fn forwardable(mut headers: Headers, scheme: &Scheme) -> Headers {
    // Headers the sender listed in `Connection` are hop-by-hop too.
    let listed: Vec<String> = headers
        .iter()
        .filter(|(name, _)| *name == "connection")
        .flat_map(|(_, value)| {
            String::from_utf8_lossy(value).split(',').map(|n| n.trim().to_ascii_lowercase()).collect::<Vec<_>>()
        })
        .collect();
    let credential = match scheme {
        Scheme::Token(TokenAt::Header(name)) => Some(name.as_str()),
        _ => None,
    };
    headers.retain(|name| {
        !hookgate_core::headers::never_kept(name) && Some(name) != credential && !listed.iter().any(|l| l == name)
    });
    headers
}

/// The request's headers as they came: names lowercase (as `http` keeps
/// them), values byte for byte.
fn as_received(headers: &HeaderMap) -> Headers {
    let mut out = Headers::with_capacity(headers.len());
    for (name, value) in headers {
        out.push(name.as_str(), value.as_bytes());
    }
    out
}

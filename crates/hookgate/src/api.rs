//! The admin API's JSON, as types: the server serializes them and the CLI
//! deserializes them, so renaming a field breaks the build rather than the
//! output.
//!
//! Keys and header values are bytes inside hookgate; here they are shown as
//! text, bytes that are not UTF-8 replaced. A body that is not UTF-8 comes as
//! `body_base64` instead of `body`.

use std::collections::BTreeMap;

use base64::Engine;
use hookgate_core::{EventState, Key, State};
use hookgate_store::{Attempt, DeliveryDetail, DeliveryRecord, EventDetail, EventRecord, RouteVerdict};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One event in a listing.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventSummary {
    pub id: String,
    pub source: String,
    /// Its first delivery's destination (`""` when no route took it); see `destinations`.
    pub destination: String,
    /// Every destination it has a delivery to, in route order.
    #[serde(default)]
    pub destinations: Vec<String>,
    /// Its deliveries' states in a word: delivering if any is, else pending if
    /// any is, else dead if any is, else delivered if any is, else
    /// superseded; unrouted when it has none.
    #[schema(value_type = String)]
    pub state: EventState,
    pub received_at_ms: i64,
    pub updated_at_ms: i64,
    pub dedupe_key: Option<String>,
    pub order_key: Option<String>,
    pub coalesce_key: Option<String>,
    /// What its source's `event_type` template made of it.
    #[serde(default)]
    pub event_type: Option<String>,
    pub warnings: Vec<String>,
    /// Copies (its dedupe key, within the window) that arrived later and were answered with its id…
    pub duplicates: u64,
    /// …and when the last of them arrived.
    #[serde(default)]
    pub last_duplicate_at_ms: Option<i64>,
    /// Attempts over the event's life, replays included, all deliveries together.
    pub attempt_count: u32,
    /// When its next pending delivery is due.
    pub next_attempt_at_ms: Option<i64>,
    pub superseded_by: Option<String>,
}

/// `GET /api/events/{id}`: the event, what the sender sent, each route's
/// verdict, each delivery with its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventView {
    #[serde(flatten)]
    #[schema(inline)]
    pub summary: EventSummary,
    /// `[name, value]` pairs in arrival order.
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub body_base64: Option<String>,
    /// Every attempt of every delivery, oldest first (each names its destination).
    pub attempts: Vec<AttemptView>,
    /// How its source verifies a sender's request (the source's scheme today).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    /// The event's trace (W3C trace id, 32 hex digits): its ingest span and
    /// every attempt's are in it, and each attempt's `traceparent` names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// One per route of its source: matched or not, and why.
    #[serde(default)]
    pub routing: Vec<RoutingView>,
    #[serde(default)]
    pub deliveries: Vec<DeliveryView>,
}

/// What one route said of an event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RoutingView {
    pub route: String,
    pub destination: String,
    pub matched: bool,
    /// "matched", or the first condition that failed and why.
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptView {
    pub attempt: u32,
    pub started_at_ms: i64,
    pub duration_ms: i64,
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The first bytes of the destination's answer (`[storage] keep_response`),
    /// 2xx included, as text (bytes that are not UTF-8 replaced, control characters escaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    /// The delivery it was an attempt of, and its destination.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination: Option<String>,
}

/// One delivery: an event on its way to one destination.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliverySummary {
    /// `hookgate-delivery-id` on each attempt.
    pub id: String,
    /// The event's id (`webhook-id`).
    pub event: String,
    pub source: String,
    pub destination: String,
    pub route: String,
    /// pending, delivering, delivered, dead or superseded.
    #[schema(value_type = String)]
    pub state: State,
    /// The key of its queue at the destination.
    pub order_key: Option<String>,
    pub coalesce_key: Option<String>,
    /// When its event was received.
    pub received_at_ms: i64,
    pub updated_at_ms: i64,
    pub attempt_count: u32,
    pub next_attempt_at_ms: Option<i64>,
    pub superseded_by: Option<String>,
    /// The error of its latest attempt: for a dead delivery, why it died.
    #[serde(default)]
    pub last_error: Option<String>,
}

/// A delivery with its attempts (in an event's view).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryView {
    #[serde(flatten)]
    #[schema(inline)]
    pub summary: DeliverySummary,
    pub attempts: Vec<AttemptView>,
    /// Where it stands and why, in a sentence: delivered on which attempt,
    /// dead after how many and with what error, superseded by which event,
    /// in flight, or waiting (for its first attempt, a retry, or its queue).
    #[serde(default)]
    pub outcome: String,
}

/// `GET /api/deliveries`: by event, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryPage {
    pub deliveries: Vec<DeliverySummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// `POST /api/deliveries/{id}/replay`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryReplayed {
    pub id: String,
    pub event: String,
    /// `pending`.
    #[schema(value_type = String)]
    pub status: State,
}

/// `POST /api/events/{id}/reroute`: today's routes applied again.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Rerouted {
    pub id: String,
    /// Deliveries added: to the destinations it matches now and had none for.
    pub added: u64,
    pub routing: Vec<RoutingView>,
}

/// `GET /api/events`: newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<EventSummary>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// `POST /api/events/{id}/replay`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Replayed {
    pub id: String,
    /// The event's state now: `pending`.
    #[schema(value_type = String)]
    pub status: EventState,
    /// Its finished deliveries, each now pending at the back of its queue.
    #[serde(default)]
    pub deliveries: u64,
}

/// `POST /api/replay`: which deliveries to deliver again. In the JSON body, or
/// in the query (as before the body existed). Times: RFC 3339 or
/// milliseconds since the epoch.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, utoipa::IntoParams, clap::Args)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayFilter {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub source: Option<String>,
    /// Only deliveries to this destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub destination: Option<String>,
    /// delivered, dead (the default) or superseded.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub state: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub order_key: Option<String>,
    /// Received at or after.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub since: Option<String>,
    /// Received before.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub until: Option<String>,
    /// At most this many (and never more than 10,000 a call).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[arg(long)]
    pub limit: Option<u64>,
}

impl ReplayFilter {
    /// The fields given, by name.
    pub fn named(&self) -> Vec<&'static str> {
        let ReplayFilter { source, destination, state, order_key, since, until, limit } = self;
        [
            ("source", source.is_some()),
            ("destination", destination.is_some()),
            ("state", state.is_some()),
            ("order_key", order_key.is_some()),
            ("since", since.is_some()),
            ("until", until.is_some()),
            ("limit", limit.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

/// `POST /api/replay`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BulkReplayed {
    pub replayed: u64,
    /// The bulk limit was reached: call again for the rest.
    pub more: bool,
}

/// `GET /api/stats`: per source, how many deliveries are in each state (an
/// event with three deliveries counts three times: for a source with one
/// route, events), and its events no route took (`unrouted`); per
/// destination, its deliveries by state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Source → state → count.
    #[schema(value_type = BTreeMap<String, BTreeMap<String, u64>>)]
    pub sources: BTreeMap<String, BTreeMap<EventState, u64>>,
    /// Destination → state → count.
    #[serde(default)]
    #[schema(value_type = BTreeMap<String, BTreeMap<String, u64>>)]
    pub destinations: BTreeMap<String, BTreeMap<State, u64>>,
    /// When the counts were taken (a count is shared for up to a second).
    #[serde(default)]
    pub counted_at_ms: Option<i64>,
}

impl Stats {
    pub fn count(&self, source: &str, state: impl Into<EventState>) -> u64 {
        self.sources.get(source).and_then(|s| s.get(&state.into())).copied().unwrap_or(0)
    }

    /// Deliveries still owed, over every source.
    pub fn active(&self) -> u64 {
        self.sources.values().flat_map(|s| s.iter()).filter(|(state, _)| state.is_active()).map(|(_, n)| n).sum()
    }
}

/// `POST /api/destinations/{name}/pause` and `…/resume`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Paused {
    pub name: String,
    pub paused: bool,
}

/// `GET /api/destinations`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Destinations {
    pub destinations: Vec<DestinationStatus>,
}

/// One destination: steering, queue, and how its deliveries went lately.
/// Queue depth and in flight count every instance's events (from the store,
/// at most a second old); the breaker and the last minute are this instance's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DestinationStatus {
    pub name: String,
    /// Without its password.
    pub url: String,
    pub paused: bool,
    pub circuit: crate::steering::Circuit,
    /// `"50/s"`, when a rate limit is configured.
    pub rate_limit: Option<String>,
    /// Deliveries owed: pending and delivering.
    pub queue_depth: u64,
    /// Deliveries being made now.
    pub in_flight: u64,
    /// Dead deliveries (its dead letters), kept until retention.
    #[serde(default)]
    pub dead: u64,
    pub delivered_last_minute: u64,
    /// Attempts that failed in the last minute (each retry counts).
    pub failed_last_minute: u64,
    /// Attempt latency over the last minute, when there were attempts.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
}

/// Every error answer: `{"error": "…"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    pub error: String,
}

fn text(key: &Option<Key>) -> Option<String> {
    key.as_ref().map(Key::to_text_lossy)
}

impl From<&EventRecord> for EventSummary {
    fn from(r: &EventRecord) -> Self {
        EventSummary {
            id: r.id.to_string(),
            source: r.source.clone(),
            destination: r.destinations.first().cloned().unwrap_or_default(),
            destinations: r.destinations.clone(),
            state: r.state,
            received_at_ms: r.received_at_ms,
            updated_at_ms: r.updated_at_ms,
            dedupe_key: text(&r.dedupe_key),
            order_key: text(&r.order_key),
            coalesce_key: text(&r.coalesce_key),
            event_type: r.event_type.clone(),
            warnings: r.warnings.clone(),
            duplicates: r.duplicates,
            last_duplicate_at_ms: r.last_duplicate_at_ms,
            attempt_count: r.attempts,
            next_attempt_at_ms: r.next_attempt_at_ms,
            superseded_by: r.superseded_by.as_ref().map(ToString::to_string),
        }
    }
}

impl From<&Attempt> for AttemptView {
    fn from(a: &Attempt) -> Self {
        AttemptView {
            attempt: a.attempt,
            started_at_ms: a.started_at_ms,
            duration_ms: a.duration_ms,
            status: a.status,
            error: a.error.clone(),
            response: a.response.as_deref().map(crate::deliver::printable),
            delivery: None,
            destination: None,
        }
    }
}

impl From<&RouteVerdict> for RoutingView {
    fn from(v: &RouteVerdict) -> Self {
        RoutingView {
            route: v.route.clone(),
            destination: v.destination.clone(),
            matched: v.matched,
            reason: v.reason.clone(),
        }
    }
}

impl From<&DeliveryRecord> for DeliverySummary {
    fn from(d: &DeliveryRecord) -> Self {
        DeliverySummary {
            id: d.id.to_string(),
            event: d.event.to_string(),
            source: d.source.clone(),
            destination: d.destination.clone(),
            route: d.route.clone(),
            state: d.state,
            order_key: text(&d.order_key),
            coalesce_key: text(&d.coalesce_key),
            received_at_ms: d.received_at_ms,
            updated_at_ms: d.updated_at_ms,
            attempt_count: d.attempts,
            next_attempt_at_ms: d.next_attempt_at_ms,
            superseded_by: d.superseded_by.as_ref().map(ToString::to_string),
            last_error: d.last_error.clone(),
        }
    }
}

impl From<&DeliveryDetail> for DeliveryView {
    fn from(d: &DeliveryDetail) -> Self {
        DeliveryView {
            summary: DeliverySummary::from(&d.record),
            attempts: d.attempts.iter().map(AttemptView::from).collect(),
            outcome: outcome(d),
        }
    }
}

/// A delivery's story in a sentence, from its state and its attempts.
fn outcome(d: &DeliveryDetail) -> String {
    let last = d.attempts.last();
    let answer = |a: &Attempt| match (a.status, &a.error) {
        (_, Some(error)) => error.clone(),
        (Some(status), None) => format!("HTTP {status}"),
        (None, None) => "no answer".into(),
    };
    let tried = |n: usize| if n == 1 { "1 attempt".to_owned() } else { format!("{n} attempts") };
    match d.record.state {
        State::Delivered => match last {
            Some(a) => format!("delivered on attempt {} ({})", a.attempt, answer(a)),
            None => "delivered".into(),
        },
        State::Dead => match last {
            Some(a) => format!(
                "dead: its attempts were spent ({} in all); the last one's answer: {}",
                tried(d.attempts.len()),
                answer(a)
            ),
            None => "dead".into(),
        },
        State::Superseded => match &d.record.superseded_by {
            Some(by) => format!("superseded by {by} (a newer event with its coalesce key) before it was delivered"),
            None => "superseded before it was delivered".into(),
        },
        State::Delivering => format!("attempt {} in flight", d.record.attempts),
        State::Pending => match last {
            Some(a) => format!("to be retried after {}; the last one's answer: {}", tried(d.attempts.len()), answer(a)),
            // Due now, or behind an earlier event of its queue, or its destination is paused.
            None => "waiting for its first attempt".into(),
        },
    }
}

impl From<&EventDetail> for EventView {
    fn from(d: &EventDetail) -> Self {
        let (body, body_base64) = match std::str::from_utf8(&d.body) {
            Ok(text) => (Some(text.to_owned()), None),
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(&d.body))),
        };
        let mut attempts: Vec<AttemptView> = d
            .deliveries
            .iter()
            .flat_map(|delivery| {
                delivery.attempts.iter().map(|a| AttemptView {
                    delivery: Some(delivery.record.id.to_string()),
                    destination: Some(delivery.record.destination.clone()),
                    ..AttemptView::from(a)
                })
            })
            .collect();
        attempts.sort_by_key(|a| a.started_at_ms);
        EventView {
            summary: EventSummary::from(&d.record),
            headers: d.headers.iter().map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into_owned())).collect(),
            body,
            body_base64,
            attempts,
            verified_by: None,
            trace_id: Some(crate::telemetry::context::of_event(d.trace.as_deref(), d.record.id.as_str()).trace_hex()),
            routing: d.routing.iter().map(RoutingView::from).collect(),
            deliveries: d.deliveries.iter().map(DeliveryView::from).collect(),
        }
    }
}

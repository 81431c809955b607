//! OpenTelemetry traces: an ingest span per event and a span per delivery
//! attempt, all in the event's trace ([`context`]), sent to a collector over
//! OTLP/HTTP protobuf.
//!
//! The exporter is ours, not the OpenTelemetry SDK's: a span is a plain
//! record handed to a bounded queue with `try_send`, so a collector that is
//! down or slow never slows or blocks ingest or delivery; what does not fit
//! is dropped and counted (`hookgate_telemetry_spans_dropped_total`), as is a
//! batch the collector refuses. Spans have explicit ids and times, which is
//! what an attempt hours after its ingest, on another instance, needs to
//! join its event's trace. With no endpoint there is no queue and no task:
//! recording a span is a branch on `None`.

pub mod context;
mod otlp;

use std::time::Duration;

use tokio::sync::mpsc;

pub use context::TraceContext;

use crate::metrics;

/// Spans waiting for the exporter at most; past that they are dropped.
const QUEUE: usize = 4_096;
/// Spans a request carries at most.
const BATCH: usize = 512;
/// How long a span waits for its batch to fill before it is sent anyway.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long the collector has to answer one request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where traces go, as configured (`[telemetry]`, or the `OTEL_*` variables).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The full URL of the traces endpoint (`…/v1/traces`).
    pub traces_url: reqwest::Url,
    pub service_name: String,
    pub sample_ratio: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The ingest span: a request hookgate served.
    Server,
    /// A delivery attempt: a request hookgate made.
    Client,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Int(i64),
    Bool(bool),
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::Text(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::Text(text)
    }
}

impl From<i64> for Value {
    fn from(n: i64) -> Value {
        Value::Int(n)
    }
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    pub context: TraceContext,
    pub parent: Option<[u8; 8]>,
    pub name: String,
    pub kind: SpanKind,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub attributes: Vec<(&'static str, Value)>,
    /// Set when the span failed: its status is then ERROR with this message.
    pub error: Option<String>,
}

/// The process's tracer: records spans when an endpoint is configured, and
/// says how new traces are sampled.
#[derive(Clone, Default)]
pub struct Telemetry {
    queue: Option<mpsc::Sender<Span>>,
    sample_ratio: f64,
    /// Spans dropped at a full queue, told at WARN every few seconds.
    full: std::sync::Arc<crate::loud::LoudLog>,
}

impl Telemetry {
    /// No collector: nothing is recorded, every trace is still made (the app
    /// gets a `traceparent` either way) and marked sampled.
    pub fn off() -> Telemetry {
        Telemetry { queue: None, sample_ratio: 1.0, full: Default::default() }
    }

    /// Starts the exporter on the current runtime.
    pub fn start(settings: Settings) -> Telemetry {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(export(settings.clone(), rx));
        Telemetry { queue: Some(tx), sample_ratio: settings.sample_ratio, full: Default::default() }
    }

    pub fn is_on(&self) -> bool {
        self.queue.is_some()
    }

    /// Whether a span of `context` would be recorded: ask before building one,
    /// so that with no collector (or an unsampled trace) nothing is allocated.
    pub fn records(&self, context: &TraceContext) -> bool {
        self.queue.is_some() && context.sampled
    }

    pub fn sample_ratio(&self) -> f64 {
        self.sample_ratio
    }

    /// Hands a finished span to the exporter, never waiting: a full queue
    /// drops it (counted). Spans of unsampled traces are not recorded.
    pub fn record(&self, span: Span) {
        let Some(queue) = &self.queue else { return };
        if !span.context.sampled {
            return;
        }
        if queue.try_send(span).is_err() {
            ::metrics::counter!(metrics::SPANS_DROPPED).increment(1);
            if let Some(unsaid) = self.full.admit("queue") {
                tracing::warn!(
                    "trace spans dropped: the exporter's queue ({QUEUE}) is full, the collector is slow or down{}",
                    crate::loud::and_more(unsaid)
                );
            }
        }
    }
}

/// The exporter's task: batches of spans posted to the collector; a batch
/// it cannot deliver is dropped and counted (traces are best effort: holding
/// them for a collector that is down would only grow memory).
async fn export(settings: Settings, mut rx: mpsc::Receiver<Span>) {
    let http = match reqwest::Client::builder().timeout(EXPORT_TIMEOUT).no_proxy().build() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot make the OpenTelemetry exporter's HTTP client: no spans will be sent");
            return;
        }
    };
    let service = [
        ("service.name", Value::from(settings.service_name.as_str())),
        ("service.version", Value::from(env!("CARGO_PKG_VERSION"))),
    ];
    let failures = crate::loud::LoudLog::default();
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // The first span of a batch waits as long as it takes; the rest at most FLUSH_EVERY.
        match rx.recv().await {
            Some(span) => batch.push(span),
            None => return,
        }
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(span)) => batch.push(span),
                Ok(None) | Err(_) => break,
            }
        }
        let body = otlp::export_request(&service, &batch);
        let sent = http
            .post(settings.traces_url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await
            .and_then(|response| response.error_for_status());
        if let Err(error) = sent {
            ::metrics::counter!(metrics::SPANS_DROPPED).increment(batch.len() as u64);
            if let Some(unsaid) = failures.admit("otlp") {
                tracing::warn!(
                    endpoint = %redacted(&settings.traces_url), spans = batch.len(),
                    "the OpenTelemetry collector did not take a batch of spans (dropped): {}{}",
                    error.without_url(), crate::loud::and_more(unsaid)
                );
            }
        }
        batch.clear();
    }
}

/// A URL as logs may show it: without a password.
pub fn redacted(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("…"));
    }
    shown.to_string()
}

/// Nanoseconds since the epoch of a time in milliseconds on the server's clock.
pub fn unix_nano(ms: i64) -> u64 {
    (ms.max(0) as u64).saturating_mul(1_000_000)
}

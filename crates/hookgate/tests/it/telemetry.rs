//! Seeing each event's path against the real protocols: the spans hookgate
//! exports are decoded by OpenTelemetry's own generated types
//! (`opentelemetry-proto`), one event's ingest and attempts (across a
//! restart) are one trace that the app's `traceparent` names; a collector
//! that is down costs nothing but the spans; JSON log lines parse and carry
//! the event's fields; each attempt keeps the first bytes of the answer;
//! `/metrics` passes `promtool check metrics`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::{Value, json};

use crate::support::*;

/// The sender's own trace (the W3C spec's example).
const SENDER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SENDER_SPAN: &str = "00f067aa0ba902b7";

/// An OTLP/HTTP collector: every span of every request it is sent, with the
/// service that sent it.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<(String, Span)>>>,
}

impl Collector {
    async fn start() -> (Collector, String) {
        let collector = Collector::default();
        let spans = collector.spans.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: Bytes| {
                let spans = spans.clone();
                async move {
                    assert_eq!(headers.get("content-type").unwrap(), "application/x-protobuf");
                    let request = ExportTraceServiceRequest::decode(body).expect("a valid OTLP protobuf request");
                    for resource in request.resource_spans {
                        let service = resource
                            .resource
                            .iter()
                            .flat_map(|r| &r.attributes)
                            .find(|kv| kv.key == "service.name")
                            .and_then(|kv| text(kv.value.as_ref()?.value.as_ref()?))
                            .unwrap_or_default();
                        for scope in resource.scope_spans {
                            for span in scope.spans {
                                spans.lock().unwrap().push((service.clone(), span));
                            }
                        }
                    }
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (collector, url)
    }

    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.lock().unwrap().clone()
    }

    async fn wait_for(&self, what: &str, done: impl Fn(&[(String, Span)]) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done(&self.spans()) {
            assert!(Instant::now() < deadline, "timed out waiting for {what}: {:#?}", self.spans());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn text(value: &AnyValue) -> Option<String> {
    match value {
        AnyValue::StringValue(text) => Some(text.clone()),
        _ => None,
    }
}

fn attribute(span: &Span, key: &str) -> Option<AnyValue> {
    span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()?.value.clone())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn traced_config(receiver: &Receiver, db: &std::path::Path, extra: &str) -> String {
    // Retries a second apart: the failed attempt's retry comes after the restart.
    config_text(&receiver.url(), db, "").replace(
        r#"retry = { max_attempts = 4, initial = "100ms", max = "400ms" }"#,
        r#"retry = { max_attempts = 4, initial = "1s", max = "1s" }"#,
    ) + extra
}

/// The issue's own case: an event that fails once and is delivered after a
/// restart is one trace (the sender's, continued) with an ingest span and two
/// attempt spans, and each request the app got names its attempt's span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_is_one_trace_across_a_failure_and_a_restart() {
    let (collector, endpoint) = Collector::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let receiver = receiver(Arc::new(move |_, _| {
        let status = if counted.fetch_add(1, Ordering::SeqCst) == 0 { 500 } else { 200 };
        (status, Duration::ZERO)
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hookgate.db");
    let extra = format!("\n[telemetry]\notlp_endpoint = \"{endpoint}\"\nservice_name = \"gateway-under-test\"\n");
    let text = traced_config(&receiver, &db, &extra);

    let first = spawn_with(tempfile::tempdir().unwrap(), &text).await;
    let traceparent = format!("00-{SENDER_TRACE}-{SENDER_SPAN}-01");
    let body = json!({"id": "evt_traced", "object": "order_1"}).to_string();
    let (status, answer) = first.post("plain", &[("traceparent", traceparent)], body).await;
    assert_eq!(status, 200, "{answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    receiver.wait_for(Duration::from_secs(10), "the first (failing) attempt", |r| r.len() == 1).await;
    // The failure is recorded before the restart.
    let deadline = Instant::now() + Duration::from_secs(10);
    while first.admin(&format!("/api/events/{id}")).await["attempts"].as_array().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the failed attempt was never recorded");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.stop().await;

    let second = spawn_with(tempfile::tempdir().unwrap(), &text).await;
    receiver
        .wait_for(Duration::from_secs(20), "the retry after the restart", |r| r.iter().any(|r| r.delivered()))
        .await;
    collector
        .wait_for("an ingest span and two attempt spans", |spans| {
            spans.iter().filter(|(_, s)| s.kind == SpanKind::Client as i32).count() >= 2
                && spans.iter().any(|(_, s)| s.kind == SpanKind::Server as i32)
        })
        .await;

    let spans = collector.spans();
    assert!(spans.iter().all(|(service, _)| service == "gateway-under-test"), "service.name from [telemetry]");
    let ingest: Vec<&Span> = spans.iter().map(|(_, s)| s).filter(|s| s.kind == SpanKind::Server as i32).collect();
    let attempts: Vec<&Span> = spans.iter().map(|(_, s)| s).filter(|s| s.kind == SpanKind::Client as i32).collect();
    assert_eq!((ingest.len(), attempts.len()), (1, 2), "{spans:#?}");
    let ingest = ingest[0];
    assert_eq!(hex(&ingest.trace_id), SENDER_TRACE, "the sender's trace is continued");
    assert_eq!(hex(&ingest.parent_span_id), SENDER_SPAN, "the ingest span is the sender's span's child");
    assert_eq!(ingest.name, "ingest plain");
    assert_eq!(attribute(ingest, "hookgate.event_id"), Some(AnyValue::StringValue(id.clone())));
    assert_eq!(attribute(ingest, "hookgate.outcome"), Some(AnyValue::StringValue("accepted".into())));
    assert_eq!(attribute(ingest, "hookgate.verified_by"), Some(AnyValue::StringValue("none".into())));

    let received = receiver.received();
    assert_eq!(received.len(), 2);
    for (n, (span, request)) in attempts.iter().zip(&received).enumerate() {
        assert_eq!(hex(&span.trace_id), SENDER_TRACE, "attempt {} in the event's trace", n + 1);
        assert_eq!(span.parent_span_id, ingest.span_id, "attempt {} is a child of the ingest span", n + 1);
        assert_eq!(attribute(span, "hookgate.attempt"), Some(AnyValue::IntValue(n as i64 + 1)));
        assert_eq!(attribute(span, "hookgate.destination"), Some(AnyValue::StringValue("app".into())));
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        // What the app got names this attempt's span, in the event's trace.
        assert_eq!(
            request.header("traceparent"),
            format!("00-{SENDER_TRACE}-{}-01", hex(&span.span_id)),
            "the app's traceparent for attempt {}",
            n + 1
        );
    }
    let status = |span: &Span| span.status.as_ref().map(|s| s.code);
    assert_eq!(attribute(attempts[0], "http.response.status_code"), Some(AnyValue::IntValue(500)));
    assert_eq!(status(attempts[0]), Some(StatusCode::Error as i32));
    assert_eq!(attribute(attempts[1], "http.response.status_code"), Some(AnyValue::IntValue(200)));
    assert_eq!(status(attempts[1]), Some(StatusCode::Ok as i32));
    assert_ne!(attempts[0].span_id, attempts[1].span_id);

    let event = second.admin(&format!("/api/events/{id}")).await;
    assert_eq!(event["trace_id"], SENDER_TRACE, "the event's trace, for the operator to look up");
    second.stop().await;
}

/// An event whose sender sent no `traceparent` starts a trace of its own; the
/// app still gets a `traceparent` in it (with no collector configured).
#[tokio::test]
async fn without_a_collector_the_app_still_gets_the_events_trace() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let (status, answer) = app.post("plain", &[], json!({"id": "a", "object": "o"}).to_string()).await;
    assert_eq!(status, 200);
    receiver.wait_for(Duration::from_secs(10), "the delivery", |r| r.len() == 1).await;
    let event = app.admin(&format!("/api/events/{}", answer["id"].as_str().unwrap())).await;
    let trace_id = event["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(trace_id.len(), 32);
    let sent = receiver.received()[0].header("traceparent");
    assert!(sent.starts_with(&format!("00-{trace_id}-")), "{sent} in {trace_id}");
    app.stop().await;
}

/// A collector that is down: every event is still taken and delivered, and
/// the spans it could not take are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_costs_only_the_spans() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let closed = free_port();
    let text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")
        + &format!("\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:{closed}\"\n");
    let app = spawn_with(dir, &text).await;
    for n in 0..50 {
        let (status, _) = app.post("plain", &[], json!({"id": format!("e{n}"), "object": "o"}).to_string()).await;
        assert_eq!(status, 200);
    }
    receiver.wait_for(Duration::from_secs(20), "every delivery", |r| r.len() == 50).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
        let dropped: f64 = metrics
            .lines()
            .find(|l| l.starts_with("hookgate_telemetry_spans_dropped_total"))
            .and_then(|l| l.split_whitespace().last()?.parse().ok())
            .unwrap_or(0.0);
        if dropped >= 1.0 {
            break;
        }
        assert!(Instant::now() < deadline, "no dropped spans counted:\n{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

/// Each attempt keeps the first bytes of the answer, 2xx included, cut at
/// `keep_response`; "0" keeps none.
#[tokio::test]
async fn each_attempt_keeps_the_start_of_the_answer() {
    let answer_of = |status: u16, body: &str| {
        let body = body.as_bytes().to_vec();
        Answer { status, work: Duration::ZERO, retry_after: None, body }
    };
    for (keep, status, body, kept) in [
        (None, 200, "thanks: order 42 recorded", Some("thanks: order 42 recorded")),
        (Some("\"6\""), 200, "thanks: order 42 recorded", Some("thanks")),
        (None, 422, "{\"error\":\"unknown order\"}", Some("{\"error\":\"unknown order\"}")),
        (Some("\"0\""), 200, "thanks", None),
    ] {
        let reply = answer_of(status, body);
        let receiver = receiver_answering(Arc::new(move |_, _| reply.clone())).await;
        let dir = tempfile::tempdir().unwrap();
        let mut text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")
            .replace(r#"retry = { max_attempts = 4,"#, r#"retry = { max_attempts = 1,"#);
        if let Some(keep) = keep {
            text = text.replace("[storage]\n", &format!("[storage]\nkeep_response = {keep}\n"));
        }
        let app = spawn_with(dir, &text).await;
        let (_, answer) = app.post("plain", &[], json!({"id": "a", "object": "o"}).to_string()).await;
        let path = format!("/api/events/{}", answer["id"].as_str().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        let attempt = loop {
            let event = app.admin(&path).await;
            if let Some(attempt) = event["attempts"].as_array().and_then(|a| a.first()).cloned() {
                break attempt;
            }
            assert!(Instant::now() < deadline, "no attempt recorded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(attempt["status"], status);
        assert_eq!(attempt["response"].as_str(), kept, "keep_response {keep:?}: {attempt}");
        app.stop().await;
    }
}

/// `[log] format = "json"` (here from `HOOKGATE_LOG__FORMAT`): every line
/// of the log is one JSON object with `timestamp`, `level`, `target` and
/// `message`, and a line about an event carries its id, source, destination
/// and trace id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_events_fields() {
    let receiver = receiver(Arc::new(|_, _| (500, Duration::ZERO))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")).unwrap();
    let log = dir.path().join("hookgate.log");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("HOOKGATE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env("HOOKGATE_LOG__FORMAT", "json")
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/healthz")).send().await.is_err() {
        assert!(Instant::now() < deadline, "hookgate did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // A refused request (a wrong signature) and an event whose attempts fail.
    let (status, _) =
        post_with(&http, &format!("{base}/in/stripe"), &[("stripe-signature", "t=1,v1=00".into())], b"{}".to_vec())
            .await;
    assert_eq!(status, 401);
    let (status, answer) =
        post_with(&http, &format!("{base}/in/plain"), &[], json!({"id": "j", "object": "o"}).to_string().into_bytes())
            .await;
    assert_eq!(status, 200);
    let id = answer["id"].as_str().unwrap().to_owned();
    let trace_id = admin_get(&http, &base, &format!("/api/events/{id}")).await["trace_id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(20);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("delivery is dead") {
            break text;
        }
        assert!(Instant::now() < deadline, "no dead-delivery line in the log:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    child.wait().unwrap();

    let parsed: Vec<Value> = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object: {l:?}: {e}")))
        .collect();
    assert!(parsed.len() >= 3, "{lines}");
    for line in &parsed {
        for field in ["timestamp", "level", "target", "message"] {
            assert!(line[field].is_string(), "{field} missing from {line}");
        }
    }
    let refused =
        parsed.iter().find(|l| l["message"].as_str().unwrap().contains("request refused")).expect("a refusal");
    assert_eq!((refused["level"].as_str(), refused["source"].as_str()), (Some("WARN"), Some("stripe")));
    for wanted in ["attempt failed", "delivery is dead"] {
        let line = parsed.iter().find(|l| l["message"].as_str().unwrap().contains(wanted)).expect(wanted);
        assert_eq!(line["event_id"], id.as_str(), "{line}");
        assert_eq!(line["source"], "plain", "{line}");
        assert_eq!(line["destination"], "app", "{line}");
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
    }
}

/// `/metrics`, with every family present, passes `promtool check metrics`
/// (Prometheus' own naming lint: units, `_total` on counters, help text).
#[tokio::test]
async fn metrics_pass_promtool() {
    let Some(promtool) = which("promtool") else {
        return hookgate_store::conformance::skip("promtool is not installed (Debian: apt-get install prometheus)");
    };
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    // Counters are there from 0 before anything happens: the first dead letter is an increase alerts see.
    let at_start = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for series in [
        r#"hookgate_deliveries_dead_total{destination="app"}"#,
        r#"hookgate_storage_unavailable_total{source="stripe"}"#,
    ] {
        assert!(at_start.lines().any(|l| l.starts_with(series)), "{series} missing at start:\n{at_start}");
    }
    let (status, _) = app.post("plain", &[], json!({"id": "m", "object": "o"}).to_string()).await;
    assert_eq!(status, 200);
    receiver.wait_for(Duration::from_secs(10), "the delivery", |r| r.len() == 1).await;
    let (status, _) = app.post("stripe", &[], b"{}".to_vec()).await;
    assert_eq!(status, 401);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for family in [
        "hookgate_events_received_total",
        "hookgate_requests_rejected_total",
        "hookgate_deliveries_delivered_total",
        "hookgate_queue_depth",
        "hookgate_ready",
        "hookgate_circuit_open",
        "hookgate_oldest_pending_event_age_seconds",
        "hookgate_ack_seconds_bucket",
        "hookgate_delivery_seconds_bucket",
    ] {
        assert!(metrics.contains(family), "{family} missing:\n{metrics}");
    }
    let mut check = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut check.stdin.take().unwrap(), metrics.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics:\n{said}\n---\n{metrics}");
    app.stop().await;
}

fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| std::path::Path::new(dir).join(program))
        .find(|p| p.is_file())
}

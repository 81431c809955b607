//! Delivery: order per key, retries with the same webhook-id, dead letters,
//! and what the app receives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// Events for one object, each sent after the previous one's ack, with the
/// app failing some first attempts: delivered in order, each once, retries
/// carrying the same webhook-id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ordered_events_survive_failed_first_attempts_in_order() {
    let seen: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let script_seen = seen.clone();
    let receiver = receiver(Arc::new(move |headers, body| {
        let body: serde_json::Value = serde_json::from_slice(body).unwrap();
        let n = body["n"].as_u64().unwrap();
        let mut seen = script_seen.lock().unwrap();
        let id = String::from_utf8_lossy(headers.get("webhook-id").unwrap()).into_owned();
        let tries = seen.entry(id).or_default();
        *tries += 1;
        // Events 1 and 3 fail their first attempt; every attempt takes a little while.
        let status = if (n == 1 || n == 3) && *tries == 1 { 500 } else { 200 };
        (status, Duration::from_millis(30))
    }))
    .await;
    let app = spawn_app(&receiver).await;
    let mut ids = Vec::new();
    for n in 0..6 {
        let body = json!({"id": format!("evt_{n}"), "object": "order_7", "n": n}).to_string();
        let (status, answer) = app.post("plain", &[], body).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    receiver
        .wait_for(Duration::from_secs(15), "six deliveries", |r| r.iter().filter(|r| r.delivered()).count() == 6)
        .await;
    let delivered: Vec<_> = receiver.delivered().iter().map(|r| r.webhook_id().to_owned()).collect();
    assert_eq!(delivered, ids, "delivered once each, in the order sent");
    assert!(receiver.overlaps().is_empty(), "one at a time per object: {:?}", receiver.overlaps());
    let all = receiver.received();
    let retried: Vec<_> = all.iter().filter(|r| r.webhook_id() == ids[1]).collect();
    assert_eq!(retried.len(), 2);
    assert_eq!((retried[0].status, retried[1].status), (500, 200));
    assert_eq!(
        (retried[0].header("hookgate-attempt").as_str(), retried[1].header("hookgate-attempt").as_str()),
        ("1", "2")
    );
    assert!(all.iter().all(|r| r.signature_ok), "every request verifies with the standardwebhooks crate");
    assert!(all.iter().all(|r| r.order_key() == "order_7" && r.header("hookgate-source") == "plain"));
    let event = app.admin(&format!("/api/events/{}", ids[1])).await;
    assert_eq!(event["state"], "delivered");
    let attempts = event["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["status"], 500);
    assert!(attempts[0]["error"].as_str().unwrap().starts_with("HTTP 500"));
    assert_eq!(attempts[1]["status"], 200);
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    for line in [
        r#"hookgate_events_received_total{source="plain"}"#,
        r#"hookgate_deliveries_delivered_total{destination="app"}"#,
        r#"hookgate_deliveries_retried_total{destination="app"}"#,
        r#"hookgate_queue_depth{source="plain",destination="app",state="pending"}"#,
        r#"hookgate_ack_seconds_bucket{source="plain",le="0.005"}"#,
        r#"hookgate_delivery_seconds_bucket{destination="app",le="0.05"}"#,
    ] {
        assert!(metrics.contains(line), "/metrics lacks {line}");
    }
    app.stop().await;
}

/// The app receives the sender's body, content type and headers, and a
/// signature any Standard Webhooks library verifies.
#[tokio::test]
async fn the_app_gets_the_original_request_signed() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let body = br#"{"id":"evt_9","data":{"object":{"id":"cus_9"}}}"#.to_vec();
    let mut headers = stripe_headers(&body);
    headers.push(("x-request-source", "stripe-test".to_string()));
    let (_, answer) = app.post("stripe", &headers, body.clone()).await;
    receiver.wait_for(Duration::from_secs(5), "delivery", |r| r.len() == 1).await;
    let got = &receiver.received()[0];
    assert_eq!(got.body, body);
    assert_eq!(got.header("content-type"), "application/json");
    assert_eq!(got.header("x-request-source"), "stripe-test");
    assert!(got.header("stripe-signature").starts_with("t="), "the sender's own headers pass through");
    assert_eq!(got.webhook_id(), answer["id"].as_str().unwrap());
    assert_eq!(got.order_key(), "cus_9");
    assert!(got.signature_ok);
    let stamp: i64 = got.header("webhook-timestamp").parse().unwrap();
    assert!((stamp - unix_now()).abs() < 5);
    app.stop().await;
}

/// Attempts run out: the event is dead and the next event of its key goes on.
#[tokio::test]
async fn a_dead_event_does_not_block_its_key() {
    let receiver = receiver(Arc::new(|_, body| {
        let status = if body.windows(6).any(|w| w == b"poison") { 500 } else { 200 };
        (status, Duration::ZERO)
    }))
    .await;
    let app = spawn_app(&receiver).await;
    let (_, poison) = app.post("plain", &[], r#"{"id":"p","object":"o1","x":"poison"}"#).await;
    let (_, next) = app.post("plain", &[], r#"{"id":"q","object":"o1"}"#).await;
    receiver.wait_for(Duration::from_secs(10), "the next event", |r| r.iter().any(|r| r.delivered())).await;
    let received = receiver.received();
    assert_eq!(received.iter().filter(|r| !r.delivered()).count(), 4, "max_attempts = 4");
    assert_eq!(received.last().unwrap().webhook_id(), next["id"].as_str().unwrap());
    let dead = app.admin(&format!("/api/events/{}", poison["id"].as_str().unwrap())).await;
    assert_eq!(dead["state"], "dead");
    assert_eq!(dead["attempts"].as_array().unwrap().len(), 4);
    app.stop().await;
}

/// A receiver that answers the first request 503 with `Retry-After: 1`, then
/// 200; the gap between the two attempts, with `retry.max` set to `max`.
async fn retry_gap_after_asking_one_second(max: &str) -> Duration {
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let gate = first.clone();
    let receiver = receiver_answering(Arc::new(move |_, _| {
        let mut first = gate.lock().unwrap();
        let status = if first.is_none() { 503 } else { 200 };
        first.get_or_insert_with(Instant::now);
        Answer { status, work: Duration::ZERO, retry_after: Some("1".into()), body: Vec::new() }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")
        .replace(r#"max = "400ms""#, &format!(r#"max = "{max}""#));
    let app = spawn_with(dir, &text).await;
    let _ = app.post("plain", &[], r#"{"id":"r","object":"o"}"#).await;
    receiver.wait_for(Duration::from_secs(10), "the retry", |r| r.iter().any(|r| r.delivered())).await;
    let received = receiver.received();
    app.stop().await;
    received[1].started - received[0].started
}

/// A 503 with `Retry-After` is retried no sooner than asked…
#[tokio::test]
async fn retry_after_is_honoured() {
    let gap = retry_gap_after_asking_one_second("2s").await;
    assert!(gap >= Duration::from_millis(1_000), "retried after {gap:?}, before the 1 s asked");
}

/// …but never later than `retry.max`: an app asking for more does not stall its key beyond it.
#[tokio::test]
async fn retry_after_is_capped_at_retry_max() {
    let gap = retry_gap_after_asking_one_second("300ms").await;
    assert!(
        gap >= Duration::from_millis(300) && gap < Duration::from_millis(900),
        "retried after {gap:?}: the 1 s asked is capped at retry.max = 300ms"
    );
}

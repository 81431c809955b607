//! `POST /in/{source}`: the answers of the spec's table.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// N copies of one Stripe event, fired together from pre-connected clients:
/// one is stored and delivered, every copy answers with the original's id.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn simultaneous_duplicates_store_and_deliver_one() {
    const COPIES: usize = 32;
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let body = br#"{"id":"evt_1Nrace","type":"customer.updated","data":{"object":{"id":"cus_42"}}}"#.to_vec();
    let headers = stripe_headers(&body);
    let barrier = Arc::new(tokio::sync::Barrier::new(COPIES));
    let mut senders = Vec::new();
    for _ in 0..COPIES {
        // Each copy on its own connection, opened before the barrier.
        let client = reqwest::Client::new();
        client.get(app.url("/healthz")).send().await.unwrap();
        let (url, headers, body, barrier) = (app.url("/in/stripe"), headers.clone(), body.clone(), barrier.clone());
        senders.push(tokio::spawn(async move {
            barrier.wait().await;
            post_with(&client, &url, &headers, body).await
        }));
    }
    let mut answers = Vec::new();
    for sender in senders {
        answers.push(sender.await.unwrap());
    }
    assert!(answers.iter().all(|(status, _)| *status == 200), "{answers:?}");
    let accepted: Vec<_> = answers.iter().filter(|(_, a)| a["status"] == "accepted").collect();
    assert_eq!(accepted.len(), 1, "{answers:?}");
    let id = accepted[0].1["id"].as_str().unwrap().to_owned();
    assert_eq!(answers.iter().filter(|(_, a)| a["status"] == "duplicate" && a["id"] == id).count(), COPIES - 1);

    // One event is stored; once nothing is queued, no other delivery can come.
    let stats = wait_drained(&app.http, &app.url(""), Duration::from_secs(10)).await;
    assert_eq!(stats.count("stripe", State::Delivered), 1, "{stats:?}");
    assert_eq!(State::ALL.iter().map(|s| stats.count("stripe", *s)).sum::<u64>(), 1, "one event stored: {stats:?}");
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "exactly one delivery");
    assert_eq!(delivered[0].webhook_id(), id);
    assert_eq!(delivered[0].body, body);
    let event = app.admin(&format!("/api/events/{id}")).await;
    assert_eq!(event["duplicates"], json!(COPIES - 1));
    assert_eq!(event["dedupe_key"], "evt_1Nrace");
    app.stop().await;
}

#[tokio::test]
async fn bad_signatures_are_401_and_store_nothing() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let body = br#"{"id":"evt_bad","data":{"object":{"id":"cus_1"}}}"#.to_vec();
    let good = stripe_headers(&body);
    let now = unix_now();
    type Case<'a> = (&'a str, Vec<(&'a str, String)>, Vec<u8>, &'a str);
    let cases: Vec<Case> = vec![
        (
            "wrong secret",
            vec![("stripe-signature", hookgate_verify::stripe_sign("whsec_other", now, &body))],
            body.clone(),
            "bad_signature",
        ),
        (
            "stale timestamp",
            vec![("stripe-signature", hookgate_verify::stripe_sign(STRIPE_SECRET, now - 301, &body))],
            body.clone(),
            "stale_timestamp",
        ),
        ("missing header", vec![], body.clone(), "missing_header"),
        (
            "tampered body",
            good.clone(),
            br#"{"id":"evt_bad","data":{"object":{"id":"cus_2"}}}"#.to_vec(),
            "bad_signature",
        ),
    ];
    for (what, headers, body, reason) in cases {
        let (status, answer) = app.post("stripe", &headers, body).await;
        assert_eq!(status, 401, "{what}");
        assert!(answer["error"].as_str().unwrap().starts_with(reason), "{what}: {answer}");
    }
    let acuity_body = b"action=changed&id=1".to_vec();
    let mut acuity = acuity_headers(&acuity_body);
    acuity[1].1 = acuity[1].1.replace('A', "B").replace('a', "b");
    let (status, _) = app.post("acuity", &acuity, b"action=changed&id=2".to_vec()).await;
    assert_eq!(status, 401, "acuity tampered");
    let swh_headers = vec![
        ("webhook-id", "msg_1".to_string()),
        ("webhook-timestamp", unix_now().to_string()),
        ("webhook-signature", "v1,Zm9v".to_string()),
    ];
    assert_eq!(app.post("swh", &swh_headers, b"{}".to_vec()).await.0, 401, "standard webhooks forged");

    let listed = app.admin("/api/events").await;
    assert_eq!(listed["events"], json!([]), "nothing stored");
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"reason="stale_timestamp""#), "rejections are counted by reason");
    assert!(receiver.started() == 0, "nothing stored, so nothing delivered");
    app.stop().await;
}

#[tokio::test]
async fn oversized_and_unknown_are_refused() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let big = vec![b'x'; 64 * 1024 + 1];
    let (status, answer) = app.post("plain", &[], big).await;
    assert_eq!(status, 413, "{answer}");
    let (status, _) = app.post("nowhere", &[], b"{}".to_vec()).await;
    assert_eq!(status, 404);
    let exactly = format!(r#"{{"id":"a","pad":"{}"}}"#, "y".repeat(64 * 1024 - 19));
    assert_eq!(exactly.len(), 64 * 1024);
    assert_eq!(app.post("plain", &[], exactly).await.0, 200, "max_body itself is allowed");
    app.stop().await;
}

#[tokio::test]
async fn a_body_that_misses_the_keys_is_stored_flagged_and_delivered() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let (status, answer) = app.post("plain", &[], b"not json at all".to_vec()).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    let event = app.admin(&format!("/api/events/{}", answer["id"].as_str().unwrap())).await;
    assert_eq!(event["dedupe_key"], json!(null));
    assert_eq!(event["order_key"], json!(null));
    let warnings = event["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings[0].as_str().unwrap().contains("body is not JSON"));
    receiver.wait_for(Duration::from_secs(5), "delivery", |r| r.len() == 1).await;
    // Two such events are not duplicates of each other: an empty key dedupes nothing.
    let (_, second) = app.post("plain", &[], b"not json at all".to_vec()).await;
    assert_eq!(second["status"], "accepted");
    app.stop().await;
}

#[tokio::test]
async fn admin_api_needs_the_token() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    for (path, token) in [("/api/events", None), ("/api/stats", Some("wrong"))] {
        let mut request = app.http.get(app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        assert_eq!(request.send().await.unwrap().status(), 401, "{path}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.http.get(app.url(path)).send().await.unwrap().status(), 200, "{path}");
    }
    app.stop().await;
}

/// A Standard Webhooks header stuffed with `v1a` signatures over a 1 MiB body
/// is refused before any signature is checked: cheaply, not with hundreds of
/// Ed25519 checks on an async worker. A thousand do not even fit in a request
/// head (16 KiB): 431. A hundred and fifty do: 401, too many signatures.
#[tokio::test]
async fn a_thousand_signatures_are_refused_at_once() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")
        .replace("max_body = \"64KiB\"", "max_body = \"2MiB\"")
        .replace(
            &format!("preset = \"standard-webhooks\"\nverify = {{ secret = \"{SIGNING_SECRET}\" }}"),
            "preset = \"standard-webhooks\"\nverify = { secret = \"whpk_O2onvM62pC1io6jQKm8Nc2UyFXcd4kOmOsBIoYtZ2ik=\" }",
        );
    let app = spawn_with(dir, &text).await;
    let signature = format!("v1a,{}", "A".repeat(86) + "==");
    let body = vec![b'x'; 1 << 20];
    for (count, expected) in [(1_000, 431), (150, 401)] {
        let headers = vec![
            ("webhook-id", "msg_1".to_owned()),
            ("webhook-timestamp", unix_now().to_string()),
            ("webhook-signature", vec![signature.clone(); count].join(" ")),
        ];
        let mut fastest = Duration::MAX;
        for _ in 0..3 {
            let started = std::time::Instant::now();
            let (status, answer) = app.post("swh", &headers, body.clone()).await;
            fastest = fastest.min(started.elapsed());
            assert_eq!(status, expected, "{count} signatures: {answer}");
            if expected == 401 {
                assert!(answer["error"].as_str().unwrap().contains("too many signatures"), "{answer}");
            }
        }
        // The fastest of three, so a busy machine's hiccup is not the verdict.
        assert!(fastest < Duration::from_millis(10), "{count} signatures refused after {fastest:?}");
    }
    app.stop().await;
}

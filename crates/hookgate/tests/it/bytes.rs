//! Any bytes, on both backends: NUL and bytes that are not UTF-8 in keys,
//! query, headers and the destination's reply are stored, delivered and
//! recorded, and the ordinary events sharing their batches are unaffected.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue};
use serde_json::{Value, json};

use crate::support::*;

async fn odd_bytes_everywhere(storage: Option<String>) {
    let receiver = receiver_answering(Arc::new(|headers, body| {
        let first = headers.get("hookgate-attempt") == Some(b"1".as_slice());
        if first && body.windows(9).any(|w| w == b"reply-nul") {
            Answer { status: 500, work: Duration::ZERO, retry_after: None, body: b"boom\x00\xff\x1b[0m".to_vec() }
        } else {
            Answer::from((200, Duration::ZERO))
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("hookgate.db");
    let mut text = config_text(&receiver.url(), &db, "");
    if let Some(url) = storage {
        text = text.replace(&format!("sqlite://{}", db.display()), &url);
    }
    text.push_str("\n[[sources]]\nname = \"q\"\ndestination = \"app\"\ndedupe_key = \"{query.k}\"\norder_key = \"{header.x-key}\"\n");
    let app = Arc::new(spawn_with(dir, &text).await);

    let odd_json = json!({"id": "nul\u{0}id", "object": "o\u{0}b\r\nj", "m": "reply-nul"}).to_string();
    let send_odd_query = {
        let app = app.clone();
        move || {
            let request = app
                .http
                .post(app.url("/in/q?k=%00%FF"))
                .header(HeaderName::from_static("x-key"), HeaderValue::from_bytes(b"caf\xe9").unwrap())
                .header(HeaderName::from_static("x-raw"), HeaderValue::from_bytes(b"\xff\xfe\x80").unwrap())
                .body("{}");
            async move {
                let response = request.send().await.unwrap();
                (response.status().as_u16(), response.json::<Value>().await.unwrap())
            }
        }
    };
    // Everything at once, so the odd ones share batches with the ordinary ones.
    let ordinary = (0..30).map(|n| {
        let app = app.clone();
        tokio::spawn(async move {
            app.post("plain", &[], json!({"id": format!("ok{n}"), "object": format!("o{n}")}).to_string()).await
        })
    });
    let ordinary: Vec<_> = ordinary.collect();
    let (odd_key, odd_query) = tokio::join!(app.post("plain", &[], odd_json.clone()), send_odd_query());
    let mut accepted =
        vec![odd_key.1["id"].as_str().unwrap().to_owned(), odd_query.1["id"].as_str().unwrap().to_owned()];
    assert_eq!((odd_key.0, odd_query.0), (200, 200), "{odd_key:?} {odd_query:?}");
    for task in ordinary {
        let (status, answer) = task.await.unwrap();
        assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
        accepted.push(answer["id"].as_str().unwrap().to_owned());
    }

    wait_drained(&app.http, &app.url(""), Duration::from_secs(30)).await;
    let delivered: Vec<String> = receiver.delivered().iter().map(|r| r.webhook_id().to_owned()).collect();
    for id in &accepted {
        assert!(delivered.contains(id), "{id} was not delivered");
    }

    let key_event = app.admin(&format!("/api/events/{}", accepted[0])).await;
    assert_eq!(key_event["dedupe_key"], "nul\u{0}id");
    assert_eq!(key_event["order_key"], "o\u{0}b\r\nj");
    // hookgate's own headers are percent-encoded where a byte cannot be sent as it is (README).
    let got = receiver.received().into_iter().find(|r| r.webhook_id() == accepted[0]).unwrap();
    assert_eq!(got.headers.get("hookgate-order-key"), Some(b"o%00b%0D%0Aj".as_slice()), "NUL, CR and LF arrive");
    let attempts = key_event["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "the failed attempt with NUL in its reply is recorded: {key_event}");
    assert_eq!(attempts[0]["error"], "HTTP 500: boom\\u{0}\u{fffd}\\u{1b}[0m");
    let query_event = app.admin(&format!("/api/events/{}", accepted[1])).await;
    assert_eq!(query_event["dedupe_key"], "\u{0}\u{fffd}", "shown as text; stored as bytes");
    let got = receiver.received().into_iter().find(|r| r.webhook_id() == accepted[1]).unwrap();
    assert_eq!(got.headers.get("x-raw"), Some(b"\xff\xfe\x80".as_slice()), "delivered byte for byte");
    assert_eq!(got.headers.get("hookgate-order-key"), Some(b"caf%E9".as_slice()), "not UTF-8: arrives encoded");

    // A key too long for an index (PostgreSQL refuses btree rows over ~2.7 KB) is kept as its digest.
    let long = app
        .http
        .post(app.url("/in/q?k=long"))
        .header(HeaderName::from_static("x-key"), HeaderValue::from_str(&"k".repeat(3_000)).unwrap())
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    let long: Value = long.json().await.unwrap();
    let long_event = app.admin(&format!("/api/events/{}", long["id"].as_str().unwrap())).await;
    assert!(long_event["order_key"].as_str().unwrap().starts_with("sha256:"), "{long_event}");

    // The odd keys dedupe exactly: the same bytes are duplicates.
    let again = app.post("plain", &[], odd_json).await;
    assert_eq!((again.1["status"].as_str(), again.1["id"].as_str()), (Some("duplicate"), Some(accepted[0].as_str())));
    let again = send_odd_query().await;
    assert_eq!((again.1["status"].as_str(), again.1["id"].as_str()), (Some("duplicate"), Some(accepted[1].as_str())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_bytes_on_sqlite() {
    odd_bytes_everywhere(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn odd_bytes_on_postgres() {
    let Some(url) = postgres_schema_url().await else { return };
    odd_bytes_everywhere(Some(url)).await;
}

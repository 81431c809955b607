//! The destination misbehaving: hanging past the timeout, resetting
//! connections, answering 500 for a while, answering 429 with a huge or a
//! nonsense `Retry-After`. Events retry, die after `max_attempts`, never
//! block other keys, never overlap.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

/// A destination that resets every connection it accepts.
async fn resetting() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Linger 0: close with RST, not FIN.
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    format!("http://{addr}/hooks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_misbehaving_destination_never_blocks_or_overlaps() {
    let _alone = crate::one_at_a_time().await;
    // Counted per body, not timed: "down for a while" must not depend on how fast
    // a loaded machine gets through the backoff.
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashMap::<String, u32>::new()));
    let receiver = receiver_answering(Arc::new(move |_, body| {
        let body = String::from_utf8_lossy(body).into_owned();
        let tries = {
            let mut seen = seen.lock().unwrap();
            let count = seen.entry(body.clone()).or_default();
            *count += 1;
            *count
        };
        let plain = |status| Answer { status, work: Duration::ZERO, retry_after: None, body: Vec::new() };
        if body.contains("hang") {
            Answer { work: Duration::from_secs(3), ..plain(200) } // past the 1 s timeout, every time
        } else if body.contains("flaky") && tries <= 3 {
            plain(500) // down for a while, then back
        } else if body.contains("huge") {
            Answer { retry_after: Some("999999999".into()), ..plain(429) }
        } else if body.contains("nonsense") && tries <= 2 {
            Answer { retry_after: Some("soon, maybe".into()), ..plain(429) }
        } else {
            plain(200)
        }
    }))
    .await;
    let reset_url = resetting().await;
    let dir = tempfile::tempdir().unwrap();
    let mut text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")
        .replace(r#"timeout = "5s""#, r#"timeout = "1s""#)
        .replace(
            r#"retry = { max_attempts = 4, initial = "100ms", max = "400ms" }"#,
            r#"retry = { max_attempts = 6, initial = "100ms", max = "800ms" }"#,
        );
    text.push_str(&format!(
        "\n[[destinations]]\nname = \"resets\"\nurl = \"{reset_url}\"\ntimeout = \"1s\"\nretry = {{ max_attempts = 3, initial = \"50ms\", max = \"200ms\" }}\n\n[[sources]]\nname = \"to-resets\"\ndestination = \"resets\"\norder_key = \"{{json.object}}\"\n"
    ));
    let app = spawn_with(dir, &text).await;

    let mut ids = std::collections::HashMap::new();
    for kind in ["hang", "flaky", "huge", "nonsense"] {
        for n in 0..3 {
            let body = json!({"id": format!("{kind}-{n}"), "object": format!("{kind}-{n}"), "kind": kind}).to_string();
            let (status, answer) = app.post("plain", &[], body).await;
            assert_eq!(status, 200);
            ids.insert(format!("{kind}-{n}"), answer["id"].as_str().unwrap().to_owned());
        }
    }
    let (_, reset) = app.post("to-resets", &[], json!({"id": "r", "object": "r-obj"}).to_string()).await;
    // Ordinary events on other keys go through while the others retry.
    let mut normal = Vec::new();
    for n in 0..10 {
        let (_, answer) =
            app.post("plain", &[], json!({"id": format!("ok-{n}"), "object": format!("ok{n}")}).to_string()).await;
        normal.push(answer["id"].as_str().unwrap().to_owned());
    }
    receiver
        .wait_for(Duration::from_secs(3), "the ordinary events, not held up by the misbehaving ones", |r| {
            normal.iter().all(|id| r.iter().any(|r| r.webhook_id() == id && r.delivered()))
        })
        .await;

    let stats = wait_drained(&app.http, &app.url(""), Duration::from_secs(60)).await;
    let state = |id: &str| {
        let (http, url) = (app.http.clone(), app.url(&format!("/api/events/{id}")));
        async move {
            let event: serde_json::Value =
                http.get(url).bearer_auth(ADMIN_TOKEN).send().await.unwrap().json().await.unwrap();
            (event["state"].as_str().unwrap().to_owned(), event["attempts"].as_array().unwrap().len())
        }
    };
    for n in 0..3 {
        assert_eq!(state(&ids[&format!("hang-{n}")]).await, ("dead".into(), 6), "a hang is a failed attempt");
        assert_eq!(state(&ids[&format!("flaky-{n}")]).await.0, "delivered", "retried until it came back");
        assert_eq!(state(&ids[&format!("nonsense-{n}")]).await.0, "delivered", "nonsense Retry-After: normal backoff");
        let (huge, attempts) = state(&ids[&format!("huge-{n}")]).await;
        assert_eq!((huge.as_str(), attempts), ("dead", 6), "a huge Retry-After is capped at retry.max, not waited out");
    }
    let (reset_state, reset_attempts) = state(reset["id"].as_str().unwrap()).await;
    assert_eq!((reset_state.as_str(), reset_attempts), ("dead", 3), "connection resets fail attempts");
    // One request of a key at a time, as hookgate holds them: a request is in the app's
    // hands until it answers or hookgate gives up at the timeout (an app that works on
    // past that may see the retry while it does: keep work within the timeout).
    let mut by_key: std::collections::HashMap<String, Vec<Received>> = Default::default();
    for r in receiver.received() {
        by_key.entry(r.order_key().to_owned()).or_default().push(r);
    }
    for (key, mut requests) in by_key {
        requests.sort_by_key(|r| r.started);
        for pair in requests.windows(2) {
            let released = pair[0].finished.min(pair[0].started + Duration::from_secs(1));
            assert!(pair[1].started >= released, "{key}: a request sent while another was still open");
        }
    }
    eprintln!("FAULT REPORT | destination misbehaving | {stats:?}");
    app.stop().await;
}

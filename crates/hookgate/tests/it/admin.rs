//! The admin API's edges: every bad parameter is the caller's 400, naming it.

use crate::support::*;

#[tokio::test]
async fn bad_parameters_are_400s_that_name_the_parameter() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    for (query, name) in [
        ("cursor=nonsense", "cursor"),
        ("cursor=-5", "cursor"),
        ("state=finished", "state"),
        ("limit=lots", "limit"),
        ("limit=0", "limit"),
        ("since=yesterday", "since"),
        ("until=2026-13-01T00:00:00Z", "until"),
    ] {
        let response =
            app.http.get(app.url(&format!("/api/events?{query}"))).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 400, "{query}");
        let body: hookgate::api::ErrorBody = response.json().await.unwrap();
        assert!(body.error.starts_with(&format!("{name}: ")), "{query}: {}", body.error);
    }
    let response = app.http.post(app.url("/api/replay?state=pending")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 400, "pending events are not replayed");
    // A real cursor from a page works.
    for n in 0..3 {
        app.post("plain", &[], format!(r#"{{"id":"a{n}","object":"o{n}"}}"#)).await;
    }
    let first = app.admin("/api/events?limit=2").await;
    let cursor = first["next_cursor"].as_str().expect("a second page");
    let second = app.admin(&format!("/api/events?limit=2&cursor={cursor}")).await;
    assert_eq!(second["events"].as_array().unwrap().len(), 1);
    // A time window alone is listed by time: its cursor carries the time, and one from a
    // page in row order is refused there, by name, for events and deliveries alike.
    let windowed = app.admin("/api/events?limit=2&since=0").await;
    let timed = windowed["next_cursor"].as_str().expect("a second page");
    assert!(timed.contains('~'), "{timed}");
    let second = app.admin(&format!("/api/events?limit=2&since=0&cursor={timed}")).await;
    assert_eq!(second["events"].as_array().unwrap().len(), 1);
    for path in
        [format!("/api/events?since=0&cursor={cursor}"), "/api/deliveries?until=99999999999999&cursor=3.2".into()]
    {
        let response = app.http.get(app.url(&path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
        assert_eq!(response.status(), 400, "{path}");
        let body: hookgate::api::ErrorBody = response.json().await.unwrap();
        assert!(body.error.starts_with("cursor: is from a page listed in row order"), "{path}: {}", body.error);
    }
    app.stop().await;
}

/// `GET /api/events` filters on dedupe key and on when events were received.
#[tokio::test]
async fn events_filter_on_dedupe_key_and_time() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let before = unix_now() * 1_000 - 1_000;
    app.post("plain", &[], r#"{"id":"first","object":"o1"}"#).await;
    let (_, second) = app.post("plain", &[], r#"{"id":"second","object":"o2"}"#).await;
    let later = unix_now() * 1_000 + 60_000;
    let ids = |page: serde_json::Value| -> Vec<String> {
        page["events"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().to_owned()).collect()
    };
    // The plain source's dedupe key is the JSON id.
    assert_eq!(ids(app.admin("/api/events?dedupe_key=second").await), vec![second["id"].as_str().unwrap().to_owned()]);
    assert_eq!(ids(app.admin(&format!("/api/events?since={before}")).await).len(), 2);
    assert_eq!(ids(app.admin(&format!("/api/events?since={later}")).await).len(), 0);
    assert_eq!(ids(app.admin("/api/events?until=2000-01-01T00:00:00Z").await).len(), 0);
    assert_eq!(ids(app.admin("/api/events?since=2000-01-01T00:00:00%2B02:00").await).len(), 2);
    app.stop().await;
}

/// A bulk replay by filter (a JSON body) delivers each order key's events
/// again in the order they were first stored, whatever order they died in.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_by_filter_keeps_each_keys_order() {
    let healthy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let receiver = receiver(std::sync::Arc::new(move |_, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) {
            (200, std::time::Duration::ZERO)
        } else {
            (400, std::time::Duration::ZERO)
        }
    }))
    .await;
    let app = spawn_app(&receiver).await;
    let mut sent = Vec::new();
    for n in 0..5 {
        let (_, answer) = app.post("plain", &[], format!(r#"{{"id":"r{n}","object":"replayed"}}"#)).await;
        sent.push(answer["id"].as_str().unwrap().to_owned());
    }
    app.post("plain", &[], r#"{"id":"elsewhere","object":"other"}"#).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while app.admin("/api/events?state=dead&order_key=replayed").await["events"].as_array().unwrap().len() < 5 {
        assert!(std::time::Instant::now() < deadline, "the events never died");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let response = app
        .http
        .post(app.url("/api/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"order_key": "replayed", "state": "dead", "limit": 100}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: hookgate::api::BulkReplayed = response.json().await.unwrap();
    assert_eq!((answer.replayed, answer.more), (5, false), "only the filtered key's events");
    receiver
        .wait_for(std::time::Duration::from_secs(10), "the replays", |r| {
            r.iter().filter(|r| r.delivered()).count() == 5
        })
        .await;
    let mut delivered = receiver.delivered();
    delivered.sort_by_key(|r| r.started);
    let order: Vec<String> = delivered.iter().map(|r| r.webhook_id().to_owned()).collect();
    assert_eq!(order, sent, "replayed in the order first stored");
    let response = app
        .http
        .post(app.url("/api/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({"limit": 0}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    app.stop().await;
}

/// A bad replay filter is a 400 with the JSON error body, saying what is wrong.
#[tokio::test]
async fn a_bad_replay_filter_is_a_400_that_says_why() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    for (query, body, says) in [
        ("", r#"{"sorce": "stripe"}"#, "unknown field `sorce`"),
        ("", r#"{"limit": "ten"}"#, "limit"),
        ("", "not json", "filter"),
        ("", r#"{"source": "x"} trailing"#, "trailing characters"),
        ("", r#"{"source": "x"}{"source": "y"}"#, "trailing characters"),
        // Before, the query was ignored in silence beside a body: the whole filter was the body's.
        ("?source=open&state=delivered", r#"{"limit": 1}"#, "in the body and in the query (source, state)"),
    ] {
        let response = app
            .http
            .post(app.url(&format!("/api/replay{query}")))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
        let error: hookgate::api::ErrorBody = response.json().await.unwrap();
        assert!(error.error.contains(says), "{body}: {}", error.error);
    }
    let response = app.http.post(app.url("/api/replay?limit=lots")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert_eq!(response.status(), 400);
    let error: hookgate::api::ErrorBody = response.json().await.unwrap();
    assert!(error.error.starts_with("query: "), "{}", error.error);
    app.stop().await;
}

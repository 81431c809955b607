//! What a newcomer trips on in the first hour, each seen once and now
//! answered: a redirect that killed events silently, a trailing slash that
//! was a 404, a wrong secret and a failing app that said nothing in the log,
//! a paused destination that showed nowhere after a restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{StatusCode, header};

use crate::support::*;

/// An app that answers every request with a redirect, as Django's
/// `APPEND_SLASH` does for a URL without its slash.
async fn redirecting_app() -> String {
    let router = axum::Router::new()
        .fallback(|| async { (StatusCode::MOVED_PERMANENTLY, [(header::LOCATION, "http://app.internal/webhooks/")]) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}/webhooks")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failure_that_says_where_it_pointed() {
    let url = redirecting_app().await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&url, &dir.path().join("hookgate.db"), "");
    let app = spawn_with(dir, &text).await;
    let (_, answer) = app.post("plain", &[], r#"{"id":"r1","object":"o1"}"#).await;
    let id = answer["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(10);
    let event = loop {
        let event = app.admin(&format!("/api/events/{id}")).await;
        if event["state"] == "dead" {
            break event;
        }
        assert!(Instant::now() < deadline, "never died: {event}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = event["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.starts_with("HTTP 301: redirected to http://app.internal/webhooks/; redirects are not followed"),
        "{error}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_trailing_slash_reaches_the_source() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let (status, answer) =
        post_with(&app.http, &app.url("/in/plain/"), &[], br#"{"id":"s1","object":"o"}"#.to_vec()).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{answer}");
    let (status, _) = post_with(&app.http, &app.url("/in/nowhere/"), &[], b"{}".to_vec()).await;
    assert_eq!(status, 404);
    app.stop().await;
}

/// The log of a `hookgate serve` process, read back.
fn lines(log: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(log).unwrap().lines().map(str::to_owned).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_failures_and_pauses_are_loud_but_never_flood() {
    let receiver = receiver(Arc::new(|_, _| (500, Duration::ZERO))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")).unwrap();
    let log = dir.path().join("serve.log");
    let http = reqwest::Client::new();
    let gateway = Gateway::start_logging(&config, &log).healthy(&http).await;

    // A sender with the wrong secret, fifty times: one WARN that says why.
    let body = br#"{"id":"evt_1","data":{"object":{"id":"cus_1"}}}"#;
    let forged = hookgate_verify::stripe_sign("whsec_not_the_right_one", unix_now(), body);
    for _ in 0..50 {
        let headers = [("stripe-signature", forged.clone())];
        let (status, _) = post_with(&http, &format!("{}/in/stripe", gateway.base), &headers, body.to_vec()).await;
        assert_eq!(status, 401);
    }
    // An app that fails: its attempts are told, not just the death.
    let (status, _) = post_with(&http, &format!("{}/in/plain", gateway.base), &[], br#"{"id":"f1"}"#.to_vec()).await;
    assert_eq!(status, 200);
    receiver.wait_for(Duration::from_secs(10), "the attempts", |r| r.len() >= 4).await;
    // Paused, then restarted: the start says so, and /metrics does.
    let paused = http.post(format!("{}/api/destinations/app/pause", gateway.base)).bearer_auth(ADMIN_TOKEN);
    assert!(paused.send().await.unwrap().status().is_success());
    tokio::time::sleep(Duration::from_millis(300)).await; // the dead event's line is written
    gateway.terminate();
    let first = lines(&log);
    let gateway = Gateway::start_logging(&config, &dir.path().join("again.log")).healthy(&http).await;

    let refused: Vec<&String> = first.iter().filter(|l| l.contains("request refused")).collect();
    assert_eq!(refused.len(), 1, "one line for fifty refusals: {first:#?}");
    assert!(refused[0].contains("WARN") && refused[0].contains("bad_signature"), "{}", refused[0]);
    assert!(refused[0].contains("is verify.secret the sender's current secret"), "{}", refused[0]);
    let failed: Vec<&String> = first.iter().filter(|l| l.contains("attempt failed, retrying in")).collect();
    assert!(!failed.is_empty() && failed[0].contains("HTTP 500"), "{first:#?}");
    assert!(first.iter().any(|l| l.contains("delivery is dead") && l.contains("hookgate replay dlv_")), "{first:#?}");
    assert!(!first.iter().any(|l| l.contains("Some(")), "no Rust Option in a message: {first:#?}");

    let again = lines(&dir.path().join("again.log"));
    assert!(
        again.iter().any(|l| l.contains("WARN") && l.contains("destination is paused") && l.contains("resume app")),
        "{again:#?}"
    );
    let metrics = http.get(format!("{}/metrics", gateway.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("hookgate_destination_paused{destination=\"app\"} 1"), "{metrics}");
    let resumed = http.post(format!("{}/api/destinations/app/resume", gateway.base)).bearer_auth(ADMIN_TOKEN);
    assert!(resumed.send().await.unwrap().status().is_success());
    let metrics = http.get(format!("{}/metrics", gateway.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("hookgate_destination_paused{destination=\"app\"} 0"), "{metrics}");
}

/// `hookgate send` signs a test event as each source's sender would; the
/// gateway verifies and stores it, and the app receives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_signs_a_first_event_as_the_sender_would() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("hookgate.toml");
    let text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"127.0.0.1:{port}\""));
    std::fs::write(&config, text).unwrap();
    let http = reqwest::Client::new();
    let gateway = Gateway::start_on(&config, port).healthy(&http).await;
    let body = dir.path().join("mine.json");
    std::fs::write(&body, r#"{"id":"evt_mine","object":"event","data":{"object":{"id":"cus_7"}}}"#).unwrap();
    let send = |args: Vec<String>| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"));
            command.arg("send").args(args).arg("--config").arg(config).env_remove("HOOKGATE_URL");
            command.output().unwrap()
        })
    };
    for source in ["stripe", "acuity", "swh", "plain"] {
        let out = send(vec!["--source".into(), source.into()]).await.unwrap();
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{source}: {said}{}", String::from_utf8_lossy(&out.stderr));
        assert!(said.contains(&format!("POST http://127.0.0.1:{port}/in/{source}")), "{said}");
        assert!(said.contains("200 {\"id\":\"evt_") && said.contains("\"status\":\"accepted\""), "{said}");
        assert!(said.contains("see it: hookgate events show evt_"), "{said}");
    }
    let mine = send(vec!["--source".into(), "stripe".into(), "--body".into(), body.display().to_string()]);
    let mine = mine.await.unwrap();
    assert!(mine.status.success(), "{}", String::from_utf8_lossy(&mine.stderr));
    receiver.wait_for(Duration::from_secs(10), "the five sent", |r| r.len() == 5).await;
    assert!(receiver.received().iter().any(|r| r.body.starts_with(br#"{"id":"evt_mine""#)), "the given body, as it is");
    let again = send(vec!["--source".into(), "stripe".into(), "--body".into(), body.display().to_string()]);
    let again = String::from_utf8(again.await.unwrap().stdout).unwrap();
    assert!(again.contains("\"status\":\"duplicate\""), "the same Stripe id again: {again}");
    let nowhere = send(vec!["--source".into(), "nope".into()]).await.unwrap();
    assert_eq!(nowhere.status.code(), Some(2));
    let said = String::from_utf8_lossy(&nowhere.stderr);
    assert!(said.contains("no source \"nope\"; the config has: stripe, acuity, plain, swh"), "{said}");
    drop(gateway);
}

//! Steering deliveries: pause and resume a destination, on SQLite (across a
//! restart) and on PostgreSQL (paused through one instance, resumed through
//! another).

use std::time::Duration;

use serde_json::json;

use crate::support::*;

async fn admin_post(http: &reqwest::Client, base: &str, path: &str) -> u16 {
    http.post(format!("{base}{path}")).bearer_auth(ADMIN_TOKEN).send().await.unwrap().status().as_u16()
}

/// Events sent, one after another's ack, to the instances in turn: their ids in order.
async fn send_ordered(http: &reqwest::Client, bases: &[String], n: usize, tag: &str) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let base = &bases[i % bases.len()];
        let body = json!({"id": format!("{tag}-{i}"), "object": "steered"}).to_string();
        let (status, answer) = post_with(http, &format!("{base}/in/plain"), &[], body.into_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    ids
}

/// While paused nothing arrives (a dispatcher would deliver within milliseconds).
async fn nothing_then_everything(receiver: &Receiver, ids: &[String]) {
    assert!(!ids.is_empty());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.started(), 0, "delivered while paused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_holds_across_a_restart_and_resume_delivers_in_order_sqlite() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")).unwrap();
    let http = reqwest::Client::new();
    let port = free_port();
    let gateway = Gateway::start_on(&config, port).healthy(&http).await;
    assert_eq!(admin_post(&http, &gateway.base, "/api/destinations/app/pause").await, 200);
    assert_eq!(admin_post(&http, &gateway.base, "/api/destinations/nope/pause").await, 404);
    let ids = send_ordered(&http, std::slice::from_ref(&gateway.base), 6, "s").await;
    nothing_then_everything(&receiver, &ids).await;
    let code = tokio::task::spawn_blocking(move || gateway.terminate()).await.unwrap();
    assert_eq!(code, Some(0));
    let gateway = Gateway::start_on(&config, port).healthy(&http).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.started(), 0, "still paused after the restart");
    assert_eq!(admin_post(&http, &gateway.base, "/api/destinations/app/resume").await, 200);
    receiver.wait_for(Duration::from_secs(10), "the backlog", |r| r.len() == ids.len()).await;
    assert_eq!(receiver.first_deliveries("steered"), ids, "in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_holds_across_instances_postgres() {
    let Some(url) = postgres_schema_url().await else { return };
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unused.db");
    let text = config_text(&receiver.url(), &db, "").replace(&format!("sqlite://{}", db.display()), &url);
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, text).unwrap();
    let http = reqwest::Client::new();
    let gateways = [Gateway::start(&config).healthy(&http).await, Gateway::start(&config).healthy(&http).await];
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    assert_eq!(admin_post(&http, &bases[0], "/api/destinations/app/pause").await, 200);
    let ids = send_ordered(&http, &bases, 8, "p").await;
    nothing_then_everything(&receiver, &ids).await;
    assert_eq!(admin_post(&http, &bases[1], "/api/destinations/app/resume").await, 200, "resumed through the other");
    receiver.wait_for(Duration::from_secs(10), "the backlog", |r| r.len() == ids.len()).await;
    assert_eq!(receiver.first_deliveries("steered"), ids, "in order");
    assert!(receiver.overlaps().is_empty());
}

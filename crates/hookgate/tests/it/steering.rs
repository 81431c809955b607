//! Steering deliveries: pause and resume a destination, on SQLite (across a
//! restart) and on PostgreSQL (paused through one instance, resumed through
//! another).

use std::sync::Arc;
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

/// A config for the standard test app with `extra` lines in destination `app`,
/// on SQLite in `dir` or on the PostgreSQL `url`.
fn steering_config(
    dir: &std::path::Path,
    receiver: &Receiver,
    extra: &str,
    postgres: Option<&str>,
) -> std::path::PathBuf {
    let db = dir.join("hookgate.db");
    let mut text =
        config_text(&receiver.url(), &db, "").replace("concurrency = 16", &format!("concurrency = 16\n{extra}"));
    if let Some(url) = postgres {
        text = text.replace(&format!("sqlite://{}", db.display()), url);
    }
    let config = dir.join("hookgate.toml");
    std::fs::write(&config, text).unwrap();
    config
}

/// `n` events on `n` different objects (nothing orders them), sent 16 at a time.
async fn send_unordered(http: &reqwest::Client, bases: &[String], n: usize, tag: &str) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(16) {
        let posts = chunk.iter().map(|i| {
            let body = json!({"id": format!("{tag}-{i}"), "object": format!("{tag}-object-{i}")}).to_string();
            let url = format!("{}/in/plain", bases[i % bases.len()]);
            async move { post_with(http, &url, &[], body.into_bytes()).await }
        });
        for (status, answer) in futures_util::future::join_all(posts).await {
            assert_eq!(status, 200, "{answer}");
        }
    }
}

/// A backlog released at once under `rate_limit = "50/s"`: over the first ten
/// seconds of deliveries, 500 attempts start, within 10%, however many
/// instances share the work.
async fn rate_limit_holds(bases: &[String], receiver: &Receiver) {
    let http = reqwest::Client::new();
    assert_eq!(admin_post(&http, &bases[0], "/api/destinations/app/pause").await, 200);
    send_unordered(&http, bases, 700, "rl").await;
    assert_eq!(admin_post(&http, bases.last().unwrap(), "/api/destinations/app/resume").await, 200);
    tokio::time::sleep(Duration::from_secs(11)).await;
    let mut starts: Vec<_> = receiver.received().iter().map(|r| r.started).collect();
    starts.sort();
    let first = starts[0];
    let in_ten_seconds = starts.iter().filter(|s| s.duration_since(first) < Duration::from_secs(10)).count();
    assert!((450..=550).contains(&in_ten_seconds), "{in_ten_seconds} attempts in 10 s at 50/s");
    let status = admin_get(&http, &bases[0], "/api/destinations").await;
    assert_eq!(status["destinations"][0]["rate_limit"], "50/s", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_sqlite() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = steering_config(dir.path(), &receiver, "rate_limit = \"50/s\"", None);
    let gateway = Gateway::start(&config).healthy(&reqwest::Client::new()).await;
    rate_limit_holds(std::slice::from_ref(&gateway.base), &receiver).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_across_instances_postgres() {
    let Some(url) = postgres_schema_url().await else { return };
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = steering_config(dir.path(), &receiver, "rate_limit = \"50/s\"", Some(&url));
    let http = reqwest::Client::new();
    let gateways = [Gateway::start(&config).healthy(&http).await, Gateway::start(&config).healthy(&http).await];
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    rate_limit_holds(&bases, &receiver).await;
}

/// The app fails every request: after three failures in a row the breaker
/// opens; while it is open nothing is sent (so no event spends an attempt);
/// after the cooldown one probe goes; the app is healthy by then, the probe
/// succeeds, the breaker closes and everything is delivered.
async fn the_breaker_opens_probes_and_closes(base: &str, receiver: &Receiver, healthy: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    let http = reqwest::Client::new();
    let circuit = || async {
        let status = admin_get(&http, base, "/api/destinations").await;
        status["destinations"][0]["circuit"].as_str().unwrap().to_owned()
    };
    assert_eq!(circuit().await, "closed");
    send_unordered(&http, &[base.to_owned()], 6, "cb").await;
    receiver.wait_for(Duration::from_secs(10), "three failures", |r| r.len() >= 3).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while circuit().await != "open" {
        assert!(std::time::Instant::now() < deadline, "the breaker never opened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Attempts that began before it opened may still be arriving (the first
    // claim can hold all six): let them land before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent_when_open = receiver.received().len();
    assert!(sent_when_open < 6 + 3, "attempts went on after the breaker opened: {sent_when_open}");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(receiver.received().len(), sent_when_open, "nothing is sent while the breaker is open");
    healthy.store(true, Ordering::SeqCst);
    receiver
        .wait_for(Duration::from_secs(10), "every event delivered", |r| r.iter().filter(|r| r.delivered()).count() == 6)
        .await;
    assert_eq!(circuit().await, "closed");
    let dead = admin_get(&http, base, "/api/events?state=dead").await;
    assert_eq!(dead["events"].as_array().unwrap().len(), 0, "no event spent its attempts while the breaker was open");
}

fn failing_until_healthy() -> (Script, Arc<std::sync::atomic::AtomicBool>) {
    let healthy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = healthy.clone();
    let script: Script = Arc::new(move |_, _| {
        if flag.load(std::sync::atomic::Ordering::SeqCst) { (200, Duration::ZERO) } else { (500, Duration::ZERO) }
    });
    (script, healthy)
}

// A cooldown well past the 1.5 s the test watches for silence, however late it sees the breaker open.
const BREAKER: &str = "circuit_breaker = { failures = 3, cooldown = \"4s\" }";

/// One gateway with the breaker, on SQLite or on the PostgreSQL `postgres`.
async fn breaker_case(postgres: Option<&str>) {
    let (script, healthy) = failing_until_healthy();
    let receiver = receiver(script).await;
    let dir = tempfile::tempdir().unwrap();
    let config = steering_config(dir.path(), &receiver, BREAKER, postgres);
    let gateway = Gateway::start(&config).healthy(&reqwest::Client::new()).await;
    the_breaker_opens_probes_and_closes(&gateway.base, &receiver, &healthy).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_circuit_breaker_sqlite() {
    breaker_case(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_circuit_breaker_postgres() {
    let Some(url) = postgres_schema_url().await else { return };
    breaker_case(Some(&url)).await;
}

/// A bulk replay by filter on PostgreSQL with two instances: the dead events
/// of one order key, replayed through one instance, are delivered again in
/// the order first stored, whichever instance delivers them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replay_by_filter_keeps_order_across_instances_postgres() {
    let Some(url) = postgres_schema_url().await else { return };
    let (script, healthy) = failing_until_healthy();
    let receiver = receiver(script).await;
    let dir = tempfile::tempdir().unwrap();
    let config = steering_config(dir.path(), &receiver, "", Some(&url));
    let http = reqwest::Client::new();
    let gateways = [Gateway::start(&config).healthy(&http).await, Gateway::start(&config).healthy(&http).await];
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    let ids = send_ordered(&http, &bases, 5, "rp").await;
    let dead = || async {
        let page = admin_get(&http, &bases[0], "/api/events?state=dead&order_key=steered").await;
        page["events"].as_array().unwrap().len()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while dead().await < ids.len() {
        assert!(std::time::Instant::now() < deadline, "the events never died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    healthy.store(true, std::sync::atomic::Ordering::SeqCst);
    let filter = json!({"state": "dead", "order_key": "steered"});
    let answer: hookgate::api::BulkReplayed = http
        .post(format!("{}/api/replay", bases[1]))
        .bearer_auth(ADMIN_TOKEN)
        .json(&filter)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer.replayed, ids.len() as u64);
    receiver
        .wait_for(Duration::from_secs(10), "the replays", |r| r.iter().filter(|r| r.delivered()).count() == 5)
        .await;
    let mut delivered = receiver.delivered();
    delivered.sort_by_key(|r| r.started);
    let order: Vec<String> = delivered.iter().map(|r| r.webhook_id().to_owned()).collect();
    assert_eq!(order, ids, "replayed in the order first stored");
    assert!(receiver.overlaps().is_empty());
}

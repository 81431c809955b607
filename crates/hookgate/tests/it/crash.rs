//! SIGKILL while deliveries are in flight, restart on the same database:
//! every acked event is delivered, in order, and no object is ever processed
//! twice at once (a cut-off attempt is retried only once its lease is over).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::*;

/// The destination timeout in these tests; a lease is this plus 5 s.
const TIMEOUT: &str = "1s";
const LEASE: Duration = Duration::from_secs(6);

fn crash_config(dir: &std::path::Path, receiver: &Receiver) -> std::path::PathBuf {
    let config = dir.join("hookgate.toml");
    let text = config_text(&receiver.url(), &dir.join("hookgate.db"), "")
        .replace(r#"timeout = "5s""#, &format!(r#"timeout = "{TIMEOUT}""#));
    std::fs::write(&config, text).unwrap();
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_mid_delivery_loses_nothing_and_keeps_order() {
    const OBJECTS: usize = 4;
    const PER_OBJECT: usize = 5;
    let receiver = receiver(Arc::new(|_, _| (200, Duration::from_millis(300)))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crash_config(dir.path(), &receiver);
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();

    let gateway = Gateway::start_on(&config, port).healthy(&http).await;
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..PER_OBJECT {
        for object in 0..OBJECTS {
            let body = json!({"id": format!("e-{object}-{n}"), "object": format!("obj{object}"), "n": n}).to_string();
            let (status, answer) = post_with(&http, &format!("{base}/in/plain"), &[], body.into_bytes()).await;
            assert_eq!(status, 200);
            sent.entry(format!("obj{object}")).or_default().push(answer["id"].as_str().unwrap().to_owned());
        }
    }
    // Let some deliveries finish, then kill while others are in the app's hands.
    receiver.wait_for(Duration::from_secs(10), "first deliveries", |r| r.len() >= OBJECTS).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.started() == receiver.received().len() {
        assert!(Instant::now() < deadline, "no delivery in flight to cut off");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = Instant::now();
    gateway.kill();
    assert!(receiver.received().len() < OBJECTS * PER_OBJECT, "the kill came before everything was delivered");

    let gateway = Gateway::start_on(&config, port).healthy(&http).await;
    receiver
        .wait_for(Duration::from_secs(60), "every acked event", |r| {
            let ids: std::collections::HashSet<_> = r.iter().map(|r| r.webhook_id().to_owned()).collect();
            sent.values().flatten().all(|id| ids.contains(id))
        })
        .await;
    // The attempts the kill cut off: in the app's hands when hookgate died.
    // Each is delivered again (hookgate never heard its answer), and only once
    // its lease is over: until then the app may still be working on it.
    let received = receiver.received();
    let cut: Vec<&Received> = received.iter().filter(|r| r.started < killed_at && r.finished > killed_at).collect();
    assert!(!cut.is_empty(), "a delivery was in flight at the SIGKILL");
    receiver
        .wait_for(Duration::from_secs(30), "redelivery of every cut-off attempt", |r| {
            cut.iter().all(|c| r.iter().filter(|r| r.webhook_id() == c.webhook_id()).count() >= 2)
        })
        .await;
    for first in &cut {
        let again =
            receiver.received().into_iter().find(|r| r.webhook_id() == first.webhook_id() && r.started > first.started);
        let gap = again.expect("delivered again").started - first.started;
        assert!(
            gap >= LEASE - Duration::from_millis(100),
            "{} delivered again after {gap:?}, inside its lease",
            first.webhook_id()
        );
    }
    drop(gateway);

    assert!(receiver.overlaps().is_empty(), "an object was processed twice at once: {:?}", receiver.overlaps());
    receiver.assert_first_deliveries_in_order(&sent);
}

/// SIGTERM while a delivery is in flight: the gateway stops accepting, lets
/// the attempt finish and records it, and exits 0; after a restart nothing is
/// delivered again, even once the attempt's lease is long over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_finishes_the_delivery_in_flight_then_exits() {
    let receiver = receiver(Arc::new(|_, _| (200, Duration::from_millis(800)))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = crash_config(dir.path(), &receiver);
    let http = reqwest::Client::new();
    let gateway = Gateway::start(&config).healthy(&http).await;
    let body = json!({"id": "term-1", "object": "o"}).to_string();
    let (status, answer) = post_with(&http, &format!("{}/in/plain", gateway.base), &[], body.into_bytes()).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.started() == 0 {
        assert!(Instant::now() < deadline, "the delivery never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(receiver.received().is_empty(), "the delivery is still in the app's hands");
    let claimed_by = Instant::now();
    let code = tokio::task::spawn_blocking(move || gateway.terminate()).await.unwrap();
    assert_eq!(code, Some(0), "a graceful stop exits 0");
    let received = receiver.received();
    assert_eq!(received.len(), 1, "the attempt in flight was finished, not cut off");
    assert_eq!(received[0].webhook_id(), answer["id"].as_str().unwrap());

    let gateway = Gateway::start(&config).healthy(&http).await;
    let event = admin_get(&http, &gateway.base, &format!("/api/events/{}", answer["id"].as_str().unwrap())).await;
    assert_eq!(event["state"], "delivered", "the outcome was recorded before exit");
    // Had the outcome been lost, the event would come back when its lease ends: wait past that.
    tokio::time::sleep((claimed_by + LEASE + Duration::from_millis(500)).saturating_duration_since(Instant::now()))
        .await;
    assert_eq!(receiver.received().len(), 1, "nothing is delivered again, even after the lease");
}

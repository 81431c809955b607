//! Many instances on one PostgreSQL: three `hookgate serve` processes, senders
//! hitting random instances, one receiver checking every guarantee. Needs
//! HOOKGATE_TEST_POSTGRES_URL (`.ci/run` sets it).

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::support::*;

fn cluster_config(dir: &Path, receiver: &Receiver, postgres_url: &str, timeout: &str) -> std::path::PathBuf {
    let text = config_text(&receiver.url(), &dir.join("unused.db"), "")
        .replace(&format!("sqlite://{}", dir.join("unused.db").display()), postgres_url)
        .replace(r#"timeout = "5s""#, &format!("timeout = \"{timeout}\""));
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn pick(gateways: &[Gateway], n: usize) -> &str {
    // Deterministic spread over the instances: every instance gets every kind of traffic.
    &gateways[(n * 7 + 3) % gateways.len()].base
}

/// Every sender scenario at once, across three instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_instances_keep_every_guarantee() {
    let Some(url) = postgres_schema_url().await else { return };
    let receiver = receiver(Arc::new(|headers, body| {
        let first = headers.get("hookgate-attempt") == Some(b"1".as_slice());
        let fail = first && body.windows(9).any(|w| w == b"fail-once");
        // Thin events make the app fetch the object: slower, so bursts overlap deliveries.
        let thin = headers.get("hookgate-source") == Some(b"acuity".as_slice());
        (if fail { 500 } else { 200 }, Duration::from_millis(if thin { 250 } else { 60 }))
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let config = cluster_config(dir.path(), &receiver, &url, "5s");
    let http = reqwest::Client::new();
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(Gateway::start(&config).healthy(&http).await);
    }
    let gateways = Arc::new(gateways);

    // (a) Stripe duplicates: each event's copies fired at once at different instances.
    let duplicates = {
        let gateways = gateways.clone();
        tokio::spawn(async move {
            let mut answers = Vec::new();
            for event in 0..10 {
                let body = json!({"id": format!("evt_c{event}"), "data": {"object": {"id": format!("cus_{event}")}}})
                    .to_string();
                let barrier = Arc::new(tokio::sync::Barrier::new(3));
                let copies: Vec<_> = (0..3)
                    .map(|copy| {
                        let (url, body, barrier) =
                            (format!("{}/in/stripe", pick(&gateways, event + copy)), body.clone(), barrier.clone());
                        tokio::spawn(async move {
                            let client = reqwest::Client::new();
                            let headers = stripe_headers(body.as_bytes());
                            barrier.wait().await;
                            post_with(&client, &url, &headers, body.into_bytes()).await
                        })
                    })
                    .collect();
                for copy in copies {
                    answers.push(copy.await.unwrap());
                }
            }
            answers
        })
    };
    // (b) Thin Acuity bursts to random instances: the last ack per appointment.
    let bursts = {
        let gateways = gateways.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut last_ack = HashMap::new();
            let mut sent = 0;
            for burst in 0..3 {
                for n in 0..15 {
                    let appointment = n / 3; // three back to back per appointment
                    let body = format!("action=appointment.changed&id={appointment}&b={burst}-{n}");
                    let url = format!("{}/in/acuity", pick(&gateways, n + burst));
                    let (status, answer) =
                        post_with(&client, &url, &acuity_headers(body.as_bytes()), body.into_bytes()).await;
                    assert_eq!(status, 200);
                    sent += 1;
                    last_ack.insert(appointment.to_string(), answer["id"].as_str().unwrap().to_owned());
                }
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            (last_ack, sent)
        })
    };
    // (c) Ordered sequences, each event after the previous ack, some failing first.
    let ordered = {
        let gateways = gateways.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut sent: HashMap<String, Vec<String>> = HashMap::new();
            for n in 0..5 {
                for object in 0..3 {
                    let marker = if n == 1 { "fail-once" } else { "ok" };
                    let body =
                        json!({"id": format!("ord-{object}-{n}"), "object": format!("order_{object}"), "m": marker})
                            .to_string();
                    let url = format!("{}/in/plain", pick(&gateways, n * 3 + object));
                    let (status, answer) = post_with(&client, &url, &[], body.into_bytes()).await;
                    assert_eq!(status, 200);
                    sent.entry(format!("order_{object}")).or_default().push(answer["id"].as_str().unwrap().to_owned());
                }
            }
            sent
        })
    };
    let duplicate_answers = duplicates.await.unwrap();
    let (last_ack, burst_sends) = bursts.await.unwrap();
    let ordered_sent = ordered.await.unwrap();
    let stats = wait_drained(&http, &gateways[0].base, Duration::from_secs(60)).await;

    // Dedupe across instances: one accepted per event, every copy names it.
    let mut per_event: HashMap<String, Vec<String>> = HashMap::new();
    for (status, answer) in &duplicate_answers {
        assert_eq!(*status, 200);
        per_event
            .entry(answer["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(answer["status"].as_str().unwrap().to_owned());
    }
    assert_eq!(per_event.len(), 10, "each event has one id across instances");
    for statuses in per_event.values() {
        assert_eq!(statuses.iter().filter(|s| *s == "accepted").count(), 1, "{statuses:?}");
    }
    // Exactly one successful delivery per stored, non-superseded event.
    let delivered = receiver.delivered();
    let mut count: HashMap<&str, usize> = HashMap::new();
    for r in &delivered {
        *count.entry(r.webhook_id()).or_default() += 1;
    }
    assert!(count.values().all(|n| *n == 1), "an event was delivered twice");
    for id in per_event.keys() {
        assert_eq!(count.get(id.as_str()), Some(&1), "stripe event {id} delivered once");
    }
    // Never two deliveries of one object at once, across instances.
    assert!(receiver.overlaps().is_empty(), "overlap: {:?}", receiver.overlaps());
    // Order kept, retries included.
    for (object, ids) in &ordered_sent {
        let got: Vec<String> =
            delivered.iter().filter(|r| r.order_key() == object).map(|r| r.webhook_id().to_owned()).collect();
        assert_eq!(&got, ids, "{object} in order");
    }
    assert!(receiver.received().iter().any(|r| r.status == 500), "some first attempts failed");
    // No lost update: each appointment's last event is never superseded, so
    // it is itself delivered, necessarily after it was stored.
    for (appointment, last) in &last_ack {
        assert_eq!(count.get(last.as_str()), Some(&1), "appointment {appointment}: its last event was not delivered");
    }
    let acuity_delivered = delivered.iter().filter(|r| r.header("hookgate-source") == "acuity").count();
    assert!(acuity_delivered < burst_sends, "{acuity_delivered} deliveries for {burst_sends} thin sends: {stats:?}");
    assert_eq!(stats.count("acuity", State::Superseded) as usize + acuity_delivered, burst_sends);
}

/// SIGKILL one of three instances mid-delivery: its leased events are
/// delivered by the others once the leases end, in order, never overlapping.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_one_of_three_hands_its_leases_to_the_others() {
    let Some(url) = postgres_schema_url().await else { return };
    let receiver = receiver(Arc::new(|_, _| (200, Duration::from_millis(300)))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = cluster_config(dir.path(), &receiver, &url, "1s");
    let http = reqwest::Client::new();
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(Gateway::start(&config).healthy(&http).await);
    }
    let mut sent: HashMap<String, Vec<String>> = HashMap::new();
    for n in 0..5 {
        for object in 0..6 {
            let body = json!({"id": format!("k-{object}-{n}"), "object": format!("obj{object}")}).to_string();
            let url = format!("{}/in/plain", pick(&gateways, n + object));
            let (status, answer) = post_with(&http, &url, &[], body.into_bytes()).await;
            assert_eq!(status, 200);
            sent.entry(format!("obj{object}")).or_default().push(answer["id"].as_str().unwrap().to_owned());
        }
    }
    receiver.wait_for(Duration::from_secs(10), "first deliveries", |r| r.len() >= 6).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let victim = gateways.remove(1);
    victim.kill();
    let survivors = gateways;
    wait_drained(&http, &survivors[0].base, Duration::from_secs(60)).await;
    let seen: HashSet<String> = receiver.delivered().iter().map(|r| r.webhook_id().to_owned()).collect();
    for id in sent.values().flatten() {
        assert!(seen.contains(id), "{id} was never delivered");
    }
    assert!(receiver.overlaps().is_empty(), "overlap: {:?}", receiver.overlaps());
    receiver.assert_first_deliveries_in_order(&sent);
}

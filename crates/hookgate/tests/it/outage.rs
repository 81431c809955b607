//! PostgreSQL goes away during ingest and comes back: 503s while it is down
//! (the sender retries), `/readyz` fails, nothing acknowledged is lost, and
//! delivery resumes by itself. Runs on a throwaway cluster of its own
//! (initdb), so restarting it disturbs no other test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hookgate::Server;
use hookgate::config::{Config, Env};
use serde_json::json;

use crate::support::*;
use crate::throwaway::Throwaway;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_postgres_restart_during_ingest_loses_nothing_acknowledged() {
    if std::env::var("HOOKGATE_TEST_POSTGRES_URL").is_err() {
        hookgate_store::conformance::skip("HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    }
    let Some(cluster) = Throwaway::create() else {
        panic!("cannot create a throwaway PostgreSQL cluster (needs root, runuser and initdb)");
    };
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&receiver.url(), &dir.path().join("unused.db"), "")
        .replace(&format!("sqlite://{}", dir.path().join("unused.db").display()), &cluster.url());
    let config = Config::from_toml(&text, &Env::default()).unwrap();
    let server = Server::start(tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(), config).await.unwrap();
    let base = format!("http://{}", server.addr());
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();

    let down = Arc::new(AtomicBool::new(false));
    let sender = {
        let (http, base, down) = (http.clone(), base.clone(), down.clone());
        tokio::spawn(async move {
            let mut accepted = Vec::new();
            let (mut unavailable, mut during_outage) = (0, 0);
            let mut n = 0;
            while accepted.len() < 120 {
                let body = json!({"id": format!("o-{n}"), "object": format!("obj{}", n % 5)}).to_string();
                let (status, answer) = post_with(&http, &format!("{base}/in/plain"), &[], body.into_bytes()).await;
                match status {
                    200 => {
                        accepted.push(answer["id"].as_str().unwrap().to_owned());
                        n += 1;
                    }
                    503 => {
                        // The sender retries the same event, as real senders do.
                        unavailable += 1;
                        during_outage += down.load(Ordering::SeqCst) as usize;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    other => panic!("unexpected {other}: {answer}"),
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            (accepted, unavailable, during_outage)
        })
    };
    receiver.wait_for(Duration::from_secs(20), "deliveries before the outage", |r| r.len() >= 20).await;
    down.store(true, Ordering::SeqCst);
    cluster.stop_immediately();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http.get(format!("{base}/readyz")).send().await.unwrap().status();
        if ready == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/readyz still {ready} with the database down");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(cluster.start(), "the cluster restarts");
    down.store(false, Ordering::SeqCst);

    let (accepted, unavailable, during_outage) = sender.await.unwrap();
    assert!(unavailable > 0 && during_outage > 0, "the outage was answered with 503s");
    receiver
        .wait_for(Duration::from_secs(30), "every acknowledged event", |r| {
            let seen: std::collections::HashSet<&str> = r.iter().map(|r| r.webhook_id()).collect();
            accepted.iter().all(|id| seen.contains(id.as_str()))
        })
        .await;
    assert_eq!(http.get(format!("{base}/readyz")).send().await.unwrap().status(), 200);
    assert!(receiver.overlaps().is_empty(), "overlap: {:?}", receiver.overlaps());
    server.stop().await.unwrap();
}

//! `kill -9` under load, again and again: nothing acknowledged is lost, no
//! order key is delivered twice at once, first deliveries stay in order, and
//! the only repeated deliveries are those a kill cut off.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checker::check;
use crate::load::{self, report, settle};
use crate::support::*;

/// Destination timeout 1 s: a lease is 6 s, so a run's redeliveries come quickly.
fn kill_config(dir: &Path, receiver: &Receiver, storage: Option<&str>) -> std::path::PathBuf {
    let db = dir.join("hookgate.db");
    let mut text = config_text(&receiver.url(), &db, "").replace(r#"timeout = "5s""#, r#"timeout = "1s""#);
    if let Some(url) = storage {
        text = text.replace(&format!("sqlite://{}", db.display()), url);
    }
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn pause() -> Duration {
    Duration::from_millis(rand::random_range(150..700))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_twenty_kills_in_a_row() {
    let Some(_one) = crate::heavy("sqlite_twenty_kills_in_a_row").await else { return };
    let receiver = receiver(Arc::new(|_, _| (200, Duration::from_millis(rand::random_range(5..40))))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kill_config(dir.path(), &receiver, None);
    let http = reqwest::Client::new();
    let port = free_port();
    let mut gateway = Gateway::start_on(&config, port).healthy(&http).await;
    let load = load::start(vec![gateway.base.clone()], 8, 200);
    let mut faults = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(pause()).await;
        let at = Instant::now();
        gateway.kill();
        faults.push((at, at));
        gateway = Gateway::start_on(&config, port).healthy(&http).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = load.stop().await;
    let history = settle(&receiver, sent, faults, Duration::from_secs(30)).await;
    report("sqlite: kill -9 twenty times", 20, &history);
    let findings = check(&history);
    assert!(findings.clean(), "{findings:#?}\n{}", load::explain(&history, &findings.duplicated));
    assert!(history.sent.iter().filter(|s| s.acked.is_some()).count() > 100, "the load ran");
    drop(gateway);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_three_instances_killed_one_at_a_time_then_all() {
    let Some(_one) = crate::heavy("postgres_three_instances_killed_one_at_a_time_then_all").await else { return };
    let Some(url) = postgres_schema_url().await else { return };
    let receiver = receiver(Arc::new(|_, _| (200, Duration::from_millis(rand::random_range(5..40))))).await;
    let dir = tempfile::tempdir().unwrap();
    let config = kill_config(dir.path(), &receiver, Some(&url));
    let http = reqwest::Client::new();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut gateways = Vec::new();
    for port in &ports {
        gateways.push(Some(Gateway::start_on(&config, *port).healthy(&http).await));
    }
    let bases: Vec<String> = ports.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let load = load::start(bases, 8, 200);
    let mut faults = Vec::new();
    for _ in 0..20 {
        tokio::time::sleep(pause()).await;
        let victim = rand::random_range(0..3);
        let at = Instant::now();
        gateways[victim].take().unwrap().kill();
        faults.push((at, at));
        gateways[victim] = Some(Gateway::start_on(&config, ports[victim]).healthy(&http).await);
    }
    // All three at once.
    tokio::time::sleep(pause()).await;
    let at = Instant::now();
    for gateway in &mut gateways {
        gateway.take().unwrap().kill();
    }
    faults.push((at, at));
    for (n, port) in ports.iter().enumerate() {
        gateways[n] = Some(Gateway::start_on(&config, *port).healthy(&http).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = load.stop().await;
    let history = settle(&receiver, sent, faults, Duration::from_secs(30)).await;
    report("postgres, 3 instances: one killed twenty times, then all three", 21, &history);
    let findings = check(&history);
    assert!(findings.clean(), "{findings:#?}\n{}", load::explain(&history, &findings.duplicated));
    assert!(history.sent.iter().filter(|s| s.acked.is_some()).count() > 100, "the load ran");
}

//! The database goes away under load, on a throwaway cluster of the test's
//! own: restarted as after a crash (`-m immediate`), then frozen (SIGSTOP)
//! for longer than a lease. Both are answered with 503s, readiness fails, and
//! then everything resumes by itself: nothing acknowledged is lost, and no
//! lease is taken while its holder may still be delivering (no overlap).

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checker::check;
use crate::load::{self, report, settle};
use crate::support::*;
use crate::throwaway::Throwaway;

async fn ready(http: &reqwest::Client, base: &str) -> Option<u16> {
    http.get(format!("{base}/readyz")).send().await.ok().map(|r| r.status().as_u16())
}

async fn until_ready_is(http: &reqwest::Client, bases: &[String], want: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    for base in bases {
        while ready(http, base).await != Some(want) {
            assert!(Instant::now() < deadline, "{base}/readyz never answered {want}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_restarted_then_frozen_under_load() {
    let Some(_one) = crate::heavy("postgres_restarted_then_frozen_under_load").await else { return };
    if std::env::var("HOOKGATE_TEST_POSTGRES_URL").is_err() {
        hookgate_store::conformance::skip("HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    }
    let cluster = Throwaway::create().expect("a throwaway PostgreSQL cluster (needs root, runuser and initdb)");
    let receiver = receiver(Arc::new(|_, _| (200, Duration::from_millis(rand::random_range(5..40))))).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unused.db");
    let text = config_text(&receiver.url(), &db, "")
        .replace(&format!("sqlite://{}", db.display()), &cluster.url())
        .replace(r#"timeout = "5s""#, r#"timeout = "1s""#);
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, text).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let gateways = [Gateway::start(&config).healthy(&http).await, Gateway::start(&config).healthy(&http).await];
    let bases: Vec<String> = gateways.iter().map(|g| g.base.clone()).collect();
    let load = load::start(bases.clone(), 8, 200);
    tokio::time::sleep(Duration::from_secs(1)).await;

    // A crash of the database: every connection cut, back 1.5 s later.
    let down = Instant::now();
    cluster.stop_immediately();
    until_ready_is(&http, &bases, 503, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(cluster.start(), "the cluster restarts");
    let up = Instant::now();
    until_ready_is(&http, &bases, 200, Duration::from_secs(30)).await;
    assert!(load.refused_between(down, up) > 0, "the restart was answered with 503s");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Frozen for longer than a lease (6 s): nothing answers, connections stay open.
    let frozen = Instant::now();
    cluster.pause();
    until_ready_is(&http, &bases, 503, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.resume();
    let thawed = Instant::now();
    assert!(load.refused_between(frozen, thawed) > 0, "the freeze was answered with 503s");
    until_ready_is(&http, &bases, 200, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let sent = load.stop().await;
    let history = settle(&receiver, sent, vec![(down, up), (frozen, thawed)], Duration::from_secs(30)).await;
    report("postgres: restarted (-m immediate), then frozen 8 s (SIGSTOP)", 2, &history);
    let findings = check(&history);
    assert!(findings.clean(), "{findings:#?}\n{}", load::explain(&history, &findings.duplicated));
    drop(gateways);
}

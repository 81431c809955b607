//! A stalled database must turn into quick 503s, not into memory: with
//! PostgreSQL frozen (SIGSTOP on a throwaway cluster), a thousand concurrent
//! 1 MiB posts are answered, hookgate's memory stays within its byte budget,
//! readiness fails, and ingest resumes by itself when the database does.

use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::support::*;
use crate::throwaway::Throwaway;

const BUDGET_MIB: u64 = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_database_sheds_load_within_the_memory_budget() {
    if std::env::var("HOOKGATE_TEST_POSTGRES_URL").is_err() {
        hookgate_store::conformance::skip("HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    }
    let cluster = Throwaway::create().expect("a throwaway PostgreSQL cluster (needs root, runuser and initdb)");
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("unused.db");
    let text = config_text(&receiver.url(), &db, "")
        .replace(&format!("sqlite://{}", db.display()), &cluster.url())
        .replace("max_body = \"64KiB\"", &format!("max_body = \"2MiB\"\nmax_inflight_bytes = \"{BUDGET_MIB}MiB\""));
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, text).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let gateway = Gateway::start(&config).healthy(&http).await;
    let base = gateway.base.clone();
    let post = |body: Bytes| {
        let (http, url) = (http.clone(), format!("{base}/in/plain"));
        async move { http.post(url).body(body).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(post(Bytes::from_static(br#"{"id":"before","object":"o"}"#)).await.unwrap(), 200);

    cluster.pause();
    // One MiB of JSON, shared by every request: the test holds it once.
    let big = Bytes::from(format!(r#"{{"object":"o","pad":"{}"}}"#, "x".repeat((1 << 20) - 30)));
    let started = Instant::now();
    let posts: Vec<_> = (0..1_000).map(|_| tokio::spawn(post(big.clone()))).collect();
    // The requests beyond the budget are answered at once; those inside it wait for the database.
    let mut waiting = Vec::new();
    let mut shed = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    for mut task in posts {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(answer) => match answer.unwrap() {
                Ok(503) => shed += 1,
                other => panic!("with the database frozen, only 503s come back: {other:?}"),
            },
            Err(_) => waiting.push(task),
        }
    }
    eprintln!("{shed} answered 503 in {:?}; {} waiting for the database", started.elapsed(), waiting.len());
    assert!(shed >= 900, "most are shed: {shed}");
    let peak = gateway.peak_rss_bytes();
    eprintln!("hookgate's peak RSS: {} MiB (budget {BUDGET_MIB} MiB)", peak >> 20);
    assert!(peak < (BUDGET_MIB + 100) << 20, "peak RSS {} MiB with a {BUDGET_MIB} MiB budget", peak >> 20);
    assert_eq!(
        http.get(format!("{}/readyz", gateway.base)).send().await.unwrap().status(),
        503,
        "not ready while frozen"
    );

    cluster.resume();
    // Those let in wait for the database: stored once it is back (200), or told to retry
    // when it did not answer in time (503). None is left hanging.
    for task in waiting {
        let status = tokio::time::timeout(Duration::from_secs(30), task).await.expect("answered").unwrap().unwrap();
        assert!(status == 200 || status == 503, "{status}");
    }
    assert_eq!(post(Bytes::from_static(br#"{"id":"after","object":"o"}"#)).await.unwrap(), 200, "ingest resumes");
    let ready = http.get(format!("{}/readyz", gateway.base)).send().await.unwrap().status();
    assert_eq!(ready, 200);
}

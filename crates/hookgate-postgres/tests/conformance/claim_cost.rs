//! A claim walks queue heads only: with 5,000 deliveries blocked behind a
//! head in flight it reads as many buffers as with none (before the head
//! flag, each claim stepped over the whole blocked backlog: 6 events/s
//! drained on 4 order keys); nor do 5,000 due deliveries to another
//! destination cost it anything.

use std::sync::Arc;

use hookgate_postgres::{CLAIM, INDEXED_PLANS};
use hookgate_store::Store;
use hookgate_store::conformance::{DEST, T0, event, routed};

use super::*;

/// Shared buffers (hit + read) the claim touches, from its plan's top
/// node, run on a connection set up as the store's write connections are,
/// and rolled back.
async fn buffers_of_a_claim(url: &str) -> u64 {
    let mut config: tokio_postgres::Config = url.parse().unwrap();
    let given = config.get_options().unwrap_or_default().to_owned();
    config.options(format!("{given} {INDEXED_PLANS}"));
    let (client, connection) = config.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client.batch_execute("BEGIN").await.unwrap();
    let explain = format!("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {CLAIM}");
    let lines: Vec<String> = client
        .query(&explain, &[&DEST, &T0, &10i64, &(T0 + 60_000)])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    client.batch_execute("ROLLBACK").await.unwrap();
    assert!(lines[0].contains("rows=0"), "nothing is due: the only head is in flight\n{}", lines.join("\n"));
    let buffers = lines.iter().find(|l| l.trim_start().starts_with("Buffers: shared")).expect("a Buffers line");
    buffers
        .split_whitespace()
        .filter_map(|part| part.strip_prefix("hit=").or_else(|| part.strip_prefix("read=")))
        .map(|n| n.trim_end_matches(',').parse::<u64>().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claim_costs_the_same_however_deep_the_blocked_backlog() {
    let Some(url) = fresh_schema_url().await else { return };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&url, 8).await.unwrap());
    let keyed = || {
        let mut new = event("src", T0);
        new.order_key = Some("tenant-1".into());
        new
    };
    store.ingest(routed(keyed())).await.unwrap();
    assert_eq!(store.claim(DEST, T0, 10, 60_000).await.unwrap().len(), 1);
    let shallow = buffers_of_a_claim(&url).await;
    let writers: Vec<_> = (0..20)
        .map(|_| {
            let (store, keyed) = (store.clone(), keyed);
            tokio::spawn(async move {
                for _ in 0..250 {
                    store.ingest(routed(keyed())).await.unwrap();
                    let mut elsewhere = event("src", T0);
                    elsewhere.order_key = Some(hookgate_core::EventId::generate().as_str().into());
                    store.ingest(hookgate_store::conformance::to("another", elsewhere)).await.unwrap();
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.unwrap();
    }
    let deep = buffers_of_a_claim(&url).await;
    eprintln!("claim: {shallow} buffers with no blocked deliveries, {deep} with 5,000 (and 5,000 due elsewhere)");
    assert!(deep <= shallow + 2, "a claim read {deep} buffers with 5,000 blocked events, {shallow} with none");
}

//! An instance whose clock is wrong must not judge leases by it.

use hookgate_store::conformance::{event, routed};
use hookgate_store::{Ingested, Store};

use super::*;

fn ten_seconds_ahead() -> i64 {
    hookgate_postgres::system_ms() + 10_000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_running_ahead_takes_no_live_lease() {
    let Some(url) = fresh_schema_url().await else { return };
    let honest = PostgresStore::connect(&url, 4).await.unwrap();
    let ahead = PostgresStore::connect_with_clock(&url, 4, ten_seconds_ahead).await.unwrap();

    let mut new = event("src", honest.now_ms());
    new.order_key = Some("K".into());
    let Ingested::Accepted { id, .. } = honest.ingest(routed(new)).await.unwrap() else { panic!() };
    let claims = honest.claim("app", honest.now_ms(), 10, 5_000).await.unwrap();
    assert_eq!(claims.len(), 1);
    // By its own clock the 5 s lease ended 5 s ago; by the database's it is live.
    let stolen = ahead.claim("app", ahead.now_ms(), 10, 5_000).await.unwrap();
    assert!(stolen.is_empty(), "an instance 10 s ahead took the live lease of {id}");
    let skew = (ahead.now_ms() - honest.now_ms()).abs();
    assert!(skew < 1_000, "both read the database's clock (apart by {skew} ms)");
}

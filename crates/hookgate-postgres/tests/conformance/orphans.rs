//! A dedupe key outlives its event (retention deletes events, keys keep
//! their window): a copy arriving then is a duplicate of an event that is
//! gone, and must not leave a duplicate count for it that nothing deletes.

use hookgate_core::State;
use hookgate_store::conformance::{DEST, T0, event, routed};
use hookgate_store::{Ingested, Store, Verdict};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_deleted_event_leaves_no_duplicate_count() {
    let Some(url) = fresh_schema_url().await else { return };
    let store = PostgresStore::connect(&url, 4).await.unwrap();
    let mut original = event("src", T0);
    original.dedupe_key = Some("evt_1".into());
    assert!(matches!(store.ingest(routed(original.clone())).await.unwrap(), Ingested::Accepted { .. }));
    let claim = store.claim(DEST, T0, 1, 60_000).await.unwrap().pop().unwrap();
    let attempt = hookgate_store::conformance::ok_attempt(claim.attempt, T0);
    assert!(store.finish(&claim.delivery, attempt, Verdict::Delivered, T0).await.unwrap());
    assert_eq!(store.purge_finished(State::Delivered, T0 + 1, 10).await.unwrap(), 1);
    let copy = hookgate_store::NewEvent { id: hookgate_core::EventId::generate(), ..original };
    assert!(matches!(store.ingest(routed(copy)).await.unwrap(), Ingested::Duplicate { .. }), "the key is remembered");
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let left: i64 = client.query_one("SELECT COUNT(*) FROM event_duplicates", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "a duplicate count for an event that is gone");
}

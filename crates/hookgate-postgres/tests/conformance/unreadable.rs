//! A row hookgate cannot read (an id or headers it never writes) is held
//! with its order key's queue; it does not fail every claim of the
//! destination (a first seeding by hand stopped all deliveries that way).

use hookgate_store::conformance::{DEST, T0, event, routed};
use hookgate_store::{Ingested, NewEvent, Store};

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_row_holds_its_queue_and_no_other() {
    let Some(url) = fresh_schema_url().await else { return };
    let store = PostgresStore::connect(&url, 4).await.unwrap();
    let mut ids = Vec::new();
    for key in ["bad-id", "bad-headers", "good", "bad-id"] {
        let new = NewEvent { order_key: Some(key.into()), ..event("src", T0) };
        let Ingested::Accepted { id, .. } = store.ingest(routed(new)).await.unwrap() else { panic!() };
        ids.push(id);
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let by_hand =
        "UPDATE deliveries SET id = 'dlv_edited_by_hand' WHERE event_rid = (SELECT rid FROM events WHERE id = $1)";
    client.execute(by_hand, &[&ids[0].as_str()]).await.unwrap();
    client.execute("UPDATE events SET headers = '\\xff' WHERE id = $1", &[&ids[1].as_str()]).await.unwrap();
    let claimed = store.claim(DEST, T0, 10, 60_000).await.unwrap();
    assert_eq!(claimed.iter().map(|claim| &claim.id).collect::<Vec<_>>(), [&ids[2]]);
    let states: Vec<(String, String, i32)> = client
        .query(
            "SELECT e.id, d.state, d.attempts FROM deliveries d JOIN events e ON e.rid = d.event_rid ORDER BY d.seq",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1), row.get(2)))
        .collect();
    let expected = [
        (ids[0].as_str(), "delivering", 0),
        (ids[1].as_str(), "delivering", 0),
        (ids[2].as_str(), "delivering", 1),
        (ids[3].as_str(), "pending", 0),
    ]
    .map(|(id, state, attempts)| (id.to_owned(), state.to_owned(), attempts));
    assert_eq!(states, expected, "the unreadable rows are leased, not attempted; the delivery behind one waits");
    assert!(store.claim(DEST, T0 + 1, 10, 60_000).await.unwrap().is_empty(), "nothing else is due");
    let listed = store.list(&hookgate_store::ListFilter { limit: 2, ..Default::default() }).await.unwrap();
    let cursor = listed.next_cursor.expect("a second page");
    let rest = hookgate_store::ListFilter { limit: 2, cursor: Some(cursor), ..Default::default() };
    let listed: Vec<_> = listed.events.into_iter().chain(store.list(&rest).await.unwrap().events).collect();
    let listed: Vec<_> = listed.iter().map(|record| &record.id).collect();
    assert_eq!(listed, [&ids[3], &ids[2], &ids[1]], "a list leaves out the row it cannot read, and goes on");
}

/// The attempt counted for an unreadable row is given back by a second
/// statement. When that fails, the claims already committed are still
/// returned: they were leased, and dropping them left readable events in
/// `delivering` for a whole lease, then delivered as attempt 2 (with
/// `max_attempts = 2`, one real failure would have killed them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_give_back_drops_no_claim() {
    let Some(url) = fresh_schema_url().await else { return };
    let store = PostgresStore::connect(&url, 4).await.unwrap();
    let mut ids = Vec::new();
    for key in ["bad-id", "good-1", "good-2"] {
        let new = NewEvent { order_key: Some(key.into()), ..event("src", T0) };
        let Ingested::Accepted { id, .. } = store.ingest(routed(new)).await.unwrap() else { panic!() };
        ids.push(id);
    }
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let by_hand =
        "UPDATE deliveries SET id = 'dlv_edited_by_hand' WHERE event_rid = (SELECT rid FROM events WHERE id = $1)";
    client.execute(by_hand, &[&ids[0].as_str()]).await.unwrap();
    // The give-back (attempts 1 -> 0) is refused; claims (0 -> 1) are not.
    client
        .batch_execute("ALTER TABLE deliveries ADD CONSTRAINT no_give_back CHECK (attempts >= 1) NOT VALID")
        .await
        .unwrap();
    let claimed = store.claim(DEST, T0, 10, 60_000).await.expect("the claim stands though the give-back failed");
    let mut claimed: Vec<_> = claimed.iter().map(|c| (c.id.clone(), c.attempt)).collect();
    claimed.sort();
    let mut expected = vec![(ids[1].clone(), 1), (ids[2].clone(), 1)];
    expected.sort();
    assert_eq!(claimed, expected, "both readable events, each on its first attempt");
}

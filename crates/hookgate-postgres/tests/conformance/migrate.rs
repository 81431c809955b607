//! A schema made by the hookgate before routes (schema 3: events that hold
//! their own lifecycle) opens under schema 4 with nothing lost.

use hookgate_core::{EventId, State};
use hookgate_store::Store;
use hookgate_store::conformance::{T0, event};

use super::*;

/// One event as schema 3's ingest and outcomes left it, with its attempts
/// (none yet for an attempt in flight) and its dedupe key.
#[allow(clippy::too_many_arguments)]
async fn v3_event(
    c: &tokio_postgres::Client,
    seq: i64,
    destination: &str,
    order_key: Option<&str>,
    dedupe_key: &str,
    state: &str,
    attempts: i32,
    due_at: Option<i64>,
    head: bool,
) -> EventId {
    let new = event("stripe", T0 + seq);
    let headers = hookgate_store::codec::encode_headers(&new.headers);
    let body = format!("{{\"seq\":{seq}}}").into_bytes();
    c.execute(
        "INSERT INTO events (id, seq, source, destination, state, received_at, updated_at, headers, body,
                             dedupe_key, order_key, attempts, due_at, head)
         VALUES ($1, $2, 'stripe', $3, $4, $5, $5, $6, $7, $8, $9, $10, $11, $12)",
        &[
            &new.id.as_str(),
            &(seq * 1024),
            &destination,
            &state,
            &(T0 + seq),
            &headers,
            &body,
            &dedupe_key.as_bytes(),
            &order_key.map(str::as_bytes),
            &attempts,
            &due_at,
            &head,
        ],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO dedupe (source, key, event_id, expires_at) VALUES ('stripe', $1, $2, $3)",
        &[&dedupe_key.as_bytes(), &new.id.as_str(), &(T0 + 86_400_000)],
    )
    .await
    .unwrap();
    let recorded = if state == "delivering" { attempts - 1 } else { attempts };
    for attempt in 1..=recorded {
        c.execute(
            "INSERT INTO attempts (event_id, attempt, started_at, duration_ms, status) VALUES ($1, $2, $3, 5, 500)",
            &[&new.id.as_str(), &attempt, &(T0 + seq)],
        )
        .await
        .unwrap();
    }
    new.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_3_database_migrates_in_place_and_loses_nothing() {
    let Some(url) = fresh_schema_url().await else { return };
    hookgate_postgres::migrate_up_to(&url, 3).await.unwrap();
    let c = hookgate_postgres::connect_one(&url).await.unwrap();
    let ids = [
        v3_event(&c, 1, "app", None, "d1", "delivered", 1, None, false).await,
        v3_event(&c, 2, "app", None, "d2", "dead", 3, None, false).await,
        // The queue of cus_1: its head in flight (on another instance, say), two behind it.
        v3_event(&c, 3, "app", Some("cus_1"), "d3", "delivering", 2, Some(T0 + 30_000), true).await,
        v3_event(&c, 4, "app", Some("cus_1"), "d4", "pending", 0, Some(T0 + 4), false).await,
        v3_event(&c, 5, "app", Some("cus_1"), "d5", "pending", 0, Some(T0 + 5), false).await,
        v3_event(&c, 6, "crm", None, "d6", "pending", 0, Some(T0 + 6), true).await,
    ];
    c.execute("INSERT INTO event_duplicates (event_id, n) VALUES ($1, 2)", &[&ids[0].as_str()]).await.unwrap();
    c.execute("INSERT INTO paused_destinations (name) VALUES ('crm')", &[]).await.unwrap();
    // An attempt whose event retention deleted (schema 3 left those behind): dropped now.
    c.execute(
        "INSERT INTO attempts (event_id, attempt, started_at, duration_ms) VALUES ('evt_0000000000000000000000000000dead', 1, 0, 1)",
        &[],
    )
    .await
    .unwrap();

    let store = PostgresStore::connect(&url, 4).await.unwrap();
    let orphans: i64 = c.query_one("SELECT COUNT(*) FROM attempts WHERE started_at = 0", &[]).await.unwrap().get(0);
    assert_eq!(orphans, 0, "an attempt of no event is not carried over");
    assert_eq!(store.get(&ids[0]).await.unwrap().unwrap().record.duplicates, 2, "the copies counted");
    let expected = [
        (State::Delivered, 1),
        (State::Dead, 3),
        (State::Delivering, 1), // still in flight (on another instance, say): the same lease
        (State::Pending, 0),
        (State::Pending, 0),
        (State::Pending, 0),
    ];
    hookgate_store::conformance::migrated::before_routes_lost_nothing(&store, &ids, expected).await;
}

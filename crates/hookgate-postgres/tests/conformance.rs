//! The store conformance suite on PostgreSQL: each test in a schema of its
//! own. Needs HOOKGATE_TEST_POSTGRES_URL (`.ci/run` sets it and starts the
//! server); without it the tests say so and pass, so `cargo test` works on a
//! machine with Rust alone.

use hookgate_postgres::PostgresStore;

async fn fresh() -> Option<PostgresStore> {
    let Ok(url) = std::env::var("HOOKGATE_TEST_POSTGRES_URL") else {
        eprintln!("skipped: HOOKGATE_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!("hg_test_{}", uuid::Uuid::now_v7().simple());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{separator}options=-c%20search_path%3D{schema}");
    Some(
        PostgresStore::connect(&scoped, 8)
            .await
            .expect("connect store"),
    )
}

macro_rules! or_skip {
    ($store:expr) => {
        match $store {
            Some(store) => store,
            None => return,
        }
    };
}

hookgate_store::conformance_tests!(or_skip!(fresh().await));

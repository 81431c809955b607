//! The store conformance suite on PostgreSQL, one module a subject: each
//! test in a schema of its own. Needs HOOKGATE_TEST_POSTGRES_URL (`.ci/run` sets it and starts the
//! server); without it the tests say so and pass, so `cargo test` works on a
//! machine with Rust alone.

use hookgate_postgres::PostgresStore;

pub(crate) async fn fresh() -> Option<PostgresStore> {
    let url = fresh_schema_url().await?;
    Some(PostgresStore::connect(&url, 8).await.expect("connect store"))
}

/// A URL whose connections use a new, empty schema.
pub(crate) async fn fresh_schema_url() -> Option<String> {
    let Ok(url) = std::env::var("HOOKGATE_TEST_POSTGRES_URL") else {
        hookgate_store::conformance::skip("HOOKGATE_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!("hg_test_{}", uuid::Uuid::now_v7().simple());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{separator}options=-c%20search_path%3D{schema}"))
}

macro_rules! or_skip {
    ($store:expr) => {
        match $store {
            Some(store) => store,
            None => return,
        }
    };
}

// After the macro: modules see what is defined above them.
mod across_instances;
mod claim_cost;
mod clock_skew;
mod heads;
mod isolation;
mod lock_order;
mod migrate;
mod orphans;
mod suite;
mod unreadable;
mod vacuum;

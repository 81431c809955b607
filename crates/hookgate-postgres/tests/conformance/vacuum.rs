//! Every claim and outcome leaves a dead row version whose entry stays in
//! the heads index until a vacuum, and a claim's walk steps over them (see
//! migration 3). The schema asks autovacuum to come early for the queue
//! table (`deliveries`, since migration 4), unthrottled; whether it runs at all is the server's setting
//! (`autovacuum = on`).

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_table_is_vacuumed_early_and_unthrottled() {
    let Some(url) = fresh_schema_url().await else { return };
    let _store = PostgresStore::connect(&url, 1).await.unwrap();
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let options: Vec<String> = client
        .query_one("SELECT reloptions FROM pg_class WHERE oid = 'deliveries'::regclass", &[])
        .await
        .unwrap()
        .get(0);
    for expected in [
        "autovacuum_vacuum_scale_factor=0.01",
        "autovacuum_vacuum_threshold=1000",
        "autovacuum_vacuum_cost_delay=0",
        "autovacuum_analyze_scale_factor=0.02",
    ] {
        assert!(options.iter().any(|o| o == expected), "{expected} missing from {options:?}");
    }
}

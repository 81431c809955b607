//! Under writes that never pause, the WAL must still start over from its
//! beginning now and then. A checkpointer that only ever runs beside the
//! writer (PASSIVE) never reaches the WAL's end while commits keep coming, so
//! the WAL grew by the size of everything written: gigabytes in a minute of
//! load, on the disk and in every commit's cost (new file pages each time).

use std::sync::Arc;

use bytes::Bytes;
use hookgate_sqlite::SqliteStore;
use hookgate_store::Store;
use hookgate_store::conformance::{T0, event, routed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_wal_stays_bounded_under_writes_that_never_pause() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let wal = dir.path().join("hookgate.db-wal");
    let store = Arc::new(SqliteStore::open(&path, T0).unwrap());
    let body = Bytes::from(vec![b'x'; 8 * 1024]);

    // 32 writers without a pause between them: ~100 MiB into the WAL in all.
    let (mut largest, mut tasks) = (0u64, tokio::task::JoinSet::new());
    for writer in 0..32 {
        let (store, body) = (store.clone(), body.clone());
        tasks.spawn(async move {
            for n in 0..400 {
                let mut e = event("src", T0);
                e.body = body.clone();
                e.order_key = Some(format!("{writer}-{}", n % 7).into());
                store.ingest(routed(e)).await.unwrap();
            }
        });
    }
    while !tasks.is_empty() {
        tokio::select! {
            done = tasks.join_next() => { done.unwrap().unwrap(); }
            _ = tokio::time::sleep(std::time::Duration::from_millis(20)) => {}
        }
        largest = largest.max(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0));
    }
    let written = 32 * 400 * body.len() as u64;
    eprintln!("wrote {} MiB of bodies; the WAL was {} MiB at most", written >> 20, largest >> 20);
    // The writer finishes a checkpoint past 16 MiB; the WAL file keeps up to 64 MiB of pages.
    assert!(largest < written / 2, "the WAL grew to {largest} bytes for {written} bytes written");
    assert!(largest <= 72 << 20, "the WAL grew to {largest} bytes");
}

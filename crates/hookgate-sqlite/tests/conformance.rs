//! The store conformance suite on the embedded backend: one fresh file per test.

use hookgate_sqlite::SqliteStore;

fn fresh() -> SqliteStore {
    open(hookgate_sqlite::Options::default())
}

/// A store whose key file is kept up every millisecond in slices of `n`
/// (small: listings by key read the key file and the store together, mixed
/// differently from one run to the next; each must answer the same).
fn filing_every_ms(n: u64) -> SqliteStore {
    let filing = hookgate_sqlite::Filing { every: Some(std::time::Duration::from_millis(1)), slice: n };
    open(hookgate_sqlite::Options { filing, ..Default::default() })
}

/// A store whose key file is kept up only when the test says.
fn filing_by_hand() -> SqliteStore {
    let filing = hookgate_sqlite::Filing { every: None, slice: 2 };
    open(hookgate_sqlite::Options { filing, ..Default::default() })
}

fn open(options: hookgate_sqlite::Options) -> SqliteStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hookgate.db");
    // The directory must outlive the store; leaking it keeps the test simple.
    std::mem::forget(dir);
    SqliteStore::open_with(path, hookgate_store::conformance::T0, options).expect("open")
}

hookgate_store::conformance_tests!(fresh());

#[test]
fn a_second_process_cannot_open_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let _first = SqliteStore::open(&path, 0).unwrap();
    let second = SqliteStore::open(&path, 0).err().expect("locked");
    assert!(second.to_string().contains("in use by another hookgate process"), "{second}");
}

#[tokio::test]
async fn reopening_after_a_crash_redelivers_once_the_lease_ends() {
    use hookgate_store::{
        Store,
        conformance::{T0, event, routed},
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let store = SqliteStore::open(&path, T0).unwrap();
    let mut new = event("src", T0);
    new.order_key = Some("K".into());
    let id = new.id.clone();
    store.ingest(routed(new)).await.unwrap();
    assert_eq!(store.claim("app", T0, 10, 5_000).await.unwrap().len(), 1);
    drop(store); // the process "dies" with the event in flight

    let store = SqliteStore::open(&path, T0 + 1_000).unwrap();
    let detail = store.get(&id).await.unwrap().unwrap();
    assert_eq!(detail.record.state, hookgate_core::EventState::Pending);
    let attempts = &detail.deliveries[0].attempts;
    assert_eq!(attempts.len(), 1, "the cut-off attempt is on record");
    assert!(attempts[0].error.as_deref().unwrap().starts_with("interrupted"));
    assert!(store.claim("app", T0 + 4_999, 10, 5_000).await.unwrap().is_empty(), "not before the lease ends");
    let again = store.claim("app", T0 + 5_000, 10, 5_000).await.unwrap();
    assert_eq!((again[0].id.clone(), again[0].attempt), (id, 2));
}

/// The same random operations on the reference model (`MemStore`) and on
/// SQLite give the same answers, every one.
mod differential {
    use hookgate_store::MemStore;
    use hookgate_store::conformance::differential::{ops, transcript};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]
        #[test]
        fn sqlite_answers_as_the_model_does(ops in ops(60)) {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let model = runtime.block_on(transcript(&MemStore::on_system_clock(), &ops));
            let sqlite = runtime.block_on(transcript(&super::fresh(), &ops));
            prop_assert_eq!(&model, &sqlite);
            // The key file kept up as the operations run: listings by key from all three arms at once.
            let filing = runtime.block_on(transcript(&super::filing_every_ms(2), &ops));
            prop_assert_eq!(model, filing);
        }
    }
}

/// A listing by order key reads the key's deliveries from three arms (owed,
/// in the key file, finished since the key file's last round): each
/// delivery exactly once, in its state, whichever arms hold them — a
/// replayed filed delivery is owed again and listed once, not twice; one
/// finished after a round is listed before the next; one deleted by
/// retention is not listed though the key file still has its entry.
#[tokio::test]
async fn a_listing_by_key_reads_filed_and_unfiled_deliveries_once_each() {
    use hookgate_core::State;
    use hookgate_store::conformance::{T0, event, ok_attempt, routed};
    use hookgate_store::{DeliveryFilter, ListFilter, Store, Verdict};

    let store = filing_by_hand();
    let mut ids = Vec::new();
    for n in 0..6 {
        let mut new = event("src", T0 + n);
        new.order_key = Some("K".into());
        ids.push(new.id.clone());
        store.ingest(routed(new)).await.unwrap();
    }
    // Five delivered, one at a time (a key's queue): the first four are in
    // the key file, the fifth is not yet.
    for n in 0..5 {
        let claim = store.claim("app", T0 + 10 + n, 10, 60_000).await.unwrap();
        assert_eq!(claim.len(), 1, "one head at a time");
        let done = store.finish(&claim[0].delivery, ok_attempt(1, T0), Verdict::Delivered, T0 + 10 + n).await;
        assert!(done.unwrap());
        if n == 3 {
            assert_eq!(store.file_keys().await.unwrap(), 4);
        }
    }
    store.replay(&ids[0], T0 + 20).await.unwrap();
    // The second event's delivery deleted by retention (the oldest delivered):
    // the key file keeps its entry, which must match nothing.
    assert_eq!(store.purge_finished(State::Delivered, T0 + 12, 1).await.unwrap(), 1);
    let by_key = DeliveryFilter { order_key: Some("K".into()), limit: 100, ..Default::default() };
    let listed = store.list_deliveries(&by_key).await.unwrap().deliveries;
    let states: Vec<(String, State)> = listed.iter().map(|d| (d.event.to_string(), d.state)).collect();
    let expected = [
        (ids[5].to_string(), State::Pending),
        (ids[4].to_string(), State::Delivered),
        (ids[3].to_string(), State::Delivered),
        (ids[2].to_string(), State::Delivered),
        (ids[0].to_string(), State::Pending),
    ];
    assert_eq!(states, expected, "newest event first, each delivery once");
    let by_key_events = ListFilter { order_key: Some("K".into()), limit: 100, ..Default::default() };
    let events = store.list(&by_key_events).await.unwrap().events;
    let events: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    let expected_events: Vec<String> = expected.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(events, expected_events);
    // A page at a time gives the same, across the arms, before and after the next round.
    for round in 0..2 {
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page = store.list_deliveries(&DeliveryFilter { limit: 2, cursor, ..by_key.clone() }).await.unwrap();
            paged.extend(page.deliveries.iter().map(|d| (d.event.to_string(), d.state)));
            match page.next_cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        assert_eq!(paged, expected, "round {round}");
        assert_eq!(store.file_keys().await.unwrap(), if round == 0 { 1 } else { 0 });
    }
}

/// Entries the key file keeps for deliveries retention deleted match
/// nothing, even when the store gives their row ids to new deliveries with
/// other keys (SQLite reuses the highest row id once it is deleted); the
/// sweep then takes them out.
#[tokio::test]
async fn a_key_file_entry_of_a_deleted_delivery_matches_nothing() {
    use hookgate_core::State;
    use hookgate_store::conformance::T0;
    use hookgate_store::{DeliveryFilter, Store};

    let store = filing_by_hand();
    let listed = |key: &'static str| {
        let store = &store;
        async move {
            let filter = DeliveryFilter { order_key: Some(key.into()), limit: 10, ..Default::default() };
            store.list_deliveries(&filter).await.unwrap().deliveries.len()
        }
    };
    deliver_keyed(&store, "K1", 0).await;
    assert_eq!(store.file_keys().await.unwrap(), 1);
    assert_eq!(store.purge_finished(State::Delivered, T0 + 1, 10).await.unwrap(), 1, "the store is empty again");
    deliver_keyed(&store, "K2", 2).await;
    assert_eq!((listed("K1").await, listed("K2").await), (0, 1), "before the next round");
    assert_eq!(store.file_keys().await.unwrap(), 1);
    assert_eq!((listed("K1").await, listed("K2").await), (0, 1), "after it");
    assert_eq!(store.sweep_keys().await.unwrap(), 1, "the stale entry is swept out");
    assert_eq!((listed("K1").await, listed("K2").await), (0, 1));
}

/// The key file holds only what the store holds: deleted, it is made again
/// at open, every listing by key is whole meanwhile (read from the store),
/// and the next round refills it.
#[tokio::test]
async fn a_deleted_key_file_is_made_again_and_refilled() {
    use hookgate_store::conformance::{T0, event, ok_attempt, routed};
    use hookgate_store::{DeliveryFilter, Store, Verdict};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let filing = hookgate_sqlite::Filing { every: None, slice: 2 };
    let options = hookgate_sqlite::Options { filing, ..Default::default() };
    let store = SqliteStore::open_with(&path, T0, options.clone()).unwrap();
    for n in 0..5 {
        let mut new = event("src", T0 + n);
        new.order_key = Some("K".into());
        store.ingest(routed(new)).await.unwrap();
        let claim = store.claim("app", T0 + n, 10, 60_000).await.unwrap();
        assert!(store.finish(&claim[0].delivery, ok_attempt(1, T0), Verdict::Delivered, T0 + n).await.unwrap());
    }
    assert_eq!(store.file_keys().await.unwrap(), 5);
    drop(store);
    for suffix in [".keys", ".keys-wal", ".keys-shm"] {
        let file = dir.path().join(format!("hookgate.db{suffix}"));
        if file.exists() {
            std::fs::remove_file(file).unwrap();
        }
    }
    let store = SqliteStore::open_with(&path, T0 + 10, options.clone()).unwrap();
    let filter = DeliveryFilter { order_key: Some("K".into()), limit: 10, ..Default::default() };
    assert_eq!(store.list_deliveries(&filter).await.unwrap().deliveries.len(), 5, "read from the store");
    assert_eq!(store.file_keys().await.unwrap(), 5, "refilled");
    assert_eq!(store.list_deliveries(&filter).await.unwrap().deliveries.len(), 5, "read from the key file");
    drop(store);
    // A key file that is not one (overwritten, truncated) is made again too.
    for suffix in [".keys-wal", ".keys-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("hookgate.db{suffix}")));
    }
    std::fs::write(dir.path().join("hookgate.db.keys"), b"not a database, but long enough to be read as one").unwrap();
    let store = SqliteStore::open_with(&path, T0 + 20, options).unwrap();
    assert_eq!(store.list_deliveries(&filter).await.unwrap().deliveries.len(), 5, "read from the store");
    assert_eq!(store.file_keys().await.unwrap(), 5, "refilled");
}

/// A database restored from a backup older than its key file: the key file
/// may have swept out entries of deliveries the backup brings back, so it
/// starts over, and every listing by key is whole.
#[tokio::test]
async fn a_key_file_ahead_of_a_restored_database_starts_over() {
    use hookgate_core::State;
    use hookgate_store::conformance::T0;
    use hookgate_store::{DeliveryFilter, Store};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let backup = dir.path().join("backup.db");
    let filing = hookgate_sqlite::Filing { every: None, slice: 16 };
    let options = hookgate_sqlite::Options { filing, ..Default::default() };
    let store = SqliteStore::open_with(&path, T0, options.clone()).unwrap();
    deliver_keyed(&store, "K", 0).await;
    assert_eq!(store.file_keys().await.unwrap(), 1);
    let copy = rusqlite::Connection::open(&path).unwrap();
    copy.execute("VACUUM INTO ?1", [backup.to_str().unwrap()]).unwrap();
    drop(copy);
    // After the backup, a quiet night: the delivery deleted by retention and
    // swept out of the key file, nothing numbered since (the mark has not
    // moved past what the backup holds).
    assert_eq!(store.purge_finished(State::Delivered, T0 + 1, 10).await.unwrap(), 1);
    assert_eq!(store.sweep_keys().await.unwrap(), 1);
    drop(store);
    // The restore, as the README says it; the key file is left where it was.
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(dir.path().join(format!("hookgate.db{suffix}")));
    }
    std::fs::rename(&backup, &path).unwrap();
    let store = SqliteStore::open_with(&path, T0 + 10, options).unwrap();
    let filter = DeliveryFilter { order_key: Some("K".into()), limit: 10, ..Default::default() };
    assert_eq!(store.list_deliveries(&filter).await.unwrap().deliveries.len(), 1, "the backup's delivery");
    assert_eq!(store.file_keys().await.unwrap(), 1, "filed again");
    assert_eq!(store.list_deliveries(&filter).await.unwrap().deliveries.len(), 1);
}

/// The key file's thread keeps it up on its own: what finishes is in the
/// key file within a few rounds.
#[tokio::test]
async fn the_key_file_is_kept_up_by_its_thread() {
    use hookgate_store::conformance::{T0, event, ok_attempt, routed};
    use hookgate_store::{Store, Verdict};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let filing = hookgate_sqlite::Filing { every: Some(std::time::Duration::from_millis(10)), slice: 2 };
    let store = SqliteStore::open_with(&path, T0, hookgate_sqlite::Options { filing, ..Default::default() }).unwrap();
    for n in 0..3 {
        let mut new = event("src", T0 + n);
        new.order_key = Some(format!("K{n}").as_str().into());
        store.ingest(routed(new)).await.unwrap();
    }
    let claims = store.claim("app", T0 + 10, 10, 60_000).await.unwrap();
    assert_eq!(claims.len(), 3, "three queues, three heads");
    for claim in &claims {
        assert!(store.finish(&claim.delivery, ok_attempt(1, T0), Verdict::Delivered, T0).await.unwrap());
    }
    let keys = rusqlite::Connection::open_with_flags(
        dir.path().join("hookgate.db.keys"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let filed = || -> (i64, i64) {
        let entries = keys.query_row("SELECT count(*) FROM filed", [], |r| r.get(0)).unwrap();
        let mark = keys.query_row("SELECT filed_through FROM mark", [], |r| r.get(0)).unwrap();
        (entries, mark)
    };
    let started = std::time::Instant::now();
    while filed().0 < 3 && started.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(filed(), (3, 3), "three entries, the mark at the third number");
}

/// A key file made for another database (copied beside it, or kept from
/// before a backup taken under an older schema was restored and migrated
/// again) is made again: its entries say nothing of this database's rows.
#[tokio::test]
async fn a_key_file_made_for_another_database_is_made_again() {
    use hookgate_store::conformance::T0;
    use hookgate_store::{DeliveryFilter, Store};

    let filing = hookgate_sqlite::Filing { every: None, slice: 16 };
    let options = hookgate_sqlite::Options { filing, ..Default::default() };
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let store_a = SqliteStore::open_with(a.path().join("hookgate.db"), T0, options.clone()).unwrap();
    deliver_keyed(&store_a, "KA", 0).await;
    assert_eq!(store_a.file_keys().await.unwrap(), 1, "A's key file: (KA, event 1, delivery 1), mark 1");
    drop(store_a);
    let store_b = SqliteStore::open_with(b.path().join("hookgate.db"), T0, options.clone()).unwrap();
    deliver_keyed(&store_b, "KB", 0).await;
    deliver_keyed(&store_b, "KB", 1).await;
    drop(store_b);
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(b.path().join(format!("hookgate.db.keys{suffix}")));
    }
    std::fs::copy(a.path().join("hookgate.db.keys"), b.path().join("hookgate.db.keys")).unwrap();
    let store_b = SqliteStore::open_with(b.path().join("hookgate.db"), T0 + 10, options).unwrap();
    let filter = DeliveryFilter { order_key: Some("KB".into()), limit: 10, ..Default::default() };
    assert_eq!(store_b.list_deliveries(&filter).await.unwrap().deliveries.len(), 2, "B's own, both");
    assert_eq!(store_b.file_keys().await.unwrap(), 2);
    assert_eq!(store_b.list_deliveries(&filter).await.unwrap().deliveries.len(), 2);
}

/// Store, claim and deliver one event queued under `key`, at `T0 + n`.
async fn deliver_keyed(store: &SqliteStore, key: &str, n: i64) {
    use hookgate_store::conformance::{T0, event, ok_attempt, routed};
    use hookgate_store::{Store, Verdict};
    let mut new = event("src", T0 + n);
    new.order_key = Some(key.into());
    store.ingest(routed(new)).await.unwrap();
    let claim = store.claim("app", T0 + n, 10, 60_000).await.unwrap();
    assert!(store.finish(&claim[0].delivery, ok_attempt(1, T0), Verdict::Delivered, T0 + n).await.unwrap());
}

/// A time window's pages go on past an event whose time was stored damaged
/// (text, by hand): that event is left out, as a row that cannot be read is,
/// and every event with a time is listed once, in time order.
#[tokio::test]
async fn a_time_window_goes_on_past_a_damaged_time() {
    use hookgate_store::conformance::{T0, event, routed};
    use hookgate_store::{ListFilter, Store};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.db");
    let mut ids = Vec::new();
    {
        let store = SqliteStore::open(&path, T0).unwrap();
        for n in 1..=4 {
            let new = routed(event("src", T0 + n));
            ids.push(new.id.clone());
            store.ingest(new).await.unwrap();
        }
    }
    let c = rusqlite::Connection::open(&path).unwrap();
    c.execute("UPDATE events SET received_at = 'damaged' WHERE id = ?1", [ids[1].as_str()]).unwrap();
    drop(c);
    let store = SqliteStore::open(&path, T0).unwrap();
    let mut filter = ListFilter { since_ms: Some(T0), limit: 1, ..Default::default() };
    let mut listed = Vec::new();
    for _ in 0..10 {
        let page = store.list(&filter).await.unwrap();
        listed.extend(page.events.into_iter().map(|e| e.id));
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(listed, [ids[3].clone(), ids[2].clone(), ids[0].clone()]);
}

//! The store conformance suite on the embedded backend: one fresh file per test.

use hookgate_sqlite::SqliteStore;

fn fresh() -> SqliteStore {
    open(hookgate_sqlite::Options::default())
}

/// A store whose writer files finished deliveries by key in slices of `n`
/// after the batch in which `n` are counted, and never while idle before
/// (small: listings by key read filed and unfiled ones together, the same
/// ones whatever the timing).
fn filing_at(n: u64) -> SqliteStore {
    open(hookgate_sqlite::Options { filing: hookgate_sqlite::Filing { at: n, slice: n }, ..Default::default() })
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
            // Filing every two finished deliveries: listings by key from all three arms at once.
            let filing = runtime.block_on(transcript(&super::filing_at(2), &ops));
            prop_assert_eq!(model, filing);
        }
    }
}

/// A listing by order key reads the key's deliveries from three arms (owed,
/// filed, finished since the last filing): each delivery exactly once, in
/// its state, whichever arms hold them — a replayed filed delivery is owed
/// again and listed once, not twice; one finished after a filing is listed
/// before the next.
#[tokio::test]
async fn a_listing_by_key_reads_filed_and_unfiled_deliveries_once_each() {
    use hookgate_core::State;
    use hookgate_store::conformance::{T0, event, ok_attempt, routed};
    use hookgate_store::{DeliveryFilter, ListFilter, Store, Verdict};

    let store = filing_at(3);
    let mut ids = Vec::new();
    for n in 0..5 {
        let mut new = event("src", T0 + n);
        new.order_key = Some("K".into());
        ids.push(new.id.clone());
        store.ingest(routed(new)).await.unwrap();
    }
    // Four delivered, one at a time (a key's queue): the first three are
    // filed when the third finishes, the fourth is not yet.
    for n in 0..4 {
        let claim = store.claim("app", T0 + 10 + n, 10, 60_000).await.unwrap();
        assert_eq!(claim.len(), 1, "one head at a time");
        let done = store.finish(&claim[0].delivery, ok_attempt(1, T0), Verdict::Delivered, T0 + 10 + n).await;
        assert!(done.unwrap());
    }
    store.replay(&ids[0], T0 + 20).await.unwrap();
    let by_key = DeliveryFilter { order_key: Some("K".into()), limit: 100, ..Default::default() };
    let listed = store.list_deliveries(&by_key).await.unwrap().deliveries;
    let states: Vec<(String, State)> = listed.iter().map(|d| (d.event.to_string(), d.state)).collect();
    let expected = [
        (ids[4].to_string(), State::Pending),
        (ids[3].to_string(), State::Delivered),
        (ids[2].to_string(), State::Delivered),
        (ids[1].to_string(), State::Delivered),
        (ids[0].to_string(), State::Pending),
    ];
    assert_eq!(states, expected, "newest event first, each delivery once");
    let by_key_events = ListFilter { order_key: Some("K".into()), limit: 100, ..Default::default() };
    let events = store.list(&by_key_events).await.unwrap().events;
    let events: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
    assert_eq!(events, ids.iter().rev().map(ToString::to_string).collect::<Vec<_>>());
    // A page at a time gives the same, across the arms.
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
    assert_eq!(paged, expected);
}

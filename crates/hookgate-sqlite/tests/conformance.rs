//! The store conformance suite on the embedded backend: one fresh file per test.

use hookgate_sqlite::SqliteStore;

fn fresh() -> SqliteStore {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("hookgate.db");
    // The directory must outlive the store; leaking it keeps the test simple.
    std::mem::forget(dir);
    SqliteStore::open(path, hookgate_store::conformance::T0).expect("open")
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
            prop_assert_eq!(model, sqlite);
        }
    }
}

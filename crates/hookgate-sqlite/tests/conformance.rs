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

//! A full disk mid-batch: SQLite may roll the whole transaction back by
//! itself. Whatever it does, no caller is told "stored" for an event that is
//! not, or "failed" for one that is; and the store works again once there is
//! room. And before it comes to that, ingest stops at the room kept for
//! deliveries, which go on. Runs on a small tmpfs it mounts (root only;
//! skipped otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use hookgate_sqlite::{Options, SqliteStore};
use hookgate_store::conformance::{DEST, T0, event, routed};
use hookgate_store::{Ingested, Store, StoreError, Verdict};

struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn grow(&self, size: &str) {
        let status =
            Command::new("mount").args(["-o", &format!("remount,size={size}")]).arg(self.dir.path()).status().unwrap();
        assert!(status.success());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_never_misreports_a_batch() {
    let Some(disk) = SmallDisk::mount("12m") else {
        hookgate_store::conformance::skip("cannot mount a tmpfs here (needs root)");
        return;
    };
    let path: PathBuf = disk.path().join("hookgate.db");
    // No room kept back: this is about SQLite's own full disk.
    let store = Arc::new(SqliteStore::open_with(&path, T0, Options { min_free: 0, ..Options::default() }).unwrap());
    // Batches larger than SQLite's page cache (2 MiB by default), so pages
    // spill to the WAL mid-transaction and the disk fills mid-batch, not
    // only at the commit.
    let body = Bytes::from(vec![b'x'; 128 * 1024]);
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for _ in 0..6 {
        let tasks: Vec<_> = (0..64)
            .map(|_| {
                let (store, body) = (store.clone(), body.clone());
                tokio::spawn(async move {
                    let mut new = routed(event("src", T0));
                    new.body = body;
                    let id = new.id.clone();
                    (id, store.ingest(new).await)
                })
            })
            .collect();
        for task in tasks {
            match task.await.unwrap() {
                (id, Ok(Ingested::Accepted { .. })) => accepted.push(id),
                (id, Err(_)) => refused.push(id),
                (id, other) => panic!("{id}: {other:?}"),
            }
        }
    }
    assert!(!accepted.is_empty() && !refused.is_empty(), "the disk filled up part way ({} stored)", accepted.len());
    // Readiness is polled, as an orchestrator does: the checkpointer notices within a quarter second.
    let ready_within = |want: bool| {
        let store = store.clone();
        async move {
            for _ in 0..40 {
                if store.ping().await.is_ok() == want {
                    return true;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            false
        }
    };
    assert!(ready_within(false).await, "not ready while the disk is full");

    // Room again: the same store recovers, without a restart.
    disk.grow("64m");
    assert!(ready_within(true).await, "ready again once writes work");
    let during = routed(event("src", T0));
    assert!(matches!(store.ingest(during).await, Ok(Ingested::Accepted { .. })), "ingest works again");
    drop(store);

    let store = SqliteStore::open_with(&path, T0, Options { min_free: 0, ..Options::default() }).unwrap();
    for id in &accepted {
        assert!(store.get(id).await.unwrap().is_some(), "{id} was answered stored but is not there");
    }
    for id in &refused {
        assert!(store.get(id).await.unwrap().is_none(), "{id} was answered failed but was stored");
    }
    let after = routed(event("src", T0));
    assert!(matches!(store.ingest(after).await, Ok(Ingested::Accepted { .. })), "works again with room");
    eprintln!("{} stored, {} refused on a full disk", accepted.len(), refused.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_stops_at_the_room_kept_and_deliveries_go_on() {
    let Some(disk) = SmallDisk::mount("24m") else {
        hookgate_store::conformance::skip("cannot mount a tmpfs here (needs root)");
        return;
    };
    let path: PathBuf = disk.path().join("hookgate.db");
    let store = SqliteStore::open_with(&path, T0, Options { min_free: 12 << 20, ..Options::default() }).unwrap();
    assert!(matches!(store.ingest(routed(event("src", T0))).await, Ok(Ingested::Accepted { .. })));
    let body = Bytes::from(vec![b'x'; 64 * 1024]);
    let mut stored = 1;
    let refusal = loop {
        let mut next = routed(event("src", T0));
        next.body = body.clone();
        match store.ingest(next).await {
            Ok(Ingested::Accepted { .. }) => stored += 1,
            Ok(other) => panic!("{other:?}"),
            Err(error) => break error,
        }
        assert!(stored < 1_000, "24 MiB cannot hold 1,000 events of 64 KiB: ingest never stopped");
    };
    assert!(matches!(&refusal, StoreError::Full(why) if why.contains("storage.min_free")), "{refusal:?}");
    assert!(matches!(store.ping().await, Err(StoreError::Full(_))), "not ready while short of room");

    // What is already in: claimed and delivered in the room kept.
    for _ in 0..3 {
        let claim = store.claim(DEST, T0, 1, 30_000).await.expect("claims go on").pop().expect("one due");
        let attempt = hookgate_store::conformance::ok_attempt(claim.attempt, T0);
        assert!(store.finish(&claim.delivery, attempt, Verdict::Delivered, T0).await.unwrap(), "outcomes go on");
    }

    // Room again (an operator grew the volume): ingest and readiness are back, no restart.
    disk.grow("64m");
    store.ping().await.expect("ready with room");
    assert!(matches!(store.ingest(routed(event("src", T0))).await, Ok(Ingested::Accepted { .. })));
    eprintln!("{stored} stored before ingest stopped at the reserve");
}

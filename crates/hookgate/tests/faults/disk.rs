//! The disk fills under load (SQLite on a small tmpfs the test mounts; root
//! only): ingest answers 503, readiness fails, nothing acknowledged is lost
//! or damaged, the backlog drains in the room kept for it; once space is
//! freed, hookgate recovers by itself, no restart.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::checker::check;
use crate::load::{self, report, settle};
use crate::support::*;

struct SmallDisk(tempfile::TempDir);

impl SmallDisk {
    fn mount(size: &str) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        mounted.then_some(SmallDisk(dir))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0.path()).status();
    }
}

/// Free bytes on the filesystem holding `path`, as `stat -f` reports them.
fn free_bytes(path: &std::path::Path) -> u64 {
    let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(path).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().unwrap());
    fields.next().unwrap() * fields.next().unwrap()
}

/// Write zeros to `path` until the filesystem refuses more.
fn fill_to_the_brim(path: &std::path::Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while file.write_all(&chunk).and_then(|()| file.flush()).is_ok() {}
}

/// Two faults in a row, the way they come: first hookgate's own ingest brings
/// the disk down to the room kept for deliveries (`storage.min_free`, 64 MiB by
/// default): new events get 503 while the backlog goes on draining. Then
/// something else takes the last byte: every write fails, the drain too. Then
/// the operator frees space while senders keep sending: ingest comes back, fills
/// the disk down to the reserve again, and the backlog still drains in the room
/// kept (before the reserve, ingest took the freed space back within two
/// seconds and the backlog sat there for good: delivering needs writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_disk_full_then_freed_under_load() {
    let Some(_one) = crate::heavy("sqlite_disk_full_then_freed_under_load").await else { return };
    let Some(disk) = SmallDisk::mount("100m") else {
        hookgate_store::conformance::skip("cannot mount a tmpfs here (needs root)");
        return;
    };
    // A slow app (8 keys × 50/s at most), so a backlog builds and has to drain.
    let receiver = receiver(Arc::new(|_, _| (200, Duration::from_millis(20)))).await;
    let dir = tempfile::tempdir().unwrap();
    let db = disk.0.path().join("hookgate.db");
    let text = config_text(&receiver.url(), &db, "").replace(r#"timeout = "5s""#, r#"timeout = "1s""#);
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, text).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let gateway = Gateway::start(&config).healthy(&http).await;
    let ready = |http: &reqwest::Client| {
        let request = http.get(format!("{}/readyz", gateway.base));
        async move { request.send().await.map(|r| r.status().as_u16()).ok() }
    };
    let until_ready_is = |status: u16, within: Duration, what: &'static str| {
        let http = http.clone();
        async move {
            let deadline = Instant::now() + within;
            while ready(&http).await != Some(status) {
                assert!(Instant::now() < deadline, "{what}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // Leave the reserve and a few megabytes; the load's 4 KB events take those.
    let reserve = 64u64 << 20;
    let kept = disk.0.path().join("kept");
    let room = free_bytes(disk.0.path()) - reserve - (6 << 20);
    std::fs::write(&kept, vec![0u8; room as usize]).unwrap();
    let load = load::start(vec![gateway.base.clone()], 8, 4_000);
    let deadline = Instant::now() + Duration::from_secs(60);
    while load.refused.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "ingest never stopped at the reserve");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let low = Instant::now();
    until_ready_is(503, Duration::from_secs(10), "/readyz did not fail with the disk at its reserve").await;
    let delivered_at_low = receiver.delivered().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(receiver.delivered().len() > delivered_at_low, "the backlog did not drain in the room kept");

    // Now something else takes every byte left: writes of any kind fail.
    let brim = disk.0.path().join("brim");
    fill_to_the_brim(&brim);
    let full = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(ready(&http).await, Some(503), "/readyz with the disk full");
    let acked_while_full = load.acked.load(std::sync::atomic::Ordering::Relaxed);

    std::fs::remove_file(&brim).unwrap();
    std::fs::remove_file(&kept).unwrap();
    let freed = Instant::now();
    until_ready_is(200, Duration::from_secs(30), "/readyz did not recover once space was freed").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        load.acked.load(std::sync::atomic::Ordering::Relaxed) > acked_while_full,
        "ingest resumed without a restart"
    );
    let sent = load.stop().await;
    let history = settle(&receiver, sent, vec![(low, full), (full, freed)], Duration::from_secs(30)).await;
    report("sqlite: disk at its reserve, then full, then space freed", 1, &history);
    let findings = check(&history);
    assert!(findings.clean(), "{findings:#?}\n{}", load::explain(&history, &findings.duplicated));
    drop(gateway);
}

//! The disk fills under load (SQLite on a small tmpfs the test mounts; root
//! only): ingest answers 503, readiness fails, nothing acknowledged is lost
//! or damaged; once space is freed, hookgate recovers by itself, no restart.

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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_disk_full_then_freed_under_load() {
    let Some(_one) = crate::heavy("sqlite_disk_full_then_freed_under_load").await else { return };
    let Some(disk) = SmallDisk::mount("24m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let receiver = receiver(Arc::new(|_, _| (200, Duration::from_millis(5)))).await;
    let dir = tempfile::tempdir().unwrap();
    let db = disk.0.path().join("hookgate.db");
    let text = config_text(&receiver.url(), &db, "").replace(r#"timeout = "5s""#, r#"timeout = "1s""#);
    let config = dir.path().join("hookgate.toml");
    std::fs::write(&config, text).unwrap();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let gateway = Gateway::start(&config).healthy(&http).await;
    // Leave a few megabytes free; the load's 4 KB events fill them.
    let filler = disk.0.path().join("filler");
    std::fs::write(&filler, vec![0u8; 20 << 20]).unwrap();
    let load = load::start(vec![gateway.base.clone()], 8, 4_000);

    let deadline = Instant::now() + Duration::from_secs(60);
    while load.refused.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the disk never filled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let full = Instant::now();
    let ready = |http: &reqwest::Client| {
        let request = http.get(format!("{}/readyz", gateway.base));
        async move { request.send().await.map(|r| r.status().as_u16()).ok() }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while ready(&http).await != Some(503) {
        assert!(Instant::now() < deadline, "/readyz did not fail with the disk full");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let acked_while_full = load.acked.load(std::sync::atomic::Ordering::Relaxed);

    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while ready(&http).await != Some(200) {
        assert!(Instant::now() < deadline, "/readyz did not recover once space was freed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        load.acked.load(std::sync::atomic::Ordering::Relaxed) > acked_while_full,
        "ingest resumed without a restart"
    );
    let sent = load.stop().await;
    let history = settle(&receiver, sent, vec![(full, freed)], Duration::from_secs(60)).await;
    report("sqlite: disk full, then space freed", 1, &history);
    let findings = check(&history);
    assert!(findings.clean(), "{findings:#?}\n{}", load::explain(&history, &findings.duplicated));
    drop(gateway);
}

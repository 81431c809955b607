//! Room on the database's disk kept for deliveries. Ingest adds rows;
//! delivering needs room too (the WAL frames of every claim and outcome, the
//! database file growing as a checkpoint copies them in, the attempts). Let
//! ingest fill the disk and nothing waiting can be delivered until an
//! operator frees space, and the moment they do, ingest takes it back. So
//! ingest is refused while the filesystem has less than `min_free` left; the
//! rest of the writer's work goes on in that room (RabbitMQ's disk alarm,
//! for the same reason).

use std::path::{Path, PathBuf};

/// Free bytes kept by default: room for the WAL to reach the size at which
/// it starts over (16 MiB), the database file to take those pages in, and
/// the attempts of a drain, with a margin.
pub const DEFAULT_MIN_FREE: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct Reserve {
    path: PathBuf,
    min_free: u64,
}

impl Reserve {
    pub fn new(path: &Path, min_free: u64) -> Reserve {
        Reserve { path: path.to_path_buf(), min_free }
    }

    /// Why ingest should wait, if it should: the disk has less than the reserve left.
    /// When the free space cannot be read, nothing is refused (a full disk still
    /// shows itself as failed writes).
    pub fn short(&self) -> Option<String> {
        if self.min_free == 0 {
            return None;
        }
        let free = available(&self.path)?;
        (free < self.min_free).then(|| {
            format!(
                "disk almost full: {} MiB free on the database's filesystem, {} MiB kept for deliveries (storage.min_free)",
                free >> 20,
                self.min_free >> 20
            )
        })
    }
}

#[cfg(unix)]
fn available(path: &Path) -> Option<u64> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(not(unix))]
fn available(_: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_any_disk_is_short_and_zero_never_is() {
        let dir = tempfile::tempdir().unwrap();
        let short = Reserve::new(dir.path(), u64::MAX).short().expect("no disk has 16 EiB free");
        assert!(short.contains("storage.min_free"), "{short}");
        assert_eq!(Reserve::new(dir.path(), 0).short(), None);
        assert_eq!(Reserve::new(dir.path(), 1).short(), None);
    }
}

//! Counts of events by source and state, for `/metrics` and `/api/stats`:
//! a snapshot, counted again when asked for and more than [`MAX_AGE`] old,
//! by one caller at a time. However often a scraper (or anyone: `/metrics`
//! needs no token) asks, the store counts at most once per `MAX_AGE`, and the
//! dispatcher's reads never queue behind a crowd of counts.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookgate_store::{StateCount, Store};
use tokio::sync::Mutex;

/// How old a snapshot may be before a request counts again.
pub const MAX_AGE: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct Snapshot {
    pub counts: Vec<StateCount>,
    /// When the counts were taken, on the store's clock.
    pub taken_at_ms: i64,
    taken: Instant,
}

#[derive(Clone, Default)]
pub struct StatsCache {
    latest: Arc<Mutex<Option<Snapshot>>>,
}

impl StatsCache {
    /// The counts, at most [`MAX_AGE`] old when the store answers; the last
    /// ones when it does not (with their time), none before the first count.
    pub async fn get(&self, store: &dyn Store) -> Option<Snapshot> {
        // Held while counting: callers arriving meanwhile wait for this count instead of starting theirs.
        let mut latest = self.latest.lock().await;
        if latest.as_ref().is_none_or(|s| s.taken.elapsed() > MAX_AGE) {
            match store.stats().await {
                Ok(counts) => *latest = Some(Snapshot { counts, taken_at_ms: store.now_ms(), taken: Instant::now() }),
                Err(error) => tracing::debug!(%error, "counting events failed; keeping the last counts"),
            }
        }
        latest.clone()
    }
}

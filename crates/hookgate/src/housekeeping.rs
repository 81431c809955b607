//! Background upkeep, one task per instance: retention (finished events
//! deleted once they are older than `[retention]` says) and forgetting
//! expired dedupe keys. Each deletion is a small batch, a short write of its
//! own, so ingest never waits long behind it; on PostgreSQL one instance at a
//! time does a round and the others skip it.

use std::sync::Arc;
use std::time::Duration;

use hookgate_store::Store;
use tokio::sync::watch;

use crate::clock::Clock;
use crate::config::Retention;

/// Events deleted per statement: small enough that the SQLite writer or a
/// PostgreSQL transaction is held for milliseconds.
const BATCH: usize = 500;
/// Pause between batches, so other writes interleave. A round goes on while
/// batches come back full: at the measured delivery rates (10k/s) a capped
/// round (it was 100 batches a state, every 30 s: 1,600/s) fell behind for
/// good, and the database grew without bound.
const BETWEEN_BATCHES: Duration = Duration::from_millis(5);
/// How often expired dedupe keys are forgotten.
const DEDUPE_EVERY: Duration = Duration::from_secs(60);

pub async fn run(store: Arc<dyn Store>, clock: Arc<dyn Clock>, retention: Retention, mut stop: watch::Receiver<bool>) {
    // Often enough that a short retention is kept to within half of itself, at most every 30 s.
    let shortest = retention.by_state().iter().map(|(_, keep)| *keep).min().unwrap_or(Duration::from_secs(60));
    let every = (shortest / 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
    let mut since_dedupe = Duration::ZERO;
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(every) => {}
        }
        for (state, keep) in retention.by_state() {
            let before = clock.now_ms() - keep.as_millis() as i64;
            let purged = in_batches(&stop, || store.purge_finished(state, before, BATCH)).await;
            match purged {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, %state, "retention deleted old events"),
                Err(error) => tracing::warn!(%error, %state, "retention failed; trying again next round"),
            }
        }
        since_dedupe += every;
        if since_dedupe >= DEDUPE_EVERY {
            since_dedupe = Duration::ZERO;
            match in_batches(&stop, || store.purge_expired_dedupe(clock.now_ms(), BATCH)).await {
                Ok(0) => {}
                Ok(purged) => tracing::debug!(purged, "forgot expired dedupe keys"),
                Err(error) => tracing::warn!(%error, "forgetting dedupe keys failed; trying again next round"),
            }
        }
    }
}

/// Run `batch` (one short write, up to `BATCH` rows) again while it comes back
/// full, pausing between, until it does not or the stop is asked for; how many
/// rows in all. One statement for a whole backlog would hold the SQLite writer
/// (or a PostgreSQL transaction) for as long as it took; a capped round fell
/// behind at the measured delivery rates.
async fn in_batches<F, Fut>(stop: &watch::Receiver<bool>, mut batch: F) -> hookgate_store::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = hookgate_store::Result<u64>>,
{
    let mut done = 0;
    loop {
        let n = batch().await?;
        done += n;
        if n < BATCH as u64 || *stop.borrow() {
            return Ok(done);
        }
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
}

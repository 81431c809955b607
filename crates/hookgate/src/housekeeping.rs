//! Background upkeep, one task per instance: retention (finished events
//! deleted once they are older than `[retention]` says) and forgetting
//! expired dedupe keys. Each deletion is a small batch, a short write of its
//! own, so ingest never waits long behind it; on PostgreSQL one instance at a
//! time does a round and the others skip it.

use std::sync::Arc;
use std::time::Duration;

use hookgate_store::Store;
use tokio::sync::watch;

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

pub async fn run(store: Arc<dyn Store>, retention: Retention, mut stop: watch::Receiver<bool>) {
    // Often enough that a short retention is kept to within half of itself, at most every 30 s.
    let shortest = retention.by_state().iter().map(|(_, keep)| *keep).min().unwrap_or(Duration::from_secs(60));
    let every = (shortest / 2).clamp(Duration::from_millis(500), Duration::from_secs(30));
    let mut since_dedupe = Duration::ZERO;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        purge_old(&*store, &retention).await;
        since_dedupe += every;
        if since_dedupe >= DEDUPE_EVERY {
            since_dedupe = Duration::ZERO;
            forget_expired_keys(&*store).await;
        }
    }
}

async fn purge_old(store: &dyn Store, retention: &Retention) {
    for (state, keep) in retention.by_state() {
        let before = store.now_ms() - keep.as_millis() as i64;
        let mut purged = 0;
        loop {
            match store.purge_finished(state, before, BATCH).await {
                Ok(n) => {
                    purged += n;
                    if n < BATCH as u64 {
                        break;
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, %state, "retention failed; trying again next round");
                    break;
                }
            }
            tokio::time::sleep(BETWEEN_BATCHES).await;
        }
        if purged > 0 {
            tracing::debug!(purged, %state, "retention deleted old events");
        }
    }
}

/// Expired dedupe keys, a batch at a time while batches come back full (one
/// statement for them all held the SQLite writer for as long as it took).
async fn forget_expired_keys(store: &dyn Store) {
    let mut purged = 0;
    loop {
        match store.purge_expired_dedupe(store.now_ms(), BATCH).await {
            Ok(n) => {
                purged += n;
                if n < BATCH as u64 {
                    break;
                }
            }
            Err(error) => {
                tracing::warn!(%error, "forgetting dedupe keys failed; trying again next round");
                break;
            }
        }
        tokio::time::sleep(BETWEEN_BATCHES).await;
    }
    if purged > 0 {
        tracing::debug!(purged, "forgot expired dedupe keys");
    }
}

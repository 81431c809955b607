//! Background upkeep, one task per instance: retention (finished events
//! deleted once they are older than `[retention]` says, unrouted ones after
//! `retention.dead`) and forgetting expired dedupe keys. Each deletion is a
//! small batch, a short write of its own, so ingest never waits long behind
//! it; on PostgreSQL one instance at a time does a round and the others skip it.

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
        // No route took these: kept as long as dead deliveries, for the same reason (someone
        // must be able to see what was not delivered, and reroute it), then gone.
        let before = clock.now_ms() - retention.dead.as_millis() as i64;
        match in_batches(&stop, || store.purge_unrouted(before, BATCH)).await {
            Ok(0) => {}
            Ok(purged) => tracing::debug!(purged, "retention deleted old unrouted events"),
            Err(error) => tracing::warn!(%error, "retention of unrouted events failed; trying again next round"),
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicI64, Ordering};

    use hookgate_core::{EventId, EventState};
    use hookgate_store::conformance::{event, failed_attempt, ok_attempt, to};
    use hookgate_store::{Ingested, MemStore, NewEvent, Verdict};

    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const MINUTE: Duration = Duration::from_secs(60);

    struct Manual(Arc<AtomicI64>);

    impl Clock for Manual {
        fn now_ms(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    async fn stored(store: &dyn Store, event: NewEvent) -> EventId {
        match store.ingest(event).await.unwrap() {
            Ingested::Accepted { id, .. } => id,
            other => panic!("not stored: {other:?}"),
        }
    }

    /// Each kind of finished event, and an unrouted one, is deleted by the
    /// running task once it is older than its own retention, and not before.
    #[tokio::test(start_paused = true)]
    async fn each_finished_kind_and_unrouted_events_go_after_their_own_retention() {
        let now = Arc::new(AtomicI64::new(T0));
        let store: Arc<dyn Store> = Arc::new(MemStore::new({
            let now = now.clone();
            Arc::new(move || now.load(Ordering::SeqCst))
        }));
        let delivered = stored(&*store, to("app", event("shop", T0))).await;
        let dead = stored(&*store, to("app", event("shop", T0))).await;
        let unrouted = stored(&*store, NewEvent { routing: vec![], ..event("shop", T0) }).await;
        for claim in store.claim("app", T0, 10, 30_000).await.unwrap() {
            let (attempt, verdict) = if claim.id == delivered {
                (ok_attempt(1, T0), Verdict::Delivered)
            } else {
                (failed_attempt(1, T0), Verdict::Dead)
            };
            assert!(store.finish(&claim.delivery, attempt, verdict, T0).await.unwrap());
        }
        assert_eq!(store.get(&delivered).await.unwrap().unwrap().record.state, EventState::Delivered);
        assert_eq!(store.get(&dead).await.unwrap().unwrap().record.state, EventState::Dead);
        assert_eq!(store.get(&unrouted).await.unwrap().unwrap().record.state, EventState::Unrouted);

        let retention = Retention { delivered: MINUTE, dead: 3 * MINUTE, superseded: MINUTE };
        let (stop, stopping) = watch::channel(false);
        let task = tokio::spawn(run(store.clone(), Arc::new(Manual(now.clone())), retention, stopping));
        let kept = |id: EventId| {
            let store = store.clone();
            async move { store.get(&id).await.unwrap().is_some() }
        };
        // Two minutes on: the delivered one is past its minute; the dead and unrouted ones are not.
        now.store(T0 + 2 * 60_000, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(!kept(delivered.clone()).await, "delivered: past its retention");
        assert!(kept(dead.clone()).await && kept(unrouted.clone()).await, "within retention.dead");
        // Four minutes on: past `retention.dead`, both go.
        now.store(T0 + 4 * 60_000, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(61)).await;
        assert!(!kept(dead).await, "dead: past its retention");
        assert!(!kept(unrouted).await, "unrouted: kept as long as dead ones, then deleted");
        stop.send(true).unwrap();
        task.await.unwrap();
    }
}

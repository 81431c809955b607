//! Counts of events by source and state, for `/metrics` and `/api/stats`:
//! a snapshot, counted again when asked for and more than [`MAX_AGE`] old
//! (or twenty times what the last count took, if more),
//! by one caller at a time. However often a scraper (or anyone: `/metrics`
//! needs no token) asks, the store counts at most once per `MAX_AGE`, and the
//! dispatcher's reads never queue behind a crowd of counts. Callers that come
//! while a count runs answer from the last counts rather than wait, and none
//! waits more than [`COUNT_WAIT`] for a slow one (a stalled database, a table
//! of millions of rows): it lands for the next caller.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hookgate_store::{StateCount, Store};
use tokio::sync::Mutex;

/// How old a snapshot may be before a request counts again, at least…
pub const MAX_AGE: Duration = Duration::from_secs(1);
/// …and at least this many times what the last count took: counting a big
/// table (a full scan: bodies are in the rows) must not take more than a
/// twentieth of one core however often anyone asks (measured: 0.6–1.7 s a
/// count at 1.3 million rows, which once a second is most of a core).
const AGE_PER_COUNT_TIME: u32 = 20;

#[derive(Clone)]
pub struct Snapshot {
    pub counts: Vec<StateCount>,
    /// When the counts were taken, on the store's clock.
    pub taken_at_ms: i64,
    taken: Instant,
    /// How long the count took.
    took: Duration,
}

/// How long a count may take before callers are answered from the last one
/// (the count goes on and lands for the next caller)…
pub const COUNT_WAIT: Duration = Duration::from_secs(2);
/// …and before it is given up, so that the next caller may count again.
const COUNT_GIVE_UP: Duration = Duration::from_secs(30);

#[derive(Clone, Default)]
pub struct StatsCache {
    latest: Arc<std::sync::Mutex<Option<Snapshot>>>,
    /// Held by the one caller counting; the others do not queue behind it.
    counting: Arc<Mutex<()>>,
}

impl StatsCache {
    /// The counts, at most [`MAX_AGE`] old when the store answers; the last
    /// ones when it does not, or while a count runs past [`COUNT_WAIT`] (with
    /// their time); none before the first count.
    pub async fn get(&self, store: &Arc<dyn Store>) -> Option<Snapshot> {
        let last = || self.latest.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let fresh = |s: &Option<Snapshot>| {
            s.as_ref().is_some_and(|s| s.taken.elapsed() <= MAX_AGE.max(s.took * AGE_PER_COUNT_TIME))
        };
        if fresh(&last()) {
            return last();
        }
        // One caller counts; the rest answer from the last counts if there are
        // any, or wait for this count when there are none yet.
        let guard = match self.counting.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) if last().is_some() => return last(),
            Err(_) => match tokio::time::timeout(COUNT_WAIT, self.counting.clone().lock_owned()).await {
                Ok(guard) => guard,
                Err(_) => return None, // the first count is slow: no counts to give yet
            },
        };
        if fresh(&last()) {
            return last(); // counted while this caller waited
        }
        // A slow count (a huge table, a stalled database) does not hold the
        // caller past COUNT_WAIT: it goes on by itself and lands for the next one.
        let (latest, store) = (self.latest.clone(), store.clone());
        let count = tokio::spawn(async move {
            let started = Instant::now();
            // A count that never returns (a hung connection) must not stop every later one.
            let counted = tokio::time::timeout(COUNT_GIVE_UP, store.stats()).await;
            let counted = counted.unwrap_or_else(|_| {
                Err(hookgate_store::StoreError::Unavailable(format!("no count within {COUNT_GIVE_UP:?}")))
            });
            match counted {
                Ok(counts) => {
                    let (taken, took) = (Instant::now(), started.elapsed());
                    let snapshot = Snapshot { counts, taken_at_ms: store.now_ms(), taken, took };
                    *latest.lock().unwrap_or_else(|p| p.into_inner()) = Some(snapshot);
                }
                Err(error) => tracing::debug!(%error, "counting events failed; keeping the last counts"),
            }
            drop(guard);
        });
        let waited = tokio::time::timeout(COUNT_WAIT, count).await;
        if waited.is_err() && last().is_none() {
            // Nothing to answer with yet: there is no count to give.
            return None;
        }
        last()
    }
}

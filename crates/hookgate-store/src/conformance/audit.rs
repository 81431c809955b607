//! [`Audited`]: a store wrapper that watches every event through every call
//! and fails the test on a state change [`State::can_become`] forbids — the
//! check that `docs/lifecycle.md` and the stores agree, whatever SQL a
//! backend writes.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use hookgate_core::{EventId, State};
use tokio::sync::Mutex;

use crate::{
    Attempt, Claim, EventDetail, Ingested, ListFilter, NewEvent, Page, RemoteWake, Result, StateCount, Store, Verdict,
};

pub struct Audited<S> {
    inner: Arc<S>,
    /// Every event's state at the last look. The lock also orders the looks,
    /// so the snapshots form one history even when calls run concurrently.
    seen: Mutex<HashMap<EventId, State>>,
}

impl<S: Store> Audited<S> {
    pub fn new(inner: S) -> Self {
        Audited { inner: Arc::new(inner), seen: Mutex::default() }
    }

    /// Look at every event and compare with the last look. A new event must
    /// start `pending`; a changed one must have made a legal move.
    pub async fn check(&self) {
        let mut seen = self.seen.lock().await;
        let mut filter = ListFilter { limit: crate::MAX_PAGE, ..Default::default() };
        loop {
            let page = self.inner.list(&filter).await.expect("audit: list");
            for event in &page.events {
                match seen.insert(event.id.clone(), event.state) {
                    None => assert_eq!(
                        event.state,
                        State::Pending,
                        "audit: {} appeared as {}, not pending",
                        event.id,
                        event.state
                    ),
                    Some(before) if before != event.state => assert!(
                        before.can_become(event.state),
                        "audit: {} went {before} -> {}, which State::can_become forbids",
                        event.id,
                        event.state
                    ),
                    Some(_) => {}
                }
            }
            match page.next_cursor {
                Some(cursor) => filter.cursor = Some(cursor),
                None => break,
            }
        }
    }
}

#[async_trait]
impl<S: Store> Store for Audited<S> {
    async fn ingest(&self, event: NewEvent) -> Result<Ingested> {
        let result = self.inner.ingest(event).await;
        self.check().await;
        result
    }

    async fn claim(&self, destination: &str, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>> {
        let result = self.inner.claim(destination, now_ms, limit, lease_ms).await;
        self.check().await;
        result
    }

    async fn finish(&self, id: &EventId, attempt: Attempt, verdict: Verdict, now_ms: i64) -> Result<bool> {
        let result = self.inner.finish(id, attempt, verdict, now_ms).await;
        self.check().await;
        result
    }

    async fn next_due(&self, destination: &str, now_ms: i64) -> Result<Option<i64>> {
        self.inner.next_due(destination, now_ms).await
    }

    async fn replay(&self, id: &EventId, now_ms: i64) -> Result<bool> {
        let result = self.inner.replay(id, now_ms).await;
        self.check().await;
        result
    }

    async fn get(&self, id: &EventId) -> Result<Option<EventDetail>> {
        self.inner.get(id).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Page> {
        self.inner.list(filter).await
    }

    async fn stats(&self) -> Result<Vec<StateCount>> {
        self.inner.stats().await
    }

    async fn purge_expired_dedupe(&self, now_ms: i64) -> Result<u64> {
        let result = self.inner.purge_expired_dedupe(now_ms).await;
        self.check().await;
        result
    }

    async fn purge_finished(&self, state: State, before_ms: i64, limit: usize) -> Result<u64> {
        let purged = self.inner.purge_finished(state, before_ms, limit).await;
        // Deleted events leave the audit's view: forget them, so their absence is not a move.
        let mut seen = self.seen.lock().await;
        let mut remaining = std::collections::HashSet::new();
        let mut filter = ListFilter { limit: crate::MAX_PAGE, ..Default::default() };
        loop {
            let page = self.inner.list(&filter).await.expect("audit: list");
            remaining.extend(page.events.iter().map(|e| e.id.clone()));
            match page.next_cursor {
                Some(cursor) => filter.cursor = Some(cursor),
                None => break,
            }
        }
        seen.retain(|id, before| {
            remaining.contains(id) || {
                assert!(!before.is_active(), "audit: {id} was purged while {before}");
                false
            }
        });
        drop(seen);
        self.check().await;
        purged
    }

    async fn set_paused(&self, destination: &str, paused: bool) -> Result<()> {
        self.inner.set_paused(destination, paused).await
    }

    async fn paused(&self) -> Result<Vec<String>> {
        self.inner.paused().await
    }

    async fn ping(&self) -> Result<()> {
        self.inner.ping().await
    }

    fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }

    fn watch_remote(&self, wake: RemoteWake) {
        self.inner.watch_remote(wake)
    }
}

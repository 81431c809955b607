//! [`Audited`]: a store wrapper that watches every delivery through every
//! call and fails the test on a state change [`State::can_become`] forbids —
//! the check that `docs/lifecycle.md` and the stores agree, whatever SQL a
//! backend writes.
//!
//! Between two looks with no other call running, one call made at most one
//! move per delivery: it must be a legal one, and a new delivery must be
//! pending. When calls overlapped, several moves may lie between two looks
//! (or a delivery may be made and superseded before anyone looks): then what
//! is seen must be reachable by legal moves.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use hookgate_core::{DeliveryId, EventId, State};
use tokio::sync::Mutex;

use crate::{
    Attempt, Claim, DeliveryFilter, DeliveryPage, EventDetail, Ingested, ListFilter, NewDelivery, NewEvent, Page,
    RemoteWake, Result, RouteVerdict, StateCount, Store, Verdict,
};

pub struct Audited<S> {
    inner: Arc<S>,
    /// Every delivery's state at the last look. The lock also orders the looks,
    /// so the snapshots form one history even when calls run concurrently.
    seen: Mutex<HashMap<DeliveryId, State>>,
    /// Changing calls running now.
    running: AtomicUsize,
    /// Changing calls begun since the last look.
    begun: AtomicUsize,
}

/// Whether `to` can follow `from` after any number of legal moves (none included).
fn reachable(from: State, to: State) -> bool {
    let mut seen = vec![from];
    let mut next = 0;
    while let Some(&at) = seen.get(next) {
        next += 1;
        for state in State::ALL {
            if at.can_become(state) && !seen.contains(&state) {
                seen.push(state);
            }
        }
    }
    seen.contains(&to)
}

impl<S: Store> Audited<S> {
    pub fn new(inner: S) -> Self {
        Audited {
            inner: Arc::new(inner),
            seen: Mutex::default(),
            running: AtomicUsize::new(0),
            begun: AtomicUsize::new(0),
        }
    }

    /// Deleted deliveries leave the audit's view: forget them, so their
    /// absence is not a move; only finished ones may have gone.
    async fn forget_deleted(&self) {
        let mut seen = self.seen.lock().await;
        let mut remaining = std::collections::HashSet::new();
        let mut filter = DeliveryFilter { limit: crate::MAX_PAGE, ..Default::default() };
        loop {
            let page = self.inner.list_deliveries(&filter).await.expect("audit: list deliveries");
            remaining.extend(page.deliveries.iter().map(|d| d.id.clone()));
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
    }

    /// Run one changing call, then look.
    async fn changing<T>(&self, call: impl std::future::Future<Output = T>) -> T {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.begun.fetch_add(1, Ordering::SeqCst);
        let result = call.await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        self.check().await;
        result
    }

    /// Look at every delivery and compare with the last look. A new delivery
    /// must start `pending`; a changed one must have made a legal move.
    pub async fn check(&self) {
        let mut seen = self.seen.lock().await;
        let alone = self.running.load(Ordering::SeqCst) == 0 && self.begun.swap(0, Ordering::SeqCst) <= 1;
        let mut filter = DeliveryFilter { limit: crate::MAX_PAGE, ..Default::default() };
        loop {
            let page = self.inner.list_deliveries(&filter).await.expect("audit: list deliveries");
            for delivery in &page.deliveries {
                let (id, now) = (&delivery.id, delivery.state);
                match seen.insert(id.clone(), now) {
                    None if alone => assert_eq!(now, State::Pending, "audit: {id} appeared as {now}, not pending"),
                    None => assert!(reachable(State::Pending, now), "audit: {id} appeared as {now}"),
                    Some(before) if before == now => {}
                    Some(before) if alone => assert!(
                        before.can_become(now),
                        "audit: {id} went {before} -> {now}, which State::can_become forbids"
                    ),
                    Some(before) => {
                        assert!(reachable(before, now), "audit: {id} went {before} -> {now}, which no legal moves make")
                    }
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
        self.changing(self.inner.ingest(event)).await
    }

    async fn claim(&self, destination: &str, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>> {
        self.changing(self.inner.claim(destination, now_ms, limit, lease_ms)).await
    }

    async fn finish(&self, delivery: &DeliveryId, attempt: Attempt, verdict: Verdict, now_ms: i64) -> Result<bool> {
        self.changing(self.inner.finish(delivery, attempt, verdict, now_ms)).await
    }

    async fn next_due(&self, destination: &str, now_ms: i64) -> Result<Option<i64>> {
        self.inner.next_due(destination, now_ms).await
    }

    async fn replay(&self, id: &EventId, now_ms: i64) -> Result<u64> {
        self.changing(self.inner.replay(id, now_ms)).await
    }

    async fn replay_delivery(&self, delivery: &DeliveryId, now_ms: i64) -> Result<bool> {
        self.changing(self.inner.replay_delivery(delivery, now_ms)).await
    }

    async fn reroute(
        &self,
        id: &EventId,
        routing: Vec<RouteVerdict>,
        deliveries: Vec<NewDelivery>,
        now_ms: i64,
    ) -> Result<Option<u64>> {
        self.changing(self.inner.reroute(id, routing, deliveries, now_ms)).await
    }

    async fn get(&self, id: &EventId) -> Result<Option<EventDetail>> {
        self.inner.get(id).await
    }

    async fn get_delivery(&self, delivery: &DeliveryId) -> Result<Option<crate::DeliveryRecord>> {
        self.inner.get_delivery(delivery).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Page> {
        self.inner.list(filter).await
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<DeliveryPage> {
        self.inner.list_deliveries(filter).await
    }

    async fn stats(&self) -> Result<Vec<StateCount>> {
        self.inner.stats().await
    }

    async fn purge_expired_dedupe(&self, now_ms: i64, limit: usize) -> Result<u64> {
        self.changing(self.inner.purge_expired_dedupe(now_ms, limit)).await
    }

    async fn purge_finished(&self, state: State, before_ms: i64, limit: usize) -> Result<u64> {
        let purged = self.inner.purge_finished(state, before_ms, limit).await;
        self.forget_deleted().await;
        purged
    }

    async fn purge_unrouted(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let purged = self.inner.purge_unrouted(before_ms, limit).await;
        self.forget_deleted().await;
        purged
    }

    async fn set_paused(&self, destination: &str, paused: bool) -> Result<()> {
        self.inner.set_paused(destination, paused).await
    }

    async fn paused(&self) -> Result<Vec<String>> {
        self.inner.paused().await
    }

    async fn take_tokens(&self, destination: &str, per_second: f64, want: u32, now_ms: i64) -> Result<u32> {
        self.inner.take_tokens(destination, per_second, want, now_ms).await
    }

    async fn give_back_tokens(&self, destination: &str, per_second: f64, tokens: u32) -> Result<()> {
        self.inner.give_back_tokens(destination, per_second, tokens).await
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

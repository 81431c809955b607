//! One instance's view of the shared store, through faults: latency, an
//! answer of "unavailable" before the call is applied, the call applied but
//! its answer lost, a stall longer than a lease; and the instance's own
//! clock, skewed and jumping. Every call that changes the store runs in a
//! task of its own, as a database goes on with a statement whose client has
//! gone: a call given up on (a timeout, a crash) may still be applied.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use hookgate::clock::Clock;
use hookgate_core::{DeliveryId, EventId, State};
use hookgate_store::{
    Attempt, Claim, DeliveryFilter, DeliveryPage, DeliveryRecord, EventDetail, Ingested, ListFilter, MemStore,
    NewDelivery, NewEvent, Page, Result, RouteVerdict, StateCount, Store, StoreError, Verdict,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// The epoch milliseconds at the start of every run: virtual time begins here.
pub const T0: i64 = 1_800_000_000_000;

/// Fault rates, each a probability per call (drawn per seed: a swarm).
#[derive(Debug, Clone, Copy, Default)]
pub struct StoreFaults {
    pub latency_ms: u64,
    pub unavailable: f64,
    pub answer_lost: f64,
    pub stall: f64,
    /// How long a stall lasts, at most; at least half of it (set to twice a lease: longer than one).
    pub stall_ms: u64,
}

/// A clock that reads virtual time, off by a skew that jumps now and then.
pub struct SkewClock {
    origin: Instant,
    skew_ms: AtomicI64,
}

impl SkewClock {
    pub fn new(origin: Instant, skew_ms: i64) -> SkewClock {
        SkewClock { origin, skew_ms: AtomicI64::new(skew_ms) }
    }

    pub fn jump_to(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::SeqCst);
    }
}

impl Clock for SkewClock {
    fn now_ms(&self) -> i64 {
        T0 + self.origin.elapsed().as_millis() as i64 + self.skew_ms.load(Ordering::SeqCst)
    }
}

/// What one applied outcome came to: the simulation excuses a repeated
/// delivery of an attempt whose success the store never took.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Applied {
    pub destination: String,
    pub id: EventId,
    pub attempt: u32,
}

/// Which bug the wrapper plants, if any (the rest live in `MemStore`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Planted {
    /// Claims are leased for the destination's timeout alone.
    pub no_lease_margin: bool,
    /// An ingest that would fail before it is applied is acknowledged anyway.
    pub ack_before_commit: bool,
}

pub struct FaultyStore {
    inner: Arc<MemStore>,
    pub clock: Arc<SkewClock>,
    faults: Mutex<StoreFaults>,
    rng: Mutex<StdRng>,
    /// Down (crashed): every call fails at once.
    up: AtomicBool,
    /// Outcomes the store applied as delivered, shared by every instance.
    pub delivered: Arc<Mutex<BTreeSet<Applied>>>,
    planted: Planted,
}

/// What happens to one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Normal,
    UnavailableBefore,
    AnswerLost,
    Stall,
}

impl FaultyStore {
    pub fn new(
        inner: Arc<MemStore>,
        clock: Arc<SkewClock>,
        faults: StoreFaults,
        seed: u64,
        delivered: Arc<Mutex<BTreeSet<Applied>>>,
        planted: Planted,
    ) -> FaultyStore {
        FaultyStore {
            inner,
            clock,
            faults: Mutex::new(faults),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            up: AtomicBool::new(true),
            delivered,
            planted,
        }
    }

    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }

    pub fn heal(&self) {
        *self.faults.lock().unwrap() = StoreFaults::default();
    }

    fn draw(&self) -> (Fate, Duration, Duration) {
        let faults = *self.faults.lock().unwrap();
        let mut rng = self.rng.lock().unwrap();
        let mut latency =
            || Duration::from_millis(if faults.latency_ms == 0 { 0 } else { rng.random_range(0..=faults.latency_ms) });
        let (before, after) = (latency(), latency());
        let roll: f64 = rng.random();
        let fate = if roll < faults.unavailable {
            Fate::UnavailableBefore
        } else if roll < faults.unavailable + faults.answer_lost {
            Fate::AnswerLost
        } else if roll < faults.unavailable + faults.answer_lost + faults.stall {
            Fate::Stall
        } else {
            Fate::Normal
        };
        (fate, before, after)
    }

    fn stall(&self) -> Duration {
        let faults = *self.faults.lock().unwrap();
        let most = faults.stall_ms.max(2);
        Duration::from_millis(self.rng.lock().unwrap().random_range(most / 2..=most))
    }

    /// Run one call that changes the store through the faults, in a task of its own.
    async fn changing<T: Send + 'static>(
        &self,
        call: impl FnOnce(Arc<MemStore>) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send>>
        + Send
        + 'static,
    ) -> Result<T> {
        if !self.up.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the instance is down".into()));
        }
        let (fate, before, after) = self.draw();
        tokio::time::sleep(before).await;
        if fate == Fate::UnavailableBefore {
            return Err(StoreError::Unavailable("simulated: unavailable".into()));
        }
        let stall = if fate == Fate::Stall { self.stall() } else { Duration::ZERO };
        let inner = self.inner.clone();
        let applied = tokio::spawn(async move {
            tokio::time::sleep(stall).await;
            call(inner).await
        });
        let answer = applied.await.unwrap_or_else(|e| Err(StoreError::Unavailable(format!("applying: {e}"))));
        tokio::time::sleep(after).await;
        if fate == Fate::AnswerLost {
            return Err(StoreError::Unavailable("simulated: the answer was lost".into()));
        }
        answer
    }

    /// A read: faults, but nothing applied to lose.
    async fn reading(&self) -> Result<()> {
        if !self.up.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable("the instance is down".into()));
        }
        let (fate, before, after) = self.draw();
        tokio::time::sleep(before + after).await;
        match fate {
            Fate::UnavailableBefore | Fate::AnswerLost => Err(StoreError::Unavailable("simulated".into())),
            Fate::Stall => {
                tokio::time::sleep(self.stall()).await;
                Ok(())
            }
            Fate::Normal => Ok(()),
        }
    }
}

#[async_trait]
impl Store for FaultyStore {
    async fn ingest(&self, event: NewEvent) -> Result<Ingested> {
        if self.planted.ack_before_commit && self.up.load(Ordering::SeqCst) {
            let (fate, before, _) = self.draw();
            tokio::time::sleep(before).await;
            if fate == Fate::UnavailableBefore {
                // The bug: the answer goes out before the write, and the write then fails.
                return Ok(Ingested::Accepted { id: event.id, superseded: 0 });
            }
        }
        self.changing(move |inner| Box::pin(async move { inner.ingest(event).await })).await
    }

    async fn claim(&self, destination: &str, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>> {
        let lease_ms =
            if self.planted.no_lease_margin { lease_ms - hookgate::dispatch::LEASE_MARGIN_MS } else { lease_ms };
        let destination = destination.to_owned();
        self.changing(move |inner| Box::pin(async move { inner.claim(&destination, now_ms, limit, lease_ms).await }))
            .await
    }

    async fn finish(&self, delivery: &DeliveryId, attempt: Attempt, verdict: Verdict, now_ms: i64) -> Result<bool> {
        let (delivery, delivered) = (delivery.clone(), self.delivered.clone());
        self.changing(move |inner| {
            Box::pin(async move {
                let number = attempt.attempt;
                let moved = inner.finish(&delivery, attempt, verdict, now_ms).await?;
                if moved
                    && verdict == Verdict::Delivered
                    && let Some(record) = inner.get_delivery(&delivery).await?
                {
                    let applied = Applied { destination: record.destination, id: record.event, attempt: number };
                    delivered.lock().unwrap().insert(applied);
                }
                Ok(moved)
            })
        })
        .await
    }

    async fn next_due(&self, destination: &str, now_ms: i64) -> Result<Option<i64>> {
        self.reading().await?;
        self.inner.next_due(destination, now_ms).await
    }

    async fn replay(&self, id: &EventId, now_ms: i64) -> Result<u64> {
        let id = id.clone();
        self.changing(move |inner| Box::pin(async move { inner.replay(&id, now_ms).await })).await
    }

    async fn replay_delivery(&self, delivery: &DeliveryId, now_ms: i64) -> Result<bool> {
        let delivery = delivery.clone();
        self.changing(move |inner| Box::pin(async move { inner.replay_delivery(&delivery, now_ms).await })).await
    }

    async fn reroute(
        &self,
        id: &EventId,
        routing: Vec<RouteVerdict>,
        deliveries: Vec<NewDelivery>,
        now_ms: i64,
    ) -> Result<Option<u64>> {
        let id = id.clone();
        self.changing(move |inner| Box::pin(async move { inner.reroute(&id, routing, deliveries, now_ms).await })).await
    }

    async fn get(&self, id: &EventId) -> Result<Option<EventDetail>> {
        self.inner.get(id).await
    }

    async fn get_delivery(&self, delivery: &DeliveryId) -> Result<Option<DeliveryRecord>> {
        self.inner.get_delivery(delivery).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Page> {
        self.inner.list(filter).await
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<DeliveryPage> {
        self.inner.list_deliveries(filter).await
    }

    async fn purge_unrouted(&self, before_ms: i64, limit: usize) -> Result<u64> {
        self.inner.purge_unrouted(before_ms, limit).await
    }

    async fn stats(&self) -> Result<Vec<StateCount>> {
        self.inner.stats().await
    }

    async fn purge_expired_dedupe(&self, now_ms: i64, limit: usize) -> Result<u64> {
        self.inner.purge_expired_dedupe(now_ms, limit).await
    }

    async fn purge_finished(&self, state: State, before_ms: i64, limit: usize) -> Result<u64> {
        self.inner.purge_finished(state, before_ms, limit).await
    }

    async fn set_paused(&self, destination: &str, paused: bool) -> Result<()> {
        self.inner.set_paused(destination, paused).await
    }

    async fn paused(&self) -> Result<Vec<String>> {
        self.inner.paused().await
    }

    async fn take_tokens(&self, destination: &str, per_second: f64, want: u32, now_ms: i64) -> Result<u32> {
        self.reading().await?;
        self.inner.take_tokens(destination, per_second, want, now_ms).await
    }

    async fn give_back_tokens(&self, destination: &str, per_second: f64, tokens: u32) -> Result<()> {
        self.inner.give_back_tokens(destination, per_second, tokens).await
    }

    async fn ping(&self) -> Result<()> {
        self.reading().await
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

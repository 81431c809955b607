//! The dispatcher's loop on virtual time (`start_paused`): a scripted store
//! says what each claim finds and when the next thing falls due, a scripted
//! app takes as long as it is told. No sleeps in real time, no races.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::Bytes;
use hookgate_core::{DeliveryId, EventId, Headers, RetryPolicy};
use hookgate_store::{
    DeliveryFilter, DeliveryPage, DeliveryRecord, EventDetail, Ingested, ListFilter, NewDelivery, NewEvent, Page,
    Result, RouteVerdict, StateCount, Store,
};
use tokio::time::Instant;

use super::*;

#[derive(Default)]
struct ScriptedStore {
    /// What each claim returns, in turn; nothing once the script runs out.
    claims: Mutex<VecDeque<Vec<Claim>>>,
    /// When each claim was made.
    claimed_at: Mutex<Vec<Instant>>,
    /// `next_due` answers now + this.
    next_due_in_ms: Mutex<Option<i64>>,
    finished: Mutex<Vec<(DeliveryId, Verdict)>>,
}

#[async_trait]
impl Store for ScriptedStore {
    async fn ingest(&self, _: NewEvent) -> Result<Ingested> {
        unreachable!("the dispatcher never ingests")
    }
    async fn claim(&self, _: &str, _: i64, limit: usize, _: i64) -> Result<Vec<Claim>> {
        self.claimed_at.lock().unwrap().push(Instant::now());
        let claims = self.claims.lock().unwrap().pop_front().unwrap_or_default();
        assert!(claims.len() <= limit, "claimed more than the free slots");
        Ok(claims)
    }
    async fn finish(&self, id: &DeliveryId, _: Attempt, verdict: Verdict, _: i64) -> Result<bool> {
        self.finished.lock().unwrap().push((id.clone(), verdict));
        Ok(true)
    }
    async fn next_due(&self, _: &str, now_ms: i64) -> Result<Option<i64>> {
        Ok(self.next_due_in_ms.lock().unwrap().map(|d| now_ms + d))
    }
    async fn replay(&self, _: &EventId, _: i64) -> Result<u64> {
        unreachable!("the dispatcher never replays")
    }
    async fn replay_delivery(&self, _: &DeliveryId, _: i64) -> Result<bool> {
        unreachable!("the dispatcher never replays")
    }
    async fn reroute(&self, _: &EventId, _: Vec<RouteVerdict>, _: Vec<NewDelivery>, _: i64) -> Result<Option<u64>> {
        unreachable!("the dispatcher never routes")
    }
    async fn get(&self, _: &EventId) -> Result<Option<EventDetail>> {
        unreachable!("the dispatcher never reads events")
    }
    async fn get_delivery(&self, _: &DeliveryId) -> Result<Option<DeliveryRecord>> {
        unreachable!("the dispatcher never reads deliveries")
    }
    async fn list(&self, _: &ListFilter) -> Result<Page> {
        unreachable!("the dispatcher never lists")
    }
    async fn list_deliveries(&self, _: &DeliveryFilter) -> Result<DeliveryPage> {
        unreachable!("the dispatcher never lists")
    }
    async fn purge_unrouted(&self, _: i64, _: usize) -> Result<u64> {
        unreachable!("the dispatcher never purges")
    }
    async fn stats(&self) -> Result<Vec<StateCount>> {
        unreachable!("the dispatcher never counts")
    }
    async fn purge_expired_dedupe(&self, _: i64, _: usize) -> Result<u64> {
        unreachable!("the dispatcher never purges")
    }
    async fn purge_finished(&self, _: hookgate_core::State, _: i64, _: usize) -> Result<u64> {
        unreachable!("the dispatcher never purges")
    }
    async fn set_paused(&self, _: &str, _: bool) -> Result<()> {
        unreachable!("the dispatcher never pauses")
    }
    async fn paused(&self) -> Result<Vec<String>> {
        unreachable!("the dispatcher reads no pause list")
    }
    async fn take_tokens(&self, _: &str, _: f64, _: u32, _: i64) -> Result<u32> {
        unreachable!("no rate limit is configured here")
    }
    async fn give_back_tokens(&self, _: &str, _: f64, _: u32) -> Result<()> {
        unreachable!("no rate limit is configured here")
    }
    async fn ping(&self) -> Result<()> {
        Ok(())
    }
}

/// An app that takes `work` and answers 200.
#[derive(Clone)]
struct App {
    work: Duration,
}

impl Deliver for App {
    fn attempt(
        &self,
        _: &Destination,
        _: &Claim,
        _: &crate::telemetry::TraceContext,
    ) -> impl std::future::Future<Output = Outcome> + Send {
        let work = self.work;
        async move {
            tokio::time::sleep(work).await;
            Outcome { status: Some(200), error: None, retry_after_ms: None, duration: work, response: None }
        }
    }
}

fn claim() -> Claim {
    Claim {
        delivery: DeliveryId::generate(),
        id: EventId::generate(),
        source: "src".into(),
        destination: "app".into(),
        route: "src->app".into(),
        order_key: None,
        received_at_ms: 0,
        headers: Headers::new(),
        body: Bytes::new(),
        attempt: 1,
        round_attempt: 1,
        trace: None,
    }
}

/// The store's clock on virtual time: it moves as the paused runtime does.
struct Virtual(Instant);

impl Clock for Virtual {
    fn now_ms(&self) -> i64 {
        1_800_000_000_000 + self.0.elapsed().as_millis() as i64
    }
}

struct Running {
    store: Arc<ScriptedStore>,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    started: Instant,
}

fn start(store: ScriptedStore, work: Duration, grace: Duration) -> Running {
    let store = Arc::new(store);
    let wake = Arc::new(Notify::new());
    let destination = Destination {
        name: "app".into(),
        url: "http://127.0.0.1:9/".parse().unwrap(),
        timeout: Duration::from_secs(30),
        concurrency: 4,
        signer: None,
        retry: RetryPolicy { max_attempts: 3, initial_ms: 10, max_ms: 100 },
        headers: Vec::new(),
        rate_limit: None,
        circuit_breaker: None,
    };
    let dispatcher = Dispatcher {
        store: store.clone(),
        clock: Arc::new(Virtual(Instant::now())),
        jitter: Arc::new(|| 0.5),
        lease_margin_ms: LEASE_MARGIN_MS,
        destination: Arc::new(destination),
        client: App { work },
        wake: wake.clone(),
        shutdown_grace: grace,
        faults: Arc::default(),
        live: Arc::new(crate::steering::Live::new("app", None)),
        failures: Arc::default(),
        telemetry: crate::telemetry::Telemetry::off(),
    };
    let (stop, stopping) = watch::channel(false);
    let task = tokio::spawn(dispatcher.run(stopping));
    Running { store, wake, stop, task, started: Instant::now() }
}

impl Running {
    /// Offsets from the start of every claim so far.
    fn claims(&self) -> Vec<Duration> {
        self.store.claimed_at.lock().unwrap().iter().map(|at| *at - self.started).collect()
    }

    async fn wait_for_claims(&self, n: usize) {
        while self.claims().len() < n {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn idle_sleeps_until_the_store_says_something_is_due() {
    let store = ScriptedStore { next_due_in_ms: Mutex::new(Some(300)), ..Default::default() };
    let running = start(store, Duration::ZERO, Duration::from_secs(1));
    running.wait_for_claims(3).await;
    let claims = running.claims();
    assert_eq!(claims[1] - claims[0], Duration::from_millis(300), "{claims:?}");
    *running.store.next_due_in_ms.lock().unwrap() = None;
    running.wait_for_claims(5).await;
    let claims = running.claims();
    assert_eq!(claims[4] - claims[3], Duration::from_millis(POLL_MS), "nothing due: poll at most every POLL_MS");
}

#[tokio::test(start_paused = true)]
async fn a_wake_up_claims_at_once() {
    let running = start(ScriptedStore::default(), Duration::ZERO, Duration::from_secs(1));
    running.wait_for_claims(1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    running.wake.notify_one();
    running.wait_for_claims(2).await;
    let woken = running.claims()[1];
    assert!(woken < Duration::from_millis(105), "woken at once, not at the next poll: {woken:?}");
}

#[tokio::test(start_paused = true)]
async fn an_ended_attempt_claims_the_next_at_once() {
    let store = ScriptedStore { claims: Mutex::new(VecDeque::from([vec![claim()]])), ..Default::default() };
    let running = start(store, Duration::from_millis(250), Duration::from_secs(1));
    running.wait_for_claims(2).await;
    let claims = running.claims();
    assert_eq!(claims[1], Duration::from_millis(250), "the attempt's end woke the loop: {claims:?}");
    assert_eq!(running.store.finished.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_attempts_finish_within_the_grace() {
    let store = ScriptedStore { claims: Mutex::new(VecDeque::from([vec![claim()]])), ..Default::default() };
    let running = start(store, Duration::from_secs(2), Duration::from_secs(10));
    running.wait_for_claims(1).await;
    running.stop.send(true).unwrap();
    running.task.await.unwrap();
    let stopped = running.started.elapsed();
    assert!(
        stopped >= Duration::from_secs(2) && stopped < Duration::from_millis(2_005),
        "stopped when the attempt ended: {stopped:?}"
    );
    assert_eq!(running.store.finished.lock().unwrap().len(), 1, "and its outcome was recorded");
}

#[tokio::test(start_paused = true)]
async fn shutdown_cuts_off_attempts_past_the_grace() {
    let store = ScriptedStore { claims: Mutex::new(VecDeque::from([vec![claim()]])), ..Default::default() };
    let running = start(store, Duration::from_secs(60), Duration::from_secs(10));
    running.wait_for_claims(1).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    running.stop.send(true).unwrap();
    running.task.await.unwrap();
    let stopped = running.started.elapsed();
    assert!(
        stopped >= Duration::from_secs(11) && stopped < Duration::from_millis(11_005),
        "1 s in, then the 10 s grace: {stopped:?}"
    );
    assert!(running.store.finished.lock().unwrap().is_empty(), "cut off: no outcome, the lease brings it back");
}

//! One run of the simulation, from a seed: the seed draws the world (how
//! many instances, the destination's limits, every fault's rate: a swarm,
//! as TigerBeetle's VOPR does), then chaos for a while, then everything
//! heals and must converge within a bounded virtual time; the checker
//! judges the whole history, and a hash of it says whether a second run of
//! the same seed did exactly the same.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookgate::checker::{self, Delivery, Findings, History, Sent};
use hookgate::clock::Clock;
use hookgate::config::{CircuitBreaker, Destination, RateLimit};
use hookgate::dispatch::{Dispatcher, LEASE_MARGIN_MS};
use hookgate_core::{EventId, Key, RetryPolicy, State};
use hookgate_store::mem::Planted as StorePlanted;
use hookgate_store::{Ingested, MemStore, NewEvent, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::app::{App, Behaviour};
use crate::faulty::{Applied, FaultyStore, Planted, SkewClock, StoreFaults, T0};

const SOURCE: &str = "src";
const DESTINATION: &str = "app";
/// Clocks are off by at most this much either way: the error the protocol
/// is built to tolerate (half a lease margin covers twice it; PostgreSQL's
/// instances keep to the database's clock within a few milliseconds).
pub const MAX_SKEW_MS: i64 = hookgate::dispatch::MAX_CLOCK_ERROR_MS;
/// How long a sender waits for an ingest, as hookgate's own handler does.
const INGEST_WAIT: Duration = Duration::from_secs(5);

/// A planted bug (`HOOKGATE_SIM_MUTANT`): the simulation must fail with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutant {
    NoFencing,
    IgnoreHead,
    SupersedeDelivering,
    NoLeaseMargin,
    AckBeforeCommit,
}

impl Mutant {
    pub const ALL: [Mutant; 5] = [
        Mutant::NoFencing,
        Mutant::IgnoreHead,
        Mutant::SupersedeDelivering,
        Mutant::NoLeaseMargin,
        Mutant::AckBeforeCommit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mutant::NoFencing => "no-fencing",
            Mutant::IgnoreHead => "ignore-head",
            Mutant::SupersedeDelivering => "supersede-delivering",
            Mutant::NoLeaseMargin => "no-lease-margin",
            Mutant::AckBeforeCommit => "ack-before-commit",
        }
    }

    pub fn parse(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// What a seed draws: the world and its faults.
#[derive(Debug, Clone)]
pub struct Swarm {
    instances: usize,
    timeout: Duration,
    concurrency: usize,
    retry: RetryPolicy,
    rate_limit: Option<f64>,
    breaker: Option<CircuitBreaker>,
    store: StoreFaults,
    lost_wakeup: f64,
    max_skew_ms: i64,
    /// Per chaos step, the chance of each thing happening.
    crash: f64,
    jump: f64,
    replay: f64,
    pause: f64,
    app: Behaviour,
    senders: usize,
    events_per_sender: usize,
    objects: usize,
    keyless: f64,
    /// How thin events are keyed: 0 none, 1 by their object, 2 across objects, 3 keyless.
    coalescing: u8,
    copies: f64,
    chaos: Duration,
}

impl Swarm {
    fn draw(rng: &mut StdRng) -> Swarm {
        let timeout = Duration::from_millis(rng.random_range(500..=3_000));
        let lease_ms = timeout.as_millis() as u64 + LEASE_MARGIN_MS as u64;
        let rate = |rng: &mut StdRng, most: f64| if rng.random_bool(0.5) { 0.0 } else { rng.random_range(0.0..most) };
        Swarm {
            instances: rng.random_range(1..=3),
            timeout,
            concurrency: rng.random_range(1..=8),
            retry: RetryPolicy {
                max_attempts: rng.random_range(2..=8),
                initial_ms: rng.random_range(50..=1_000),
                max_ms: rng.random_range(1_000..=5_000),
            },
            rate_limit: rng.random_bool(0.3).then(|| rng.random_range(5.0..50.0)),
            breaker: rng.random_bool(0.3).then(|| CircuitBreaker {
                failures: rng.random_range(2..=6),
                cooldown: Duration::from_millis(rng.random_range(500..=4_000)),
            }),
            store: StoreFaults {
                latency_ms: if rng.random_bool(0.7) { rng.random_range(0..=50) } else { 0 },
                unavailable: rate(rng, 0.1),
                answer_lost: rate(rng, 0.1),
                stall: rate(rng, 0.02),
                stall_ms: 2 * lease_ms,
            },
            lost_wakeup: rate(rng, 1.0),
            max_skew_ms: if rng.random_bool(0.6) { rng.random_range(0..=MAX_SKEW_MS) } else { 0 },
            crash: rate(rng, 0.05),
            jump: rate(rng, 0.1),
            replay: rate(rng, 0.1),
            pause: rate(rng, 0.03),
            app: Behaviour {
                fail: rate(rng, 0.4),
                too_many: rate(rng, 0.1),
                hang: rate(rng, 0.05),
                refuse: rate(rng, 0.1),
                work_ms: rng.random_range(1..=timeout.as_millis() as u64),
            },
            senders: rng.random_range(1..=6),
            events_per_sender: rng.random_range(5..=40),
            objects: rng.random_range(1..=6),
            keyless: rate(rng, 0.3),
            coalescing: rng.random_range(0..=3),
            copies: rate(rng, 0.3),
            chaos: Duration::from_secs(rng.random_range(10..=40)),
        }
    }

    fn destination(&self) -> Destination {
        Destination {
            name: DESTINATION.into(),
            url: "http://app.invalid/hooks".parse().unwrap(),
            timeout: self.timeout,
            concurrency: self.concurrency,
            signer: None,
            retry: self.retry,
            headers: Vec::new(),
            rate_limit: self.rate_limit.map(|per_second| RateLimit { per_second }),
            circuit_breaker: self.breaker,
        }
    }

    /// Virtual time everything must be finished in once healed: the longest
    /// backoff for every attempt, every lease, a breaker's cooldown, a pause's
    /// end, and the slowest rate limit's share, with room to spare.
    fn settle_within(&self, events: usize) -> Duration {
        let lease = self.timeout + Duration::from_millis(LEASE_MARGIN_MS as u64);
        let attempts = self.retry.max_attempts + 1;
        let per_event = Duration::from_millis(self.retry.max_ms) + lease * 3;
        let rate = self.rate_limit.map_or(Duration::ZERO, |r| Duration::from_secs_f64(events as f64 * 2.0 / r));
        per_event * attempts + rate + Duration::from_secs(120)
    }
}

/// What a run came to.
pub struct Run {
    /// Everything one order key went through, for a failure's report (`HOOKGATE_SIM_SEED`).
    pub trace: String,
    pub findings: Findings,
    /// Didn't finish within the bound once healed: what was still owed.
    pub stuck: Vec<String>,
    pub hash: u64,
    pub summary: String,
}

impl Run {
    pub fn clean(&self) -> bool {
        self.findings.clean() && self.stuck.is_empty()
    }
}

struct Instance {
    store: Arc<FaultyStore>,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

struct World {
    swarm: Swarm,
    app: App,
    instances: Vec<Mutex<Instance>>,
    seed: u64,
    origin: Instant,
    /// Crashes and replays: each excuses a repeated delivery across it.
    faults: Mutex<Vec<(Instant, Instant)>>,
    /// Replayed ids, and when first.
    replayed: Mutex<BTreeMap<String, Instant>>,
    restarts: Mutex<u64>,
}

impl World {
    fn start(&self, n: usize) {
        let mut instance = self.instances[n].lock().unwrap();
        let store = instance.store.clone();
        store.set_up(true);
        let clock: Arc<dyn hookgate::clock::Clock> = store.clock.clone();
        let mut dispatcher =
            Dispatcher::new(store, clock, Arc::new(self.swarm.destination()), self.app.clone(), instance.wake.clone());
        let mut restarts = self.restarts.lock().unwrap();
        *restarts += 1;
        let jitter = Arc::new(Mutex::new(StdRng::seed_from_u64(self.seed ^ (*restarts * 7_919))));
        dispatcher.jitter = Arc::new(move || jitter.lock().unwrap().random::<f64>());
        dispatcher.shutdown_grace = Duration::from_secs(1);
        let (stop, stopping) = watch::channel(false);
        instance.stop = stop;
        instance.task = Some(tokio::spawn(dispatcher.run(stopping)));
    }

    fn crash(&self, n: usize) {
        let mut instance = self.instances[n].lock().unwrap();
        if let Some(task) = instance.task.take() {
            task.abort();
            instance.store.set_up(false);
            let now = Instant::now();
            self.faults.lock().unwrap().push((now, now));
        }
    }

    fn is_up(&self, n: usize) -> bool {
        self.instances[n].lock().unwrap().task.is_some()
    }

    /// Work for the dispatchers: each up instance is told, unless the wake-up is lost.
    fn wake(&self, rng: &mut StdRng) {
        for instance in &self.instances {
            let instance = instance.lock().unwrap();
            if instance.task.is_some() && !rng.random_bool(self.swarm.lost_wakeup) {
                instance.wake.notify_one();
            }
        }
    }
}

/// Run the world of `seed`, with `mutant` planted.
pub async fn run(seed: u64, mutant: Option<Mutant>) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let swarm = Swarm::draw(&mut rng);
    let origin = Instant::now();
    let true_clock = move || T0 + origin.elapsed().as_millis() as i64;
    let planted = StorePlanted {
        no_fencing: mutant == Some(Mutant::NoFencing),
        ignore_head: mutant == Some(Mutant::IgnoreHead),
        supersede_delivering: mutant == Some(Mutant::SupersedeDelivering),
    };
    let shared = Arc::new(MemStore::with_planted(Arc::new(true_clock), planted));
    let delivered: Arc<Mutex<BTreeSet<Applied>>> = Arc::default();
    let app = App::new(swarm.app, seed ^ 0xA5A5);
    let wrapper_planted = Planted {
        no_lease_margin: mutant == Some(Mutant::NoLeaseMargin),
        ack_before_commit: mutant == Some(Mutant::AckBeforeCommit),
    };
    let instances = (0..swarm.instances)
        .map(|n| {
            let skew =
                if swarm.max_skew_ms == 0 { 0 } else { rng.random_range(-swarm.max_skew_ms..=swarm.max_skew_ms) };
            let clock = Arc::new(SkewClock::new(origin, skew));
            let store = FaultyStore::new(
                shared.clone(),
                clock,
                swarm.store,
                seed.wrapping_mul(31).wrapping_add(n as u64),
                delivered.clone(),
                wrapper_planted,
            );
            let (stop, _) = watch::channel(false);
            Mutex::new(Instance { store: Arc::new(store), wake: Arc::new(Notify::new()), stop, task: None })
        })
        .collect();
    let world = Arc::new(World {
        swarm: swarm.clone(),
        app: app.clone(),
        instances,
        seed,
        origin,
        faults: Mutex::default(),
        replayed: Mutex::default(),
        restarts: Mutex::default(),
    });
    for n in 0..swarm.instances {
        world.start(n);
    }

    let senders: Vec<JoinHandle<Vec<Sent>>> =
        (0..swarm.senders).map(|s| tokio::spawn(send(world.clone(), s, seed.wrapping_add(1_000 + s as u64)))).collect();
    let chaos = tokio::spawn(chaos(world.clone(), shared.clone(), seed.wrapping_add(77)));
    chaos.await.unwrap();

    // Heal: every fault off, every instance up, the destination resumed and healthy.
    app.heal();
    for (n, instance) in world.instances.iter().enumerate() {
        instance.lock().unwrap().store.heal();
        instance.lock().unwrap().store.clock.jump_to(0);
        if !world.is_up(n) {
            world.start(n);
        }
    }
    shared.set_paused(DESTINATION, false).await.unwrap();
    let mut sent = Vec::new();
    for sender in senders {
        sent.extend(sender.await.unwrap());
    }
    world.wake(&mut StdRng::seed_from_u64(0));
    let bound = swarm.settle_within(sent.len());
    let healed_at = Instant::now();
    let stuck = loop {
        let owed: Vec<String> = shared
            .states()
            .into_iter()
            .filter(|(_, state, _)| state.is_active())
            .map(|(id, state, _)| format!("{id} {state}"))
            .collect();
        if owed.is_empty() || healed_at.elapsed() > bound {
            break owed;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Hung requests the app is still working on finish (they are on record once they do).
    tokio::time::sleep(swarm.timeout * 3).await;
    for instance in &world.instances {
        let (stop, task) = {
            let mut instance = instance.lock().unwrap();
            (instance.stop.clone(), instance.task.take())
        };
        let _ = stop.send(true);
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    let history = history(&world, &shared, &delivered, sent);
    let findings = checker::check(&history);
    let hash = hash_of(&world, &history);
    let summary = format!(
        "{} instances, {} sent, {} acknowledged, {} deliveries ({} 2xx), {} faults, {:?} virtual",
        swarm.instances,
        history.sent.len(),
        history.sent.iter().filter(|s| s.acked.is_some()).count(),
        history.deliveries.len(),
        history.deliveries.iter().filter(|d| d.delivered).count(),
        history.faults.len(),
        origin.elapsed(),
    );
    let trace = trace(&world, &history, &findings);
    Run { trace, findings, stuck, hash, summary }
}

/// The order keys a failure names: every send, ack and delivery of each, and
/// the faults, in virtual milliseconds.
fn trace(world: &World, history: &History, findings: &Findings) -> String {
    let origin = world.origin.into_std();
    let ms = |at: std::time::Instant| at.saturating_duration_since(origin).as_millis();
    let named = findings.overlaps.iter().chain(&findings.out_of_order).filter_map(|f| f.split(':').next());
    let keys: BTreeSet<&str> = named.collect();
    let seen = world.app.seen.lock().unwrap().clone();
    let mut out =
        format!("{:?}\nfaults at {:?}\n", world.swarm, history.faults.iter().map(|(a, _)| ms(*a)).collect::<Vec<_>>());
    let coalesce: BTreeSet<&str> = history
        .sent
        .iter()
        .filter(|s| findings.lost_updates.iter().any(|f| f.starts_with(&format!("{} ", s.key))))
        .filter_map(|s| s.coalesce_key.as_deref())
        .collect();
    for key in coalesce {
        let _ = writeln!(out, "coalesce key {key}:");
        let events: Vec<&Sent> = history.sent.iter().filter(|s| s.coalesce_key.as_deref() == Some(key)).collect();
        for s in &events {
            let _ = writeln!(
                out,
                "  sent {} (order {}) at {:?}, acked {:?}",
                s.key,
                s.order_key,
                s.sent_at.map(ms),
                s.acked.as_ref().map(|(id, at)| (id, ms(*at), history.superseded.get(id), history.dead.contains(id)))
            );
        }
        let mut seen: Vec<_> = seen.iter().filter(|d| events.iter().any(|s| s.key == d.key)).collect();
        seen.sort_by_key(|s| s.started);
        for s in seen {
            let _ = writeln!(
                out,
                "  seen {} #{} ({}) {}..{} ms: {}",
                s.webhook_id,
                s.attempt,
                s.key,
                ms(s.started.into_std()),
                ms(s.finished.into_std()),
                s.status
            );
        }
    }
    for key in keys {
        let _ = writeln!(out, "order key {key}:");
        for s in history.sent.iter().filter(|s| s.order_key == key) {
            let _ = writeln!(
                out,
                "  sent {} at {:?}, acked {:?}",
                s.key,
                s.sent_at.map(ms),
                s.acked.as_ref().map(|(id, at)| (id, ms(*at)))
            );
        }
        let mut seen: Vec<_> = seen.iter().filter(|s| s.order_key == key).collect();
        seen.sort_by_key(|s| s.started);
        for s in seen {
            let _ = writeln!(
                out,
                "  seen {} #{} ({}) {}..{} ms: {}",
                s.webhook_id,
                s.attempt,
                s.key,
                ms(s.started.into_std()),
                ms(s.finished.into_std()),
                s.status
            );
        }
    }
    out
}

/// One sender: its events one after another (each after the last one's ack,
/// or not: a fifth go out without waiting), retrying each until acknowledged,
/// through a random instance each time; some sent twice at once (a copy).
async fn send(world: Arc<World>, sender: usize, seed: u64) -> Vec<Sent> {
    let mut rng = StdRng::seed_from_u64(seed);
    let swarm = &world.swarm;
    let mut sent = Vec::new();
    let mut waiting: Vec<JoinHandle<Sent>> = Vec::new();
    for n in 0..swarm.events_per_sender {
        let object = rng.random_range(0..swarm.objects);
        let keyless = rng.random_bool(swarm.keyless);
        let order_key = (!keyless).then(|| format!("o{object}"));
        let thin = rng.random_bool(0.5);
        let coalesce_key = match (swarm.coalescing, thin) {
            (1, true) => Some(format!("c{object}")),
            (2, true) => Some(format!("c{}", object % 2)),
            (3, true) if keyless => Some(format!("k{}", object % 2)),
            _ => None,
        };
        let key = format!("s{sender}e{n}");
        let deduped = !rng.random_bool(0.2);
        let event = Event { key, order_key, coalesce_key, deduped };
        let copy = rng.random_bool(swarm.copies);
        let one = tokio::spawn(deliver_one(world.clone(), event.clone(), rng.random()));
        if copy {
            // A copy microseconds apart (a sender's retry racing the original), through another instance.
            let again = tokio::spawn(deliver_one(world.clone(), event, rng.random()));
            let (a, b) = (one.await.unwrap(), again.await.unwrap());
            sent.push(if a.acked.is_some() { a } else { b });
        } else if rng.random_bool(0.2) {
            waiting.push(one);
        } else {
            sent.push(one.await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..=300))).await;
    }
    for one in waiting {
        sent.push(one.await.unwrap());
    }
    sent
}

#[derive(Debug, Clone)]
struct Event {
    key: String,
    order_key: Option<String>,
    coalesce_key: Option<String>,
    deduped: bool,
}

/// Send one event until it is acknowledged (a new request, a new id, each try).
async fn deliver_one(world: Arc<World>, event: Event, seed: u64) -> Sent {
    let mut rng = StdRng::seed_from_u64(seed);
    let sent_at = Instant::now();
    let mut record = Sent {
        key: event.key.clone(),
        order_key: event.order_key.clone().unwrap_or_default(),
        coalesce_key: event.coalesce_key.clone(),
        sent_at: Some(sent_at.into_std()),
        acked: None,
    };
    for _ in 0..10_000 {
        let n = rng.random_range(0..world.instances.len());
        let store = world.instances[n].lock().unwrap().store.clone();
        let now = store.clock.now_ms();
        let new = NewEvent {
            id: EventId::from_parts(now.max(0) as u64, rng.random()),
            source: SOURCE.into(),
            destination: DESTINATION.into(),
            received_at_ms: now,
            headers: hookgate_core::Headers::new(),
            body: event.key.clone().into_bytes().into(),
            dedupe_key: event.deduped.then(|| Key::from(event.key.as_str())),
            dedupe_window_ms: 3_600_000,
            order_key: event.order_key.as_deref().map(Key::from),
            coalesce_key: event.coalesce_key.as_deref().map(Key::from),
            warnings: Vec::new(),
        };
        match tokio::time::timeout(INGEST_WAIT, store.ingest(new)).await {
            Ok(Ok(Ingested::Accepted { id, .. } | Ingested::Duplicate { original: id })) => {
                record.acked = Some((id.to_string(), Instant::now().into_std()));
                world.wake(&mut rng);
                return record;
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.random_range(50..=500))).await,
        }
    }
    record
}

/// Crashes and restarts, clock jumps, replays, pauses: one step every 100 ms
/// to a second, for the chaos's length.
async fn chaos(world: Arc<World>, shared: Arc<MemStore>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let swarm = world.swarm.clone();
    let until = Instant::now() + swarm.chaos;
    let mut restart_at: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut paused_until: Option<Instant> = None;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..=1_000))).await;
        let now = Instant::now();
        for n in 0..swarm.instances {
            if restart_at.get(&n).is_some_and(|at| *at <= now) {
                restart_at.remove(&n);
                world.start(n);
            } else if world.is_up(n) && rng.random_bool(swarm.crash) {
                world.crash(n);
                restart_at.insert(n, now + Duration::from_millis(rng.random_range(200..=5_000)));
            }
            if swarm.max_skew_ms > 0 && rng.random_bool(swarm.jump) {
                let skew = rng.random_range(-swarm.max_skew_ms..=swarm.max_skew_ms);
                world.instances[n].lock().unwrap().store.clock.jump_to(skew);
            }
        }
        if rng.random_bool(swarm.replay) {
            // An operator replays a finished event (through no fault: the admin API retries).
            let finished: Vec<EventId> =
                shared.states().into_iter().filter(|(_, s, _)| !s.is_active()).map(|(id, ..)| id).collect();
            if !finished.is_empty() {
                let id = &finished[rng.random_range(0..finished.len())];
                if shared.replay(id, shared.now_ms()).await.unwrap() {
                    world.faults.lock().unwrap().push((now, now));
                    world.replayed.lock().unwrap().entry(id.to_string()).or_insert(now);
                    world.wake(&mut rng);
                }
            }
        }
        match paused_until {
            Some(at) if at <= now => {
                shared.set_paused(DESTINATION, false).await.unwrap();
                paused_until = None;
                world.wake(&mut rng);
            }
            None if rng.random_bool(swarm.pause) => {
                shared.set_paused(DESTINATION, true).await.unwrap();
                paused_until = Some(now + Duration::from_millis(rng.random_range(500..=5_000)));
            }
            _ => {}
        }
    }
    let _ = world.origin;
}

/// The history the checker reads: what was sent and told, what the app had
/// and when, the faults; and what the store says ended without a delivery.
fn history(world: &World, shared: &MemStore, delivered: &Mutex<BTreeSet<Applied>>, sent: Vec<Sent>) -> History {
    let seen = world.app.seen.lock().unwrap().clone();
    let applied = delivered.lock().unwrap().clone();
    let mut faults: Vec<(std::time::Instant, std::time::Instant)> =
        world.faults.lock().unwrap().iter().map(|(a, b)| (a.into_std(), b.into_std())).collect();
    let mut deliveries = Vec::new();
    for s in &seen {
        let success = (200..300).contains(&s.status);
        let id: EventId = s.webhook_id.parse().unwrap();
        if success && !applied.contains(&Applied { id, attempt: s.attempt }) {
            // hookgate never took this success (it gave up at the timeout, crashed, or the
            // outcome was fenced or lost): the event is owed again, at least once.
            let at = s.started.into_std();
            faults.push((at, at));
        }
        deliveries.push(Delivery {
            webhook_id: s.webhook_id.clone(),
            key: s.key.clone(),
            order_key: s.order_key.clone(),
            started: s.started.into_std(),
            finished: s.finished.into_std(),
            delivered: success,
        });
    }
    let states = shared.states();
    let dead = states.iter().filter(|(_, s, _)| *s == State::Dead).map(|(id, ..)| id.to_string()).collect();
    let superseded = states
        .iter()
        .filter(|(_, s, _)| *s == State::Superseded)
        .filter_map(|(id, _, by)| Some((id.to_string(), by.as_ref()?.to_string())))
        .collect();
    History {
        sent,
        deliveries,
        faults,
        send_slack: Duration::ZERO,
        dead,
        superseded,
        replayed: world.replayed.lock().unwrap().iter().map(|(id, at)| (id.clone(), at.into_std())).collect(),
    }
}

/// FNV-1a over everything that happened, in virtual milliseconds from the start.
fn hash_of(world: &World, history: &History) -> u64 {
    let origin = world.origin.into_std();
    let ms = |at: std::time::Instant| at.duration_since(origin).as_millis();
    let mut text = String::new();
    for s in &history.sent {
        let _ = writeln!(text, "sent {} {:?}", s.key, s.acked.as_ref().map(|(id, at)| (id, ms(*at))));
    }
    for d in &history.deliveries {
        let _ = writeln!(text, "seen {} {} {} {} {}", d.webhook_id, d.key, ms(d.started), ms(d.finished), d.delivered);
    }
    for (from, to) in &history.faults {
        let _ = writeln!(text, "fault {} {}", ms(*from), ms(*to));
    }
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

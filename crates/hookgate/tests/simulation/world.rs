//! One run of the simulation, from a seed: the seed draws the world (how
//! many instances, one to three destinations each with its own limits, app,
//! route and queue keys, every fault's rate: a swarm, as TigerBeetle's VOPR
//! does), then chaos for a while, then everything heals and must converge
//! within a bounded virtual time; the checker judges each destination's
//! history, and a hash of it all says whether a second run of the same seed
//! did exactly the same.
//!
//! Routes: the first destination takes every event; another takes only
//! those of even objects, or only keyed ones; one may order by a coarser
//! key than the source's, or not coalesce at all (an event superseded at
//! one destination is still owed at another). In a third of the worlds with
//! several destinations the first is healthy and the others are bad (failing,
//! slow, paused often): then every event owed to the first must reach it
//! promptly, whatever the others do (independence).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookgate::checker::{self, Delivery, Findings, History, Sent};
use hookgate::clock::Clock;
use hookgate::config::{CircuitBreaker, Destination, RateLimit};
use hookgate::dispatch::{Dispatcher, LEASE_MARGIN_MS};
use hookgate_core::{DeliveryId, EventId, Key, RetryPolicy, State};
use hookgate_store::mem::Planted as StorePlanted;
use hookgate_store::{Ingested, MemStore, NewDelivery, NewEvent, RouteVerdict, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::app::{App, Behaviour};
use crate::faulty::{Applied, FaultyStore, Planted, SkewClock, StoreFaults, T0};

const SOURCE: &str = "src";
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
    SharedQueues,
}

impl Mutant {
    pub const ALL: [Mutant; 6] = [
        Mutant::NoFencing,
        Mutant::IgnoreHead,
        Mutant::SupersedeDelivering,
        Mutant::NoLeaseMargin,
        Mutant::AckBeforeCommit,
        Mutant::SharedQueues,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Mutant::NoFencing => "no-fencing",
            Mutant::IgnoreHead => "ignore-head",
            Mutant::SupersedeDelivering => "supersede-delivering",
            Mutant::NoLeaseMargin => "no-lease-margin",
            Mutant::AckBeforeCommit => "ack-before-commit",
            Mutant::SharedQueues => "shared-queues",
        }
    }

    pub fn parse(name: &str) -> Option<Mutant> {
        Mutant::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// Which events a destination's route takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Takes {
    Every,
    EvenObjects,
    Keyed,
}

/// One destination: its limits, its app, its route and its queue keys.
#[derive(Debug, Clone)]
pub struct DestinationSwarm {
    name: String,
    timeout: Duration,
    concurrency: usize,
    retry: RetryPolicy,
    rate_limit: Option<f64>,
    breaker: Option<CircuitBreaker>,
    app: Behaviour,
    /// Per chaos step, the chance it is paused.
    pause: f64,
    takes: Takes,
    /// Its queues are by a coarser key than the source's (a route's own `order_key`).
    coarse_order: bool,
    /// Its deliveries coalesce (a route without a coalesce key: none).
    coalesces: bool,
}

/// What a seed draws: the world and its faults.
#[derive(Debug, Clone)]
pub struct Swarm {
    instances: usize,
    destinations: Vec<DestinationSwarm>,
    /// The first destination is healthy, the others bad: the first must not wait for them.
    healthy_first: bool,
    store: StoreFaults,
    lost_wakeup: f64,
    max_skew_ms: i64,
    /// Per chaos step, the chance of each thing happening.
    crash: f64,
    jump: f64,
    replay: f64,
    senders: usize,
    events_per_sender: usize,
    objects: usize,
    keyless: f64,
    /// How thin events are keyed: 0 none, 1 by their object, 2 across objects, 3 keyless.
    coalescing: u8,
    copies: f64,
    chaos: Duration,
}

fn rate(rng: &mut StdRng, most: f64) -> f64 {
    if rng.random_bool(0.5) { 0.0 } else { rng.random_range(0.0..most) }
}

impl DestinationSwarm {
    fn draw(rng: &mut StdRng, n: usize) -> DestinationSwarm {
        let timeout = Duration::from_millis(rng.random_range(500..=3_000));
        DestinationSwarm {
            name: format!("d{n}"),
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
            app: Behaviour {
                fail: rate(rng, 0.4),
                too_many: rate(rng, 0.1),
                hang: rate(rng, 0.05),
                refuse: rate(rng, 0.1),
                work_ms: rng.random_range(1..=timeout.as_millis() as u64),
            },
            pause: rate(rng, 0.03),
            takes: match (n, rng.random_range(0..3)) {
                (0, _) | (_, 0) => Takes::Every,
                (_, 1) => Takes::EvenObjects,
                _ => Takes::Keyed,
            },
            coarse_order: n > 0 && rng.random_bool(0.3),
            coalesces: n == 0 || rng.random_bool(0.5),
        }
    }

    /// Healthy: answers 2xx at once, never paused, no limits in the way.
    fn healthy(mut self) -> DestinationSwarm {
        self.app = Behaviour { work_ms: 20, ..Behaviour::default() };
        self.concurrency = 16;
        self.rate_limit = None;
        self.breaker = None;
        self.pause = 0.0;
        self
    }

    /// Bad: fails often, answers slowly, is paused now and then.
    fn bad(mut self) -> DestinationSwarm {
        self.app.fail = self.app.fail.max(0.5);
        self.app.work_ms = self.timeout.as_millis() as u64;
        self.pause = self.pause.max(0.1);
        self
    }

    fn config(&self) -> Destination {
        Destination {
            name: self.name.clone(),
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

    fn lease(&self) -> Duration {
        self.timeout + Duration::from_millis(LEASE_MARGIN_MS as u64)
    }

    /// Whether its route takes `event`, and the keys of its queue if so.
    fn route(&self, event: &Event) -> Option<(Option<String>, Option<String>)> {
        let takes = match self.takes {
            Takes::Every => true,
            Takes::EvenObjects => event.object.is_multiple_of(2),
            Takes::Keyed => event.order_key.is_some(),
        };
        if !takes {
            return None;
        }
        let order_key = match (&event.order_key, self.coarse_order) {
            (Some(_), true) => Some(format!("g{}", event.object % 2)),
            (key, _) => key.clone(),
        };
        let coalesce_key = if self.coalesces { event.coalesce_key.clone() } else { None };
        Some((order_key, coalesce_key))
    }
}

impl Swarm {
    fn draw(seed: u64, rng: &mut StdRng) -> Swarm {
        let count = rng.random_range(1..=3);
        let mut destinations: Vec<DestinationSwarm> = (0..count).map(|n| DestinationSwarm::draw(rng, n)).collect();
        let healthy_first = count > 1 && rng.random_bool(0.33);
        if healthy_first {
            destinations =
                destinations.into_iter().enumerate().map(|(n, d)| if n == 0 { d.healthy() } else { d.bad() }).collect();
        }
        let longest_lease = destinations.iter().map(DestinationSwarm::lease).max().unwrap_or_default();
        Swarm {
            instances: rng.random_range(1..=3),
            destinations,
            healthy_first,
            store: StoreFaults {
                latency_ms: if rng.random_bool(0.7) { rng.random_range(0..=50) } else { 0 },
                unavailable: rate(rng, 0.1),
                answer_lost: rate(rng, 0.1),
                stall: rate(rng, 0.02),
                stall_ms: 2 * longest_lease.as_millis() as u64,
            },
            lost_wakeup: rate(rng, 1.0),
            max_skew_ms: if rng.random_bool(0.6) { rng.random_range(0..=MAX_SKEW_MS) } else { 0 },
            crash: rate(rng, 0.05),
            jump: rate(rng, 0.1),
            replay: rate(rng, 0.1),
            senders: rng.random_range(1..=6),
            events_per_sender: rng.random_range(5..=40),
            objects: rng.random_range(1..=6),
            keyless: rate(rng, 0.3),
            coalescing: rng.random_range(0..=3),
            copies: rate(rng, 0.3),
            chaos: Duration::from_secs(rng.random_range(10..=40)),
        }
        .judged_half_the_time(seed)
    }

    /// Independence is judged only where the store holds nothing up, which
    /// the draws above give one healthy-first world in sixteen (~1.4% of seeds).
    /// Half of those worlds keep a sound store and no crash, so ~12% of seeds
    /// judge it. The coin is its own generator's, from the seed: the seed's
    /// main stream, and so every other world, is drawn as before.
    fn judged_half_the_time(mut self, seed: u64) -> Swarm {
        if self.healthy_first && StdRng::seed_from_u64(seed ^ 0x1d3e_9e4d_5a17_0b33).random_bool(0.5) {
            self.store.unavailable = 0.0;
            self.store.answer_lost = 0.0;
            self.store.stall = 0.0;
            self.crash = 0.0;
        }
        self
    }

    /// Virtual time everything must be finished in once healed: for the
    /// slowest destination, the longest backoff for every attempt, every
    /// lease, a breaker's cooldown, a pause's end, and the slowest rate
    /// limit's share, with room to spare.
    fn settle_within(&self, events: usize) -> Duration {
        self.destinations
            .iter()
            .map(|d| {
                let attempts = d.retry.max_attempts + 1;
                let per_event = Duration::from_millis(d.retry.max_ms) + d.lease() * 3;
                let rate = d.rate_limit.map_or(Duration::ZERO, |r| Duration::from_secs_f64(events as f64 * 2.0 / r));
                per_event * attempts + rate + Duration::from_secs(120)
            })
            .max()
            .unwrap_or_default()
    }

    /// Whether the independence of the healthy destination is judged: only
    /// where the store itself holds nothing up (no stall, outage, lost answer
    /// or crash: each delays every destination alike, by up to a lease).
    fn judges_independence(&self) -> bool {
        let s = &self.store;
        self.healthy_first && s.unavailable == 0.0 && s.answer_lost == 0.0 && s.stall == 0.0 && self.crash == 0.0
    }
}

/// What a run came to.
pub struct Run {
    /// Everything one order key went through, for a failure's report (`HOOKGATE_SIM_SEED`).
    pub trace: String,
    /// What the checker found, per destination (each finding names its destination).
    pub findings: Findings,
    /// Events the healthy destination had later than its own work explains (independence).
    pub delayed: Vec<String>,
    /// Whether this world judged independence at all (`Swarm::judges_independence`).
    pub judged_independence: bool,
    /// Didn't finish within the bound once healed: what was still owed.
    pub stuck: Vec<String>,
    pub hash: u64,
    pub summary: String,
}

impl Run {
    pub fn clean(&self) -> bool {
        self.findings.clean() && self.stuck.is_empty() && self.delayed.is_empty()
    }
}

struct Instance {
    store: Arc<FaultyStore>,
    /// One per destination.
    wakes: Vec<Arc<Notify>>,
    stop: watch::Sender<bool>,
    /// Its dispatchers, one per destination, while it is up.
    tasks: Vec<JoinHandle<()>>,
}

struct World {
    swarm: Swarm,
    /// One app per destination.
    apps: Vec<App>,
    instances: Vec<Mutex<Instance>>,
    seed: u64,
    origin: Instant,
    /// Crashes and replays: each excuses a repeated delivery across it.
    faults: Mutex<Vec<(Instant, Instant)>>,
    /// Replayed (destination, id), and when first.
    replayed: Mutex<BTreeMap<(String, String), Instant>>,
    restarts: Mutex<u64>,
}

impl World {
    fn start(&self, n: usize) {
        let mut instance = self.instances[n].lock().unwrap();
        let store = instance.store.clone();
        store.set_up(true);
        let (stop, stopping) = watch::channel(false);
        instance.stop = stop;
        let mut restarts = self.restarts.lock().unwrap();
        *restarts += 1;
        for (d, destination) in self.swarm.destinations.iter().enumerate() {
            let clock: Arc<dyn hookgate::clock::Clock> = store.clock.clone();
            let mut dispatcher = Dispatcher::new(
                store.clone(),
                clock,
                Arc::new(destination.config()),
                self.apps[d].clone(),
                instance.wakes[d].clone(),
            );
            let jitter =
                Arc::new(Mutex::new(StdRng::seed_from_u64(self.seed ^ (*restarts * 7_919) ^ ((d as u64) << 40))));
            dispatcher.jitter = Arc::new(move || jitter.lock().unwrap().random::<f64>());
            dispatcher.shutdown_grace = Duration::from_secs(1);
            let task = tokio::spawn(dispatcher.run(stopping.clone()));
            instance.tasks.push(task);
        }
    }

    fn crash(&self, n: usize) {
        let mut instance = self.instances[n].lock().unwrap();
        if !instance.tasks.is_empty() {
            for task in instance.tasks.drain(..) {
                task.abort();
            }
            instance.store.set_up(false);
            let now = Instant::now();
            self.faults.lock().unwrap().push((now, now));
        }
    }

    fn is_up(&self, n: usize) -> bool {
        !self.instances[n].lock().unwrap().tasks.is_empty()
    }

    /// Work for the dispatchers: each up instance's are told, unless the wake-up is lost.
    fn wake(&self, rng: &mut StdRng) {
        for instance in &self.instances {
            let instance = instance.lock().unwrap();
            if instance.tasks.is_empty() {
                continue;
            }
            for wake in &instance.wakes {
                if !rng.random_bool(self.swarm.lost_wakeup) {
                    wake.notify_one();
                }
            }
        }
    }
}

/// Run the world of `seed`, with `mutant` planted.
pub async fn run(seed: u64, mutant: Option<Mutant>) -> Run {
    let mut rng = StdRng::seed_from_u64(seed);
    let swarm = Swarm::draw(seed, &mut rng);
    let origin = Instant::now();
    let true_clock = move || T0 + origin.elapsed().as_millis() as i64;
    let planted = StorePlanted {
        no_fencing: mutant == Some(Mutant::NoFencing),
        ignore_head: mutant == Some(Mutant::IgnoreHead),
        supersede_delivering: mutant == Some(Mutant::SupersedeDelivering),
        one_queue_for_all_destinations: mutant == Some(Mutant::SharedQueues),
    };
    let shared = Arc::new(MemStore::with_planted(Arc::new(true_clock), planted));
    let delivered: Arc<Mutex<BTreeSet<Applied>>> = Arc::default();
    let apps: Vec<App> = swarm
        .destinations
        .iter()
        .enumerate()
        .map(|(d, destination)| App::new(destination.app, seed ^ 0xA5A5 ^ ((d as u64) << 32)))
        .collect();
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
            let wakes = swarm.destinations.iter().map(|_| Arc::new(Notify::new())).collect();
            Mutex::new(Instance { store: Arc::new(store), wakes, stop, tasks: Vec::new() })
        })
        .collect();
    let world = Arc::new(World {
        swarm: swarm.clone(),
        apps: apps.clone(),
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

    let senders: Vec<JoinHandle<Vec<(Event, Sent)>>> =
        (0..swarm.senders).map(|s| tokio::spawn(send(world.clone(), s, seed.wrapping_add(1_000 + s as u64)))).collect();
    let chaos = tokio::spawn(chaos(world.clone(), shared.clone(), seed.wrapping_add(77)));
    chaos.await.unwrap();

    // Heal: every fault off, every instance up, every destination resumed and healthy.
    for app in &apps {
        app.heal();
    }
    for (n, instance) in world.instances.iter().enumerate() {
        instance.lock().unwrap().store.heal();
        instance.lock().unwrap().store.clock.jump_to(0);
        if !world.is_up(n) {
            world.start(n);
        }
    }
    for destination in &swarm.destinations {
        shared.set_paused(&destination.name, false).await.unwrap();
    }
    let mut sent = Vec::new();
    for sender in senders {
        sent.extend(sender.await.unwrap());
    }
    world.wake(&mut StdRng::seed_from_u64(0));
    let bound = swarm.settle_within(sent.len());
    let healed_at = Instant::now();
    let stuck = loop {
        let owed: Vec<String> = shared
            .deliveries()
            .into_iter()
            .filter(|d| d.state.is_active())
            .map(|d| format!("{} to {} {}", d.event, d.destination, d.state))
            .collect();
        if owed.is_empty() || healed_at.elapsed() > bound {
            break owed;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // Hung requests the apps are still working on finish (they are on record once they do).
    let longest = swarm.destinations.iter().map(|d| d.timeout).max().unwrap_or_default();
    tokio::time::sleep(longest * 3).await;
    for instance in &world.instances {
        let (stop, tasks) = {
            let mut instance = instance.lock().unwrap();
            (instance.stop.clone(), instance.tasks.drain(..).collect::<Vec<_>>())
        };
        let _ = stop.send(true);
        for task in tasks {
            let _ = task.await;
        }
    }

    let mut findings = Findings::default();
    let mut hash_text = String::new();
    let mut trace_text = format!("{swarm:?}\n");
    let mut counts = (0, 0);
    for (d, destination) in swarm.destinations.iter().enumerate() {
        let history = history(&world, &shared, &delivered, &sent, d);
        let found = checker::check(&history);
        let name = &destination.name;
        let tag = |list: Vec<String>| list.into_iter().map(|f| format!("{name}: {f}")).collect::<Vec<_>>();
        if !found.clean() {
            trace_text.push_str(&format!("destination {name}:\n{}", trace(&world, d, &history, &found)));
        }
        findings.lost.extend(tag(found.lost));
        findings.unexpected.extend(tag(found.unexpected));
        findings.duplicated.extend(tag(found.duplicated));
        findings.overlaps.extend(tag(found.overlaps));
        findings.out_of_order.extend(tag(found.out_of_order));
        findings.lost_updates.extend(tag(found.lost_updates));
        hash_text.push_str(&format!("destination {name}\n{}", described(&world, &history)));
        counts.0 += history.deliveries.len();
        counts.1 += history.deliveries.iter().filter(|d| d.delivered).count();
    }
    // An event no route took is stored all the same.
    for (event, s) in &sent {
        if let Some((id, _)) = &s.acked
            && swarm.destinations.iter().all(|d| d.route(event).is_none())
        {
            let stored = shared.get(&id.parse().unwrap()).await.unwrap();
            if stored.is_none_or(|e| e.record.state != hookgate_core::EventState::Unrouted) {
                findings.lost.push(format!("{}: acknowledged as {id}, routed nowhere, and not stored unrouted", s.key));
            }
        }
    }
    let delayed = if swarm.judges_independence() { independence(&world, &sent) } else { Vec::new() };
    let hash = fnv(&hash_text);
    let summary = format!(
        "{} instances, {} destinations{}, {} sent, {} acknowledged, {} deliveries ({} 2xx), {} faults, {:?} virtual",
        swarm.instances,
        swarm.destinations.len(),
        if swarm.judges_independence() { " (the first healthy, its independence judged)" } else { "" },
        sent.len(),
        sent.iter().filter(|(_, s)| s.acked.is_some()).count(),
        counts.0,
        counts.1,
        world.faults.lock().unwrap().len(),
        origin.elapsed(),
    );
    Run { trace: trace_text, findings, delayed, judged_independence: swarm.judges_independence(), stuck, hash, summary }
}

/// How long the healthy destination may take with an event beyond its own
/// queue: a dispatcher's poll (a lost wake-up), the clocks' skew both ways
/// (a delivery due on one instance's clock is not yet due on another's),
/// the store's latency over a claim and an outcome, and its app's work.
const PROMPT_MS: u64 = hookgate::dispatch::POLL_MS + 2 * MAX_SKEW_MS as u64 + 4 * 50 + 20 + 500;

/// Independence: every event the healthy first destination is owed reaches
/// it within [`PROMPT_MS`] of when it could (its ack, or the end of the
/// delivery before it in its queue there), whatever the others do.
fn independence(world: &World, sent: &[(Event, Sent)]) -> Vec<String> {
    let healthy = &world.swarm.destinations[0];
    let seen = world.apps[0].seen.lock().unwrap().clone();
    let first_success = |id: &str| {
        seen.iter().filter(|s| s.webhook_id == id && (200..300).contains(&s.status)).min_by_key(|s| s.started)
    };
    let mut owed: Vec<(std::time::Instant, &str, String)> = sent
        .iter()
        .filter_map(|(event, s)| {
            let (order_key, _) = healthy.route(event)?;
            let (id, acked) = s.acked.as_ref()?;
            Some((*acked, id.as_str(), order_key.unwrap_or_else(|| format!("(none) {id}"))))
        })
        .collect();
    owed.sort();
    let replayed = world.replayed.lock().unwrap();
    let mut queue_free: BTreeMap<String, std::time::Instant> = BTreeMap::new();
    let mut delayed = Vec::new();
    for (acked, id, queue) in owed {
        if replayed.contains_key(&(healthy.name.clone(), id.to_owned())) {
            continue; // a replay puts it back in its queue later; judged no more
        }
        let Some(first) = first_success(id) else { continue }; // superseded: the checker judges those
        let could = queue_free.get(&queue).copied().map_or(acked, |free| free.max(acked));
        let took = first.started.into_std().saturating_duration_since(could);
        if took > Duration::from_millis(PROMPT_MS) {
            delayed.push(format!("{id} (queue {queue}) reached {} {took:?} after it could", healthy.name));
        }
        queue_free.insert(queue, first.finished.into_std().max(could));
    }
    delayed
}

/// The order keys a failure names at one destination: every send, ack and
/// delivery of each, and the faults, in virtual milliseconds.
fn trace(world: &World, d: usize, history: &History, findings: &Findings) -> String {
    let origin = world.origin.into_std();
    let ms = |at: std::time::Instant| at.saturating_duration_since(origin).as_millis();
    let named = findings.overlaps.iter().chain(&findings.out_of_order).filter_map(|f| f.split(':').next());
    let keys: BTreeSet<&str> = named.collect();
    let seen = world.apps[d].seen.lock().unwrap().clone();
    let mut out = format!("faults at {:?}\n", history.faults.iter().map(|(a, _)| ms(*a)).collect::<Vec<_>>());
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
async fn send(world: Arc<World>, sender: usize, seed: u64) -> Vec<(Event, Sent)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let swarm = &world.swarm;
    let mut sent = Vec::new();
    let mut waiting: Vec<JoinHandle<(Event, Sent)>> = Vec::new();
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
        let event = Event { key, object, order_key, coalesce_key, deduped };
        let copy = rng.random_bool(swarm.copies);
        let one = tokio::spawn(deliver_one(world.clone(), event.clone(), rng.random()));
        if copy {
            // A copy microseconds apart (a sender's retry racing the original), through another instance.
            let again = tokio::spawn(deliver_one(world.clone(), event, rng.random()));
            let (a, b) = (one.await.unwrap(), again.await.unwrap());
            sent.push(if a.1.acked.is_some() { a } else { b });
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
    object: usize,
    order_key: Option<String>,
    coalesce_key: Option<String>,
    deduped: bool,
}

/// The event as an ingest stores it: routed to each destination whose route takes it.
fn new_event(world: &World, event: &Event, now: i64, rng: &mut StdRng) -> NewEvent {
    let mut routing = Vec::new();
    let mut deliveries = Vec::new();
    for destination in &world.swarm.destinations {
        let route = format!("{SOURCE}->{}", destination.name);
        let taken = destination.route(event);
        routing.push(RouteVerdict {
            route: route.clone(),
            destination: destination.name.clone(),
            matched: taken.is_some(),
            reason: if taken.is_some() {
                "matched".into()
            } else {
                format!("{:?} does not take it", destination.takes)
            },
        });
        if let Some((order_key, coalesce_key)) = taken {
            deliveries.push(NewDelivery {
                id: DeliveryId::from_parts(now.max(0) as u64, rng.random()),
                destination: destination.name.clone(),
                route,
                order_key: order_key.as_deref().map(Key::from),
                coalesce_key: coalesce_key.as_deref().map(Key::from),
            });
        }
    }
    NewEvent {
        id: EventId::from_parts(now.max(0) as u64, rng.random()),
        source: SOURCE.into(),
        received_at_ms: now,
        headers: hookgate_core::Headers::new(),
        body: event.key.clone().into_bytes().into(),
        dedupe_key: event.deduped.then(|| Key::from(event.key.as_str())),
        dedupe_window_ms: 3_600_000,
        order_key: event.order_key.as_deref().map(Key::from),
        coalesce_key: event.coalesce_key.as_deref().map(Key::from),
        event_type: None,
        warnings: Vec::new(),
        routing,
        deliveries,
        trace: None,
    }
}

/// Send one event until it is acknowledged (a new request, a new id, each try).
async fn deliver_one(world: Arc<World>, event: Event, seed: u64) -> (Event, Sent) {
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
        let new = new_event(&world, &event, now, &mut rng);
        match tokio::time::timeout(INGEST_WAIT, store.ingest(new)).await {
            Ok(Ok(Ingested::Accepted { id, .. } | Ingested::Duplicate { original: id })) => {
                record.acked = Some((id.to_string(), Instant::now().into_std()));
                world.wake(&mut rng);
                return (event, record);
            }
            _ => tokio::time::sleep(Duration::from_millis(rng.random_range(50..=500))).await,
        }
    }
    (event, record)
}

/// Crashes and restarts, clock jumps, replays, pauses: one step every 100 ms
/// to a second, for the chaos's length.
async fn chaos(world: Arc<World>, shared: Arc<MemStore>, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let swarm = world.swarm.clone();
    let until = Instant::now() + swarm.chaos;
    let mut restart_at: BTreeMap<usize, Instant> = BTreeMap::new();
    let mut paused_until: Vec<Option<Instant>> = vec![None; swarm.destinations.len()];
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
            // An operator replays a finished delivery (through no fault: the admin API retries).
            let finished: Vec<_> = shared.deliveries().into_iter().filter(|d| !d.state.is_active()).collect();
            if !finished.is_empty() {
                let chosen = &finished[rng.random_range(0..finished.len())];
                if shared.replay_delivery(&chosen.id, shared.now_ms()).await.unwrap() {
                    world.faults.lock().unwrap().push((now, now));
                    let key = (chosen.destination.clone(), chosen.event.to_string());
                    world.replayed.lock().unwrap().entry(key).or_insert(now);
                    world.wake(&mut rng);
                }
            }
        }
        for (d, destination) in swarm.destinations.iter().enumerate() {
            match paused_until[d] {
                Some(at) if at <= now => {
                    shared.set_paused(&destination.name, false).await.unwrap();
                    paused_until[d] = None;
                    world.wake(&mut rng);
                }
                None if rng.random_bool(destination.pause) => {
                    shared.set_paused(&destination.name, true).await.unwrap();
                    paused_until[d] = Some(now + Duration::from_millis(rng.random_range(500..=5_000)));
                }
                _ => {}
            }
        }
    }
    let _ = world.origin;
}

/// The history the checker reads for destination `d`: what was sent to it
/// (by its route, with the keys of its queues) and told, what its app had
/// and when, the faults; and what the store says ended without a delivery there.
fn history(
    world: &World,
    shared: &MemStore,
    delivered: &Mutex<BTreeSet<Applied>>,
    sent: &[(Event, Sent)],
    d: usize,
) -> History {
    let destination = &world.swarm.destinations[d];
    let seen = world.apps[d].seen.lock().unwrap().clone();
    let applied = delivered.lock().unwrap().clone();
    let mut faults: Vec<(std::time::Instant, std::time::Instant)> =
        world.faults.lock().unwrap().iter().map(|(a, b)| (a.into_std(), b.into_std())).collect();
    let mut deliveries = Vec::new();
    for s in &seen {
        let success = (200..300).contains(&s.status);
        let id: EventId = s.webhook_id.parse().unwrap();
        let took = Applied { destination: destination.name.clone(), id, attempt: s.attempt };
        if success && !applied.contains(&took) {
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
    let routed: Vec<Sent> = sent
        .iter()
        .filter_map(|(event, s)| {
            let (order_key, coalesce_key) = destination.route(event)?;
            Some(Sent { order_key: order_key.unwrap_or_default(), coalesce_key, ..s.clone() })
        })
        .collect();
    let mine: Vec<_> = shared.deliveries().into_iter().filter(|x| x.destination == destination.name).collect();
    let dead = mine.iter().filter(|x| x.state == State::Dead).map(|x| x.event.to_string()).collect();
    let superseded = mine
        .iter()
        .filter(|x| x.state == State::Superseded)
        .filter_map(|x| Some((x.event.to_string(), x.superseded_by.as_ref()?.to_string())))
        .collect();
    let replayed = world
        .replayed
        .lock()
        .unwrap()
        .iter()
        .filter(|((to, _), _)| *to == destination.name)
        .map(|((_, id), at)| (id.clone(), at.into_std()))
        .collect();
    History { sent: routed, deliveries, faults, send_slack: Duration::ZERO, dead, superseded, replayed }
}

/// Everything that happened at one destination, in virtual milliseconds from the start.
fn described(world: &World, history: &History) -> String {
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
    text
}

/// FNV-1a.
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3))
}

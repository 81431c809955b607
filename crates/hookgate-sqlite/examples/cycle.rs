//! The store alone, without HTTP: what the writer pays per event to store,
//! claim and finish deliveries, so a change to the SQL can be compared with
//! the build before it on a noisy box (`hookgate bench` measures the whole
//! gateway; this measures only what the SQL decides).
//!
//! `cargo run --release -p hookgate-sqlite --example cycle -- [events] [routes]`
//! prints, for three phases (ingest alone; the backlog drained; ingest while
//! delivering), events per second and the writer thread's CPU per event.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use hookgate_sqlite::SqliteStore;
use hookgate_store::conformance::{event, ok_attempt, to};
use hookgate_store::{NewEvent, Store, Verdict};

const SOURCE: &str = "bench";
const KEYS: u64 = 1_000;
const SENDERS: usize = 64;

fn main() {
    let mut args = std::env::args().skip(1);
    let events: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let routes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let dir = tempfile::tempdir().expect("a temp dir");
    let store = Arc::new(SqliteStore::open(dir.path().join("cycle.db"), now()).expect("the store opens"));
    let destinations: Arc<Vec<String>> = Arc::new((1..=routes).map(|n| format!("d{n}")).collect());
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let phase = Phase::start();
        ingest(&store, &destinations, events).await;
        phase.report("ingest alone", events);

        let phase = Phase::start();
        let stop = Arc::new(AtomicBool::new(true));
        let delivered = dispatch(&store, &destinations, events * routes as u64, stop).await;
        phase.report("backlog drained", delivered / routes as u64);

        let phase = Phase::start();
        let stop = Arc::new(AtomicBool::new(false));
        let dispatcher = tokio::spawn({
            let (store, destinations, stop) = (store.clone(), destinations.clone(), stop.clone());
            async move { dispatch(&store, &destinations, events * routes as u64, stop).await }
        });
        ingest(&store, &destinations, events).await;
        stop.store(true, Ordering::Relaxed);
        let delivered = dispatcher.await.unwrap();
        phase.report("ingest while delivering", delivered / routes as u64);
    });
}

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

fn new_event(n: u64, destinations: &[String]) -> NewEvent {
    let key = format!("o{}", n % KEYS);
    let mut new = NewEvent {
        order_key: Some(key.as_str().into()),
        dedupe_key: Some(format!("evt-{n}-{}", now()).as_str().into()),
        body: Bytes::from(vec![b'x'; 1024]),
        ..event(SOURCE, now())
    };
    for destination in destinations {
        new = to(destination, new);
    }
    new
}

async fn ingest(store: &Arc<SqliteStore>, destinations: &Arc<Vec<String>>, events: u64) {
    let next = Arc::new(AtomicU64::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (store, destinations, next) = (store.clone(), destinations.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= events {
                        return;
                    }
                    store.ingest(new_event(n, &destinations)).await.expect("stored");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
}

/// Claim and finish (delivered) until `stop` is set and nothing is due, or
/// `most` deliveries are done; how many were.
async fn dispatch(store: &Arc<SqliteStore>, destinations: &Arc<Vec<String>>, most: u64, stop: Arc<AtomicBool>) -> u64 {
    let done = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = destinations
        .iter()
        .map(|destination| {
            let (store, destination, done, stop) = (store.clone(), destination.clone(), done.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    let claims = store.claim(&destination, now(), 256, 60_000).await.expect("claimed");
                    if claims.is_empty() {
                        if (stop.load(Ordering::Relaxed) || done.load(Ordering::Relaxed) >= most)
                            && store.next_due(&destination, now()).await.expect("read").is_none()
                        {
                            return;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                        continue;
                    }
                    let finishes: Vec<_> = claims
                        .into_iter()
                        .map(|claim| {
                            let (store, done) = (store.clone(), done.clone());
                            tokio::spawn(async move {
                                let attempt = ok_attempt(claim.attempt, now());
                                store
                                    .finish(&claim.delivery, attempt, Verdict::Delivered, now())
                                    .await
                                    .expect("finished");
                                done.fetch_add(1, Ordering::Relaxed);
                            })
                        })
                        .collect();
                    for finish in finishes {
                        finish.await.unwrap();
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.unwrap();
    }
    done.load(Ordering::Relaxed)
}

/// The writer thread's CPU and the wall clock since a phase began.
struct Phase {
    started: Instant,
    writer_ticks: u64,
}

impl Phase {
    fn start() -> Phase {
        Phase { started: Instant::now(), writer_ticks: writer_ticks() }
    }

    fn report(self, name: &str, events: u64) {
        let seconds = self.started.elapsed().as_secs_f64();
        let ticks = writer_ticks() - self.writer_ticks;
        // Clock ticks are 10 ms on Linux.
        let writer_us = ticks as f64 * 10_000.0 / events.max(1) as f64;
        println!("{name:<24} {:>9.0} events/s  writer {writer_us:>6.1} us/event", events as f64 / seconds);
    }
}

/// The writer thread's user + system clock ticks (`/proc/self/task/*/stat`).
fn writer_ticks() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter(|task| std::fs::read_to_string(task.path().join("comm")).is_ok_and(|c| c.trim() == "hg-sqlite-write"))
        .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
        .map(|stat| {
            let fields: Vec<&str> =
                stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
            fields.get(11).and_then(|u| u.parse::<u64>().ok()).unwrap_or(0)
                + fields.get(12).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0)
        })
        .sum()
}

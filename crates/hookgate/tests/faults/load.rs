//! The load a fault run is made under, and the run's history.
//!
//! One sender per order key, as a careful webhook sender behaves: it sends
//! its next event only once the last was acknowledged, and on a 503, a
//! timeout or a dropped connection it sends the *same* event again (same
//! body, so the same dedupe key: a retry of an event that was stored after
//! all is answered as its duplicate). Each request goes to a random instance
//! of those given, so a dead one is routed around.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::checker::{Delivery, History, Sent};
use crate::support::Receiver;

pub struct Load {
    stop: Arc<AtomicBool>,
    senders: Vec<tokio::task::JoinHandle<Vec<Sent>>>,
    /// Requests answered 503, and when (to see a fault answered as one).
    pub refused: Arc<Mutex<Vec<Instant>>>,
    pub acked: Arc<AtomicU64>,
}

/// Send to `targets` (base URLs), one sender per order key, bodies padded to `pad` bytes.
pub fn start(targets: Vec<String>, order_keys: usize, pad: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let refused: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let acked = Arc::new(AtomicU64::new(0));
    let targets = Arc::new(targets);
    let senders = (0..order_keys)
        .map(|k| {
            let (stop, refused, acked, targets) = (stop.clone(), refused.clone(), acked.clone(), targets.clone());
            tokio::spawn(async move {
                // Longer than hookgate's own wait for its store (5 s): a stall is answered, 503.
                let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                let order_key = format!("obj{k}");
                let mut sent = Vec::new();
                for n in 0.. {
                    let key = format!("{order_key}-{n}");
                    let body = json!({"id": key, "object": order_key, "pad": "x".repeat(pad)}).to_string();
                    let mut record = Sent {
                        key: key.clone(),
                        order_key: order_key.clone(),
                        coalesce_key: None,
                        sent_at: None,
                        acked: None,
                    };
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            sent.push(record);
                            return sent;
                        }
                        let target = &targets[rand::random_range(0..targets.len())];
                        let answer = http.post(format!("{target}/in/plain")).body(body.clone()).send().await;
                        match answer {
                            Ok(response) if response.status() == 200 => {
                                let answer: Value = response.json().await.unwrap();
                                record.acked = Some((answer["id"].as_str().unwrap().to_owned(), Instant::now()));
                                acked.fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Ok(response) => {
                                assert_eq!(response.status(), 503, "only storage trouble refuses a good event");
                                refused.lock().unwrap().push(Instant::now());
                            }
                            Err(_) => {} // the instance is down or did not answer in time: again
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    sent.push(record);
                    tokio::time::sleep(Duration::from_millis(rand::random_range(0..5))).await;
                }
                unreachable!()
            })
        })
        .collect();
    Load { stop, senders, refused, acked }
}

impl Load {
    /// Stop sending; everything each sender sent, and what it was told.
    pub async fn stop(self) -> Vec<Sent> {
        self.stop.store(true, Ordering::Relaxed);
        let mut sent = Vec::new();
        for sender in self.senders {
            sent.extend(sender.await.unwrap());
        }
        sent
    }

    pub fn refused_between(&self, from: Instant, to: Instant) -> usize {
        self.refused.lock().unwrap().iter().filter(|at| **at >= from && **at <= to).count()
    }
}

/// Wait until every acknowledged event has been delivered, then the history
/// of the run. A backlog may take a while (the app is slow on purpose, and
/// the faster ingest gets, the deeper the backlog a run leaves): give up only
/// when nothing more has been delivered for `stalled`, longer than a lease
/// and a backoff, or after ten minutes in all.
pub async fn settle(
    receiver: &Receiver,
    sent: Vec<Sent>,
    faults: Vec<(Instant, Instant)>,
    stalled: Duration,
) -> History {
    let acked: Vec<String> = sent.iter().filter_map(|s| s.acked.as_ref().map(|(id, _)| id.clone())).collect();
    let give_up = Instant::now() + Duration::from_secs(600);
    let (mut missing_before, mut progress_at) = (usize::MAX, Instant::now());
    loop {
        let delivered: std::collections::HashSet<String> =
            receiver.delivered().iter().map(|r| r.webhook_id().to_owned()).collect();
        let missing = acked.iter().filter(|id| !delivered.contains(*id)).count();
        if missing < missing_before {
            (missing_before, progress_at) = (missing, Instant::now());
        }
        if missing == 0 || progress_at.elapsed() > stalled || Instant::now() > give_up {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deliveries = receiver
        .received()
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            Delivery {
                webhook_id: r.webhook_id().to_owned(),
                key: body["id"].as_str().unwrap_or("?").to_owned(),
                order_key: r.order_key().to_owned(),
                started: r.started,
                finished: r.finished,
                delivered: r.delivered(),
            }
        })
        .collect();
    // A request written just before a kill still reaches the app after it.
    History { sent, deliveries, faults, send_slack: Duration::from_secs(1), ..History::default() }
}

/// One line for the README's table.
pub fn report(case: &str, cycles: usize, history: &History) {
    let acked = history.sent.iter().filter(|s| s.acked.is_some()).count();
    let delivered: std::collections::HashSet<&str> =
        history.deliveries.iter().filter(|d| d.delivered).map(|d| d.webhook_id.as_str()).collect();
    let redelivered = history.deliveries.iter().filter(|d| d.delivered).count() - delivered.len();
    eprintln!(
        "FAULT REPORT | {case} | cycles {cycles} | sent {} | acknowledged {acked} | delivered {} | redelivered {redelivered} | findings {:?}",
        history.sent.len(),
        delivered.len(),
        crate::checker::check(history)
    );
}

/// For a failed run: each duplicated event's deliveries and the faults, in
/// milliseconds from the first fault.
pub fn explain(history: &History, duplicated: &[String]) -> String {
    let origin = history.faults.first().map_or_else(Instant::now, |(from, _)| *from);
    let ms = |at: Instant| {
        if at >= origin { (at - origin).as_millis() as i64 } else { -((origin - at).as_millis() as i64) }
    };
    let mut out =
        format!("faults at {:?}\n", history.faults.iter().map(|(from, to)| (ms(*from), ms(*to))).collect::<Vec<_>>());
    for id in duplicated {
        let sent = history.sent.iter().find(|s| s.acked.as_ref().is_some_and(|(a, _)| a == id));
        out.push_str(&format!(
            "{id} ({:?}) acked at {:?}:\n",
            sent.map(|s| &s.key),
            sent.and_then(|s| s.acked.as_ref()).map(|(_, at)| ms(*at))
        ));
        for d in history.deliveries.iter().filter(|d| &d.webhook_id == id) {
            out.push_str(&format!("  {} .. {} delivered={}\n", ms(d.started), ms(d.finished), d.delivered));
        }
    }
    out
}

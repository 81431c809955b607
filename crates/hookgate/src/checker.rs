//! The one checker of a history, for the fault suite (real processes, real
//! sockets) and the simulation (the real dispatcher on virtual time): from
//! what the senders sent and were told, what the app received and when, and
//! what the faults were, it finds every broken promise, in the manner of a
//! Jepsen queue test:
//!
//! - **lost**: acknowledged, yet never delivered, nor dead, nor superseded;
//! - **unexpected**: delivered, yet never sent;
//! - **duplicated**: delivered twice with nothing between the two to excuse
//!   it (a fault, or a replay: at least once is the promise, not exactly once);
//! - **overlap**: two deliveries of one order key in the app's hands at once;
//! - **out of order**: of two events of one order key, the one sent after the
//!   other's ack had its first delivery first;
//! - **lost update**: an acknowledged event superseded by coalescing whose
//!   line of successors (`superseded_by`, to the last) ends in no delivery:
//!   the app must always see a delivery that started after the last update.
//!
//! Its own tests feed it bad histories, one promise broken each.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// One event a sender sent: its own id (its dedupe key, so a retry is the same event).
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: String,
    pub order_key: String,
    /// The coalesce key, for thin events that may be superseded.
    pub coalesce_key: Option<String>,
    /// When the first try of it was sent. `None`: the sender sends one event
    /// of a key at a time, each after the last one's ack, and ack order is
    /// send order.
    pub sent_at: Option<Instant>,
    /// hookgate's id and when the ack came, if one came.
    pub acked: Option<(String, Instant)>,
}

/// One request the app received.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub webhook_id: String,
    /// The sender's own id, read from the body.
    pub key: String,
    pub order_key: String,
    pub started: Instant,
    /// When it left the app's hands: answered, or given up on by hookgate at
    /// the destination's timeout (an app that goes on working after that is
    /// on its own: hookgate cannot stop it).
    pub finished: Instant,
    /// The app answered 2xx.
    pub delivered: bool,
}

#[derive(Debug, Default)]
pub struct History {
    pub sent: Vec<Sent>,
    pub deliveries: Vec<Delivery>,
    /// When faults struck (a kill is an instant, a stall or an outage a
    /// span), and replays: each excuses a repeated delivery across it.
    pub faults: Vec<(Instant, Instant)>,
    /// A fault this soon after a delivery started still explains its
    /// redelivery: a request written by a process about to be killed still
    /// reaches the app after the kill (real sockets: a second; virtual time: none).
    pub send_slack: Duration,
    /// hookgate ids the store reports dead: ended, though never delivered.
    pub dead: BTreeSet<String>,
    /// hookgate ids the store reports superseded, and by which id: ended by
    /// coalescing (the lost-update check follows each to its last successor).
    pub superseded: BTreeMap<String, String>,
    /// hookgate ids an operator replayed, and when first: a replay goes to the
    /// back of its queue, so its deliveries are not held to the original order.
    pub replayed: BTreeMap<String, Instant>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub lost: Vec<String>,
    pub unexpected: Vec<String>,
    pub duplicated: Vec<String>,
    pub overlaps: Vec<String>,
    pub out_of_order: Vec<String>,
    pub lost_updates: Vec<String>,
}

impl Findings {
    pub fn clean(&self) -> bool {
        *self == Findings::default()
    }
}

pub fn check(history: &History) -> Findings {
    let mut findings = Findings::default();
    let sent_by_key: BTreeMap<&str, &Sent> = history.sent.iter().map(|s| (s.key.as_str(), s)).collect();
    let delivered_ids: BTreeSet<&str> =
        history.deliveries.iter().filter(|d| d.delivered).map(|d| d.webhook_id.as_str()).collect();

    for sent in &history.sent {
        if let Some((id, _)) = &sent.acked
            && !delivered_ids.contains(id.as_str())
            && !history.dead.contains(id)
            && !history.superseded.contains_key(id)
        {
            findings.lost.push(format!("{} ({id})", sent.key));
        }
    }
    for delivery in &history.deliveries {
        if !sent_by_key.contains_key(delivery.key.as_str()) {
            findings.unexpected.push(delivery.key.clone());
        }
    }
    findings.duplicated = duplicated(history);

    let mut by_order_key: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for d in &history.deliveries {
        by_order_key.entry(d.order_key.as_str()).or_default().push(d);
    }
    for (order_key, mut deliveries) in by_order_key {
        if order_key.is_empty() {
            continue; // no order key: parallel by design
        }
        deliveries.sort_by_key(|d| d.started);
        // Any overlap shows between neighbours in start order (the one that starts next after
        // an interval, and before its end, overlaps it).
        for pair in deliveries.windows(2) {
            if pair[1].started < pair[0].finished {
                findings.overlaps.push(format!("{order_key}: {} and {}", pair[0].key, pair[1].key));
            }
        }
        findings.out_of_order.extend(out_of_order(history, order_key, &deliveries));
    }
    findings.lost_updates = lost_updates(history, &delivered_ids);
    findings
}

/// The same id delivered (2xx) twice with no fault or replay between the two.
fn duplicated(history: &History) -> Vec<String> {
    let mut by_id: BTreeMap<&str, Vec<&Delivery>> = BTreeMap::new();
    for d in history.deliveries.iter().filter(|d| d.delivered) {
        by_id.entry(d.webhook_id.as_str()).or_default().push(d);
    }
    let mut found = Vec::new();
    for (id, mut copies) in by_id {
        copies.sort_by_key(|d| d.started);
        for pair in copies.windows(2) {
            let (first, again) = (pair[0], pair[1]);
            let excused = history
                .faults
                .iter()
                .any(|(from, to)| *from <= again.started && *to + history.send_slack >= first.started);
            if !excused {
                found.push(id.to_owned());
            }
        }
    }
    found
}

/// Of two events of `order_key`, the one sent after the other was
/// acknowledged must have its first delivery after the other's first.
fn out_of_order(history: &History, order_key: &str, deliveries: &[&Delivery]) -> Vec<String> {
    let mut first: BTreeMap<&str, usize> = BTreeMap::new();
    for (n, d) in deliveries.iter().enumerate() {
        let replayed = history.replayed.get(d.webhook_id.as_str()).is_some_and(|at| *at <= d.started);
        if !replayed {
            first.entry(d.webhook_id.as_str()).or_insert(n);
        }
    }
    // Acknowledged events of the key that were delivered at all, in ack order.
    let mut acked: Vec<(Instant, Option<Instant>, &str, usize)> = history
        .sent
        .iter()
        .filter(|s| s.order_key == order_key)
        .filter_map(|s| {
            let (id, at) = s.acked.as_ref()?;
            Some((*at, s.sent_at, id.as_str(), *first.get(id.as_str())?))
        })
        .collect();
    acked.sort();
    let mut found = Vec::new();
    // The latest first delivery among the events acknowledged so far, in ack order.
    let mut latest: Vec<(usize, &str)> = Vec::with_capacity(acked.len());
    for (n, (_, sent_at, id, place)) in acked.iter().enumerate() {
        // The events acknowledged before this one was sent (all before it, when sends are serial).
        let before = match sent_at {
            None => n,
            // Strictly before: of an ack and a send at one instant, either may have come first.
            Some(sent_at) => acked[..n].partition_point(|(at, ..)| at < sent_at),
        };
        if before > 0 {
            let (their_place, their_id) = latest[before - 1];
            if their_place > *place {
                found.push(format!("{order_key}: {id} delivered before {their_id}"));
            }
        }
        let so_far = latest.last().copied().filter(|(p, _)| *p > *place).unwrap_or((*place, *id));
        latest.push(so_far);
    }
    found
}

/// Every acknowledged event superseded by coalescing must be covered: its
/// successors (each `superseded_by` the next) end in one delivered or dead.
fn lost_updates(history: &History, delivered: &BTreeSet<&str>) -> Vec<String> {
    let mut found = Vec::new();
    for sent in &history.sent {
        let Some((id, _)) = &sent.acked else { continue };
        let Some(mut last) = history.superseded.get(id) else { continue };
        let mut hops = 0;
        while let Some(next) = history.superseded.get(last) {
            last = next;
            hops += 1;
            if hops > history.superseded.len() {
                break; // a circle: reported below, since it ends nowhere
            }
        }
        if !delivered.contains(last.as_str()) && !history.dead.contains(last) {
            found.push(format!("{} ({id}) superseded, and its last successor {last} was never delivered", sent.key));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Clock(Instant);

    impl Clock {
        fn at(&self, ms: u64) -> Instant {
            self.0 + Duration::from_millis(ms)
        }
    }

    fn sent(key: &str, order_key: &str, acked_at: Option<Instant>) -> Sent {
        Sent {
            key: key.into(),
            order_key: order_key.into(),
            coalesce_key: None,
            sent_at: None,
            acked: acked_at.map(|at| (format!("evt_{key}"), at)),
        }
    }

    fn delivery(key: &str, order_key: &str, started: Instant, finished: Instant) -> Delivery {
        Delivery {
            webhook_id: format!("evt_{key}"),
            key: key.into(),
            order_key: order_key.into(),
            started,
            finished,
            delivered: true,
        }
    }

    /// a1 then a2 on key A, b1 on key B: acked, delivered once each, in order, one at a time.
    fn clean_history(t: &Clock) -> History {
        History {
            sent: vec![sent("a1", "A", Some(t.at(0))), sent("a2", "A", Some(t.at(1))), sent("b1", "B", Some(t.at(0)))],
            deliveries: vec![
                delivery("a1", "A", t.at(10), t.at(20)),
                delivery("a2", "A", t.at(21), t.at(30)),
                delivery("b1", "B", t.at(10), t.at(25)),
            ],
            ..History::default()
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let t = Clock(Instant::now());
        assert!(check(&clean_history(&t)).clean(), "{:?}", check(&clean_history(&t)));
    }

    #[test]
    fn a_lost_event_is_found() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        history.deliveries.retain(|d| d.key != "b1");
        assert_eq!(check(&history).lost, vec!["b1 (evt_b1)"]);
        history.dead.insert("evt_b1".into());
        assert!(check(&history).clean(), "a dead event has ended too");
    }

    #[test]
    fn an_overlap_is_found() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        history.deliveries[1].started = t.at(15); // a2 starts while a1 is in the app's hands
        let findings = check(&history);
        assert_eq!(findings.overlaps, vec!["A: a1 and a2"]);
    }

    #[test]
    fn an_overlap_behind_a_short_delivery_is_found() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        // a1 is long; x is short inside it; a2 starts after x but still inside a1.
        history.deliveries[0].finished = t.at(40);
        history.sent.push(sent("x", "A", Some(t.at(0))));
        history.deliveries.push(delivery("x", "A", t.at(11), t.at(12)));
        assert!(!check(&history).overlaps.is_empty());
    }

    #[test]
    fn an_out_of_order_pair_is_found() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        history.deliveries[0].started = t.at(31);
        history.deliveries[0].finished = t.at(40);
        let findings = check(&history);
        assert_eq!(findings.out_of_order, vec!["A: evt_a2 delivered before evt_a1"]);
    }

    /// With sends that overlap, only an event sent after another's ack must come after it.
    #[test]
    fn concurrent_sends_may_be_delivered_in_either_order() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        history.sent[0].sent_at = Some(t.at(0));
        history.sent[1].sent_at = Some(t.at(0)); // a2 sent before a1's ack came
        history.sent[0].acked = Some(("evt_a1".into(), t.at(2)));
        history.deliveries[0].started = t.at(31);
        history.deliveries[0].finished = t.at(40);
        assert!(check(&history).clean(), "{:?}", check(&history));
        history.sent[1].sent_at = Some(t.at(3)); // a2 sent after a1's ack: a1 must come first
        history.sent[1].acked = Some(("evt_a2".into(), t.at(4)));
        assert_eq!(check(&history).out_of_order, vec!["A: evt_a2 delivered before evt_a1"]);
    }

    #[test]
    fn a_replayed_event_is_not_held_to_the_original_order() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        // a1 was never delivered (superseded, say), then replayed: it goes after a2.
        history.deliveries[0].started = t.at(31);
        history.deliveries[0].finished = t.at(40);
        assert!(!check(&history).out_of_order.is_empty());
        history.replayed.insert("evt_a1".into(), t.at(30));
        assert!(check(&history).clean(), "{:?}", check(&history));
    }

    #[test]
    fn a_duplicate_needs_a_fault_to_excuse_it() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        history.deliveries.push(delivery("b1", "B", t.at(40), t.at(50)));
        assert_eq!(check(&history).duplicated, vec!["evt_b1"]);
        history.faults.push((t.at(30), t.at(30))); // a kill, or a replay, between the two
        assert!(check(&history).clean());
    }

    #[test]
    fn a_delivery_never_sent_is_found() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        history.deliveries.push(delivery("ghost", "G", t.at(5), t.at(6)));
        assert_eq!(check(&history).unexpected, vec!["ghost"]);
    }

    #[test]
    fn an_update_no_delivery_covers_is_found() {
        let t = Clock(Instant::now());
        let thin = |key: &str, acked: u64| Sent {
            coalesce_key: Some("changed:7".into()),
            ..sent(key, "7", Some(t.at(acked)))
        };
        let mut history = History {
            sent: vec![thin("c1", 0), thin("c2", 5), thin("c3", 30)],
            deliveries: vec![delivery("c2", "7", t.at(10), t.at(20))],
            superseded: [("evt_c1".to_owned(), "evt_c2".to_owned()), ("evt_c3".to_owned(), "evt_c4".to_owned())].into(),
            ..History::default()
        };
        // c3 was superseded by c4, which no one delivered.
        assert_eq!(
            check(&history).lost_updates,
            vec!["c3 (evt_c3) superseded, and its last successor evt_c4 was never delivered"]
        );
        history.dead.insert("evt_c4".into());
        assert!(check(&history).clean(), "a dead successor ends the line: {:?}", check(&history));
    }
}

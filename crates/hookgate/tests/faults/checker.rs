//! The checker of a fault run, in the manner of a Jepsen queue test: from
//! what the senders sent and were told, what the app received and when the
//! faults struck, it finds every broken promise:
//!
//! - **lost**: acknowledged, yet never delivered (nor dead);
//! - **unexpected**: delivered, yet never sent;
//! - **duplicated**: delivered twice with no fault between the two to excuse
//!   it (a delivery cut off by a crash or a stall is made again: at least once);
//! - **overlap**: two deliveries of one order key in the app's hands at once;
//! - **out of order**: an order key's first deliveries not in the order its
//!   events were acknowledged (each sender sends the next only after an ack).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

/// One event a sender sent: its own id (the dedupe key, so a retry is the same event).
#[derive(Debug, Clone)]
pub struct Sent {
    pub key: String,
    pub order_key: String,
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
    pub finished: Instant,
    pub delivered: bool,
}

/// A request written by hookgate just before it is killed still reaches the
/// app after the kill (it was in the socket's buffers): a fault this soon
/// after a delivery started still explains its redelivery.
const SEND_SLACK: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct History {
    pub sent: Vec<Sent>,
    pub deliveries: Vec<Delivery>,
    /// When faults struck: a kill is an instant, a stall or an outage a span.
    pub faults: Vec<(Instant, Instant)>,
    /// hookgate ids the store reports dead: ended, though never delivered.
    pub dead: HashSet<String>,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    pub lost: Vec<String>,
    pub unexpected: Vec<String>,
    pub duplicated: Vec<String>,
    pub overlaps: Vec<String>,
    pub out_of_order: Vec<String>,
}

impl Findings {
    pub fn clean(&self) -> bool {
        *self == Findings::default()
    }
}

pub fn check(history: &History) -> Findings {
    let mut findings = Findings::default();
    let sent_keys: HashSet<&str> = history.sent.iter().map(|s| s.key.as_str()).collect();
    let delivered: Vec<&Delivery> = history.deliveries.iter().filter(|d| d.delivered).collect();
    let delivered_ids: HashSet<&str> = delivered.iter().map(|d| d.webhook_id.as_str()).collect();

    for sent in &history.sent {
        if let Some((id, _)) = &sent.acked
            && !delivered_ids.contains(id.as_str())
            && !history.dead.contains(id)
        {
            findings.lost.push(format!("{} ({id})", sent.key));
        }
    }
    for delivery in &history.deliveries {
        if !sent_keys.contains(delivery.key.as_str()) {
            findings.unexpected.push(delivery.key.clone());
        }
    }

    let mut by_id: HashMap<&str, Vec<&Delivery>> = HashMap::new();
    for d in &delivered {
        by_id.entry(d.webhook_id.as_str()).or_default().push(d);
    }
    for (id, mut copies) in by_id {
        copies.sort_by_key(|d| d.started);
        for pair in copies.windows(2) {
            let (first, again) = (pair[0], pair[1]);
            let excused =
                history.faults.iter().any(|(from, to)| *from <= again.started && *to + SEND_SLACK >= first.started);
            if !excused {
                findings.duplicated.push(id.to_owned());
            }
        }
    }

    let mut by_key: HashMap<&str, Vec<&Delivery>> = HashMap::new();
    for d in &history.deliveries {
        by_key.entry(d.order_key.as_str()).or_default().push(d);
    }
    for (order_key, mut deliveries) in by_key {
        deliveries.sort_by_key(|d| d.started);
        for pair in deliveries.windows(2) {
            if pair[1].started < pair[0].finished {
                findings.overlaps.push(format!("{order_key}: {} and {}", pair[0].key, pair[1].key));
            }
        }
        // First deliveries in ack order.
        let mut firsts: Vec<&str> = Vec::new();
        for d in &deliveries {
            if !firsts.contains(&d.webhook_id.as_str()) {
                firsts.push(&d.webhook_id);
            }
        }
        let mut acked: Vec<(&Instant, &str)> = history
            .sent
            .iter()
            .filter(|s| s.order_key == order_key)
            .filter_map(|s| s.acked.as_ref().map(|(id, at)| (at, id.as_str())))
            .collect();
        acked.sort();
        let position: HashMap<&str, usize> = firsts.iter().enumerate().map(|(n, id)| (*id, n)).collect();
        let placed: Vec<(usize, &str)> = acked.iter().filter_map(|(_, id)| Some((*position.get(id)?, *id))).collect();
        for pair in placed.windows(2) {
            if pair[1].0 < pair[0].0 {
                findings.out_of_order.push(format!("{order_key}: {} delivered before {}", pair[1].1, pair[0].1));
            }
        }
    }
    findings
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
        Sent { key: key.into(), order_key: order_key.into(), acked: acked_at.map(|at| (format!("evt_{key}"), at)) }
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
    fn an_out_of_order_pair_is_found() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        history.deliveries[0].started = t.at(31);
        history.deliveries[0].finished = t.at(40);
        let findings = check(&history);
        assert_eq!(findings.out_of_order, vec!["A: evt_a2 delivered before evt_a1"]);
    }

    #[test]
    fn a_duplicate_needs_a_fault_to_excuse_it() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        history.deliveries.push(delivery("b1", "B", t.at(40), t.at(50)));
        assert_eq!(check(&history).duplicated, vec!["evt_b1"]);
        history.faults.push((t.at(30), t.at(30))); // a kill between the two
        assert!(check(&history).clean());
    }

    #[test]
    fn a_delivery_never_sent_is_found() {
        let t = Clock(Instant::now());
        let mut history = clean_history(&t);
        history.deliveries.push(delivery("ghost", "G", t.at(5), t.at(6)));
        assert_eq!(check(&history).unexpected, vec!["ghost"]);
    }
}

//! The delivery protocol as a model: every interleaving of a few
//! deliveries, one or two instances (each with a dispatcher per
//! destination) and the store, with time as part of the state.
//!
//! A row is a delivery: an event to one destination. Rows marked `together`
//! with the next are one event's deliveries, stored in one step. A queue is
//! (destination, order key); coalescing is per destination.
//!
//! What is modelled, each as the code does it:
//! - **the store** (`MemStore`'s rules): ingest with coalescing (only
//!   `pending` events are superseded; a superseded head hands its queue on),
//!   claims of due heads under a lease judged on the claimer's clock as it
//!   asked, outcomes fenced by the attempt number, promotion of the next head,
//!   replays to the back of the queue;
//! - **the dispatcher**: one claim at a time per instance; a claim whose
//!   answer took more than half the lease margin is given back, not
//!   delivered; an attempt ends with the app's answer or at the timeout;
//!   retries, and death after `max_attempts`;
//! - **faults**: a claim applied any time after it was asked (a stall), an
//!   answer or an outcome delayed any time (outcomes may arrive after the
//!   lease, the event claimed again), instances that crash (their claims may
//!   still be applied; their requests stay in the app's hands until they end)
//!   and restart, clocks off by up to `max_skew` ticks (each start a
//!   combination; clocks that jump are the simulation's to sample).
//!
//! The properties, per queue: one delivery in the app's hands at once, one
//! `delivering` row in the store, first deliveries in storage order, and
//! its first active delivery is its head (no queue waits behind another
//! destination's); and "sometimes" properties that prove the interesting
//! cases are reached (a re-claim while an attempt is out, a fenced outcome, a
//! supersede, a late claim given back), so a property that holds does not
//! hold only because nothing happened.

use stateright::{Model, Property, Representative};

/// What can be planted, to show the model sees each bug.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Bugs {
    pub no_fencing: bool,
    pub ignore_head: bool,
    pub supersede_delivering: bool,
    pub no_lease_margin: bool,
    /// Deliver a claim however late its answer came (the bug the simulation found).
    pub deliver_late_claims: bool,
    /// A queue is (order key) alone, whatever the destination: one
    /// destination's delivery can be the head another's waits behind.
    pub shared_queues: bool,
}

/// One delivery of the workload, stored in this order.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    pub order_key: Option<u8>,
    pub coalesce_key: Option<u8>,
    pub destination: u8,
    /// Stored in the same step as the next row: one event's deliveries.
    pub together: bool,
}

#[derive(Debug, Clone)]
pub struct Protocol {
    pub instances: u8,
    /// Each instance runs a dispatcher per destination.
    pub destinations: u8,
    pub events: Vec<Event>,
    /// Ticks an attempt may take.
    pub timeout: i16,
    /// A lease is `timeout + margin`; a claim may take `margin / 2` to come back.
    pub margin: i16,
    pub max_skew: i16,
    /// The clocks each start may have, one list per start (empty: all on time).
    pub skews: Vec<Vec<i16>>,
    pub horizon: u8,
    pub max_attempts: u8,
    pub retry_after: i16,
    pub crashes: u8,
    pub replays: u8,
    pub bugs: Bugs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lifecycle {
    Unstored,
    Pending,
    Delivering,
    Delivered,
    Dead,
    Superseded,
}

impl Lifecycle {
    fn active(self) -> bool {
        matches!(self, Lifecycle::Pending | Lifecycle::Delivering)
    }
}

/// An event's row in the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Row {
    pub state: Lifecycle,
    pub attempts: u8,
    pub round_base: u8,
    /// pending: when due; delivering: when the lease ends (store clock ticks).
    pub due: i16,
    pub head: bool,
    pub seq: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    Delivered,
    Retry { at: i16 },
    Dead,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Asked for with the instance's clock reading `clock`; not yet applied.
    Asked { clock: i16 },
    /// Applied: `event` leased as `attempt`; the answer is on its way back.
    Applied { event: u8, attempt: u8, round: u8 },
    /// In the app's hands since `since`.
    Sent { event: u8, attempt: u8, round: u8, since: u8 },
    /// The outcome, on its way to the store.
    Outcome { event: u8, attempt: u8, verdict: Verdict },
}

/// A call in flight: a claim, an attempt, an outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Call {
    pub instance: u8,
    /// Whose dispatcher made it.
    pub destination: u8,
    /// True time it was asked.
    pub asked: u8,
    /// Its instance crashed: nothing it answers is used.
    pub orphan: bool,
    pub phase: Phase,
}

/// What the last step did that the "sometimes" properties look for. Only
/// the last step's, not a record of every one: flags that stay set would
/// multiply the states by every combination of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Happened {
    #[default]
    Nothing,
    ReclaimedInFlight,
    Fenced,
    Superseded,
    GivenBack,
    Delivered,
    Dead,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct State {
    pub now: u8,
    pub rows: Vec<Row>,
    pub next_seq: u8,
    pub skew: Vec<i16>,
    /// Kept sorted: one state per set of calls, whatever order they began in.
    pub calls: Vec<Call>,
    /// Whether each event has been delivered (first sent to the app) yet.
    pub sent: Vec<bool>,
    /// An event was first sent while one stored before it, on its order
    /// key, was still owed its first delivery: checked as it happens.
    pub out_of_order: bool,
    pub replayed: Vec<bool>,
    pub crashes_left: u8,
    pub replays_left: u8,
    pub happened: Happened,
}

/// Instances are interchangeable: a state and the same state with the
/// instances' numbers swapped are one (symmetry reduction).
impl Representative for State {
    fn representative(&self) -> Self {
        let n = self.skew.len();
        if n != 2 {
            return self.clone();
        }
        let mut swapped = self.clone();
        swapped.skew.swap(0, 1);
        for call in &mut swapped.calls {
            call.instance = 1 - call.instance;
        }
        swapped.calls.sort();
        if swapped < *self { swapped } else { self.clone() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Tick,
    Ingest(u8),
    /// An instance's dispatcher for a destination asks for a claim.
    Ask(u8, u8),
    Apply(usize),
    Answer(usize),
    AppOk(usize),
    AppFail(usize),
    TimeOut(usize),
    Finish(usize),
    Crash(u8),
    Replay(u8),
}

impl Protocol {
    fn lease(&self) -> i16 {
        if self.bugs.no_lease_margin { self.timeout } else { self.timeout + self.margin }
    }

    fn clock(&self, state: &State, instance: u8) -> i16 {
        i16::from(state.now) + state.skew[usize::from(instance)]
    }

    /// Whether two rows are in one queue, as this store (bugs and all) sees it.
    fn same_queue(&self, a: usize, b: usize) -> bool {
        let (a, b) = (&self.events[a], &self.events[b]);
        a.order_key.is_some()
            && a.order_key == b.order_key
            && (a.destination == b.destination || self.bugs.shared_queues)
    }

    /// The first active row of `e`'s queue becomes its head.
    fn promote(&self, rows: &mut [Row], e: usize) {
        let first =
            (0..rows.len()).filter(|&f| self.same_queue(e, f) && rows[f].state.active()).min_by_key(|&f| rows[f].seq);
        if let Some(f) = first {
            rows[f].head = true;
        }
    }

    /// The dispatcher's verdict on a failed attempt.
    fn failed(&self, state: &State, instance: u8, round: u8) -> Verdict {
        if round >= self.max_attempts {
            Verdict::Dead
        } else {
            Verdict::Retry { at: self.clock(state, instance) + self.retry_after }
        }
    }

    /// Store one event: its rows from `e` on, as long as they are `together`.
    fn ingest(&self, s: &mut State, e: usize) {
        let mut row = e;
        loop {
            self.store_row(s, row);
            if !self.events[row].together || row + 1 >= self.events.len() {
                break;
            }
            row += 1;
        }
    }

    fn store_row(&self, s: &mut State, e: usize) {
        let event = self.events[e];
        let now = i16::from(s.now);
        if let Some(c) = event.coalesce_key {
            for other in 0..s.rows.len() {
                let row = &s.rows[other];
                let supersedes = row.state == Lifecycle::Pending
                    || (self.bugs.supersede_delivering && row.state == Lifecycle::Delivering);
                let same =
                    self.events[other].coalesce_key == Some(c) && self.events[other].destination == event.destination;
                if other != e && same && supersedes {
                    let row = &mut s.rows[other];
                    row.state = Lifecycle::Superseded;
                    row.head = false;
                    s.happened = Happened::Superseded;
                    if !self.same_queue(other, e) {
                        self.promote(&mut s.rows, other);
                    }
                }
            }
        }
        s.rows[e] = Row {
            state: Lifecycle::Pending,
            attempts: 0,
            round_base: 0,
            due: now,
            head: event.order_key.is_none(),
            seq: s.next_seq,
        };
        s.next_seq += 1;
        if event.order_key.is_some() {
            self.promote(&mut s.rows, e);
        }
    }

    fn apply_claim(&self, s: &mut State, n: usize, clock: i16) {
        let destination = s.calls[n].destination;
        let candidate = (0..s.rows.len())
            .filter(|&e| {
                let row = &s.rows[e];
                self.events[e].destination == destination
                    && row.state.active()
                    && (row.head || self.bugs.ignore_head)
                    && row.due <= clock
            })
            .min_by_key(|&e| (s.rows[e].due, s.rows[e].seq));
        let Some(e) = candidate else {
            s.calls.remove(n);
            return;
        };
        let in_flight = s.calls.iter().any(|c| match c.phase {
            Phase::Applied { event, .. } | Phase::Sent { event, .. } | Phase::Outcome { event, .. } => {
                usize::from(event) == e
            }
            Phase::Asked { .. } => false,
        });
        if in_flight {
            s.happened = Happened::ReclaimedInFlight;
        }
        let lease = self.lease();
        let row = &mut s.rows[e];
        row.state = Lifecycle::Delivering;
        row.attempts += 1;
        row.due = clock + lease;
        let (attempt, round) = (row.attempts, row.attempts - row.round_base);
        s.calls[n].phase = Phase::Applied { event: e as u8, attempt, round };
    }

    fn finish(&self, s: &mut State, event: u8, attempt: u8, verdict: Verdict) {
        let e = usize::from(event);
        let row = &mut s.rows[e];
        let current = row.state == Lifecycle::Delivering && (row.attempts == attempt || self.bugs.no_fencing);
        if !current {
            s.happened = Happened::Fenced;
            return;
        }
        match verdict {
            Verdict::Delivered => {
                row.state = Lifecycle::Delivered;
                s.happened = Happened::Delivered;
            }
            Verdict::Dead => {
                row.state = Lifecycle::Dead;
                s.happened = Happened::Dead;
            }
            Verdict::Retry { at } => {
                row.state = Lifecycle::Pending;
                row.due = at;
            }
        }
        row.head = row.state == Lifecycle::Pending;
        if !row.state.active() && self.events[e].order_key.is_some() {
            self.promote(&mut s.rows, e);
        }
    }

    fn replay(&self, s: &mut State, e: usize) {
        let row = &mut s.rows[e];
        row.state = Lifecycle::Pending;
        row.seq = s.next_seq;
        row.round_base = row.attempts;
        row.due = i16::from(s.now);
        row.head = self.events[e].order_key.is_none();
        s.next_seq += 1;
        s.replayed[e] = true;
        if self.events[e].order_key.is_some() {
            self.promote(&mut s.rows, e);
        }
    }

    /// The queue a row is in, truly: (destination, order key).
    fn queue(&self, e: usize) -> Option<(u8, u8)> {
        self.events[e].order_key.map(|k| (self.events[e].destination, k))
    }

    /// Whether a row stored before `f` in its queue, never replayed, is
    /// still owed its first delivery (as `f` gets its own).
    fn owed_before(&self, s: &State, f: usize) -> bool {
        let Some(queue) = self.queue(f) else { return false };
        (0..f).any(|e| self.queue(e) == Some(queue) && !s.replayed[e] && !s.sent[e] && s.rows[e].state.active())
    }

    /// The queues of deliveries in the app's hands.
    fn in_hands(&self, state: &State) -> Vec<(u8, u8)> {
        state
            .calls
            .iter()
            .filter_map(|c| match c.phase {
                Phase::Sent { event, .. } => self.queue(usize::from(event)),
                _ => None,
            })
            .collect()
    }

    /// Whether every queue with active deliveries has its first one, alone, as its head.
    fn heads_hold(&self, s: &State) -> bool {
        let queues: std::collections::BTreeSet<(u8, u8)> = (0..s.rows.len()).filter_map(|e| self.queue(e)).collect();
        queues.into_iter().all(|queue| {
            let active: Vec<usize> =
                (0..s.rows.len()).filter(|&e| self.queue(e) == Some(queue) && s.rows[e].state.active()).collect();
            let first = active.iter().copied().min_by_key(|&e| s.rows[e].seq);
            active.iter().all(|&e| s.rows[e].head == (Some(e) == first))
        })
    }
}

impl Model for Protocol {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let n = self.events.len();
        let row = Row { state: Lifecycle::Unstored, attempts: 0, round_base: 0, due: 0, head: false, seq: 0 };
        // Each start: how far every instance's clock is off (each within `max_skew`).
        assert!(self.skews.iter().flatten().all(|s| s.abs() <= self.max_skew), "skews within max_skew");
        let skews = if self.skews.is_empty() { vec![vec![0; usize::from(self.instances)]] } else { self.skews.clone() };
        skews
            .into_iter()
            .map(|skew| State {
                now: 0,
                rows: vec![row.clone(); n],
                next_seq: 0,
                skew,
                calls: Vec::new(),
                sent: vec![false; n],
                out_of_order: false,
                replayed: vec![false; n],
                crashes_left: self.crashes,
                replays_left: self.replays,
                happened: Happened::Nothing,
            })
            .collect()
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        let timed_out = s
            .calls
            .iter()
            .any(|c| matches!(c.phase, Phase::Sent { since, .. } if s.now >= since.saturating_add(self.timeout as u8)));
        if s.now < self.horizon && !timed_out {
            actions.push(Action::Tick);
        }
        if let Some(e) = s.rows.iter().position(|r| r.state == Lifecycle::Unstored) {
            actions.push(Action::Ingest(e as u8));
        }
        for i in 0..self.instances {
            for d in 0..self.destinations.max(1) {
                // A claim asked while nothing is owed to the destination finds nothing, however long it stalls.
                let owed = (0..s.rows.len()).any(|e| self.events[e].destination == d && s.rows[e].state.active());
                let busy = s.calls.iter().any(|c| c.instance == i && c.destination == d && !c.orphan);
                if !busy && owed {
                    actions.push(Action::Ask(i, d));
                }
            }
            // A crash matters to what the instance has in flight; an idle one's is nothing.
            let busy = s.calls.iter().any(|c| c.instance == i && !c.orphan);
            if s.crashes_left > 0 && busy {
                actions.push(Action::Crash(i));
            }
        }
        for (n, call) in s.calls.iter().enumerate() {
            match call.phase {
                Phase::Asked { .. } => actions.push(Action::Apply(n)),
                Phase::Applied { .. } => actions.push(Action::Answer(n)),
                Phase::Sent { since, .. } => {
                    if s.now < since.saturating_add(self.timeout as u8) {
                        actions.push(Action::AppOk(n));
                        actions.push(Action::AppFail(n));
                    } else {
                        actions.push(Action::TimeOut(n));
                    }
                }
                Phase::Outcome { .. } => actions.push(Action::Finish(n)),
            }
        }
        if s.replays_left > 0 {
            for (e, row) in s.rows.iter().enumerate() {
                if matches!(row.state, Lifecycle::Delivered | Lifecycle::Dead | Lifecycle::Superseded) {
                    actions.push(Action::Replay(e as u8));
                }
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        s.happened = Happened::Nothing;
        match action {
            Action::Tick => s.now += 1,
            Action::Ingest(e) => self.ingest(&mut s, usize::from(e)),
            Action::Ask(i, destination) => {
                let clock = self.clock(&s, i);
                let phase = Phase::Asked { clock };
                s.calls.push(Call { instance: i, destination, asked: s.now, orphan: false, phase });
            }
            Action::Apply(n) => {
                let Phase::Asked { clock } = s.calls[n].phase else { return None };
                self.apply_claim(&mut s, n, clock);
            }
            Action::Answer(n) => {
                let call = s.calls[n];
                let Phase::Applied { event, attempt, round } = call.phase else { return None };
                if call.orphan {
                    s.calls.remove(n);
                } else if i16::from(s.now - call.asked) > self.margin / 2 && !self.bugs.deliver_late_claims {
                    // Too late to deliver within the lease: given back.
                    s.happened = Happened::GivenBack;
                    let at = self.clock(&s, call.instance);
                    s.calls[n].phase = Phase::Outcome { event, attempt, verdict: Verdict::Retry { at } };
                } else {
                    s.calls[n].phase = Phase::Sent { event, attempt, round, since: s.now };
                    let f = usize::from(event);
                    if !s.sent[f] && !s.replayed[f] {
                        s.out_of_order |= self.owed_before(&s, f);
                        s.sent[f] = true;
                    }
                }
            }
            Action::AppOk(n) | Action::AppFail(n) | Action::TimeOut(n) => {
                let call = s.calls[n];
                let Phase::Sent { event, attempt, round, .. } = call.phase else { return None };
                if call.orphan {
                    s.calls.remove(n);
                } else {
                    let verdict = match action {
                        Action::AppOk(_) => Verdict::Delivered,
                        _ => self.failed(&s, call.instance, round),
                    };
                    s.calls[n].phase = Phase::Outcome { event, attempt, verdict };
                }
            }
            Action::Finish(n) => {
                let Phase::Outcome { event, attempt, verdict } = s.calls[n].phase else { return None };
                s.calls.remove(n);
                self.finish(&mut s, event, attempt, verdict);
            }
            Action::Crash(i) => {
                // The process dies and a new one takes its place at once (its clock, its number):
                // what the old one had in flight is orphaned.
                s.crashes_left -= 1;
                // Outcomes not yet sent die with it; claims asked may still be applied; requests stay in the app.
                s.calls.retain(|c| !(c.instance == i && matches!(c.phase, Phase::Outcome { .. })));
                for call in s.calls.iter_mut().filter(|c| c.instance == i) {
                    call.orphan = true;
                }
            }
            Action::Replay(e) => {
                s.replays_left -= 1;
                self.replay(&mut s, usize::from(e));
            }
        }
        s.calls.sort();
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("one delivery of a queue in the app's hands at once", |model: &Protocol, s: &State| {
                let mut keys = model.in_hands(s);
                keys.sort();
                keys.windows(2).all(|pair| pair[0] != pair[1])
            }),
            Property::always("one delivering row per queue in the store", |model: &Protocol, s: &State| {
                let mut keys: Vec<(u8, u8)> = (0..s.rows.len())
                    .filter(|&e| s.rows[e].state == Lifecycle::Delivering)
                    .filter_map(|e| model.queue(e))
                    .collect();
                keys.sort();
                keys.windows(2).all(|pair| pair[0] != pair[1])
            }),
            Property::always("first deliveries in storage order, per queue", |_, s: &State| !s.out_of_order),
            Property::always("each queue's first active delivery is its head, alone", |model: &Protocol, s: &State| {
                model.heads_hold(s)
            }),
            Property::sometimes("an event claimed again while an earlier attempt of it is out", |_, s: &State| {
                s.happened == Happened::ReclaimedInFlight
            }),
            Property::sometimes("a late outcome fenced", |_, s: &State| s.happened == Happened::Fenced),
            Property::sometimes("a pending event superseded", |_, s: &State| s.happened == Happened::Superseded),
            Property::sometimes("a claim answered too late, given back", |_, s: &State| {
                s.happened == Happened::GivenBack
            }),
            Property::sometimes("an event delivered", |_, s: &State| s.happened == Happened::Delivered),
            Property::sometimes("an event dead", |_, s: &State| s.happened == Happened::Dead),
        ]
    }
}

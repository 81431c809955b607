//! PostgreSQL's lock order as a model: concurrent transactions of the kinds
//! hookgate runs — ingest batches, outcome batches, replays, claims — taking
//! their locks one at a time, in every interleaving; the waits-for graph
//! (a transaction → the one holding what it waits for) must never have a
//! cycle, since a cycle is a deadlock PostgreSQL resolves by failing a
//! transaction (a batch of events answered 503).
//!
//! What the code does, modelled:
//! - ingest takes the transaction advisory locks of every queue (order key)
//!   it writes, every dedupe and coalesce key, in one sorted order
//!   (`lock_key` values, sorted: `ingest.rs`), then writes rows: a queue's
//!   rows, the dedupe row and the duplicate count — each under a lock it holds;
//!   the queues its coalesce keys reach are locked too;
//! - an outcome batch takes its queues' locks, sorted, then their rows;
//! - a replay takes its queue's lock, then the row;
//! - a claim takes no advisory lock and locks rows `FOR UPDATE SKIP LOCKED`:
//!   it never waits.

use stateright::{Model, Property};

/// Advisory locks, in the order their keys sort (the model's stand-in for `lock_key` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Lock {
    Queue0,
    Dedupe,
    Queue1,
    Coalesce,
}

/// Rows, each written only under the lock named beside it (claims aside).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RowLock {
    /// A queue's rows (its head, its pending events), under that queue's lock.
    Queue0Rows,
    Queue1Rows,
    /// The dedupe key's row and its duplicate count, under the dedupe key's lock.
    DedupeRow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Advisory(Lock),
    Row(RowLock),
}

/// One transaction: what it takes, in the order it takes it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tx {
    pub name: &'static str,
    pub takes: Vec<Resource>,
    /// `FOR UPDATE SKIP LOCKED`: a row someone holds is skipped, never waited for.
    pub skips_locked: bool,
    /// How far it has come: `takes[..next]` is held (or skipped).
    pub next: usize,
    pub skipped: Vec<bool>,
    pub committed: bool,
}

impl Tx {
    fn new(name: &'static str, mut locks: Vec<Lock>, rows: Vec<RowLock>, sorted: bool) -> Tx {
        if sorted {
            locks.sort();
        }
        let takes: Vec<Resource> =
            locks.into_iter().map(Resource::Advisory).chain(rows.into_iter().map(Resource::Row)).collect();
        let n = takes.len();
        Tx { name, takes, skips_locked: false, next: 0, skipped: vec![false; n], committed: false }
    }

    fn holds(&self, resource: Resource) -> bool {
        !self.committed && (0..self.next).any(|i| self.takes[i] == resource && !self.skipped[i])
    }

    fn wants(&self) -> Option<Resource> {
        (!self.committed).then(|| self.takes.get(self.next).copied()).flatten()
    }
}

/// The transactions that run at once, and whether their locks are taken
/// sorted (the rule) or in the order their batch lists them (the bug).
#[derive(Debug, Clone)]
pub struct LockOrder {
    pub transactions: Vec<Tx>,
}

impl LockOrder {
    /// Every pair of transaction kinds hookgate runs, on keys that collide.
    pub fn kinds(sorted: bool) -> Vec<Tx> {
        use Lock::*;
        use RowLock::*;
        vec![
            // Events of queue 1 with a dedupe key and a coalesce key whose pending events are in queue 0.
            Tx::new(
                "ingest: queue 1, dedupe, coalescing into queue 0",
                vec![Queue1, Dedupe, Coalesce, Queue0],
                vec![Queue1Rows, Queue0Rows, DedupeRow],
                sorted,
            ),
            // A copy of the same event and events of queue 0, listed the other way round.
            Tx::new(
                "ingest: queue 0, the same dedupe key",
                vec![Coalesce, Queue0, Dedupe],
                vec![Queue0Rows, DedupeRow],
                sorted,
            ),
            Tx::new("outcomes: queues 1 and 0", vec![Queue1, Queue0], vec![Queue1Rows, Queue0Rows], sorted),
            Tx::new("replay: queue 1", vec![Queue1], vec![Queue1Rows], sorted),
            Tx {
                skips_locked: true,
                ..Tx::new("claim: heads of both queues", vec![], vec![Queue0Rows, Queue1Rows], sorted)
            },
        ]
    }

    /// Transaction `t` waits for the one holding what it wants next, if any.
    fn waits_for(state: &[Tx], t: usize) -> Option<usize> {
        let tx = &state[t];
        let wanted = tx.wants()?;
        if tx.skips_locked {
            return None;
        }
        (0..state.len()).find(|&o| o != t && state[o].holds(wanted))
    }

    fn has_cycle(state: &[Tx]) -> bool {
        (0..state.len()).any(|start| {
            let (mut at, mut steps) = (start, 0);
            while let Some(next) = Self::waits_for(state, at) {
                at = next;
                steps += 1;
                if at == start {
                    return true;
                }
                if steps > state.len() {
                    return false;
                }
            }
            false
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Take(usize),
    Commit(usize),
}

impl Model for LockOrder {
    type State = Vec<Tx>;
    type Action = Action;

    fn init_states(&self) -> Vec<Vec<Tx>> {
        vec![self.transactions.clone()]
    }

    fn actions(&self, state: &Vec<Tx>, actions: &mut Vec<Action>) {
        for (t, tx) in state.iter().enumerate() {
            match tx.wants() {
                Some(_) if Self::waits_for(state, t).is_none() => actions.push(Action::Take(t)),
                Some(_) => {} // blocked
                None if !tx.committed => actions.push(Action::Commit(t)),
                None => {}
            }
        }
    }

    fn next_state(&self, last: &Vec<Tx>, action: Action) -> Option<Vec<Tx>> {
        let mut state = last.clone();
        match action {
            Action::Take(t) => {
                let wanted = state[t].wants()?;
                let held_elsewhere = (0..state.len()).any(|o| o != t && state[o].holds(wanted));
                let tx = &mut state[t];
                tx.skipped[tx.next] = held_elsewhere && tx.skips_locked;
                tx.next += 1;
            }
            Action::Commit(t) => state[t].committed = true,
        }
        Some(state)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always("the waits-for graph has no cycle", |_, state: &Vec<Tx>| !LockOrder::has_cycle(state)),
            Property::sometimes("a transaction waits for another", |_, state: &Vec<Tx>| {
                (0..state.len()).any(|t| LockOrder::waits_for(state, t).is_some())
            }),
            Property::sometimes("every transaction commits", |_, state: &Vec<Tx>| state.iter().all(|tx| tx.committed)),
        ]
    }
}

//! The model checks: every interleaving of a few small worlds, with the
//! protocol's rules, holds every guarantee and, across the worlds, reaches
//! every interesting case; with each bug planted, a guarantee fails in one of
//! them (the checker can see it). Each world is sized to be checked
//! exhaustively in seconds: a crash, a replay, skewed clocks, two
//! destinations and three events at once would be hundreds of millions of
//! states, so each world stresses one of them (the simulation combines them
//! all, sampled).

use std::collections::BTreeSet;

use hookgate_model::lock_order::{LockOrder, Tx};
use hookgate_model::protocol::{Bugs, Event, Protocol};
use stateright::{Checker, Expectation, HasDiscoveries, Model};

/// Thin events coalesce on key 0 (the first supersedes nothing; the last may
/// supersede the first, handing its queue on to the one between).
const THIN: Event = Event { order_key: Some(0), coalesce_key: Some(0), destination: 0, together: false };
const PLAIN: Event = Event { order_key: Some(0), coalesce_key: None, destination: 0, together: false };

/// One event to two destinations: the first coalesces its deliveries, the
/// second (whose route has no coalesce key) gets every one; same order key.
const TO_BOTH: [Event; 2] = [
    Event { order_key: Some(0), coalesce_key: Some(0), destination: 0, together: true },
    Event { order_key: Some(0), coalesce_key: None, destination: 1, together: false },
];

fn base(events: Vec<Event>, bugs: Bugs) -> Protocol {
    Protocol {
        instances: 2,
        destinations: 1,
        events,
        timeout: 1,
        margin: 2,
        max_skew: 0,
        skews: Vec::new(),
        horizon: 5,
        max_attempts: 2,
        retry_after: 1,
        crashes: 0,
        replays: 0,
        bugs,
    }
}

/// The worlds, by what each stresses.
fn worlds(bugs: Bugs) -> Vec<(&'static str, Protocol)> {
    vec![
        ("order and coalescing: three events of one key", base(vec![THIN, PLAIN, THIN], bugs)),
        (
            // Two clocks a tick off the other way each (two ticks apart): half the margin must cover it.
            "leases on skewed clocks",
            Protocol {
                margin: 6,
                max_skew: 1,
                skews: vec![vec![-1, 1], vec![1, -1]],
                horizon: 9,
                ..base(vec![PLAIN, PLAIN], bugs)
            },
        ),
        ("a crash mid-delivery", Protocol { crashes: 1, ..base(vec![THIN, PLAIN], bugs) }),
        ("a replay", Protocol { replays: 1, horizon: 6, ..base(vec![THIN, THIN], bugs) }),
        (
            // Two events, each to both destinations: queues, claims and coalescing per destination.
            "two destinations, coalescing at one",
            Protocol { instances: 1, destinations: 2, horizon: 4, ..base([TO_BOTH, TO_BOTH].concat(), bugs) },
        ),
    ]
}

#[test]
fn the_protocol_holds_its_guarantees_in_every_interleaving() {
    let mut reached = BTreeSet::new();
    let mut sometimes = BTreeSet::new();
    for (name, model) in worlds(Bugs::default()) {
        for property in model.properties() {
            if property.expectation == Expectation::Sometimes {
                sometimes.insert(property.name);
            }
        }
        let properties = model.properties();
        let checker = model.checker().threads(2).symmetry().spawn_bfs().join();
        for property in &properties {
            match property.expectation {
                Expectation::Sometimes => {
                    if checker.discovery(property.name).is_some() {
                        reached.insert(property.name);
                    }
                }
                _ => checker.assert_no_discovery(property.name),
            }
        }
        eprintln!("{name}: {} states, every one checked", checker.unique_state_count());
    }
    let missed: Vec<_> = sometimes.difference(&reached).collect();
    assert!(missed.is_empty(), "cases no world reached: {missed:?}");
}

/// Each planted bug breaks one of the "always" properties in some world.
#[test]
fn each_planted_bug_breaks_a_guarantee() {
    let planted = [
        ("no fencing", Bugs { no_fencing: true, ..Bugs::default() }),
        ("ignore the head", Bugs { ignore_head: true, ..Bugs::default() }),
        ("supersede a delivering event", Bugs { supersede_delivering: true, ..Bugs::default() }),
        ("no lease margin", Bugs { no_lease_margin: true, ..Bugs::default() }),
        ("deliver a claim however late it came back", Bugs { deliver_late_claims: true, ..Bugs::default() }),
        ("one queue per key, whatever the destination", Bugs { shared_queues: true, ..Bugs::default() }),
    ];
    for (bug, bugs) in planted {
        let broken = worlds(bugs).into_iter().find_map(|(world, model)| {
            let always: Vec<&'static str> =
                model.properties().iter().filter(|p| p.expectation == Expectation::Always).map(|p| p.name).collect();
            let checker = model.checker().threads(2).finish_when(HasDiscoveries::AnyFailures).spawn_bfs().join();
            let broken: Vec<&str> = always.into_iter().filter(|p| checker.discovery(p).is_some()).collect();
            (!broken.is_empty()).then_some((world, broken))
        });
        let (world, broken) = broken.unwrap_or_else(|| panic!("{bug}: no world broke a guarantee"));
        eprintln!("{bug}: breaks {broken:?} in \"{world}\"");
    }
}

#[test]
fn sorted_locks_never_deadlock() {
    let kinds = LockOrder::kinds(true);
    let mut waited = false;
    for set in sets_of_two_and_three(kinds.len()) {
        let transactions: Vec<Tx> = set.iter().map(|&k| kinds[k].clone()).collect();
        let checker = LockOrder { transactions }.checker().spawn_bfs().join();
        checker.assert_no_discovery("the waits-for graph has no cycle");
        checker.assert_any_discovery("every transaction commits");
        waited |= checker.discovery("a transaction waits for another").is_some();
    }
    assert!(waited, "the transactions contend: some wait for others");
}

#[test]
fn locks_in_batch_order_can_deadlock() {
    let kinds = LockOrder::kinds(false);
    let transactions = vec![kinds[0].clone(), kinds[1].clone()];
    let checker = LockOrder { transactions }.checker().spawn_bfs().join();
    checker.assert_any_discovery("the waits-for graph has no cycle");
}

/// Every pair and triple of transaction kinds (a kind may run twice at once).
fn sets_of_two_and_three(kinds: usize) -> Vec<Vec<usize>> {
    let mut sets = Vec::new();
    for a in 0..kinds {
        for b in a..kinds {
            sets.push(vec![a, b]);
            for c in b..kinds {
                sets.push(vec![a, b, c]);
            }
        }
    }
    sets
}

/// The bound the leases rely on: half the margin must exceed twice the
/// clocks' error (`MAX_CLOCK_ERROR_MS`, 1 s, against half of 5 s). Two clocks
/// a tick off each other's way, with half the margin only two ticks, let a
/// second instance take a lease the first still holds.
#[test]
fn clocks_further_off_than_the_margin_allows_break_the_leases() {
    let model = Protocol {
        margin: 4,
        max_skew: 1,
        skews: vec![vec![-1, 1], vec![1, -1]],
        horizon: 8,
        ..base(vec![PLAIN, PLAIN], Bugs::default())
    };
    let checker = model.checker().threads(2).finish_when(HasDiscoveries::AnyFailures).spawn_bfs().join();
    checker.assert_any_discovery("one delivery of a queue in the app's hands at once");
}

//! The deterministic simulation of the delivery protocol: the real
//! `Dispatcher`s of one to three instances (one per destination each), each
//! instance with its own skewed, jumping clock, on one paused current-thread
//! tokio runtime, against one `MemStore` seen through faults, delivering to
//! one to three simulated apps by routes — a world
//! drawn from a seed, chaos, healing, and the one checker over the whole
//! history (`hookgate::checker`).
//!
//! - `cargo test -p hookgate --test simulation` runs `HOOKGATE_SIM_SEEDS`
//!   seeds (default [`DEFAULT_SEEDS`], sized for CI);
//! - `HOOKGATE_SIM_SEED=S` runs one and prints `seed=S hash=H`: the same seed
//!   gives the same hash, run after run;
//! - `HOOKGATE_SIM_MUTANT=NAME` plants a known bug (`no-fencing`,
//!   `ignore-head`, `supersede-delivering`, `no-lease-margin`,
//!   `ack-before-commit`, `shared-queues`); the simulation must then fail, and
//!   `every_planted_bug_is_caught` says each one is.
//!
//! A failure prints its seed and the command that replays it.

mod app;
mod faulty;
mod world;

use std::io::Write;

use world::{Mutant, Run};

/// Seeds per `cargo test`: well under a minute of CI on two cores (worlds
/// of up to three destinations: 500 take ~25 s).
const DEFAULT_SEEDS: u64 = 500;
/// Seeds that once failed, each a bug found and fixed: they run every time.
/// - 0: a claim answered after a stall longer than its lease was delivered while another instance,
///   finding the lease over, claimed and delivered it too: two deliveries of one key at once (the
///   dispatcher now gives back a claim that took more than half the lease margin to come back).
///   Checked again when the worlds gained destinations: with the give-back taken out, seed 0 still
///   finds the overlap.
/// - 2964: a claim that was the circuit breaker's half-open probe came back too late and was
///   given back unattempted; the breaker waited for the probe's result for ever and the
///   destination never delivered again (until a restart). Giving a claim back now frees the probe.
const REGRESSIONS: &[u64] = &[0, 2964];

/// Run one seed on a runtime of its own: paused time, one thread, so the
/// only order is the one the seed makes.
fn run(seed: u64, mutant: Option<Mutant>) -> Run {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
    runtime.block_on(world::run(seed, mutant))
}

/// Printed past the test harness's capture: what a developer replaying a seed reads.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn mutant_from_env() -> Option<Mutant> {
    let name = std::env::var("HOOKGATE_SIM_MUTANT").ok()?;
    let names: Vec<&str> = Mutant::ALL.iter().map(|m| m.name()).collect();
    Some(Mutant::parse(&name).unwrap_or_else(|| panic!("HOOKGATE_SIM_MUTANT={name}: expected one of {names:?}")))
}

fn failure(seed: u64, mutant: Option<Mutant>, run: &Run) -> String {
    let planted = mutant.map(|m| format!("HOOKGATE_SIM_MUTANT={} ", m.name())).unwrap_or_default();
    format!(
        "seed {seed} failed ({}): {:?}{}{}\nreplay it: {planted}HOOKGATE_SIM_SEED={seed} cargo test -p hookgate --test simulation -- --nocapture",
        run.summary,
        run.findings,
        if run.stuck.is_empty() { String::new() } else { format!("\nnot finished once healed: {:?}", run.stuck) },
        if run.delayed.is_empty() {
            String::new()
        } else {
            format!("\nthe healthy destination waited: {:?}", run.delayed)
        },
    )
}

#[test]
fn simulation() {
    let mutant = mutant_from_env();
    if let Ok(seed) = std::env::var("HOOKGATE_SIM_SEED") {
        let seed: u64 = seed.parse().expect("HOOKGATE_SIM_SEED is a number");
        let run = run(seed, mutant);
        say(&format!("seed={seed} hash={:016x}", run.hash));
        say(&format!("  {}", run.summary));
        if !run.clean() {
            say(&run.trace);
        }
        assert!(run.clean(), "{}", failure(seed, mutant, &run));
        return;
    }
    let seeds: u64 = std::env::var("HOOKGATE_SIM_SEEDS").map_or(DEFAULT_SEEDS, |n| n.parse().expect("a number"));
    let first: u64 = std::env::var("HOOKGATE_SIM_FIRST").map_or(0, |n| n.parse().expect("a number"));
    let started = std::time::Instant::now();
    let mut judged = 0;
    for seed in first..first + seeds {
        let run = run(seed, mutant);
        assert!(run.clean(), "{}", failure(seed, mutant, &run));
        judged += u64::from(run.judged_independence);
    }
    say(&format!(
        "simulation: {seeds} seeds from {first} clean in {:.1?}; {judged} judged independence",
        started.elapsed()
    ));
    // About one seed in eight is drawn to judge it (`Swarm::judged_half_the_time`); a change to
    // the draws that made it rare again would leave the property all but unchecked.
    if seeds >= 200 {
        assert!(judged * 20 >= seeds, "only {judged} of {seeds} seeds judged independence");
    }
}

#[test]
fn regressions() {
    for &seed in REGRESSIONS {
        let run = run(seed, None);
        assert!(run.clean(), "{}", failure(seed, None, &run));
    }
}

#[test]
fn the_same_seed_gives_the_same_history() {
    for seed in [3, 17] {
        let (a, b) = (run(seed, None), run(seed, None));
        assert_eq!(a.hash, b.hash, "seed {seed} ran twice differently: {} / {}", a.summary, b.summary);
    }
    assert_ne!(run(3, None).hash, run(4, None).hash, "different seeds, different histories");
}

/// Each planted bug is caught within a few seeds: the checker can see what it is for.
#[test]
fn every_planted_bug_is_caught() {
    if mutant_from_env().is_some() {
        return; // the main test runs with it planted, and fails
    }
    const WITHIN: u64 = 200;
    for mutant in Mutant::ALL {
        let caught = (0..WITHIN).find(|&seed| !run(seed, Some(mutant)).clean());
        let seed = caught.unwrap_or_else(|| panic!("{}: no seed of {WITHIN} caught it", mutant.name()));
        say(&format!("{} caught by seed {seed}", mutant.name()));
    }
}

//! The fault suite: hookgate under load while things break — processes
//! killed, the database restarted or frozen, the disk full, the destination
//! misbehaving — judged by one checker (`hookgate::checker`, the simulation's too) over the whole history
//! of each run. The cases that kill, restart, freeze or fill run one at a
//! time and only with `HOOKGATE_FAULT_SUITE=1` (`.ci/run` sets it); the
//! checker's own tests and the destination's misbehaviour always run.

// The one checker, shared with the simulation.
use hookgate::checker;

mod destination;
mod disk;
mod kills;
mod load;
mod outages;
#[allow(dead_code, unused_imports)]
#[path = "../it/support.rs"]
mod support;
#[allow(dead_code)]
#[path = "../it/throwaway.rs"]
mod throwaway;

use tokio::sync::{Mutex, MutexGuard};

/// The cases run one at a time: each wants the machine's two cores to itself
/// (a case's timing must not depend on what runs beside it).
pub async fn one_at_a_time() -> MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());
    ONE_AT_A_TIME.lock().await
}

/// A heavy case: only with `HOOKGATE_FAULT_SUITE=1`, and alone.
pub async fn heavy(case: &str) -> Option<MutexGuard<'static, ()>> {
    if std::env::var("HOOKGATE_FAULT_SUITE").as_deref() != Ok("1") {
        hookgate_store::conformance::skip(&format!("{case}: set HOOKGATE_FAULT_SUITE=1 to run the fault suite"));
        return None;
    }
    Some(one_at_a_time().await)
}

//! Storage faults, told once: when one begins (ERROR), a summary while it
//! lasts (at most every [`SUMMARY_EVERY`]: how many requests were refused),
//! and when it ends. A full disk at a thousand requests a second is three
//! lines, not three thousand a second. One log per path that meets storage
//! (ingest, readiness, each destination's deliveries): a path that still works
//! must not end, and restart, the fault another path is in.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct FaultLog {
    /// Which path this is, in every line.
    path: String,
    state: Mutex<Option<Fault>>,
}

struct Fault {
    began: Instant,
    refused: u64,
    refused_since_summary: u64,
    last_summary: Instant,
}

impl FaultLog {
    pub fn new(path: impl Into<String>) -> FaultLog {
        FaultLog { path: path.into(), state: Mutex::default() }
    }

    /// A request was refused because storage failed.
    pub fn failed(&self, detail: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.as_mut() {
            None => {
                tracing::error!(path = %self.path, %detail, "storage fault: this path fails until it is over (ingest answers 503)");
                let now = Instant::now();
                *state = Some(Fault { began: now, refused: 1, refused_since_summary: 1, last_summary: now });
            }
            Some(fault) => {
                fault.refused += 1;
                fault.refused_since_summary += 1;
                if fault.last_summary.elapsed() >= SUMMARY_EVERY {
                    tracing::warn!(
                        path = %self.path,
                        %detail,
                        refused = fault.refused_since_summary,
                        for_s = fault.began.elapsed().as_secs(),
                        "storage fault continues"
                    );
                    fault.refused_since_summary = 0;
                    fault.last_summary = Instant::now();
                }
            }
        }
    }

    /// Storage answered: a fault, if there was one, is over.
    pub fn ok(&self) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(fault) = state.take() {
            tracing::info!(
                path = %self.path,
                refused = fault.refused,
                lasted_ms = fault.began.elapsed().as_millis() as u64,
                "storage fault is over"
            );
        }
    }

    pub fn in_fault(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fault_lasts_until_its_own_path_works_again() {
        let (ingest, delivery) = (FaultLog::new("ingest"), FaultLog::new("delivery to app"));
        ingest.failed("disk full");
        delivery.ok(); // deliveries work: the ingest fault goes on
        assert!(ingest.in_fault() && !delivery.in_fault());
        ingest.failed("disk full");
        assert_eq!(ingest.state.lock().unwrap().as_ref().map(|f| f.refused), Some(2), "one fault, counted");
        ingest.ok();
        assert!(!ingest.in_fault());
    }
}

//! Storage faults, told once: when one begins (ERROR), a summary while it
//! lasts (at most every [`SUMMARY_EVERY`]: how many requests were refused),
//! and when it ends. A full disk at a thousand requests a second is three
//! lines, not three thousand a second.

use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SUMMARY_EVERY: Duration = Duration::from_secs(10);

#[derive(Default)]
pub struct FaultLog {
    state: Mutex<Option<Fault>>,
}

struct Fault {
    began: Instant,
    refused: u64,
    refused_since_summary: u64,
    last_summary: Instant,
}

impl FaultLog {
    /// A request was refused because storage failed.
    pub fn failed(&self, detail: &str) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.as_mut() {
            None => {
                tracing::error!(%detail, "storage fault: refusing requests with 503 until it is over");
                let now = Instant::now();
                *state = Some(Fault { began: now, refused: 1, refused_since_summary: 1, last_summary: now });
            }
            Some(fault) => {
                fault.refused += 1;
                fault.refused_since_summary += 1;
                if fault.last_summary.elapsed() >= SUMMARY_EVERY {
                    tracing::warn!(
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

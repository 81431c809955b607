//! Time, as the server reads it: one [`Clock`], handed to the dispatcher,
//! ingest and the admin API, so a test (the simulation) can give each
//! instance a clock of its own — skewed, jumping — and know that nothing
//! else reads the time behind its back.
//!
//! In production the clock is the store's ([`StoreClock`]): every time that
//! is stored and compared (leases, due times, dedupe windows) must be on the
//! clock the store keeps them on — on PostgreSQL the database's, so instances
//! whose own clocks are off agree — and the times that face the outside world
//! (a sender's signed timestamp, the `webhook-timestamp` we send, a
//! `Retry-After` date) are read from it too, so there is one clock to reason
//! about, not three. Durations and timers (the breaker's cooldown, an
//! attempt's duration) are tokio's [`Instant`](tokio::time::Instant), which a
//! paused test runtime moves.
//!
//! [`now_ms`] is this machine's wall clock, for the CLI and the tools that run
//! beside the server (bench, demo), never for the server's own decisions.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use hookgate_store::Store;

/// Milliseconds since the Unix epoch, by the clock stored times are kept on.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

/// The store's clock ([`Store::now_ms`]): what the server runs on.
pub struct StoreClock(pub Arc<dyn Store>);

impl Clock for StoreClock {
    fn now_ms(&self) -> i64 {
        self.0.now_ms()
    }
}

/// This machine's wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// This machine's wall clock: for the CLI and the tools beside the server.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `now_ms` as a `SystemTime`, for parsing HTTP dates against.
pub fn system_time(now_ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64)
}

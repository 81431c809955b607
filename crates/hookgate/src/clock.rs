//! This machine's wall clock: milliseconds since the Unix epoch. It judges
//! what faces the outside world — a sender's signed timestamp, the
//! `webhook-timestamp` we send, an app's `Retry-After` date. Times that are
//! stored and compared (leases, due times, dedupe windows) come from the
//! store's clock instead (`Store::now_ms`: on PostgreSQL, the database's, so
//! every instance agrees).

use std::time::{Duration, SystemTime};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `now_ms` as a `SystemTime`, for parsing HTTP dates against.
pub fn system_time(now_ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64)
}

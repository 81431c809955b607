//! The one clock the server reads: milliseconds since the Unix epoch. Every
//! time hookgate stores, compares or sends (`webhook-timestamp`, `Retry-After`
//! dates, signature tolerance) comes from here, so the stores and the
//! dispatcher can take time as an argument.

use std::time::{Duration, SystemTime};

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// `now_ms` as a `SystemTime`, for parsing HTTP dates against.
pub fn system_time(now_ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64)
}

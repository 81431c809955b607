//! Every default in one place: what a key is when the file does not say.

pub const LISTEN: &str = "127.0.0.1:8080";
pub const MAX_BODY: &str = "1MiB";
pub const STORAGE_URL: &str = "sqlite://hookgate.db";
/// PostgreSQL connections per instance (plus one for LISTEN).
pub const POOL: i64 = 8;
pub const TIMEOUT: &str = "30s";
pub const CONCURRENCY: i64 = 64;
pub const MAX_ATTEMPTS: i64 = 10;
pub const RETRY_INITIAL: &str = "1s";
pub const RETRY_MAX: &str = "1h";
pub const TOLERANCE: &str = "5m";
pub const DEDUPE_WINDOW: &str = "7d";

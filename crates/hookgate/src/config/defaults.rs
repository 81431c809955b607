//! Every default in one place: what a key is when the file does not say.

pub const LISTEN: &str = "127.0.0.1:8080";
pub const MAX_BODY: &str = "1MiB";
/// Open connections at most; beyond, new ones wait in the kernel's accept queue.
pub const MAX_CONNECTIONS: i64 = 10_000;
/// A request head must arrive within this (an idle keep-alive connection is closed after it too).
pub const HEADER_TIMEOUT: &str = "10s";
/// A request body must arrive within this; beyond, 408.
pub const BODY_TIMEOUT: &str = "30s";
/// Request bodies held in memory at once; beyond, 503 + Retry-After.
pub const MAX_INFLIGHT_BYTES: &str = "256MiB";
/// At SIGTERM, how long requests and deliveries in flight may still take.
pub const SHUTDOWN_GRACE: &str = "30s";
pub const STORAGE_URL: &str = "sqlite://hookgate.db";
/// SQLite: below this much free disk, new events are refused so deliveries can still drain.
pub const MIN_FREE: &str = "64MiB";
/// PostgreSQL connections per instance (plus one for LISTEN).
pub const POOL: i64 = 8;
pub const TIMEOUT: &str = "30s";
pub const CONCURRENCY: i64 = 64;
/// The default retry schedule outlasts a day of the app being down (26 h 41 m
/// at the least, 53 h at the most: `RetryPolicy::span_ms`), as senders' own do
/// (Stripe: 3 days, Svix: ~28 h): an app's deploy or a night's outage must
/// never fill the dead letters. Ten attempts from 1 s had ended after 4–8 minutes.
pub const MAX_ATTEMPTS: i64 = 20;
pub const RETRY_INITIAL: &str = "10s";
pub const RETRY_MAX: &str = "6h";
/// A circuit breaker opens after this many failed attempts in a row…
pub const BREAKER_FAILURES: i64 = 20;
/// …and stays open this long before one probe.
pub const BREAKER_COOLDOWN: &str = "30s";
pub const TOLERANCE: &str = "5m";
pub const DEDUPE_WINDOW: &str = "7d";
/// Delivered events (and their attempts) are deleted this long after delivery.
pub const KEEP_DELIVERED: &str = "7d";
/// Dead events, this long after they died: time to look and replay.
pub const KEEP_DEAD: &str = "30d";
pub const KEEP_SUPERSEDED: &str = "1d";
/// The first bytes of each attempt's answer kept with it (2xx included).
pub const KEEP_RESPONSE: &str = "1KiB";
/// At most this much of an answer is kept, whatever `keep_response` says: the
/// delivery client reads no more of an answer than this.
pub const KEEP_RESPONSE_MAX: usize = 64 * 1024;
pub const LOG_LEVEL: &str = "info";
pub const SERVICE_NAME: &str = "hookgate";

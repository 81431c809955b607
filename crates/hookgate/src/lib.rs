//! The hookgate binary's library half: configuration, the HTTP edge (ingest,
//! admin API, metrics), the dispatcher and delivery client, the CLI's admin
//! client and the demo. `main.rs` only parses the command line.

pub mod app;
pub mod cli;
pub mod config;
pub mod deliver;
pub mod demo;
pub mod dispatch;
mod http;
pub mod metrics;

pub use app::{ServeError, Server};

/// Milliseconds since the Unix epoch: the one clock the server reads.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

//! The hookgate binary's library half: configuration, the HTTP edge (ingest,
//! admin API, metrics), the dispatcher and delivery client, the CLI's admin
//! client, the demo and the recording receiver it shares with the tests.
//! `main.rs` only parses the command line.
//!
//! Dependencies run one way: `app` assembles `http`, `dispatch` and `wake`;
//! `http` and `dispatch` know nothing of `app`; the admin commands of `cli`
//! know only `api` and talk HTTP.

pub mod api;
pub mod app;
pub mod bench;
pub mod checker;
pub mod cli;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod demo;
pub mod dispatch;
mod faults;
mod housekeeping;
mod http;
pub mod logs;
mod loud;
pub mod metrics;
pub mod receiver;
pub mod routing;
mod serve;
mod stats;
pub mod steering;
pub mod telemetry;
pub mod wake;

pub use app::{ServeError, Server};

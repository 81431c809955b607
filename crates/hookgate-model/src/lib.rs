//! Model checks of hookgate, on stateright: every interleaving of a small
//! world, exhaustively, where the simulation samples large ones.
//!
//! - [`protocol`]: the delivery protocol — claims under leases judged on
//!   skewed clocks, fenced outcomes delayed arbitrarily, head promotion,
//!   coalescing, replays, crashes — against its guarantees;
//! - [`lock_order`]: PostgreSQL's ingest and outcome transactions and their
//!   locks — the waits-for graph of concurrent transactions never has a cycle.
//!
//! `cargo test -p hookgate-model` checks both, each with its bugs planted
//! too, to show the checker finds them.

pub mod lock_order;
pub mod protocol;

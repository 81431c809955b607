//! hookgate's integration tests: real sockets, real concurrency, one binary.

mod cli;
mod coalesce;
mod crash;
mod delivery;
mod ingest;
mod support;

//! hookgate's integration tests: real sockets, real concurrency, one binary.

mod admin;
mod backpressure;
mod bytes;
mod cli;
mod cluster;
mod coalesce;
mod console;
mod crash;
mod delivery;
mod edge;
mod first_hour;
mod forwarding;
mod fuzz;
mod ingest;
mod openapi;
mod outage;
mod postgres_tls;
mod routes;
mod senders;
mod signing;
mod steering;
mod support;
mod telemetry;
mod throwaway;

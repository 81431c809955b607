//! Prometheus metrics. The `metrics` facade keeps one recorder per process;
//! hookgate installs it once and every server in the process (tests start
//! several) renders from it. Names are the contract of dashboards: change
//! them only with a CHANGELOG entry.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

pub const RECEIVED: &str = "hookgate_events_received_total";
pub const DUPLICATES: &str = "hookgate_events_duplicate_total";
pub const SUPERSEDED: &str = "hookgate_events_superseded_total";
pub const UNROUTED: &str = "hookgate_events_unrouted_total";
pub const REJECTED: &str = "hookgate_requests_rejected_total";
pub const UNAVAILABLE: &str = "hookgate_storage_unavailable_total";
pub const SHED: &str = "hookgate_requests_shed_total";
pub const DELIVERED: &str = "hookgate_deliveries_delivered_total";
pub const RETRIED: &str = "hookgate_deliveries_retried_total";
pub const DEAD: &str = "hookgate_deliveries_dead_total";
pub const QUEUE_DEPTH: &str = "hookgate_queue_depth";
pub const PAUSED: &str = "hookgate_destination_paused";
pub const ACK_SECONDS: &str = "hookgate_ack_seconds";
pub const DELIVERY_SECONDS: &str = "hookgate_delivery_seconds";
pub const READY: &str = "hookgate_ready";
pub const CIRCUIT_OPEN: &str = "hookgate_circuit_open";
pub const OLDEST_PENDING: &str = "hookgate_oldest_pending_event_age_seconds";
pub const SPANS_DROPPED: &str = "hookgate_telemetry_spans_dropped_total";

/// Every metric hookgate exports (dashboards and alert rules may use no other).
pub const ALL: &[&str] = &[
    RECEIVED,
    DUPLICATES,
    SUPERSEDED,
    UNROUTED,
    REJECTED,
    UNAVAILABLE,
    SHED,
    DELIVERED,
    RETRIED,
    DEAD,
    QUEUE_DEPTH,
    PAUSED,
    ACK_SECONDS,
    DELIVERY_SECONDS,
    READY,
    CIRCUIT_OPEN,
    OLDEST_PENDING,
    SPANS_DROPPED,
];

/// Buckets for ack latency: the promise is milliseconds, so resolve them.
const ACK_BUCKETS: &[f64] = &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];
/// Buckets for a destination's answer time: apps take up to seconds.
const DELIVERY_BUCKETS: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How often histogram samples are folded into their buckets when nobody
/// scrapes: the exporter keeps raw samples until then, and a gateway nobody
/// scrapes would otherwise grow by every ack and every delivery it times.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Fold samples into buckets now and then, for the life of the process
/// (started once, by the first server).
pub fn start_upkeep() {
    static STARTED: std::sync::Once = std::sync::Once::new();
    STARTED.call_once(|| {
        tokio::spawn(async {
            loop {
                tokio::time::sleep(UPKEEP_EVERY).await;
                handle().run_upkeep();
            }
        });
    });
}

/// Every configured source's and destination's counters, exported from 0 at
/// start: a counter that first appears at 1 is an increase that `rate()` and
/// `increase()` never see (the first dead letter would not fire its alert).
pub fn start_at_zero<'a>(sources: impl Iterator<Item = &'a str>, destinations: impl Iterator<Item = &'a str>) {
    for source in sources {
        for name in [RECEIVED, DUPLICATES, UNAVAILABLE] {
            metrics::counter!(name, "source" => source.to_owned()).increment(0);
        }
    }
    for destination in destinations {
        for name in [DELIVERED, RETRIED, DEAD] {
            metrics::counter!(name, "destination" => destination.to_owned()).increment(0);
        }
    }
    metrics::counter!(SPANS_DROPPED).increment(0);
}

/// The process's recorder, installed on first use.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(ACK_SECONDS.into()), ACK_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Full(DELIVERY_SECONDS.into()), DELIVERY_BUCKETS))
            .expect("bucket lists are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder was installed first; then our
        // handle renders nothing, which /metrics shows plainly.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed; /metrics will be empty");
        }
        describe();
        handle
    })
}

fn describe() {
    metrics::describe_counter!(RECEIVED, "Events accepted and stored, by source.");
    metrics::describe_counter!(DUPLICATES, "Requests answered as duplicates of a stored event, by source.");
    metrics::describe_counter!(
        SUPERSEDED,
        "Pending deliveries superseded by a newer event's with the same coalesce key, by source."
    );
    metrics::describe_counter!(
        UNROUTED,
        "Events stored that no route took (each route's reason is on the event), by source."
    );
    metrics::describe_counter!(REJECTED, "Ingest requests refused, by source and reason.");
    metrics::describe_counter!(UNAVAILABLE, "Ingest requests answered 503 because storage failed.");
    metrics::describe_counter!(
        SHED,
        "Ingest requests answered 503 to shed load, by source and reason (inflight_bytes, storage_queue, disk_full)."
    );
    metrics::describe_counter!(DELIVERED, "Deliveries answered 2xx, by destination.");
    metrics::describe_counter!(RETRIED, "Failed attempts with a retry scheduled, by destination.");
    metrics::describe_counter!(DEAD, "Events that exhausted their attempts, by destination.");
    metrics::describe_gauge!(
        PAUSED,
        "1 while a destination is paused (every instance's view, from the store), else 0."
    );
    metrics::describe_gauge!(QUEUE_DEPTH, "Events pending or delivering, by source and state (read at scrape time).");
    metrics::describe_histogram!(
        ACK_SECONDS,
        "Time from request to answer for accepted events (includes the durable commit)."
    );
    metrics::describe_histogram!(DELIVERY_SECONDS, "Time a destination took to answer one attempt.");
    metrics::describe_gauge!(READY, "1 while storage answers (as /readyz), else 0 (read at scrape time).");
    metrics::describe_gauge!(
        CIRCUIT_OPEN,
        "1 while this instance's circuit breaker holds a destination's attempts back, else 0."
    );
    metrics::describe_gauge!(
        OLDEST_PENDING,
        "Age of the oldest event with a delivery still owed (pending or delivering), by source and destination."
    );
    metrics::describe_counter!(
        SPANS_DROPPED,
        "Trace spans dropped: the exporter's queue was full or the collector did not take them."
    );
}

#[cfg(test)]
mod tests {
    /// The shipped alert rules and dashboard name only metrics hookgate
    /// exports (a renamed metric would leave an alert that never fires).
    #[test]
    fn alerts_and_dashboard_use_only_exported_metrics() {
        for (file, text) in [
            ("deploy/prometheus/alerts.yml", include_str!("../../../deploy/prometheus/alerts.yml")),
            ("deploy/grafana/hookgate.json", include_str!("../../../deploy/grafana/hookgate.json")),
        ] {
            let mut used = std::collections::BTreeSet::new();
            for (at, _) in text.match_indices("hookgate_") {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                    .collect();
                let family =
                    ["_bucket", "_sum", "_count"].iter().fold(name.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
                used.insert(family.to_owned());
            }
            assert!(used.len() >= 5, "{file}: {used:?}");
            for name in &used {
                assert!(super::ALL.contains(&name.as_str()), "{file} uses {name}, which hookgate does not export");
            }
        }
    }
}

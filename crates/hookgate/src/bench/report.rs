//! What a bench run found: one table (or JSON), each rate beside its ratio to
//! the bare-HTTP ceiling measured in the same run.

use std::time::Duration;

use serde::Serialize;

use super::BenchArgs;

#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    pub name: String,
    /// Requests answered 2xx per second.
    pub events_per_s: f64,
    /// `events_per_s` over the ceiling's.
    pub vs_ceiling: f64,
    pub ok: u64,
    pub failed: u64,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    /// Deliveries the app received per second during the phase, when it was
    /// delivering (with `--routes N`, each event is delivered N times).
    pub delivered_per_s: Option<f64>,
    /// Sent → delivered, when it was delivering.
    pub e2e_p50_ms: Option<f64>,
    pub e2e_p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub cores: usize,
    pub storage: String,
    pub instances: usize,
    pub connections: usize,
    pub phase_seconds: f64,
    pub objects: usize,
    pub duplicates: f64,
    /// Destinations each event is routed to.
    pub routes: usize,
    pub phases: Vec<Phase>,
    /// The backlog built up while paused, delivered per second once resumed
    /// (events: each delivered to every route).
    pub drain_per_s: f64,
    /// The lower of ingest and delivery while both ran, in events (each
    /// delivered to every route): what holds without a growing backlog.
    pub sustained_per_s: f64,
    pub peak_rss_mib: f64,
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at] as f64 / 1_000.0
}

impl Phase {
    pub fn new(
        name: &str,
        mut latencies: Vec<u32>,
        failed: u64,
        elapsed: Duration,
        delivered: Option<u64>,
        mut e2e: Vec<u32>,
    ) -> Phase {
        latencies.sort_unstable();
        e2e.sort_unstable();
        let seconds = elapsed.as_secs_f64().max(1e-9);
        let delivering = delivered.is_some();
        Phase {
            name: name.to_owned(),
            events_per_s: latencies.len() as f64 / seconds,
            vs_ceiling: 0.0,
            ok: latencies.len() as u64,
            failed,
            ack_p50_ms: percentile(&latencies, 0.50),
            ack_p99_ms: percentile(&latencies, 0.99),
            delivered_per_s: delivered.map(|d| d as f64 / seconds),
            e2e_p50_ms: delivering.then(|| percentile(&e2e, 0.50)),
            e2e_p99_ms: delivering.then(|| percentile(&e2e, 0.99)),
        }
    }
}

/// What the report says the run stored to: a `--storage` file given on
/// purpose is SQLite too, not PostgreSQL.
fn storage_label(given: Option<&str>) -> &'static str {
    match given {
        None => "sqlite (embedded)",
        Some(url) if url.starts_with("sqlite://") => "sqlite (the file given)",
        Some(_) => "postgresql",
    }
}

impl Report {
    pub fn new(args: &BenchArgs, duration: Duration) -> Report {
        Report {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            storage: storage_label(args.storage.as_deref()).into(),
            instances: args.instances,
            connections: args.connections,
            phase_seconds: duration.as_secs_f64(),
            objects: args.objects,
            duplicates: args.duplicates,
            routes: args.routes,
            phases: Vec::new(),
            drain_per_s: 0.0,
            sustained_per_s: 0.0,
            peak_rss_mib: 0.0,
        }
    }

    pub fn add(&mut self, mut phase: Phase) {
        let ceiling = self.phases.first().map_or(phase.events_per_s, |c| c.events_per_s).max(1e-9);
        phase.vs_ceiling = phase.events_per_s / ceiling;
        self.phases.push(phase);
    }

    fn ceiling(&self) -> f64 {
        self.phases.first().map_or(1.0, |c| c.events_per_s).max(1e-9)
    }

    pub fn table(&self) -> String {
        let mut out = format!(
            "hookgate bench: {}, {} instance{}, {} connections, {} s a phase, {} order keys, {:.0}% duplicates, \
             signed 1 KiB events{}, {} cores\n\n",
            self.storage,
            self.instances,
            if self.instances == 1 { "" } else { "s" },
            self.connections,
            self.phase_seconds,
            self.objects,
            self.duplicates * 100.0,
            if self.routes == 1 { String::new() } else { format!(" each routed to {} destinations", self.routes) },
            self.cores,
        );
        out.push_str(&format!(
            "{:<28} {:>10} {:>8} {:>9} {:>9} {:>11} {:>9} {:>9}\n",
            "", "events/s", "ceiling", "ack p50", "ack p99", "delivered/s", "e2e p50", "e2e p99"
        ));
        let ms = |v: f64| format!("{v:.1} ms");
        for p in &self.phases {
            out.push_str(&format!(
                "{:<28} {:>10.0} {:>7.0}% {:>9} {:>9} {:>11} {:>9} {:>9}\n",
                p.name,
                p.events_per_s,
                p.vs_ceiling * 100.0,
                ms(p.ack_p50_ms),
                ms(p.ack_p99_ms),
                p.delivered_per_s.map_or("-".into(), |d| format!("{d:.0}")),
                p.e2e_p50_ms.map_or("-".into(), ms),
                p.e2e_p99_ms.map_or("-".into(), ms),
            ));
        }
        let ceiling = self.ceiling();
        out.push_str(&format!(
            "{:<28} {:>10.0} {:>7.0}%\n{:<28} {:>10.0} {:>7.0}%\n{:<28} {:>7.0} MiB\n",
            if self.routes == 1 { "sustained (in = out)" } else { "sustained events (in = out)" },
            self.sustained_per_s,
            self.sustained_per_s / ceiling * 100.0,
            "backlog drained",
            self.drain_per_s,
            self.drain_per_s / ceiling * 100.0,
            "peak RSS (an instance)",
            self.peak_rss_mib,
        ));
        let failed: u64 = self.phases.iter().map(|p| p.failed).sum();
        if failed > 0 {
            out.push_str(&format!("\n{failed} requests failed (not 2xx, or the connection dropped)\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_report_names_the_store_the_url_names() {
        assert_eq!(super::storage_label(None), "sqlite (embedded)");
        assert_eq!(super::storage_label(Some("sqlite:///tmp/copy.db")), "sqlite (the file given)");
        assert_eq!(super::storage_label(Some("postgres://127.0.0.1/test")), "postgresql");
    }
}

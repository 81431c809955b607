//! `hookgate bench`: a benchmark anyone can run, like `pgbench`. It starts
//! real `hookgate serve` processes (embedded storage in a temp directory
//! unless `--storage` says otherwise), a local receiving app and a load
//! generator sending signed 1 KiB events over real sockets, and measures:
//!
//! 1. the bare HTTP ceiling: the same load against the same HTTP server
//!    answering without doing anything (`hookgate bench-ceiling`);
//! 2. ingest alone (destination paused);
//! 3. the backlog that built up, drained;
//! 4. ingest while delivering (sustained: whether the backlog grows);
//! 5. at half the sustained rate: ack and end-to-end latency;
//!
//! and the instances' peak memory. Every rate is shown beside its ratio to
//! the ceiling measured in the same run: on one machine the generator, the
//! app and hookgate share the CPU, and the ratio is what carries over.

mod app;
pub mod ceiling;
mod load;
mod report;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

pub use report::{Phase, Report};

use crate::api::Stats;

const SECRET: &str = "bench-signing-secret-0123456789";
const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Where the instances store events: a fresh SQLite file in a temp directory by
    /// default; a sqlite:// file given here is used as it is (and kept); in a
    /// postgres:// database the bench makes a schema of its own, and drops it,
    /// unless the URL names one (`?options=-c%20search_path%3DNAME`): that
    /// schema is used as it is (seeded, or a copy of a real one), and kept.
    #[arg(long)]
    pub storage: Option<String>,
    /// hookgate processes to run (more than one needs PostgreSQL).
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// Keep-alive connections the load generator holds, spread over the instances.
    #[arg(long, default_value_t = 64)]
    pub connections: usize,
    /// How long each phase runs.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Order keys the events are spread over.
    #[arg(long, default_value_t = 1_000)]
    pub objects: usize,
    /// The share of requests that repeat an event already sent (0 to 1).
    #[arg(long, default_value_t = 0.0)]
    pub duplicates: f64,
    /// Routes each event takes: it fans out to this many destinations (all
    /// served by the bench's app), each with its own queues.
    #[arg(long, default_value_t = 1)]
    pub routes: usize,
    /// Print the results as JSON (progress still goes to stderr).
    #[arg(long)]
    pub json: bool,
}

/// Microseconds since the bench began: the clock the generator stamps events
/// with and the app reads them by (one process, one clock).
pub fn clock_us() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// Run the bench until it ends or `stop` (SIGTERM, Ctrl-C) comes first: either
/// way the instances it started are killed and a schema it made is dropped.
pub async fn run(args: BenchArgs, stop: impl Future<Output = ()>) -> anyhow::Result<Report> {
    if args.instances == 0 || args.connections == 0 || !(0.0..=1.0).contains(&args.duplicates) {
        bail!("--instances and --connections must be at least 1, --duplicates between 0 and 1");
    }
    if !(1..=16).contains(&args.routes) {
        bail!("--routes must be between 1 and 16");
    }
    if args.instances > 1 && args.storage.is_none() {
        bail!("--instances {} needs --storage postgres://…: SQLite is one process per file", args.instances);
    }
    let duration = crate::config::parse_duration(&args.duration).map_err(anyhow::Error::msg)?;
    let dir = tempfile::tempdir()?;
    let storage = Storage::prepare(args.storage.as_deref(), dir.path()).await?;
    let result = tokio::select! {
        result = measure_all(&args, duration, &storage, dir.path()) => result,
        () = stop => Err(anyhow::anyhow!("interrupted")),
    };
    storage.clean_up().await;
    result
}

async fn measure_all(args: &BenchArgs, duration: Duration, storage: &Storage, dir: &Path) -> anyhow::Result<Report> {
    clock_us();
    let spec = Arc::new(load::Spec {
        path: "/in/bench".into(),
        secret: SECRET.into(),
        objects: args.objects,
        duplicates: args.duplicates,
        body_bytes: 1024,
    });
    let mut report = Report::new(args, duration);

    // 1. The ceiling.
    let ceiling_addr = free_addr()?;
    let ceiling = Child::spawn(&["bench-ceiling", "--listen", &ceiling_addr.to_string()], None)?;
    wait_for_port(ceiling_addr).await?;
    let phase = measure("bare HTTP (ceiling)", &[ceiling_addr], args, spec.clone(), duration, None, None).await;
    drop(ceiling);
    report.add(phase);

    // The gateway: instances, storage, the app.
    let (app_addr, seen) = app::start().await?;
    let mut instances = Vec::new();
    for n in 0..args.instances {
        let addr = free_addr()?;
        let config = dir.join(format!("hookgate-{n}.toml"));
        std::fs::write(&config, config_text(addr, &storage.url, app_addr, args.routes))?;
        instances.push((addr, Child::spawn(&["serve", "--config", path_str(&config)?], Some(dir))?));
    }
    let targets: Vec<SocketAddr> = instances.iter().map(|(addr, _)| *addr).collect();
    let http = reqwest::Client::new();
    for addr in &targets {
        wait_for_health(&http, *addr).await?;
    }
    let admin = |path: String| http.post(format!("http://{}{path}", targets[0])).bearer_auth(ADMIN_TOKEN).send();
    let destinations: Vec<String> = (1..=args.routes).map(destination_name).collect();

    // 2. Ingest alone.
    for name in &destinations {
        admin(format!("/api/destinations/{name}/pause")).await?.error_for_status()?;
    }
    let phase = measure("ingest alone (paused)", &targets, args, spec.clone(), duration, None, None).await;
    report.add(phase);

    // 3. The backlog, drained.
    let drain_started = Instant::now();
    let before = seen.delivered.load(Ordering::Relaxed);
    for name in &destinations {
        admin(format!("/api/destinations/{name}/resume")).await?.error_for_status()?;
    }
    wait_drained(&http, targets[0], "draining the backlog").await?;
    // Deliveries: with several routes, each event is delivered that many times.
    let drained = (seen.delivered.load(Ordering::Relaxed) - before) as f64 / args.routes as f64;
    report.drain_per_s = drained / drain_started.elapsed().as_secs_f64();
    seen.take_latencies();

    // 4. Ingest while delivering.
    let phase = measure("ingest while delivering", &targets, args, spec.clone(), duration, None, Some(&seen)).await;
    let sustained = (phase.delivered_per_s.unwrap_or(0.0) / args.routes as f64).min(phase.events_per_s);
    report.sustained_per_s = sustained;
    report.add(phase);
    wait_drained(&http, targets[0], "draining").await?;
    seen.take_latencies();

    // 5. Half the sustained rate, paced.
    let rate = (sustained / 2.0).max(1.0) / args.connections as f64;
    let phase = measure("at half the sustained rate", &targets, args, spec, duration, Some(rate), Some(&seen)).await;
    report.add(phase);
    wait_drained(&http, targets[0], "draining").await?;

    report.peak_rss_mib = instances.iter().map(|(_, child)| child.peak_rss_mib()).fold(0.0, f64::max);
    Ok(report)
}

/// Run the load for `duration`, printing progress; one row of the report.
async fn measure(
    name: &str,
    targets: &[SocketAddr],
    args: &BenchArgs,
    spec: Arc<load::Spec>,
    duration: Duration,
    rate_per_connection: Option<f64>,
    seen: Option<&app::Seen>,
) -> Phase {
    let delivered_before = seen.map(|s| s.delivered.load(Ordering::Relaxed));
    let run = load::start(targets, args.connections, spec, rate_per_connection);
    let counts = run.counts.clone();
    let started = Instant::now();
    let mut last = 0;
    while started.elapsed() < duration {
        tokio::time::sleep(Duration::from_secs(1).min(duration)).await;
        let ok = counts.ok.load(Ordering::Relaxed);
        eprint!("\r{name}: {:>3}s  {:>8} events/s   ", started.elapsed().as_secs(), ok - last);
        last = ok;
    }
    let (latencies, elapsed) = run.stop().await;
    eprintln!();
    let delivered = seen.map(|s| s.delivered.load(Ordering::Relaxed) - delivered_before.unwrap_or(0));
    let e2e = seen.map(|s| s.take_latencies()).unwrap_or_default();
    Phase::new(name, latencies, counts.failed.load(Ordering::Relaxed), elapsed, delivered, e2e)
}

/// Wait until nothing is pending or delivering, by counts taken after the wait began.
async fn wait_drained(http: &reqwest::Client, addr: SocketAddr, what: &str) -> anyhow::Result<()> {
    let began_ms = crate::clock::now_ms();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let stats: Stats =
            http.get(format!("http://{addr}/api/stats")).bearer_auth(ADMIN_TOKEN).send().await?.json().await?;
        let active = stats.active();
        eprint!("\r{what}: {active:>8} events still to deliver   ");
        if active == 0 && stats.counted_at_ms.is_some_and(|at| at >= began_ms) {
            eprintln!();
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the backlog did not drain in 10 minutes ({active} left)");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The `n`th destination (1-based): `app`, then `app-2`, `app-3`, …
fn destination_name(n: usize) -> String {
    if n == 1 { "app".to_owned() } else { format!("app-{n}") }
}

fn config_text(listen: SocketAddr, storage: &str, app: SocketAddr, routes: usize) -> String {
    // Each further route: a destination of its own (its own queues), served by the same app.
    let more: String = (2..=routes)
        .map(|n| {
            let name = destination_name(n);
            format!(
                r#"
[[destinations]]
name = "{name}"
url = "http://{app}/hooks/{n}"
timeout = "10s"
concurrency = 256

[[routes]]
source = "bench"
destination = "{name}"
"#
            )
        })
        .collect();
    let main = format!(
        r#"
[server]
listen = "{listen}"
max_body = "64KiB"

[storage]
url = "{storage}"
pool = 16

[admin]
token = "{ADMIN_TOKEN}"

[[destinations]]
name = "app"
url = "http://{app}/hooks"
timeout = "10s"
concurrency = 256

[[sources]]
name = "bench"
destination = "app"
verify = {{ scheme = "hmac-sha256", secret = "{SECRET}", header = "x-signature", prefix = "sha256=" }}
dedupe_key = "{{json.id}}"
order_key = "{{json.object}}"
"#
    );
    main + &more
}

/// Where the instances store events, and how to clean up after.
struct Storage {
    url: String,
    /// A PostgreSQL schema made for this run: (server URL, schema name).
    schema: Option<(String, String)>,
}

impl Storage {
    async fn prepare(given: Option<&str>, dir: &Path) -> anyhow::Result<Storage> {
        let Some(url) = given else {
            return Ok(Storage { url: format!("sqlite://{}", dir.join("hookgate.db").display()), schema: None });
        };
        if url.starts_with("sqlite://") {
            // A database given on purpose (seeded, or a copy of a real one): used as it is, and kept.
            return Ok(Storage { url: url.to_owned(), schema: None });
        }
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            bail!("--storage must be a sqlite:// or postgres:// URL (a fresh SQLite file is the default)");
        }
        if names_a_schema(url) {
            return Ok(Storage { url: url.to_owned(), schema: None });
        }
        let schema = format!("hookgate_bench_{}", std::process::id());
        let client = hookgate_postgres::connect_one(url).await.context("connecting to --storage")?;
        client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")).await?;
        Ok(Storage { url: with_search_path(url, &schema), schema: Some((url.to_owned(), schema)) })
    }

    async fn clean_up(&self) {
        if let Some((url, schema)) = &self.schema
            && let Ok(client) = hookgate_postgres::connect_one(url).await
        {
            let _ = client.batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await;
        }
    }
}

/// The `options` parameter of a postgres:// URL's query, as written.
fn options_param(url: &str) -> Option<&str> {
    let (_, query) = url.split_once('?')?;
    query.split('&').find_map(|pair| pair.strip_prefix("options="))
}

/// Whether the URL's `options` set a search path (`-c search_path=…`, any case).
fn names_a_schema(url: &str) -> bool {
    options_param(url).is_some_and(|options| options.to_ascii_lowercase().contains("search_path"))
}

/// The URL with `schema` as its search path, other options kept.
fn with_search_path(url: &str, schema: &str) -> String {
    let ours = format!("-c%20search_path%3D{schema}");
    match (url.split_once('?'), options_param(url)) {
        (Some((base, query)), Some(_)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.strip_prefix("options=") {
                    Some(given) => format!("options={given}%20{ours}"),
                    None => pair.to_owned(),
                })
                .collect();
            format!("{base}?{}", pairs.join("&"))
        }
        (Some(_), None) => format!("{url}&options={ours}"),
        (None, _) => format!("{url}?options={ours}"),
    }
}

/// A child process of this binary, killed and reaped when dropped.
struct Child(std::process::Child);

impl Child {
    fn spawn(args: &[&str], dir: Option<&Path>) -> anyhow::Result<Child> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let mut command = std::process::Command::new(exe);
        command.args(args).env("RUST_LOG", "error").stdout(std::process::Stdio::null());
        if let Some(dir) = dir {
            command.current_dir(dir);
        }
        Ok(Child(command.spawn().context("starting a hookgate process")?))
    }

    fn peak_rss_mib(&self) -> f64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .ok()
            .and_then(|status| {
                let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse::<f64>().ok()
            })
            .map_or(0.0, |kib| kib / 1024.0)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a temp path that is not UTF-8")
}

async fn wait_for_port(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        if Instant::now() > deadline {
            bail!("nothing listened on {addr}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn wait_for_health(http: &reqwest::Client, addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = http.get(format!("http://{addr}/readyz")).send().await
            && response.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("hookgate on {addr} did not become ready");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_named_in_the_url_is_found_in_its_options_only() {
        assert!(names_a_schema("postgres://h/db?options=-c%20search_path%3Dseeded"));
        assert!(names_a_schema("postgres://h/db?sslmode=disable&options=-c%20SEARCH_PATH%3Dseeded"));
        assert!(!names_a_schema("postgres://search_path@h/db"), "a user name is not an option");
        assert!(!names_a_schema("postgres://h/db?options=-c%20statement_timeout%3D5s"));
    }

    #[test]
    fn the_bench_schema_joins_the_options_given() {
        assert_eq!(with_search_path("postgres://h/db", "s"), "postgres://h/db?options=-c%20search_path%3Ds");
        assert_eq!(
            with_search_path("postgres://h/db?sslmode=disable", "s"),
            "postgres://h/db?sslmode=disable&options=-c%20search_path%3Ds"
        );
        assert_eq!(
            with_search_path("postgres://h/db?options=-c%20statement_timeout%3D5s&sslmode=disable", "s"),
            "postgres://h/db?options=-c%20statement_timeout%3D5s%20-c%20search_path%3Ds&sslmode=disable"
        );
    }
}

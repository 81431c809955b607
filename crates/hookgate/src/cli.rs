//! The command line. `events`, `replay` and `destinations` are clients of
//! the admin API: they never open a store. They print a table, or the API's
//! JSON with `--json`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

use crate::api::{BulkReplayed, Destinations, ErrorBody, EventPage, EventView, Paused, ReplayFilter, Replayed};

#[derive(Parser)]
#[command(name = "hookgate", version, about = "A webhook gateway: verify, dedupe, order, coalesce, deliver.")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the gateway.
    Serve(ConfigArg),
    /// Validate a config: exit 0, or exit 2 with one line per problem. Also
    /// connects to the storage (PostgreSQL) and says what migrations would run.
    Check(CheckArg),
    /// Zero set-up: hookgate, a slow app and a duplicate-bursting sender, in one process.
    Demo,
    /// Look at stored events (admin API client).
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// Measure this machine: the bare HTTP ceiling, then ingest, delivery and latency, each beside it.
    Bench(crate::bench::BenchArgs),
    /// The bare HTTP server `bench` measures the ceiling with (internal).
    #[command(hide = true)]
    BenchCeiling {
        #[arg(long)]
        listen: std::net::SocketAddr,
    },
    /// Deliver events again: one by id, or every event matching the filters
    /// (each order key's events in their original order).
    Replay {
        /// The event to replay; without it, every event matching the filters.
        id: Option<String>,
        #[command(flatten)]
        filter: ReplayFilter,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// See destinations (paused, circuit, queue, last minute) and pause or resume them.
    Destinations {
        #[command(subcommand)]
        command: DestinationsCommand,
    },
    /// Print a starting config: every key, its default, what it does.
    Init,
}

#[derive(Subcommand)]
pub enum DestinationsCommand {
    List {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Stop deliveries to a destination (events are still stored), on every instance.
    Pause {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Deliver again, the backlog first, in order.
    Resume {
        name: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
pub struct ConfigArg {
    /// Defaults to $HOOKGATE_CONFIG, then ./hookgate.toml.
    #[arg(long, env = "HOOKGATE_CONFIG", default_value = crate::config::DEFAULT_CONFIG_FILE)]
    pub config: PathBuf,
}

#[derive(Args)]
pub struct CheckArg {
    #[command(flatten)]
    pub config: ConfigArg,
    /// Do not connect to the storage: check the file only.
    #[arg(long)]
    pub offline: bool,
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Newest first.
    List {
        #[arg(long)]
        source: Option<String>,
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        order_key: Option<String>,
        #[arg(long)]
        dedupe_key: Option<String>,
        /// Received at or after: RFC 3339 (2026-11-29T10:00:00Z) or ms since the epoch.
        #[arg(long)]
        since: Option<String>,
        /// Received before.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// One event with its keys, duplicate count and every attempt.
    Show {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
pub struct ApiArgs {
    #[arg(long, env = "HOOKGATE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// A file holding the admin token (prefer this or $HOOKGATE_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// The admin token. Visible to every user of this machine in the process
    /// list: prefer --token-file or $HOOKGATE_ADMIN_TOKEN.
    #[arg(long)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl ApiArgs {
    /// The admin token: `--token-file`, then `--token` (with a warning), then `$HOOKGATE_ADMIN_TOKEN`.
    fn token(&self) -> Result<Option<String>, ClientError> {
        if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ClientError::TokenFile(format!("{}: {e}", path.display())))?;
            return Ok(Some(text.trim().to_owned()));
        }
        if let Some(token) = &self.token {
            eprintln!(
                "hookgate: warning: --token is visible to every user of this machine (ps); \
                 use --token-file or $HOOKGATE_ADMIN_TOKEN"
            );
            return Ok(Some(token.clone()));
        }
        Ok(std::env::var("HOOKGATE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach hookgate at {url}: {source}")]
    Unreachable { url: String, source: reqwest::Error },
    #[error("hookgate answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("bad --url {0:?}")]
    BadUrl(String),
    #[error("hookgate's answer was not what this CLI expects ({0}); are the two the same version?")]
    Unexpected(String),
    #[error("cannot read the token file {0}")]
    TokenFile(String),
}

impl ApiArgs {
    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, Option<String>)],
    ) -> Result<T, ClientError> {
        self.send(method, path, query, None).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, Option<String>)],
        body: Option<serde_json::Value>,
    ) -> Result<T, ClientError> {
        let base = self.url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}{path}")).map_err(|_| ClientError::BadUrl(self.url.clone()))?;
        let query: Vec<(&str, String)> = query.iter().filter_map(|(k, v)| Some((*k, v.clone()?))).collect();
        let mut request = reqwest::Client::new().request(method, url).query(&query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(token) = self.token()? {
            request = request.bearer_auth(token);
        }
        let unreachable = |source| ClientError::Unreachable { url: self.url.clone(), source };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
            return Err(ClientError::Refused { status: status.as_u16(), message });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected(e.to_string()))
    }
}

/// Columns padded to their widest cell; the last one is not padded.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let last = cells.len().saturating_sub(1);
        let padded: Vec<String> = cells
            .into_iter()
            .enumerate()
            .map(|(i, cell)| if i == last { cell } else { format!("{cell:<width$}", width = widths[i]) })
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

fn print_json<T: serde::Serialize>(value: &T) {
    println!("{}", serde_json::to_string_pretty(value).expect("API types serialize"));
}

fn ago(at_ms: i64) -> String {
    let seconds = (crate::clock::now_ms() - at_ms).max(0) / 1_000;
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3_600 => format!("{}m ago", seconds / 60),
        3_600..86_400 => format!("{}h ago", seconds / 3_600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

pub async fn events(command: EventsCommand) -> Result<(), ClientError> {
    match command {
        EventsCommand::List { source, state, order_key, dedupe_key, since, until, limit, cursor, api } => {
            let query = [
                ("source", source),
                ("state", state),
                ("order_key", order_key),
                ("dedupe_key", dedupe_key),
                ("since", since),
                ("until", until),
                ("limit", Some(limit.to_string())),
                ("cursor", cursor),
            ];
            let page: EventPage = api.call(reqwest::Method::GET, "/api/events", &query).await?;
            if api.json {
                print_json(&page);
                return Ok(());
            }
            let rows = page
                .events
                .iter()
                .map(|e| {
                    vec![
                        e.id.clone(),
                        e.source.clone(),
                        e.state.to_string(),
                        ago(e.received_at_ms),
                        e.duplicates.to_string(),
                        e.attempt_count.to_string(),
                        e.dedupe_key.clone().unwrap_or_else(|| "-".into()),
                        e.order_key.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let header =
                ["ID", "SOURCE", "STATE", "RECEIVED", "DUPS", "TRIES", "SENDER'S ID (DEDUPE KEY)", "ORDER KEY"];
            println!("{}", table(&header, rows));
            if let Some(next) = page.next_cursor {
                println!("more: --cursor {next}");
            }
        }
        EventsCommand::Show { id, api } => {
            let event: EventView = api.call(reqwest::Method::GET, &format!("/api/events/{id}"), &[]).await?;
            print_json(&event);
        }
    }
    Ok(())
}

pub async fn replay(id: Option<String>, filter: ReplayFilter, api: ApiArgs) -> Result<(), ClientError> {
    match id {
        Some(id) => {
            let answer: Replayed = api.call(reqwest::Method::POST, &format!("/api/events/{id}/replay"), &[]).await?;
            if api.json {
                print_json(&answer);
            } else {
                println!("{}: {}", answer.id, answer.status);
            }
        }
        None => {
            let body = serde_json::to_value(&filter).expect("a filter serializes");
            let answer: BulkReplayed = api.send(reqwest::Method::POST, "/api/replay", &[], Some(body)).await?;
            if api.json {
                print_json(&answer);
            } else {
                let more = if answer.more { " (more remain: run it again)" } else { "" };
                println!("replayed {}{more}", answer.replayed);
            }
        }
    }
    Ok(())
}

pub async fn destinations(command: DestinationsCommand) -> Result<(), ClientError> {
    let (name, paused, api) = match command {
        DestinationsCommand::List { api } => {
            let list: Destinations = api.call(reqwest::Method::GET, "/api/destinations", &[]).await?;
            if api.json {
                print_json(&list);
                return Ok(());
            }
            let ms = |v: Option<f64>| v.map_or("-".into(), |ms| format!("{ms:.0}ms"));
            let rows = list
                .destinations
                .iter()
                .map(|d| {
                    vec![
                        d.name.clone(),
                        if d.paused { "paused".into() } else { "running".into() },
                        d.circuit.as_str().to_owned(),
                        d.queue_depth.to_string(),
                        d.in_flight.to_string(),
                        d.delivered_last_minute.to_string(),
                        d.failed_last_minute.to_string(),
                        format!("{}/{}", ms(d.latency_p50_ms), ms(d.latency_p99_ms)),
                        d.rate_limit.clone().unwrap_or_else(|| "-".into()),
                        d.url.clone(),
                    ]
                })
                .collect();
            let header =
                ["NAME", "STATE", "CIRCUIT", "QUEUE", "IN FLIGHT", "OK/MIN", "FAILED/MIN", "P50/P99", "RATE", "URL"];
            println!("{}", table(&header, rows));
            return Ok(());
        }
        DestinationsCommand::Pause { name, api } => (name, true, api),
        DestinationsCommand::Resume { name, api } => (name, false, api),
    };
    let action = if paused { "pause" } else { "resume" };
    let answer: Paused = api.call(reqwest::Method::POST, &format!("/api/destinations/{name}/{action}"), &[]).await?;
    if api.json {
        print_json(&answer);
    } else {
        println!("{}: {}", answer.name, if answer.paused { "paused" } else { "running" });
    }
    Ok(())
}

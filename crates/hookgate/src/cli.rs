//! The command line. `events`, `deliveries`, `replay`, `reroute` and
//! `destinations` are clients of the admin API: they never open a store.
//! They print a table, or the API's JSON with `--json`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

use crate::api::{
    BulkReplayed, DeliveryPage, DeliveryReplayed, Destinations, ErrorBody, EventPage, EventView, Paused, ReplayFilter,
    Replayed, Rerouted,
};

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
    /// Look at deliveries: a destination's queue, its dead letters (admin API client).
    Deliveries {
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Deliver again: an event (`evt_…`: each of its finished deliveries), one
    /// delivery (`dlv_…`: to its destination only), or every delivery matching
    /// the filters (dead ones by default; each queue's in their original order).
    Replay {
        /// The event or delivery to replay; without it, every delivery matching the filters.
        id: Option<String>,
        #[command(flatten)]
        filter: ReplayFilter,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Route a stored event again by today's routes: a delivery is added to
    /// each destination it matches now and had none for (an unrouted event,
    /// or one stored before a route was added).
    Reroute {
        id: String,
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
    /// Sign a test event as a source's sender would, post it to hookgate, and
    /// print the answer: the first signed event, in one command.
    Send(SendArgs),
}

#[derive(Args)]
pub struct SendArgs {
    /// The source to send to (its `name` in the config).
    #[arg(long)]
    pub source: String,
    /// The body to send ("-": standard input). Default: the sender's usual kind of test event.
    #[arg(long, value_name = "FILE")]
    pub body: Option<PathBuf>,
    #[command(flatten)]
    pub config: ConfigArg,
    /// hookgate's address. Default: $HOOKGATE_URL, else the config's `server.listen`.
    #[arg(long, env = "HOOKGATE_URL")]
    pub url: Option<String>,
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
pub enum DeliveriesCommand {
    /// By event, newest first.
    List {
        #[arg(long)]
        destination: Option<String>,
        /// pending, delivering, delivered, dead or superseded.
        #[arg(long)]
        state: Option<String>,
        #[arg(long)]
        source: Option<String>,
        /// The key of its queue at the destination.
        #[arg(long)]
        order_key: Option<String>,
        /// Its event received at or after: a duration back from now (30m, 1h, 7d), RFC 3339 or ms since the epoch.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
pub enum EventsCommand {
    /// Newest first.
    List {
        #[arg(long)]
        source: Option<String>,
        /// pending, delivering, delivered, dead, superseded (its deliveries in a word) or unrouted.
        #[arg(long)]
        state: Option<String>,
        /// Events with a delivery to this destination.
        #[arg(long)]
        destination: Option<String>,
        #[arg(long)]
        order_key: Option<String>,
        #[arg(long)]
        dedupe_key: Option<String>,
        /// Received at or after: a duration back from now (30m, 1h, 7d), RFC 3339
        /// (2026-11-29T10:00:00Z) or ms since the epoch.
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
    /// One event with its keys, duplicate count, each route's verdict and each delivery's attempts.
    Show {
        id: String,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Args)]
pub struct ApiArgs {
    /// hookgate's address. Default: $HOOKGATE_URL, else the config's
    /// `server.listen`, else http://127.0.0.1:8080.
    #[arg(long, env = "HOOKGATE_URL")]
    pub url: Option<String>,
    /// The server's config, read for its address and admin token when they
    /// are not given otherwise. Default: $HOOKGATE_CONFIG, else ./hookgate.toml if there is one.
    #[arg(long, env = "HOOKGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A file holding the admin token, alone or as a line
    /// `HOOKGATE_ADMIN_TOKEN=…` (the systemd unit's environment file works).
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

/// Where an admin token came from, to say which one was refused.
#[derive(Debug, Clone)]
enum TokenFrom {
    File(PathBuf),
    Flag,
    Environment,
    Config(PathBuf),
}

impl std::fmt::Display for TokenFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenFrom::File(path) => write!(f, "--token-file {}", path.display()),
            TokenFrom::Flag => f.write_str("--token"),
            TokenFrom::Environment => f.write_str("$HOOKGATE_ADMIN_TOKEN"),
            TokenFrom::Config(path) => write!(f, "admin.token of {}", path.display()),
        }
    }
}

/// The server to talk to, and with what token.
struct Target {
    url: String,
    token: Option<(String, TokenFrom)>,
}

/// The token in a token file: the whole file, or the value of its
/// `HOOKGATE_ADMIN_TOKEN=` line (an environment file: `export` and quotes allowed).
fn token_in(text: &str) -> String {
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim_start();
        if let Some(value) = line.strip_prefix("HOOKGATE_ADMIN_TOKEN=") {
            let value = value.trim();
            let quoted = value.len() >= 2
                && ((value.starts_with('"') && value.ends_with('"'))
                    || (value.starts_with('\'') && value.ends_with('\'')));
            return if quoted { value[1..value.len() - 1].to_owned() } else { value.to_owned() };
        }
    }
    text.trim().to_owned()
}

impl ApiArgs {
    /// The URL and token: `--url` or $HOOKGATE_URL, else the config's; the
    /// token from `--token-file`, `--token` (with a warning),
    /// $HOOKGATE_ADMIN_TOKEN, else the config's `admin.token`.
    fn target(&self) -> Result<Target, ClientError> {
        let settings = self.settings()?;
        let url = self
            .url
            .clone()
            .or_else(|| settings.as_ref().and_then(|(_, s)| s.url.clone()))
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned());
        let token = if let Some(path) = &self.token_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ClientError::TokenFile(format!("{}: {e}", path.display())))?;
            Some((token_in(&text), TokenFrom::File(path.clone())))
        } else if let Some(token) = &self.token {
            eprintln!(
                "hookgate: warning: --token is visible to every user of this machine (ps); \
                 use --token-file or $HOOKGATE_ADMIN_TOKEN"
            );
            Some((token.clone(), TokenFrom::Flag))
        } else if let Some(token) = std::env::var("HOOKGATE_ADMIN_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some((token, TokenFrom::Environment))
        } else {
            match settings {
                Some((path, crate::config::ClientSettings { token: Some(Ok(token)), .. })) => {
                    Some((token.expose().to_owned(), TokenFrom::Config(path)))
                }
                Some((path, crate::config::ClientSettings { token: Some(Err(problem)), .. })) => {
                    return Err(ClientError::Config(format!("{}: admin.token: {problem}", path.display())));
                }
                _ => None,
            }
        };
        Ok(Target { url, token })
    }

    /// The server's config, when one is named or `./hookgate.toml` is there.
    fn settings(&self) -> Result<Option<(PathBuf, crate::config::ClientSettings)>, ClientError> {
        let env = crate::config::Env::from_process();
        let (path, named) = match &self.config {
            Some(path) => (path.clone(), true),
            None => (PathBuf::from(crate::config::DEFAULT_CONFIG_FILE), false),
        };
        if !named && !path.exists() {
            return Ok(None);
        }
        crate::config::ClientSettings::read(&path, &env).map(|s| Some((path, s))).map_err(ClientError::Config)
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
    #[error("cannot read the config: {0}")]
    Config(String),
    #[error("{0}")]
    Usage(String),
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
        let target = self.target()?;
        let base = target.url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}{path}")).map_err(|_| ClientError::BadUrl(target.url.clone()))?;
        let query: Vec<(&str, String)> = query.iter().filter_map(|(k, v)| Some((*k, v.clone()?))).collect();
        let mut request = reqwest::Client::new().request(method, url).query(&query);
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some((token, _)) = &target.token {
            request = request.bearer_auth(token);
        }
        let unreachable = |source| ClientError::Unreachable { url: target.url.clone(), source };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let body = response.bytes().await.map_err(unreachable)?;
        if !status.is_success() {
            let mut message = serde_json::from_slice::<ErrorBody>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_owned());
            if status == reqwest::StatusCode::UNAUTHORIZED {
                message.push_str(&match &target.token {
                    None => " (no admin token was given: set HOOKGATE_ADMIN_TOKEN, or pass --token-file FILE, \
                              or --config FILE naming the server's config)"
                        .to_owned(),
                    Some((_, from)) => format!(" (the token from {from} was refused: is it the server's admin.token?)"),
                });
            }
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

/// This machine's offset from UTC, read once at start while the process has
/// one thread (reading it later is refused as unsound): [`init_local_time`].
static LOCAL_OFFSET: std::sync::OnceLock<time::UtcOffset> = std::sync::OnceLock::new();

/// Call before any thread starts, for local times in what the CLI prints.
pub fn init_local_time() {
    let _ = LOCAL_OFFSET.set(time::UtcOffset::current_local_offset().unwrap_or(time::UtcOffset::UTC));
}

/// A stored time as an operator reads it: local, with its offset, and its age.
fn when(at_ms: i64) -> String {
    let offset = LOCAL_OFFSET.get().copied().unwrap_or(time::UtcOffset::UTC);
    let format = time::format_description::parse_borrowed::<1>(
        "[year]-[month]-[day] [hour]:[minute]:[second] [offset_hour sign:mandatory]:[offset_minute]",
    )
    .expect("a valid format");
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(at_ms as i128 * 1_000_000)
        .map(|t| t.to_offset(offset))
        .ok()
        .and_then(|t| t.format(&format).ok());
    match at {
        Some(at) => format!("{at} ({})", ago(at_ms)),
        None => format!("{at_ms} ms since the epoch"),
    }
}

/// A time filter as typed: a duration back from now (`1h`, `30m`, `7d`), or
/// what the API takes (RFC 3339, ms since the epoch), passed on as it is.
fn time_filter(name: &str, text: Option<String>) -> Result<Option<String>, ClientError> {
    let Some(text) = text else { return Ok(None) };
    if text.bytes().next().is_some_and(|b| b.is_ascii_digit()) && !text.bytes().all(|b| b.is_ascii_digit()) {
        if let Ok(back) = crate::config::parse_duration(&text) {
            let at = crate::clock::now_ms() - back.as_millis().min(i64::MAX as u128) as i64;
            return Ok(Some(at.to_string()));
        }
        if !text.contains('T') {
            return Err(ClientError::Usage(format!(
                "--{name} {text:?}: expected a duration back from now (30m, 1h, 7d), a time like \
                 2026-11-29T10:00:00Z, or ms since the epoch"
            )));
        }
    }
    Ok(Some(text))
}

fn ago(at_ms: i64) -> String {
    let seconds = (crate::clock::now_ms() - at_ms) / 1_000;
    let span = |s: i64| match s {
        0..60 => format!("{s}s"),
        60..3_600 => format!("{}m", s / 60),
        3_600..86_400 => format!("{}h", s / 3_600),
        _ => format!("{}d", s / 86_400),
    };
    if seconds < 0 { format!("in {}", span(-seconds)) } else { format!("{} ago", span(seconds)) }
}

pub async fn events(command: EventsCommand) -> Result<(), ClientError> {
    match command {
        EventsCommand::List { source, state, destination, order_key, dedupe_key, since, until, limit, cursor, api } => {
            let (since, until) = (time_filter("since", since)?, time_filter("until", until)?);
            let query = [
                ("source", source),
                ("state", state),
                ("destination", destination),
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
                        if e.destinations.is_empty() { "-".into() } else { e.destinations.join(",") },
                        e.state.to_string(),
                        ago(e.received_at_ms),
                        e.duplicates.to_string(),
                        e.attempt_count.to_string(),
                        e.dedupe_key.clone().unwrap_or_else(|| "-".into()),
                        e.order_key.clone().unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect();
            let header = [
                "ID",
                "SOURCE",
                "DESTINATIONS",
                "STATE",
                "RECEIVED",
                "DUPS",
                "TRIES",
                "SENDER'S ID (DEDUPE KEY)",
                "ORDER KEY",
            ];
            println!("{}", table(&header, rows));
            if let Some(next) = page.next_cursor {
                println!("more: the same command, filters and all, with --cursor {next}");
            }
        }
        EventsCommand::Show { id, api } => {
            let event: EventView = api.call(reqwest::Method::GET, &format!("/api/events/{id}"), &[]).await?;
            if api.json {
                print_json(&event);
            } else {
                print!("{}", show(&event));
            }
        }
    }
    Ok(())
}

/// Bytes of a body `events show` prints; `--json` has it all.
const SHOWN_BODY_BYTES: usize = 4_096;

/// One event as a person reads it: its state and keys, each attempt, what the sender sent.
fn show(event: &EventView) -> String {
    use std::fmt::Write;
    let e = &event.summary;
    let mut out = String::new();
    let mut row = |label: &str, value: String| {
        let _ = writeln!(out, "  {label:<14}{value}");
    };
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    row("state", e.state.to_string());
    let destinations = if e.destinations.is_empty() { "no route took it".into() } else { e.destinations.join(", ") };
    row("source", format!("{} -> {destinations}", e.source));
    if let Some(kind) = &e.event_type {
        row("event type", kind.clone());
    }
    row("received", when(e.received_at_ms));
    if let Some(scheme) = &event.verified_by {
        row("verified by", scheme.clone());
    }
    if let Some(trace) = &event.trace_id {
        row("trace", trace.clone());
    }
    row("updated", when(e.updated_at_ms));
    if let Some(next) = e.next_attempt_at_ms {
        row("next attempt", when(next));
    }
    row("sender's id", format!("{} (dedupe key)", dash(&e.dedupe_key)));
    row("order key", dash(&e.order_key));
    row("coalesce key", dash(&e.coalesce_key));
    let last_copy = e.last_duplicate_at_ms.map(|at| format!(", the last {}", when(at))).unwrap_or_default();
    row("copies", format!("{} more arrived and were dropped{last_copy}", e.duplicates));
    if let Some(by) = &e.superseded_by {
        row("superseded by", by.clone());
    }
    for warning in &e.warnings {
        row("warning", warning.clone());
    }
    let mut text = format!("{}\n{out}", e.id);
    let _ = writeln!(text, "routes ({})", event.routing.len());
    for r in &event.routing {
        let verdict = if r.matched { "matched" } else { "not matched" };
        let why = if r.matched { String::new() } else { format!(": {}", r.reason) };
        let _ = writeln!(text, "  {} -> {}  {verdict}{why}", r.route, r.destination);
    }
    for d in &event.deliveries {
        let s = &d.summary;
        let next = s.next_attempt_at_ms.map(|at| format!(", next attempt {}", when(at))).unwrap_or_default();
        let _ = writeln!(text, "delivery {} to {} ({}): {}{next}", s.id, s.destination, s.route, s.state);
        if !d.outcome.is_empty() {
            let _ = writeln!(text, "  {}", d.outcome);
        }
        if s.order_key != e.order_key {
            let _ = writeln!(text, "  order key {}", dash(&s.order_key));
        }
        for a in &d.attempts {
            let status = a.status.map_or("no answer".into(), |s| s.to_string());
            let error = a.error.as_deref().map(|e| format!("  {}", e.replace(['\n', '\r'], " "))).unwrap_or_default();
            let _ =
                writeln!(text, "  #{:<3} {}  {status}  {} ms{error}", a.attempt, when(a.started_at_ms), a.duration_ms);
            // The answer's start, when the error text does not already hold it.
            if let Some(answer) =
                a.response.as_deref().filter(|r| !r.is_empty() && a.error.as_deref().is_none_or(|e| !e.contains(r)))
            {
                let shown: String = answer.chars().take(200).collect();
                let more = if shown.len() < answer.len() { " …" } else { "" };
                let _ = writeln!(text, "       answered: {}{more}", shown.replace(['\n', '\r'], " "));
            }
        }
    }
    let _ = writeln!(text, "headers ({})", event.headers.len());
    for (name, value) in &event.headers {
        let _ = writeln!(text, "  {name}: {value}");
    }
    match (&event.body, &event.body_base64) {
        (Some(body), _) => {
            let _ = writeln!(text, "body ({} bytes)", body.len());
            let mut cut = body.len().min(SHOWN_BODY_BYTES);
            while !body.is_char_boundary(cut) {
                cut -= 1;
            }
            let _ = writeln!(text, "  {}", body[..cut].replace('\n', "\n  "));
            if cut < body.len() {
                let _ = writeln!(text, "  … {} more bytes (--json shows them all)", body.len() - cut);
            }
        }
        (None, Some(base64)) => {
            let _ = writeln!(text, "body (not UTF-8; base64 with --json: {} characters)", base64.len());
        }
        (None, None) => {
            let _ = writeln!(text, "body (empty)");
        }
    }
    text
}

/// `hookgate send`: the whole config is read (the source's secret is needed
/// to sign), so a problem in it is reported as `check` would.
pub async fn send(args: SendArgs) -> Result<(), ClientError> {
    let env = crate::config::Env::from_process();
    let config = crate::config::Config::load(&args.config.config, &env)
        .map_err(|problems| ClientError::Config(format!("{}:\n{problems}", args.config.config.display())))?;
    let Some(source) = config.sources.iter().find(|s| s.name == args.source) else {
        let names: Vec<&str> = config.sources.iter().map(|s| s.name.as_str()).collect();
        return Err(ClientError::Usage(format!("no source {:?}; the config has: {}", args.source, names.join(", "))));
    };
    let body = match &args.body {
        None => None,
        Some(path) if path.as_os_str() == "-" => {
            let mut body = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut body)
                .map_err(|e| ClientError::Usage(format!("cannot read the body from standard input: {e}")))?;
            Some(body)
        }
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| ClientError::Usage(format!("--body {}: {e}", path.display())))?)
        }
    };
    let nonce = format!("{:08x}", rand::random::<u32>());
    let now = crate::clock::now_ms() / 1_000;
    let request = hookgate_verify::sample::sample(&source.scheme, source.secrets.first(), body, now, &nonce)
        .map_err(|problem| ClientError::Usage(format!("source {}: {problem}", source.name)))?;
    let base = args.url.unwrap_or_else(|| crate::config::local_url(config.listen));
    let mut url = format!("{}/in/{}", base.trim_end_matches('/'), source.name);
    if !request.query.is_empty() {
        url = format!("{url}?{}", request.query);
    }
    let parsed = reqwest::Url::parse(&url).map_err(|_| ClientError::BadUrl(base.clone()))?;
    let mut post = reqwest::Client::new().post(parsed).body(request.body);
    for (name, value) in &request.headers {
        post = post.header(name, value);
    }
    println!("POST {} (signed as the {} sender would)", url.split('?').next().unwrap_or(&url), source.scheme.name());
    let response = post.send().await.map_err(|source| ClientError::Unreachable { url: base.clone(), source })?;
    let status = response.status();
    let answer = response.text().await.map_err(|source| ClientError::Unreachable { url: base.clone(), source })?;
    println!("{} {}", status.as_u16(), answer.trim());
    if !status.is_success() {
        return Err(ClientError::Refused { status: status.as_u16(), message: answer.trim().to_owned() });
    }
    if let Ok(accepted) = serde_json::from_str::<serde_json::Value>(&answer)
        && let Some(id) = accepted["id"].as_str()
    {
        println!("see it: hookgate events show {id}");
    }
    Ok(())
}

pub async fn replay(id: Option<String>, filter: ReplayFilter, api: ApiArgs) -> Result<(), ClientError> {
    match id {
        Some(id) if id.starts_with("dlv_") => {
            let path = format!("/api/deliveries/{id}/replay");
            let answer: DeliveryReplayed = api.call(reqwest::Method::POST, &path, &[]).await?;
            if api.json {
                print_json(&answer);
            } else {
                println!("{} (of {}): {}", answer.id, answer.event, answer.status);
            }
        }
        Some(id) => {
            let answer: Replayed = api.call(reqwest::Method::POST, &format!("/api/events/{id}/replay"), &[]).await?;
            if api.json {
                print_json(&answer);
            } else {
                let deliveries = if answer.deliveries == 1 {
                    "1 delivery".into()
                } else {
                    format!("{} deliveries", answer.deliveries)
                };
                println!("{}: {} ({deliveries})", answer.id, answer.status);
            }
        }
        None => {
            let filter = ReplayFilter {
                since: time_filter("since", filter.since)?,
                until: time_filter("until", filter.until)?,
                ..filter
            };
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

pub async fn reroute(id: String, api: ApiArgs) -> Result<(), ClientError> {
    let answer: Rerouted = api.call(reqwest::Method::POST, &format!("/api/events/{id}/reroute"), &[]).await?;
    if api.json {
        print_json(&answer);
        return Ok(());
    }
    println!("{}: {} deliveries added", answer.id, answer.added);
    for r in &answer.routing {
        let verdict = if r.matched { "matched".to_owned() } else { format!("not matched: {}", r.reason) };
        println!("  {} -> {}  {verdict}", r.route, r.destination);
    }
    Ok(())
}

pub async fn deliveries(command: DeliveriesCommand) -> Result<(), ClientError> {
    let DeliveriesCommand::List { destination, state, source, order_key, since, until, limit, cursor, api } = command;
    let (since, until) = (time_filter("since", since)?, time_filter("until", until)?);
    let query = [
        ("destination", destination),
        ("state", state),
        ("source", source),
        ("order_key", order_key),
        ("since", since),
        ("until", until),
        ("limit", Some(limit.to_string())),
        ("cursor", cursor),
    ];
    let page: DeliveryPage = api.call(reqwest::Method::GET, "/api/deliveries", &query).await?;
    if api.json {
        print_json(&page);
        return Ok(());
    }
    let rows = page
        .deliveries
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.event.clone(),
                d.destination.clone(),
                d.state.to_string(),
                ago(d.received_at_ms),
                d.attempt_count.to_string(),
                d.next_attempt_at_ms.map_or("-".into(), ago),
                d.order_key.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let header = ["ID", "EVENT", "DESTINATION", "STATE", "RECEIVED", "TRIES", "NEXT", "ORDER KEY"];
    println!("{}", table(&header, rows));
    if let Some(next) = page.next_cursor {
        println!("more: the same command, filters and all, with --cursor {next}");
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

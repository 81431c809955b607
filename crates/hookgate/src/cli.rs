//! The command line. `events` and `replay` are clients of the admin API:
//! they never open a store.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

use crate::api::{BulkReplayed, ErrorBody, EventPage, EventView, Replayed};

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
    /// Validate a config: exit 0, or exit 2 with one line per problem.
    Check(ConfigArg),
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
    /// Deliver events again: one by id, or every event matching --source/--state.
    Replay {
        /// The event to replay; without it, every event matching the filters.
        id: Option<String>,
        #[arg(long)]
        source: Option<String>,
        /// delivered, dead (the default for a bulk replay) or superseded.
        #[arg(long)]
        state: Option<String>,
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
        let base = self.url.trim_end_matches('/');
        let url = reqwest::Url::parse(&format!("{base}{path}")).map_err(|_| ClientError::BadUrl(self.url.clone()))?;
        let query: Vec<(&str, String)> = query.iter().filter_map(|(k, v)| Some((*k, v.clone()?))).collect();
        let mut request = reqwest::Client::new().request(method, url).query(&query);
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

pub async fn events(command: EventsCommand) -> Result<(), ClientError> {
    match command {
        EventsCommand::List { source, state, order_key, limit, cursor, api } => {
            let query = [
                ("source", source),
                ("state", state),
                ("order_key", order_key),
                ("limit", Some(limit.to_string())),
                ("cursor", cursor),
            ];
            let page: EventPage = api.call(reqwest::Method::GET, "/api/events", &query).await?;
            println!("{:<36}  {:<12} {:<11} {:>4} {:>4}  ORDER KEY", "ID", "SOURCE", "STATE", "DUPS", "TRY");
            for e in &page.events {
                println!(
                    "{:<36}  {:<12} {:<11} {:>4} {:>4}  {}",
                    e.id,
                    e.source,
                    e.state,
                    e.duplicates,
                    e.attempt_count,
                    e.order_key.as_deref().unwrap_or("-"),
                );
            }
            if let Some(next) = page.next_cursor {
                println!("more: --cursor {next}");
            }
        }
        EventsCommand::Show { id, api } => {
            let event: EventView = api.call(reqwest::Method::GET, &format!("/api/events/{id}"), &[]).await?;
            println!("{}", serde_json::to_string_pretty(&event).expect("an EventView serializes"));
        }
    }
    Ok(())
}

pub async fn replay(
    id: Option<String>,
    source: Option<String>,
    state: Option<String>,
    api: ApiArgs,
) -> Result<(), ClientError> {
    match id {
        Some(id) => {
            let answer: Replayed = api.call(reqwest::Method::POST, &format!("/api/events/{id}/replay"), &[]).await?;
            println!("{}: {}", answer.id, answer.status);
        }
        None => {
            let query = [("source", source), ("state", state)];
            let answer: BulkReplayed = api.call(reqwest::Method::POST, "/api/replay", &query).await?;
            let more = if answer.more { " (more remain: run it again)" } else { "" };
            println!("replayed {}{more}", answer.replayed);
        }
    }
    Ok(())
}

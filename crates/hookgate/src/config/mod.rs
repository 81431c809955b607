//! Configuration: a TOML file, overridden by `HOOKGATE_SECTION__KEY`
//! environment variables, validated once into the typed [`Config`].
//!
//! - `raw`: the file's shape; `env`: the environment as input; `defaults`:
//!   every default; `units`: durations and sizes; `validate`: from shape to
//!   types.
//! - Problems name their key exactly as the contract shows
//!   (`sources[1].order_key: unknown field "jsn.id"`). Every problem found by
//!   validation is reported at once; a TOML syntax error, a value of the wrong
//!   type or an unknown key stops reading the file, so it is reported alone.

mod defaults;
mod env;
mod raw;
mod units;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookgate_core::filter::{Filter, Glob};
use hookgate_core::{RetryPolicy, Secret, Template};
use hookgate_verify::Scheme;
use hookgate_verify::signing::Signer;

pub use env::Env;

/// What `hookgate init` prints: every key, its default, one line on what it
/// does. `check` accepts it as it is (a test holds it to that), once the two
/// secrets it names are in the environment.
pub const STARTING_CONFIG: &str = include_str!("starting.toml");
pub use units::{parse_duration, parse_size};

pub const DEFAULT_CONFIG_FILE: &str = "hookgate.toml";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub limits: Limits,
    pub storage: Storage,
    /// `None`: the admin API refuses every request (there is no anonymous admin).
    pub admin_token: Option<Secret>,
    pub retention: Retention,
    pub destinations: Vec<Destination>,
    pub sources: Vec<Source>,
    /// Bytes of each attempt's answer kept with it (`[storage] keep_response`).
    pub keep_response: usize,
    pub log: Log,
    /// `None`: no traces are exported (the app still gets a `traceparent`).
    pub telemetry: Option<crate::telemetry::Settings>,
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub json: bool,
    /// An `EnvFilter` directive; `RUST_LOG` wins over it.
    pub level: String,
}

/// What the HTTP edge allows a client, and how long a stop may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_inflight_bytes: usize,
    pub shutdown_grace: Duration,
}

/// How long finished events are kept, by state; then deleted in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub delivered: Duration,
    pub dead: Duration,
    pub superseded: Duration,
}

impl Retention {
    /// Each finished state with how long it is kept.
    pub fn by_state(&self) -> [(hookgate_core::State, Duration); 3] {
        use hookgate_core::State;
        [(State::Delivered, self.delivered), (State::Dead, self.dead), (State::Superseded, self.superseded)]
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    /// `min_free`: bytes of disk kept for deliveries (ingest is refused below it).
    Sqlite { path: PathBuf, min_free: u64 },
    /// The URL may hold a password. `pool`: connections per instance, at most (plus one for LISTEN).
    Postgres { url: Secret, pool: usize },
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub url: reqwest::Url,
    pub timeout: Duration,
    /// Deliveries in flight to this destination, at most.
    pub concurrency: usize,
    /// Signs each attempt, in the format `signing` names (Standard Webhooks by
    /// default), when `signing_secret` is set.
    pub signer: Option<Signer>,
    pub retry: RetryPolicy,
    /// Added to every delivery (the app's own credentials, say); values may be secrets.
    pub headers: Vec<(reqwest::header::HeaderName, Secret)>,
    /// Attempts started per second, at most (across all instances).
    pub rate_limit: Option<RateLimit>,
    pub circuit_breaker: Option<CircuitBreaker>,
}

impl Destination {
    /// How long this destination's retries last (and how it signs), for `check` and `init`:
    /// "retries for 26 h 41 m at the least (20 attempts, 10 s doubling to 6 h; at most 53 h 22 m)".
    pub fn retry_schedule(&self) -> String {
        let (shortest, longest) = self.retry.span_ms();
        let human = hookgate_core::human_duration;
        if self.retry.max_attempts == 1 {
            return "no retries (max_attempts = 1): a failed attempt is dead".into();
        }
        let signed = match &self.signer {
            Some(signer) => format!("signs each attempt as {}", signer.format()),
            None => "unsigned (no signing_secret)".to_owned(),
        };
        format!(
            "retries for {} at the least ({} attempts, {} doubling to {}; at most {}), then the event is dead; {signed}",
            human(shortest),
            self.retry.max_attempts,
            human(self.retry.initial_ms),
            human(self.retry.max_ms),
            human(longest),
        )
    }
}

/// `rate_limit = "200/s"`: attempts started per second, at most.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    pub per_second: f64,
}

impl RateLimit {
    /// "200/s", "600/m", "3600/h".
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let bad = || format!("{text:?} is not a rate like \"200/s\", \"600/m\" or \"3600/h\"");
        let (count, per) = text.trim().split_once('/').ok_or_else(bad)?;
        let count: f64 = count.trim().parse().map_err(|_| bad())?;
        let seconds = match per.trim() {
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3_600.0,
            _ => return Err(bad()),
        };
        if !(count.is_finite() && count > 0.0) {
            return Err(format!("{text:?}: the rate must be more than zero"));
        }
        Ok(RateLimit { per_second: count / seconds })
    }
}

impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", self.per_second)
    }
}

/// `circuit_breaker = { failures = 20, cooldown = "30s" }`: after `failures`
/// failed attempts in a row, stop sending for `cooldown`, then one probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitBreaker {
    pub failures: u32,
    pub cooldown: Duration,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    /// What kind of event the sender says it is: what routes' `events` match.
    pub event_type: Option<Template>,
    /// Where its events go, in the config's order (`sources[].destination` is one with no filter).
    pub routes: Vec<Route>,
    pub scheme: Scheme,
    /// Every secret currently accepted (more than one while rotating).
    pub secrets: Vec<Secret>,
    pub tolerance_secs: i64,
    pub dedupe_key: Option<Template>,
    pub dedupe_window_ms: i64,
    pub dedupe_ignore: Vec<String>,
    pub order_key: Option<Template>,
    pub coalesce_key: Option<Template>,
    /// Answer `GET /in/{source}` by echoing this query parameter.
    pub challenge: Option<Challenge>,
}

/// `[[routes]]`: one destination's share of a source's events.
#[derive(Debug, Clone)]
pub struct Route {
    /// "<source>-><destination>" unless named.
    pub name: String,
    pub destination: String,
    /// Globs on the event's type; empty: every type (and events without one).
    pub events: Vec<Glob>,
    /// Every condition must hold.
    pub filter: Option<Filter>,
    /// The queue's keys at this destination, instead of the source's.
    pub order_key: Option<Template>,
    pub coalesce_key: Option<Template>,
    /// false: the route matches nothing (its reason says so).
    pub enabled: bool,
}

impl Route {
    /// The name a route has unless given one.
    pub fn default_name(source: &str, destination: &str) -> String {
        format!("{source}->{destination}")
    }
}

impl Config {
    /// Every route of every source, in the config's order.
    pub fn routes(&self) -> impl Iterator<Item = (&Source, &Route)> {
        self.sources.iter().flat_map(|s| s.routes.iter().map(move |r| (s, r)))
    }
}

/// A `GET` echo handshake: answer with the value of `param`, if the
/// `(token_param, token)` pair (when set) matches.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub param: String,
    pub token: Option<(String, Secret)>,
}

/// Every problem found in a configuration, one per line.
#[derive(Debug)]
pub struct Problems(pub Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("\n"))
    }
}

impl std::error::Error for Problems {}

impl Config {
    /// Read `path`, apply the environment, validate.
    pub fn load(path: &Path, env: &Env) -> Result<Config, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| Problems(vec![format!("{}: {e}", path.display())]))?;
        Self::from_toml(&text, env)
    }

    /// Parse, apply the environment, validate.
    pub fn from_toml(text: &str, env: &Env) -> Result<Config, Problems> {
        let mut table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| Problems(vec![e.to_string().trim().replace('\n', " ")]))?;
        env.overlay(&mut table).map_err(|p| Problems(vec![p]))?;
        let raw: raw::RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            // toml appends "in `table`" lines: the path already says where.
            let inner = e.into_inner().to_string().lines().next().unwrap_or_default().to_owned();
            Problems(vec![if path == "." { inner } else { format!("{path}: {inner}") }])
        })?;
        validate::validate(raw, env)
    }
}

/// What an admin command (`events`, `replay`, `destinations`, `send`) reads
/// of a server's config: the URL it serves on and its admin token. Read
/// leniently: a problem elsewhere in the file (a sender's secret not set in
/// the operator's shell) must not stop the CLI from finding the server.
#[derive(Debug, Clone, Default)]
pub struct ClientSettings {
    /// `http://` + `server.listen`, with an unspecified address (0.0.0.0,
    /// `::`) replaced by loopback.
    pub url: Option<String>,
    /// `admin.token`, resolved (`env:`, `file:`), or why it could not be.
    pub token: Option<Result<Secret, String>>,
}

impl ClientSettings {
    pub fn read(path: &Path, env: &Env) -> Result<ClientSettings, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut table: toml::Table = text.parse().map_err(|e: toml::de::Error| format!("{}: {e}", path.display()))?;
        env.overlay(&mut table)?;
        let field = |section: &str, key: &str| {
            table.get(section).and_then(|s| s.get(key)).and_then(toml::Value::as_str).map(str::to_owned)
        };
        let listen = field("server", "listen").unwrap_or_else(|| defaults::LISTEN.to_owned());
        let url = listen.parse::<SocketAddr>().ok().map(local_url);
        let token = field("admin", "token").map(|text| validate::resolve_secret(&text, env));
        Ok(ClientSettings { url, token })
    }
}

/// The URL this machine reaches a server listening on `listen` at: an
/// unspecified address (0.0.0.0, `::`) is reached on loopback.
pub fn local_url(mut listen: SocketAddr) -> String {
    if listen.ip().is_unspecified() {
        listen.set_ip(if listen.is_ipv4() { [127, 0, 0, 1].into() } else { std::net::Ipv6Addr::LOCALHOST.into() });
    }
    format!("http://{listen}")
}

#[cfg(test)]
mod tests;

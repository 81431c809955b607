//! The config file's shape, as TOML gives it: every field optional, unknown
//! fields refused. Defaults are applied in one place, `validate`, from the
//! constants in `defaults`.

use serde::{Deserialize, Deserializer};

/// A size is text ("1MiB") or a number of bytes (`max_body = 1000000`, or the
/// same from the environment, where a bare number reads as TOML's integer).
fn size<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    struct Size;
    impl serde::de::Visitor<'_> for Size {
        type Value = Option<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a size like \"1MiB\" or a number of bytes")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(Some(text.to_owned()))
        }
        fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
        fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
            Ok(Some(n.to_string()))
        }
    }
    deserializer.deserialize_any(Size)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub server: RawServer,
    pub storage: RawStorage,
    pub admin: RawAdmin,
    pub retention: RawRetention,
    pub destinations: Vec<RawDestination>,
    pub sources: Vec<RawSource>,
    pub routes: Vec<RawRoute>,
    pub log: RawLog,
    pub telemetry: RawTelemetry,
}

/// `[log]`: how hookgate writes its log (stderr).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// "text" (default) or "json": one JSON object a line.
    pub format: Option<String>,
    /// A level ("info") or a filter ("hookgate=debug,info"); `RUST_LOG`, when set, wins.
    pub level: Option<String>,
}

/// `[telemetry]`: OpenTelemetry traces, off unless an endpoint is set.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawTelemetry {
    /// The collector's OTLP/HTTP base URL ("http://127.0.0.1:4318"); spans go to `/v1/traces` under it.
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
    /// The share of new traces recorded, 0 to 1 (a sender's sampled flag is kept as it is).
    pub sample_ratio: Option<f64>,
}

/// `[[routes]]`: which of a source's events go to a destination.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoute {
    /// Default: "<source>-><destination>".
    pub name: Option<String>,
    pub source: Option<String>,
    pub destination: Option<String>,
    /// Globs on the source's `event_type`; none: every event.
    pub events: Option<Vec<String>>,
    /// Every key must hold; kept as TOML and parsed by `hookgate_core::filter`.
    pub filter: Option<toml::Table>,
    /// The queue's keys at this destination, instead of the source's.
    pub order_key: Option<String>,
    pub coalesce_key: Option<String>,
    pub enabled: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawServer {
    pub listen: Option<String>,
    #[serde(deserialize_with = "size")]
    pub max_body: Option<String>,
    pub max_connections: Option<i64>,
    pub header_timeout: Option<String>,
    pub body_timeout: Option<String>,
    #[serde(deserialize_with = "size")]
    pub max_inflight_bytes: Option<String>,
    pub shutdown_grace: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawStorage {
    pub url: Option<String>,
    /// PostgreSQL only: connections per instance.
    pub pool: Option<i64>,
    /// SQLite only: free disk kept for deliveries; below it, ingest is refused.
    #[serde(deserialize_with = "size")]
    pub min_free: Option<String>,
    /// The first bytes of every attempt's answer kept with the attempt ("1KiB"; "0" keeps none).
    #[serde(deserialize_with = "size")]
    pub keep_response: Option<String>,
}

/// How long finished events are kept, by state.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetention {
    pub delivered: Option<String>,
    pub dead: Option<String>,
    pub superseded: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    pub token: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawDestination {
    pub name: Option<String>,
    pub url: Option<String>,
    pub timeout: Option<String>,
    pub concurrency: Option<i64>,
    pub signing_secret: Option<String>,
    /// The format each attempt is signed in: "standard-webhooks" (default), "stripe", "github", "shopify".
    pub signing: Option<String>,
    pub retry: RawRetry,
    /// Added to every delivery: name → value (a secret may be `env:NAME`).
    pub headers: std::collections::BTreeMap<String, String>,
    /// Attempts started per second, at most, across all instances: "200/s".
    pub rate_limit: Option<String>,
    pub circuit_breaker: Option<RawCircuitBreaker>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawCircuitBreaker {
    pub failures: Option<i64>,
    pub cooldown: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawRetry {
    pub max_attempts: Option<i64>,
    pub initial: Option<String>,
    pub max: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawSource {
    pub name: Option<String>,
    /// Shorthand for one route with no filter.
    pub destination: Option<String>,
    /// What kind of event the sender says it is (a key template); what routes' `events` match.
    pub event_type: Option<String>,
    pub preset: Option<String>,
    pub verify: Option<RawVerify>,
    pub dedupe_key: Option<String>,
    pub dedupe_window: Option<String>,
    pub dedupe_ignore: Vec<String>,
    pub order_key: Option<String>,
    pub coalesce_key: Option<String>,
    pub challenge: Option<RawChallenge>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RawVerify {
    pub scheme: Option<String>,
    pub secret: Option<OneOrMany>,
    pub tolerance: Option<String>,
    /// hmac-*: the signature's header; token: the token's header.
    pub header: Option<String>,
    /// hmac-*: "hex" (default) or "base64".
    pub encoding: Option<String>,
    /// hmac-*: text before the signature, e.g. "sha256=".
    pub prefix: Option<String>,
    /// hmac-*: a signed timestamp's header; with `signed_content`.
    pub timestamp_header: Option<String>,
    /// hmac-*: what is signed, from `{timestamp}` and `{body}`; default the body.
    pub signed_content: Option<String>,
    /// basic: the user name (the secret is the password).
    pub username: Option<String>,
    /// token: the query parameter holding the token (instead of `header`).
    pub query: Option<String>,
    /// twilio: this source's URL as the sender calls it.
    pub public_url: Option<String>,
}

/// A `GET /in/{source}` echo handshake (`hub.challenge` style).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawChallenge {
    /// The query parameter whose value is echoed back.
    pub param: String,
    /// Optional: the parameter carrying a verify token, and the token expected.
    pub token_param: Option<String>,
    pub token: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub fn items(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(one) => vec![one.as_str()],
            OneOrMany::Many(many) => many.iter().map(String::as_str).collect(),
        }
    }
}

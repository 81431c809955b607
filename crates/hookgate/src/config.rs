//! Configuration: TOML file < `HOOKGATE_SECTION__KEY` environment variables,
//! validated once into typed structs. Validation collects every problem, each
//! naming its key (`sources[1].order_key: unknown field "jsn.id"`), so one
//! `hookgate check` run shows them all.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hookgate_core::{RetryPolicy, Template};
use hookgate_verify::{Encoding, GenericHmac, HashAlgorithm, Scheme, TokenAt};
use serde::Deserialize;

/// Prefix of environment variables that override the file, e.g.
/// `HOOKGATE_SERVER__LISTEN=0.0.0.0:8080` or `HOOKGATE_DESTINATIONS__0__URL=…`.
/// Only names with a `__` count, so `HOOKGATE_CONFIG` and friends are not keys.
const ENV_PREFIX: &str = "HOOKGATE_";

pub const DEFAULT_CONFIG_FILE: &str = "hookgate.toml";

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub max_body_bytes: usize,
    pub storage: Storage,
    /// `None`: the admin API refuses every request (there is no anonymous admin).
    pub admin_token: Option<String>,
    pub destinations: Vec<Destination>,
    pub sources: Vec<Source>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Storage {
    Sqlite(PathBuf),
    /// `pool`: connections per instance, at most (plus one for LISTEN).
    Postgres {
        url: String,
        pool: usize,
    },
}

#[derive(Debug, Clone)]
pub struct Destination {
    pub name: String,
    pub url: reqwest::Url,
    pub timeout: Duration,
    /// Deliveries in flight to this destination, at most.
    pub concurrency: usize,
    /// Key bytes of the `whsec_…` secret that signs what hookgate sends.
    pub signing_key: Option<Vec<u8>>,
    pub retry: RetryPolicy,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub destination: String,
    pub scheme: Scheme,
    /// Every secret currently accepted (more than one while rotating).
    pub secrets: Vec<String>,
    pub tolerance_secs: i64,
    pub dedupe_key: Option<Template>,
    pub dedupe_window_ms: i64,
    pub dedupe_ignore: Vec<String>,
    pub order_key: Option<Template>,
    pub coalesce_key: Option<Template>,
    /// Answer `GET /in/{source}` by echoing this query parameter.
    pub challenge: Option<Challenge>,
}

/// A `GET` echo handshake: answer with the value of `param`, if the
/// `(token_param, token)` pair (when set) matches.
#[derive(Debug, Clone)]
pub struct Challenge {
    pub param: String,
    pub token: Option<(String, String)>,
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

// ---- the file's shape ----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawConfig {
    server: RawServer,
    storage: RawStorage,
    admin: RawAdmin,
    destinations: Vec<RawDestination>,
    sources: Vec<RawSource>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    max_body: String,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer { listen: "127.0.0.1:8080".into(), max_body: "1MiB".into() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStorage {
    url: String,
    /// PostgreSQL only: connections per instance.
    pool: i64,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage { url: "sqlite://hookgate.db".into(), pool: 8 }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    token: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    name: Option<String>,
    url: Option<String>,
    #[serde(default = "default_timeout")]
    timeout: String,
    #[serde(default = "default_concurrency")]
    concurrency: i64,
    signing_secret: Option<String>,
    #[serde(default)]
    retry: RawRetry,
}

fn default_timeout() -> String {
    "30s".into()
}

fn default_concurrency() -> i64 {
    64
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawRetry {
    max_attempts: i64,
    initial: String,
    max: String,
}

impl Default for RawRetry {
    fn default() -> Self {
        RawRetry { max_attempts: 10, initial: "1s".into(), max: "1h".into() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Option<String>,
    destination: Option<String>,
    preset: Option<String>,
    verify: Option<RawVerify>,
    dedupe_key: Option<String>,
    dedupe_window: Option<String>,
    #[serde(default)]
    dedupe_ignore: Vec<String>,
    order_key: Option<String>,
    coalesce_key: Option<String>,
    challenge: Option<RawChallenge>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawVerify {
    scheme: Option<String>,
    secret: Option<OneOrMany>,
    tolerance: Option<String>,
    /// hmac-*: the signature's header; token: the token's header.
    header: Option<String>,
    /// hmac-*: "hex" (default) or "base64".
    encoding: Option<String>,
    /// hmac-*: text before the signature, e.g. "sha256=".
    prefix: Option<String>,
    /// hmac-*: a signed timestamp's header; with `signed_content`.
    timestamp_header: Option<String>,
    /// hmac-*: what is signed, from `{timestamp}` and `{body}`; default the body.
    signed_content: Option<String>,
    /// basic: the user name (the secret is the password).
    username: Option<String>,
    /// token: the query parameter holding the token (instead of `header`).
    query: Option<String>,
    /// twilio: this source's URL as the sender calls it.
    public_url: Option<String>,
}

/// A `GET /in/{source}` echo handshake (`hub.challenge` style).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawChallenge {
    /// The query parameter whose value is echoed back.
    param: String,
    /// Optional: the parameter carrying a verify token, and the token expected.
    token_param: Option<String>,
    token: Option<String>,
}

#[derive(Deserialize, Clone)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// A sender's right defaults: its scheme and the keys its events carry.
struct Preset {
    scheme: &'static str,
    dedupe_key: Option<&'static str>,
    order_key: Option<&'static str>,
    coalesce_key: Option<&'static str>,
}

fn preset(name: &str) -> Option<Preset> {
    let preset = match name {
        "stripe" => Preset { scheme: "stripe", ..Preset::dedupe("{json.id}") },
        "github" => Preset { scheme: "github", ..Preset::dedupe("{header.x-github-delivery}") },
        "shopify" => Preset { scheme: "shopify", ..Preset::dedupe("{header.x-shopify-event-id}") },
        "standard-webhooks" => Preset { scheme: "standard-webhooks", ..Preset::dedupe("{header.webhook-id}") },
        // Svix sends the same scheme under svix-* header names.
        "svix" => Preset { scheme: "standard-webhooks", ..Preset::dedupe("{header.svix-id}") },
        "slack" => Preset { scheme: "slack", ..Preset::dedupe("{json.event_id}") },
        "twilio" => Preset { scheme: "twilio", ..Preset::dedupe("{header.i-twilio-idempotency-token}") },
        // Thin events with no id: order and coalesce per appointment, no dedupe.
        "acuity" => Preset {
            scheme: "acuity",
            dedupe_key: None,
            order_key: Some("{form.id}"),
            coalesce_key: Some("{form.action}:{form.id}"),
        },
        _ => return None,
    };
    Some(preset)
}

impl Preset {
    fn dedupe(key: &'static str) -> Preset {
        Preset { scheme: "none", dedupe_key: Some(key), order_key: None, coalesce_key: None }
    }
}

const PRESETS: &str = "stripe, github, shopify, standard-webhooks, svix, slack, twilio, acuity";

// ---- loading ----

impl Config {
    /// Read `path`, apply the environment, validate.
    pub fn load(path: &Path) -> Result<Config, Problems> {
        let text = std::fs::read_to_string(path).map_err(|e| Problems(vec![format!("{}: {e}", path.display())]))?;
        // Problems name their key exactly as the contract shows (`sources[1].order_key: …`), with no file prefix.
        Self::from_toml(&text, std::env::vars(), &|name| std::env::var(name).ok())
    }

    /// Parse and validate, with the environment given explicitly (for tests).
    pub fn from_toml(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Problems> {
        let mut table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| Problems(vec![e.to_string().trim().replace('\n', " ")]))?;
        overlay_env(&mut table, env).map_err(|p| Problems(vec![p]))?;
        let raw: RawConfig = serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let path = e.path().to_string();
            // toml appends "in `table`" lines: the path already says where.
            let inner = e.into_inner().to_string().lines().next().unwrap_or_default().to_owned();
            Problems(vec![if path == "." { inner } else { format!("{path}: {inner}") }])
        })?;
        validate(raw, lookup)
    }
}

/// `HOOKGATE_A__B__0__C=value` sets `a.b[0].c`; the value is read as TOML if it
/// parses (numbers, booleans, arrays), otherwise as a string.
fn overlay_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> Result<(), String> {
    let mut vars: Vec<_> = env
        .into_iter()
        .filter_map(|(name, value)| Some((name.strip_prefix(ENV_PREFIX)?.to_owned(), value)))
        .filter(|(rest, _)| rest.contains("__"))
        .collect();
    vars.sort();
    for (rest, value) in vars {
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        let parsed = format!("v = {value}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or(toml::Value::String(value));
        set_path(table, &path, parsed).map_err(|e| format!("{ENV_PREFIX}{rest}: {e}"))?;
    }
    Ok(())
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let (first, rest) = path.split_first().ok_or("empty key")?;
    if rest.is_empty() {
        table.insert(first.clone(), value);
        return Ok(());
    }
    let node = table.entry(first.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
    set_in_value(node, rest, value)
}

fn set_in_value(node: &mut toml::Value, path: &[String], value: toml::Value) -> Result<(), String> {
    match node {
        toml::Value::Table(table) => set_path(table, path, value),
        toml::Value::Array(items) => {
            let index: usize = path[0].parse().map_err(|_| format!("{:?} is not an index", path[0]))?;
            let item = items.get_mut(index).ok_or_else(|| format!("there is no entry {index}"))?;
            if path.len() == 1 {
                *item = value;
                Ok(())
            } else {
                set_in_value(item, &path[1..], value)
            }
        }
        _ => Err(format!("{:?} is not a table", path[0])),
    }
}

/// Collects problems while validating, each under its key.
struct Checker<'a> {
    problems: Vec<String>,
    lookup: &'a dyn Fn(&str) -> Option<String>,
}

impl Checker<'_> {
    fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems.push(format!("{key}: {message}"));
    }

    fn duration(&mut self, key: &str, text: &str) -> Option<Duration> {
        parse_duration(text).map_err(|e| self.problem(key, e)).ok()
    }

    fn template(&mut self, key: &str, text: Option<&str>) -> Option<Template> {
        text.and_then(|t| t.parse().map_err(|e| self.problem(key, e)).ok())
    }

    fn required<'v>(&mut self, key: &str, value: &'v Option<String>) -> Option<&'v str> {
        match value.as_deref() {
            Some(v) if !v.trim().is_empty() => Some(v),
            _ => {
                self.problem(key, "missing (required)");
                None
            }
        }
    }

    /// A secret is `env:NAME` (read from the environment) or a literal.
    fn secret(&mut self, key: &str, text: &str) -> Option<String> {
        match text.strip_prefix("env:") {
            Some(name) => match (self.lookup)(name) {
                Some(value) if !value.is_empty() => Some(value),
                _ => {
                    self.problem(key, format!("environment variable {name} is not set"));
                    None
                }
            },
            None => Some(text.to_owned()),
        }
    }
}

fn validate(raw: RawConfig, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, Problems> {
    let mut c = Checker { problems: Vec::new(), lookup };
    let listen = raw
        .server
        .listen
        .parse::<SocketAddr>()
        .map_err(|_| {
            c.problem("server.listen", format!("{:?} is not an address like 127.0.0.1:8080", raw.server.listen))
        })
        .ok();
    let max_body_bytes = parse_size(&raw.server.max_body).map_err(|e| c.problem("server.max_body", e)).ok();
    let storage = parse_storage(&raw.storage.url).map_err(|e| c.problem("storage.url", e)).ok();
    if !(2..=1_000).contains(&raw.storage.pool) {
        c.problem("storage.pool", "must be between 2 and 1000");
    }
    let storage = storage.map(|storage| match storage {
        Storage::Postgres { url, .. } => Storage::Postgres { url, pool: raw.storage.pool.clamp(2, 1_000) as usize },
        sqlite => sqlite,
    });
    let admin_token = raw.admin.token.as_deref().and_then(|t| c.secret("admin.token", t));

    let mut destinations = Vec::new();
    let mut names = HashSet::new();
    for (i, d) in raw.destinations.iter().enumerate() {
        let key = |field: &str| format!("destinations[{i}].{field}");
        let name = c.required(&key("name"), &d.name);
        if let Some(name) = name
            && !names.insert(name.to_owned())
        {
            c.problem(&key("name"), format!("{name:?} is defined twice"));
        }
        let url = c.required(&key("url"), &d.url).and_then(|u| match reqwest::Url::parse(u) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => Some(url),
            Ok(_) => {
                c.problem(&key("url"), "must be an http:// or https:// URL");
                None
            }
            Err(e) => {
                c.problem(&key("url"), format!("{u:?}: {e}"));
                None
            }
        });
        let timeout = c.duration(&key("timeout"), &d.timeout);
        if !(1..=10_000).contains(&d.concurrency) {
            c.problem(&key("concurrency"), "must be between 1 and 10000");
        }
        let signing_key = d.signing_secret.as_deref().and_then(|s| c.secret(&key("signing_secret"), s)).and_then(|s| {
            hookgate_verify::standard_webhooks::secret_key(&s)
                .map_err(|_| c.problem(&key("signing_secret"), "must be whsec_ followed by base64"))
                .ok()
        });
        let initial = c.duration(&key("retry.initial"), &d.retry.initial);
        let max = c.duration(&key("retry.max"), &d.retry.max);
        if !(1..=1_000).contains(&d.retry.max_attempts) {
            c.problem(&key("retry.max_attempts"), "must be between 1 and 1000");
        }
        if let (Some(name), Some(url), Some(timeout), Some(initial), Some(max)) = (name, url, timeout, initial, max) {
            destinations.push(Destination {
                name: name.to_owned(),
                url,
                timeout,
                concurrency: d.concurrency.clamp(1, 10_000) as usize,
                signing_key,
                retry: RetryPolicy {
                    max_attempts: d.retry.max_attempts.clamp(1, 1_000) as u32,
                    initial_ms: initial.as_millis() as u64,
                    max_ms: max.as_millis().max(initial.as_millis()) as u64,
                },
            });
        }
    }

    let mut sources = Vec::new();
    let mut source_names = HashSet::new();
    for (i, s) in raw.sources.iter().enumerate() {
        let key = |field: &str| format!("sources[{i}].{field}");
        let name = c.required(&key("name"), &s.name);
        if let Some(name) = name {
            if !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
                c.problem(&key("name"), "use letters, digits, '-' and '_' only (it is part of the URL /in/{name})");
            }
            if !source_names.insert(name.to_owned()) {
                c.problem(&key("name"), format!("{name:?} is defined twice"));
            }
        }
        let destination = c.required(&key("destination"), &s.destination);
        if let Some(dest) = destination
            && !names.contains(dest)
        {
            c.problem(&key("destination"), format!("no destination is named {dest:?}"));
        }
        let preset = match s.preset.as_deref() {
            Some(p) => {
                let found = preset(p);
                if found.is_none() {
                    c.problem(&key("preset"), format!("unknown preset {p:?} (expected one of {PRESETS})"));
                }
                found
            }
            None => None,
        };
        let verify = s.verify.as_ref();
        let scheme_name =
            verify.and_then(|v| v.scheme.as_deref()).or(preset.as_ref().map(|p| p.scheme)).unwrap_or("none");
        let scheme = build_scheme(&mut c, &key("verify"), scheme_name, verify);
        let secrets: Vec<String> = match verify.and_then(|v| v.secret.clone()) {
            Some(OneOrMany::One(one)) => c.secret(&key("verify.secret"), &one).into_iter().collect(),
            Some(OneOrMany::Many(many)) => many
                .iter()
                .enumerate()
                .filter_map(|(n, one)| c.secret(&key(&format!("verify.secret[{n}]")), one))
                .collect(),
            None => Vec::new(),
        };
        if let Some(scheme) = &scheme
            && scheme.needs_secret()
            && secrets.is_empty()
            && verify.and_then(|v| v.secret.as_ref()).is_none()
        {
            c.problem(&key("verify.secret"), "missing: this scheme needs a secret");
        }
        let tolerance = verify
            .and_then(|v| v.tolerance.as_deref())
            .map_or(Some(Duration::from_secs(300)), |t| c.duration(&key("verify.tolerance"), t));
        let pick =
            |own: &Option<String>, from_preset: Option<&'static str>| own.clone().or(from_preset.map(String::from));
        let dedupe_key =
            c.template(&key("dedupe_key"), pick(&s.dedupe_key, preset.as_ref().and_then(|p| p.dedupe_key)).as_deref());
        let order_key =
            c.template(&key("order_key"), pick(&s.order_key, preset.as_ref().and_then(|p| p.order_key)).as_deref());
        let coalesce_key = c.template(
            &key("coalesce_key"),
            pick(&s.coalesce_key, preset.as_ref().and_then(|p| p.coalesce_key)).as_deref(),
        );
        let window = c.duration(&key("dedupe_window"), s.dedupe_window.as_deref().unwrap_or("7d"));
        let challenge = s.challenge.as_ref().map(|raw| Challenge {
            param: raw.param.clone(),
            token: match (&raw.token_param, &raw.token) {
                (Some(param), Some(token)) => {
                    c.secret(&key("challenge.token"), token).map(|token| (param.clone(), token))
                }
                (None, None) => None,
                _ => {
                    c.problem(&key("challenge"), "token_param and token go together");
                    None
                }
            },
        });
        if let (Some(name), Some(destination), Some(scheme), Some(tolerance), Some(window)) =
            (name, destination, scheme, tolerance, window)
        {
            sources.push(Source {
                name: name.to_owned(),
                destination: destination.to_owned(),
                scheme,
                secrets,
                tolerance_secs: tolerance.as_secs() as i64,
                dedupe_key,
                dedupe_window_ms: window.as_millis().min(i64::MAX as u128) as i64,
                dedupe_ignore: s.dedupe_ignore.clone(),
                order_key,
                coalesce_key,
                challenge,
            });
        }
    }

    match (c.problems.is_empty(), listen, max_body_bytes, storage) {
        (true, Some(listen), Some(max_body_bytes), Some(storage)) => {
            Ok(Config { listen, max_body_bytes, storage, admin_token, destinations, sources })
        }
        _ => Err(Problems(c.problems)),
    }
}

/// The verifier a source's `verify` table describes, or a problem under `key`.
fn build_scheme(c: &mut Checker<'_>, key: &str, name: &str, verify: Option<&RawVerify>) -> Option<Scheme> {
    let field = |f: fn(&RawVerify) -> &Option<String>| verify.and_then(|v| f(v).clone());
    let need = |c: &mut Checker<'_>, f: fn(&RawVerify) -> &Option<String>, field_name: &str| {
        let value = verify.and_then(|v| f(v).clone());
        if value.is_none() {
            c.problem(&format!("{key}.{field_name}"), format!("missing: the {name} scheme needs it"));
        }
        value
    };
    let scheme = match name {
        "none" => Scheme::None,
        "stripe" => Scheme::Stripe,
        "github" => Scheme::Github,
        "shopify" => Scheme::Shopify,
        "standard-webhooks" | "svix" => Scheme::StandardWebhooks,
        "acuity" => Scheme::Acuity,
        "slack" => Scheme::Slack,
        "twilio" => {
            let url = need(c, |v| &v.public_url, "public_url")?;
            if reqwest::Url::parse(&url).is_err() {
                c.problem(&format!("{key}.public_url"), format!("{url:?} is not a URL"));
                return None;
            }
            Scheme::Twilio { public_url: url }
        }
        "hmac-sha256" | "hmac-sha512" => {
            let header = need(c, |v| &v.header, "header")?.to_ascii_lowercase();
            let encoding = match field(|v| &v.encoding).as_deref() {
                None | Some("hex") => Encoding::Hex,
                Some("base64") => Encoding::Base64,
                Some(other) => {
                    c.problem(&format!("{key}.encoding"), format!("{other:?}: expected \"hex\" or \"base64\""));
                    return None;
                }
            };
            let timestamp_header = field(|v| &v.timestamp_header).map(|h| h.to_ascii_lowercase());
            let signed_content = field(|v| &v.signed_content);
            if let Some(template) = &signed_content {
                let mut rest = template.clone();
                for placeholder in hookgate_verify::PLACEHOLDERS {
                    rest = rest.replace(placeholder, "");
                }
                if rest.contains('{') {
                    c.problem(&format!("{key}.signed_content"), "only {timestamp} and {body} may be used");
                    return None;
                }
                if template.contains("{timestamp}") != timestamp_header.is_some() {
                    c.problem(&format!("{key}.signed_content"), "{timestamp} and timestamp_header go together");
                    return None;
                }
            }
            Scheme::Hmac(GenericHmac {
                algorithm: if name == "hmac-sha512" { HashAlgorithm::Sha512 } else { HashAlgorithm::Sha256 },
                header,
                encoding,
                prefix: field(|v| &v.prefix).unwrap_or_default(),
                timestamp_header,
                signed_content,
            })
        }
        "basic" => Scheme::Basic { username: need(c, |v| &v.username, "username")? },
        "token" => match (field(|v| &v.header), field(|v| &v.query)) {
            (Some(header), None) => Scheme::Token(TokenAt::Header(header.to_ascii_lowercase())),
            (None, Some(query)) => Scheme::Token(TokenAt::Query(query)),
            _ => {
                c.problem(key, "the token scheme needs exactly one of header or query");
                return None;
            }
        },
        other => {
            let expected = Scheme::NAMES.join(", ");
            c.problem(&format!("{key}.scheme"), format!("unknown scheme {other:?} (expected one of {expected})"));
            return None;
        }
    };
    Some(scheme)
}

fn parse_storage(url: &str) -> Result<Storage, String> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            return Err("sqlite:// needs a file path, e.g. sqlite://hookgate.db".into());
        }
        return Ok(Storage::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Storage::Postgres { url: url.to_owned(), pool: 0 });
    }
    Err(format!("{url:?}: expected sqlite://PATH or postgres://…"))
}

/// `500ms`, `30s`, `5m`, `1h`, `7d`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration like 500ms, 30s, 5m, 1h or 7d"))?;
    let ms = match unit.trim() {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(format!("{text:?} is not a duration like 500ms, 30s, 5m, 1h or 7d"));
        }
    };
    n.checked_mul(ms).map(Duration::from_millis).ok_or_else(|| format!("{text:?} is too long"))
}

/// `1048576`, `512KiB`, `1MiB`, `1MB`, `64kB`.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let bad = || format!("{text:?} is not a size like 1MiB, 512KiB or 1000000");
    let n: usize = number.parse().map_err(|_| bad())?;
    let factor = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "kB" | "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(factor).filter(|&b| b > 0).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        [server]
        listen = "127.0.0.1:0"
        [storage]
        url = "sqlite://x.db"
        [admin]
        token = "env:ADMIN"
        [[destinations]]
        name = "app"
        url = "http://127.0.0.1:9/hooks"
        signing_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
        [[sources]]
        name = "stripe"
        destination = "app"
        preset = "stripe"
        verify = { secret = ["env:STRIPE", "whsec_old"] }
        order_key = "{json.data.object.id}"
        [[sources]]
        name = "acuity"
        destination = "app"
        preset = "acuity"
        verify = { secret = "k" }
    "#;

    fn env(name: &str) -> Option<String> {
        match name {
            "ADMIN" => Some("admintoken".into()),
            "STRIPE" => Some("whsec_new".into()),
            _ => None,
        }
    }

    fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, Problems> {
        let vars = vars.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        Config::from_toml(text, vars, &env)
    }

    #[test]
    fn good_config_fills_presets_and_defaults() {
        let config = load(GOOD, &[]).unwrap();
        assert_eq!(config.admin_token.as_deref(), Some("admintoken"));
        assert_eq!(config.max_body_bytes, 1 << 20);
        assert_eq!(config.storage, Storage::Sqlite("x.db".into()));
        let app = &config.destinations[0];
        assert_eq!((app.timeout, app.concurrency), (Duration::from_secs(30), 64));
        assert_eq!(app.retry, RetryPolicy { max_attempts: 10, initial_ms: 1_000, max_ms: 3_600_000 });
        let stripe = &config.sources[0];
        assert_eq!(stripe.scheme, Scheme::Stripe);
        assert_eq!(stripe.secrets, vec!["whsec_new".to_string(), "whsec_old".into()]);
        assert_eq!(stripe.dedupe_key.as_ref().unwrap().as_str(), "{json.id}");
        assert_eq!(stripe.order_key.as_ref().unwrap().as_str(), "{json.data.object.id}");
        assert_eq!(stripe.dedupe_window_ms, 7 * 86_400_000);
        let acuity = &config.sources[1];
        assert!(acuity.dedupe_key.is_none());
        assert_eq!(acuity.coalesce_key.as_ref().unwrap().as_str(), "{form.action}:{form.id}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let config = load(
            GOOD,
            &[
                ("HOOKGATE_SERVER__MAX_BODY", "2MiB"),
                ("HOOKGATE_DESTINATIONS__0__CONCURRENCY", "3"),
                ("HOOKGATE_CONFIG", "ignored.toml"),
            ],
        )
        .unwrap();
        assert_eq!(config.max_body_bytes, 2 << 20);
        assert_eq!(config.destinations[0].concurrency, 3);
        let pg = load(GOOD, &[("HOOKGATE_STORAGE__URL", "postgres://u@db/hookgate"), ("HOOKGATE_STORAGE__POOL", "20")]);
        assert_eq!(pg.unwrap().storage, Storage::Postgres { url: "postgres://u@db/hookgate".into(), pool: 20 });
    }

    #[test]
    fn every_problem_names_its_key() {
        let text = GOOD
            .replace("{json.data.object.id}", "{jsn.id}")
            .replace("url = \"http://127.0.0.1:9/hooks\"", "url = \"http://127.0.0.1:9/hooks\"\ntimeout = \"3 weeks\"")
            .replace(
                "destination = \"app\"\n        preset = \"acuity\"",
                "destination = \"nope\"\n        preset = \"acuity\"",
            );
        let problems = load(&text, &[]).unwrap_err().0;
        assert_eq!(
            problems,
            vec![
                "destinations[0].timeout: \"3 weeks\" is not a duration like 500ms, 30s, 5m, 1h or 7d",
                "sources[0].order_key: unknown field \"jsn.id\"",
                "sources[1].destination: no destination is named \"nope\"",
            ]
        );
    }

    #[test]
    fn unknown_keys_and_missing_secrets_are_named() {
        let problems = load(&GOOD.replace("preset = \"stripe\"", "preset = \"stripe\"\nverfy = 1"), &[]).unwrap_err().0;
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("sources[0].verfy: unknown field `verfy`, expected one of"), "{problems:?}");
        let problems = load(&GOOD.replace("env:ADMIN", "env:NOPE"), &[]).unwrap_err().0;
        assert_eq!(problems, vec!["admin.token: environment variable NOPE is not set"]);
        let problems = load(&GOOD.replace("verify = { secret = \"k\" }", ""), &[]).unwrap_err().0;
        assert_eq!(problems, vec!["sources[1].verify.secret: missing: this scheme needs a secret"]);
    }

    #[test]
    fn scheme_options_are_checked_per_scheme() {
        let with_verify = |verify: &str| GOOD.replace(r#"verify = { secret = "k" }"#, verify);
        let problems = |verify: &str| load(&with_verify(verify), &[]).err().map(|p| p.0).unwrap_or_default();
        assert_eq!(
            problems(r#"verify = { scheme = "twilio", secret = "k" }"#),
            vec!["sources[1].verify.public_url: missing: the twilio scheme needs it"]
        );
        assert_eq!(
            problems(r#"verify = { scheme = "hmac-sha256", secret = "k" }"#),
            vec!["sources[1].verify.header: missing: the hmac-sha256 scheme needs it"]
        );
        assert_eq!(
            problems(r#"verify = { scheme = "token", secret = "k", header = "x", query = "y" }"#),
            vec!["sources[1].verify: the token scheme needs exactly one of header or query"]
        );
        assert_eq!(
            problems(
                r#"verify = { scheme = "hmac-sha256", secret = "k", header = "x", signed_content = "{id}.{body}" }"#
            ),
            vec!["sources[1].verify.signed_content: only {timestamp} and {body} may be used"]
        );
        assert!(
            problems(r#"verify = { scheme = "md5", secret = "k" }"#)[0]
                .starts_with(r#"sources[1].verify.scheme: unknown scheme "md5""#)
        );
        let ok = load(
            &with_verify(
                r#"verify = { scheme = "hmac-sha512", secret = "k", header = "X-Sig", encoding = "base64", timestamp_header = "X-Ts", signed_content = "{timestamp}.{body}" }"#,
            ),
            &[],
        );
        let Scheme::Hmac(generic) = &ok.unwrap().sources[1].scheme else { panic!("hmac") };
        assert_eq!(
            (generic.header.as_str(), generic.algorithm, generic.encoding),
            ("x-sig", HashAlgorithm::Sha512, Encoding::Base64)
        );
        assert_eq!(generic.timestamp_header.as_deref(), Some("x-ts"));
    }

    #[test]
    fn presets_fill_their_senders_defaults() {
        let with_preset = |preset: &str, extra: &str| {
            GOOD.replace(r#"preset = "acuity""#, &format!(r#"preset = "{preset}""#))
                .replace(r#"verify = { secret = "k" }"#, &format!(r#"verify = {{ secret = "k"{extra} }}"#))
        };
        for (preset, extra, scheme, dedupe) in [
            ("github", "", Scheme::Github, "{header.x-github-delivery}"),
            ("shopify", "", Scheme::Shopify, "{header.x-shopify-event-id}"),
            ("slack", "", Scheme::Slack, "{json.event_id}"),
            ("svix", "", Scheme::StandardWebhooks, "{header.svix-id}"),
            ("standard-webhooks", "", Scheme::StandardWebhooks, "{header.webhook-id}"),
            (
                "twilio",
                r#", public_url = "https://h.example/in/t""#,
                Scheme::Twilio { public_url: "https://h.example/in/t".into() },
                "{header.i-twilio-idempotency-token}",
            ),
        ] {
            let config = load(&with_preset(preset, extra), &[]).unwrap_or_else(|p| panic!("{preset}: {p}"));
            let source = &config.sources[1];
            assert_eq!(source.scheme, scheme, "{preset}");
            assert_eq!(source.dedupe_key.as_ref().map(Template::as_str), Some(dedupe), "{preset}");
        }
    }

    #[test]
    fn parses_durations_and_sizes() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("").is_err());
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64kB"), Ok(64_000));
        assert!(parse_size("0").is_err());
        assert!(parse_size("lots").is_err());
    }
}

//! From the file's shape to a typed [`Config`]: defaults applied, every value
//! checked, every problem collected under its key. A value out of range is
//! reported, never quietly corrected.
//!
//! (Long, on purpose: one function per section of the file, each reading
//! its keys top to bottom; splitting them further would scatter the rules
//! a reader checks against the README.)

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hookgate_core::{RetryPolicy, Secret, Template};
use hookgate_verify::signing::{Signer, SigningFormat};
use hookgate_verify::standard_webhooks;
use hookgate_verify::{Preset, Scheme, SchemeName, SchemeOptions, TokenAt};
use reqwest::header::{HeaderName, HeaderValue};

use super::raw::{
    RawConfig, RawDestination, RawLog, RawRoute, RawServer, RawSource, RawStorage, RawTelemetry, RawVerify,
};
use super::units::{parse_duration, parse_size};
use super::{
    Challenge, CircuitBreaker, Config, Destination, Env, Limits, Log, Problems, RateLimit, Retention, Route, Source,
    Storage, defaults,
};

/// A secret that guards something (the admin API, a sender's signature) must
/// be at least this long: a short one is guessable.
const MIN_SECRET_BYTES: usize = 16;

/// A `[retention]` value at least: a dead letter kept less than this could be
/// gone before anyone saw it (a typo such as "1ms" for "1m" made it half a second).
const MIN_RETENTION: Duration = Duration::from_secs(60);

/// `server.max_body` at most: a body is held whole in memory, and counted in a `u32` budget.
const MAX_BODY_LIMIT: usize = 1 << 30;

/// Collects problems while validating, each under its key.
struct Checker<'a> {
    problems: Vec<String>,
    env: &'a Env,
}

impl Checker<'_> {
    fn problem(&mut self, key: &str, message: impl fmt::Display) {
        self.problems.push(format!("{key}: {message}"));
    }

    fn duration(&mut self, key: &str, text: Option<&str>, default: &str) -> Option<Duration> {
        parse_duration(text.unwrap_or(default)).map_err(|e| self.problem(key, e)).ok()
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

    fn in_range(&mut self, key: &str, value: i64, range: std::ops::RangeInclusive<i64>) -> Option<i64> {
        if range.contains(&value) {
            Some(value)
        } else {
            self.problem(key, format!("must be between {} and {}", range.start(), range.end()));
            None
        }
    }

    /// A secret: see [`resolve_secret`].
    fn secret(&mut self, key: &str, text: &str) -> Option<Secret> {
        resolve_secret(text, self.env).map_err(|problem| self.problem(key, problem)).ok()
    }

    /// A secret that guards access: also at least [`MIN_SECRET_BYTES`] long.
    fn strong_secret(&mut self, key: &str, text: &str) -> Option<Secret> {
        let secret = self.secret(key, text)?;
        if secret.len() < MIN_SECRET_BYTES {
            self.problem(key, format!("must be at least {MIN_SECRET_BYTES} bytes (a short secret is guessable)"));
            return None;
        }
        Some(secret)
    }
}

/// A secret is `env:NAME` (read from the environment), `file:/path` (read
/// from a file, its trailing newline trimmed: Docker secrets, systemd
/// credentials, with `${CREDENTIALS_DIRECTORY}` expanded) or a literal; never
/// empty. The problem, when there is one, says what to fix.
pub fn resolve_secret(text: &str, env: &Env) -> Result<Secret, String> {
    if let Some(path) = text.strip_prefix("file:") {
        return secret_file(path, env);
    }
    match text.strip_prefix("env:") {
        Some(name) => match env.get(name) {
            Some(value) if !value.is_empty() => Ok(Secret::new(value)),
            Some(_) => Err(format!("environment variable {name} is empty")),
            None => Err(format!("environment variable {name} is not set")),
        },
        None if text.is_empty() => Err("must not be empty".into()),
        None => Ok(Secret::new(text)),
    }
}

fn secret_file(path: &str, env: &Env) -> Result<Secret, String> {
    // `file:${CREDENTIALS_DIRECTORY}/token`: systemd gives the directory in the environment.
    let path = match path.strip_prefix("${CREDENTIALS_DIRECTORY}") {
        Some(rest) => match env.get("CREDENTIALS_DIRECTORY") {
            Some(dir) => format!("{dir}{rest}"),
            None => return Err("CREDENTIALS_DIRECTORY is not set (systemd sets it with LoadCredential=)".into()),
        },
        None => path.to_owned(),
    };
    if path.is_empty() {
        return Err("file: needs a path, e.g. file:/run/secrets/hookgate_admin_token".into());
    }
    let bytes = std::fs::read(&path).map_err(|error| format!("cannot read the file {path}: {error}"))?;
    let text = String::from_utf8(bytes).map_err(|_| format!("the file {path} is not UTF-8 text"))?;
    // An editor or `echo` ends the file with a newline; it is not part of the secret.
    match text.trim_end_matches(['\n', '\r']) {
        "" => Err(format!("the file {path} is empty")),
        secret => Ok(Secret::new(secret)),
    }
}

pub fn validate(raw: RawConfig, env: &Env) -> Result<Config, Problems> {
    let mut c = Checker { problems: Vec::new(), env };
    let listen_text = raw.server.listen.as_deref().unwrap_or(defaults::LISTEN);
    let listen = listen_text
        .parse::<SocketAddr>()
        .map_err(|_| c.problem("server.listen", format!("{listen_text:?} is not an address like 127.0.0.1:8080")))
        .ok();
    let max_body_bytes = parse_size(raw.server.max_body.as_deref().unwrap_or(defaults::MAX_BODY))
        .map_err(|e| c.problem("server.max_body", e))
        .ok()
        .filter(|&bytes| {
            let fits = bytes <= MAX_BODY_LIMIT;
            if !fits {
                c.problem("server.max_body", "must be at most 1GiB");
            }
            fits
        });
    let limits = limits(&mut c, &raw.server, max_body_bytes);
    let storage = storage(&mut c, &raw.storage);
    let admin_token = raw.admin.token.as_deref().and_then(|t| c.strong_secret("admin.token", t));
    let keep = |c: &mut Checker<'_>, key: &str, value: &Option<String>, default: &str| {
        c.duration(key, value.as_deref(), default).filter(|d| {
            let long_enough = *d >= MIN_RETENTION;
            if !long_enough {
                c.problem(
                    key,
                    format!(
                        "{d:?} is under the minimum of 1m: events would be deleted before anyone could look at \
                         or replay them (\"1ms\" for \"1m\"?)"
                    ),
                );
            }
            long_enough
        })
    };
    let retention = (
        keep(&mut c, "retention.delivered", &raw.retention.delivered, defaults::KEEP_DELIVERED),
        keep(&mut c, "retention.dead", &raw.retention.dead, defaults::KEEP_DEAD),
        keep(&mut c, "retention.superseded", &raw.retention.superseded, defaults::KEEP_SUPERSEDED),
    );

    let mut destinations = Vec::new();
    let mut names = HashSet::new();
    for (i, d) in raw.destinations.iter().enumerate() {
        if let Some(name) = d.name.as_deref()
            && !names.insert(name.to_owned())
        {
            c.problem(&format!("destinations[{i}].name"), format!("{name:?} is defined twice"));
        }
        destinations.extend(destination(&mut c, i, d));
    }
    let mut sources = Vec::new();
    let mut source_names = HashSet::new();
    for (i, s) in raw.sources.iter().enumerate() {
        if let Some(name) = s.name.as_deref()
            && !source_names.insert(name.to_owned())
        {
            c.problem(&format!("sources[{i}].name"), format!("{name:?} is defined twice"));
        }
        sources.extend(source(&mut c, i, s, &names));
    }
    routes(&mut c, &raw, &mut sources, &names);
    let keep_response = keep_response(&mut c, &raw.storage);
    let log = log(&mut c, &raw.log);
    let telemetry = telemetry(&mut c, &raw.telemetry);

    match (c.problems.is_empty(), listen, max_body_bytes, limits, storage, retention, keep_response, log, telemetry) {
        (
            true,
            Some(listen),
            Some(max_body_bytes),
            Some(limits),
            Some(storage),
            (Some(d), Some(x), Some(s)),
            Some(keep_response),
            Some(log),
            Some(telemetry),
        ) => {
            let retention = Retention { delivered: d, dead: x, superseded: s };
            Ok(Config {
                listen,
                max_body_bytes,
                limits,
                storage,
                admin_token,
                retention,
                destinations,
                sources,
                keep_response,
                log,
                telemetry,
            })
        }
        _ => Err(Problems(c.problems)),
    }
}

fn limits(c: &mut Checker<'_>, raw: &RawServer, max_body_bytes: Option<usize>) -> Option<Limits> {
    let max_connections =
        c.in_range("server.max_connections", raw.max_connections.unwrap_or(defaults::MAX_CONNECTIONS), 1..=1_000_000);
    let header_timeout = c.duration("server.header_timeout", raw.header_timeout.as_deref(), defaults::HEADER_TIMEOUT);
    let body_timeout = c.duration("server.body_timeout", raw.body_timeout.as_deref(), defaults::BODY_TIMEOUT);
    let shutdown_grace = c.duration("server.shutdown_grace", raw.shutdown_grace.as_deref(), defaults::SHUTDOWN_GRACE);
    let inflight = parse_size(raw.max_inflight_bytes.as_deref().unwrap_or(defaults::MAX_INFLIGHT_BYTES))
        .map_err(|e| c.problem("server.max_inflight_bytes", e))
        .ok();
    // Every problem of the section is reported, not only the first.
    let mut bad = false;
    if let (Some(inflight), Some(max_body)) = (inflight, max_body_bytes)
        && inflight < 2 * max_body
    {
        c.problem("server.max_inflight_bytes", "must be at least twice server.max_body (one request must fit)");
        bad = true;
    }
    for (key, timeout) in [("server.header_timeout", header_timeout), ("server.body_timeout", body_timeout)] {
        if timeout.is_some_and(|t| t.is_zero()) {
            c.problem(key, "must be more than zero");
            bad = true;
        }
    }
    if bad {
        return None;
    }
    Some(Limits {
        max_connections: max_connections? as usize,
        header_timeout: header_timeout?,
        body_timeout: body_timeout?,
        max_inflight_bytes: inflight?,
        shutdown_grace: shutdown_grace?,
    })
}

fn keep_response(c: &mut Checker<'_>, raw: &RawStorage) -> Option<usize> {
    let text = raw.keep_response.as_deref().unwrap_or(defaults::KEEP_RESPONSE).trim();
    // "0" keeps nothing (a size of nothing has no unit to give).
    let bytes =
        if text == "0" { 0 } else { parse_size(text).map_err(|e| c.problem("storage.keep_response", e)).ok()? };
    if bytes > defaults::KEEP_RESPONSE_MAX {
        c.problem(
            "storage.keep_response",
            format!("must be at most 64KiB (the most of an answer the delivery client reads); {bytes} bytes given"),
        );
        return None;
    }
    Some(bytes)
}

fn log(c: &mut Checker<'_>, raw: &RawLog) -> Option<Log> {
    let json = match raw.format.as_deref().map(str::trim) {
        None | Some("text") => Some(false),
        Some("json") => Some(true),
        Some(other) => {
            c.problem("log.format", format!("{other:?} is not a log format: \"text\" or \"json\""));
            None
        }
    };
    let level = raw.level.as_deref().unwrap_or(defaults::LOG_LEVEL).trim().to_owned();
    // A bare word must be a level: the filter syntax would take "loud" for a crate's name.
    let bare = !level.contains(['=', ',']);
    let levels = ["error", "warn", "info", "debug", "trace", "off"];
    let valid = if bare {
        levels.contains(&level.to_ascii_lowercase().as_str())
    } else {
        tracing_subscriber::EnvFilter::try_new(&level).is_ok()
    };
    let level = match valid {
        true => Some(level),
        false => {
            c.problem(
                "log.level",
                format!("{level:?} is not a level (error, warn, info, debug, trace) or a filter like \"hookgate=debug,info\""),
            );
            None
        }
    };
    Some(Log { json: json?, level: level? })
}

/// `[telemetry]`, with the standard `OTEL_*` variables where the file (and
/// its `HOOKGATE_TELEMETRY__*` overrides) says nothing. `Some(None)`: off.
fn telemetry(c: &mut Checker<'_>, raw: &RawTelemetry) -> Option<Option<crate::telemetry::Settings>> {
    let env = c.env;
    let endpoint = match raw.otlp_endpoint.as_deref().map(str::trim) {
        Some("") => None,
        Some(base) => Some(("telemetry.otlp_endpoint", traces_url(base))),
        None => match env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").map(str::trim).filter(|v| !v.is_empty()) {
            // The signal's own variable is the whole URL, as the OpenTelemetry spec says.
            Some(full) => Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", full.to_owned())),
            None => env
                .get("OTEL_EXPORTER_OTLP_ENDPOINT")
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(|base| ("OTEL_EXPORTER_OTLP_ENDPOINT", traces_url(base))),
        },
    };
    let service_name = raw
        .service_name
        .clone()
        .or_else(|| env.get("OTEL_SERVICE_NAME").map(str::to_owned))
        .unwrap_or_else(|| defaults::SERVICE_NAME.to_owned());
    let sample_ratio = raw.sample_ratio.unwrap_or(1.0);
    let mut bad = false;
    if !(0.0..=1.0).contains(&sample_ratio) {
        c.problem("telemetry.sample_ratio", format!("{sample_ratio} is not a share between 0 and 1"));
        bad = true;
    }
    let Some((key, url)) = endpoint else {
        return (!bad).then_some(None);
    };
    // hookgate speaks OTLP over HTTP with protobuf only: spans posted to a gRPC port would all be dropped.
    for variable in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(protocol) = env.get(variable).map(str::trim).filter(|p| !p.is_empty() && *p != "http/protobuf") {
            c.problem(
                variable,
                format!(
                    "{protocol:?}: hookgate exports OTLP over HTTP with protobuf only (\"http/protobuf\", port 4318)"
                ),
            );
            bad = true;
        }
    }
    let traces_url = match reqwest::Url::parse(&url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.host().is_some() => Some(parsed),
        _ => {
            c.problem(key, format!("{url:?} is not an http(s) URL like http://127.0.0.1:4318"));
            None
        }
    };
    if bad {
        return None;
    }
    Some(Some(crate::telemetry::Settings { traces_url: traces_url?, service_name, sample_ratio }))
}

/// OTLP/HTTP's traces path under a base endpoint.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

fn storage(c: &mut Checker<'_>, raw: &RawStorage) -> Option<Storage> {
    // The URL may hold a password: like any secret, it may come from the environment.
    let url = c.secret("storage.url", raw.url.as_deref().unwrap_or(defaults::STORAGE_URL))?;
    let url = url.expose();
    let pool = c.in_range("storage.pool", raw.pool.unwrap_or(defaults::POOL), 2..=1_000);
    let min_free = match raw.min_free.as_deref().map(str::trim) {
        Some("0") => Some(0), // keep nothing back: ingest may fill the disk
        text => parse_size(text.unwrap_or(defaults::MIN_FREE)).map_err(|e| c.problem("storage.min_free", e)).ok(),
    };
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            c.problem("storage.url", "sqlite:// needs a file path, e.g. sqlite://hookgate.db");
            return None;
        }
        return Some(Storage::Sqlite { path: PathBuf::from(path), min_free: min_free? as u64 });
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if let Err(problem) = hookgate_postgres::check_url(url) {
            // The problem may quote the URL: never its password.
            c.problem("storage.url", problem.replace(url, "the URL"));
            return None;
        }
        return Some(Storage::Postgres { url: Secret::new(url), pool: pool? as usize });
    }
    c.problem("storage.url", "expected sqlite://PATH or postgres://…");
    None
}

fn destination(c: &mut Checker<'_>, i: usize, d: &RawDestination) -> Option<Destination> {
    let key = |field: &str| format!("destinations[{i}].{field}");
    let name = c.required(&key("name"), &d.name);
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
    let timeout = c.duration(&key("timeout"), d.timeout.as_deref(), defaults::TIMEOUT);
    let concurrency = c.in_range(&key("concurrency"), d.concurrency.unwrap_or(defaults::CONCURRENCY), 1..=10_000);
    let signer = signer(c, &key, d);
    let retry = retry(c, &key("retry"), d);
    let headers = extra_headers(c, &key("headers"), d);
    let rate_limit = match d.rate_limit.as_deref().map(RateLimit::parse) {
        None => Some(None),
        Some(Ok(rate)) => Some(Some(rate)),
        Some(Err(problem)) => {
            c.problem(&key("rate_limit"), problem);
            None
        }
    };
    let circuit_breaker = match &d.circuit_breaker {
        None => Some(None),
        Some(raw) => {
            let failures = c.in_range(
                &key("circuit_breaker.failures"),
                raw.failures.unwrap_or(defaults::BREAKER_FAILURES),
                1..=100_000,
            );
            let cooldown =
                c.duration(&key("circuit_breaker.cooldown"), raw.cooldown.as_deref(), defaults::BREAKER_COOLDOWN);
            match (failures, cooldown) {
                (Some(_), Some(cooldown)) if cooldown.is_zero() => {
                    c.problem(&key("circuit_breaker.cooldown"), "must be more than zero");
                    None
                }
                (Some(failures), Some(cooldown)) => Some(Some(CircuitBreaker { failures: failures as u32, cooldown })),
                _ => None,
            }
        }
    };
    Some(Destination {
        name: name?.to_owned(),
        url: url?,
        timeout: timeout?,
        concurrency: concurrency? as usize,
        signer: signer?,
        retry: retry?,
        headers: headers?,
        rate_limit: rate_limit?,
        circuit_breaker: circuit_breaker?,
    })
}

/// `signing` and `signing_secret`: the format each attempt is signed in
/// (Standard Webhooks unless `signing` says otherwise) and its key. `Some(None)`: unsigned.
fn signer(c: &mut Checker<'_>, key: &dyn Fn(&str) -> String, d: &RawDestination) -> Option<Option<Signer>> {
    let format = match d.signing.as_deref().map(str::parse::<SigningFormat>) {
        None => SigningFormat::StandardWebhooks,
        Some(Ok(format)) => format,
        Some(Err(problem)) => {
            c.problem(&key("signing"), problem);
            return None;
        }
    };
    let Some(text) = d.signing_secret.as_deref() else {
        if d.signing.is_some() {
            c.problem(&key("signing_secret"), format!("missing: signing = \"{format}\" needs the secret to sign with"));
            return None;
        }
        return Some(None);
    };
    // A key the app checks with: guessable is as bad as none.
    let secret = match format {
        SigningFormat::StandardWebhooks => c.secret(&key("signing_secret"), text)?,
        _ => c.strong_secret(&key("signing_secret"), text)?,
    };
    match Signer::new(format, &secret) {
        Ok(signer) => Some(Some(signer)),
        Err(problem) => {
            c.problem(&key("signing_secret"), problem);
            None
        }
    }
}

/// `destinations[].headers`: added to every delivery, e.g. the app's own
/// credentials. Values may be secrets. The headers hookgate sets itself, or
/// that describe the request's framing, cannot be replaced.
fn extra_headers(c: &mut Checker<'_>, key: &str, d: &RawDestination) -> Option<Vec<(HeaderName, Secret)>> {
    let mut headers = Vec::new();
    let mut ok = true;
    for (name, text) in &d.headers {
        let at = format!("{key}.{name}");
        let Ok(header) = HeaderName::from_bytes(name.as_bytes()) else {
            c.problem(&at, "not a header name");
            ok = false;
            continue;
        };
        let reserved = ["host", "content-length", "content-type", "transfer-encoding", "connection", "te", "upgrade"];
        let ours = header.as_str().starts_with("webhook-") || header.as_str().starts_with("hookgate-");
        if ours || reserved.contains(&header.as_str()) {
            c.problem(&at, "hookgate sets this header itself");
            ok = false;
            continue;
        }
        match c.secret(&at, text) {
            Some(value) if HeaderValue::from_str(value.expose()).is_ok() => headers.push((header, value)),
            Some(_) => {
                c.problem(&at, "the value is not a valid header value");
                ok = false;
            }
            None => ok = false,
        }
    }
    ok.then_some(headers)
}

fn retry(c: &mut Checker<'_>, key: &str, d: &RawDestination) -> Option<RetryPolicy> {
    let max_attempts =
        c.in_range(&format!("{key}.max_attempts"), d.retry.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS), 1..=1_000);
    let initial = c.duration(&format!("{key}.initial"), d.retry.initial.as_deref(), defaults::RETRY_INITIAL);
    let max = c.duration(&format!("{key}.max"), d.retry.max.as_deref(), defaults::RETRY_MAX);
    let (initial, max) = (initial?, max?);
    if max < initial {
        c.problem(&format!("{key}.max"), format!("must be at least retry.initial ({initial:?})"));
        return None;
    }
    Some(RetryPolicy {
        max_attempts: max_attempts? as u32,
        initial_ms: initial.as_millis() as u64,
        max_ms: max.as_millis() as u64,
    })
}

fn source(c: &mut Checker<'_>, i: usize, s: &RawSource, destinations: &HashSet<String>) -> Option<Source> {
    let key = |field: &str| format!("sources[{i}].{field}");
    let name = c.required(&key("name"), &s.name);
    if let Some(name) = name
        && !name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        c.problem(&key("name"), "use letters, digits, '-' and '_' only (it is part of the URL /in/{name})");
    }
    // `destination`: shorthand for one route with no filter.
    let shorthand = match s.destination.as_deref() {
        Some(dest) if !destinations.contains(dest) => {
            c.problem(&key("destination"), format!("no destination is named {dest:?}"));
            None
        }
        Some(dest) => Some(Some(dest)),
        None => Some(None),
    };
    // `Some(None)`: no preset; `None`: a preset that is not known (its problem is reported).
    let preset: Option<Option<Preset>> = match s.preset.as_deref().map(str::parse) {
        Some(Ok(preset)) => Some(Some(preset)),
        Some(Err(e)) => {
            c.problem(&key("preset"), e);
            None
        }
        None => Some(None),
    };
    let default_verify = RawVerify::default();
    let verify = s.verify.as_ref().unwrap_or(&default_verify);
    let scheme_name = match verify.scheme.as_deref().map(str::parse::<SchemeName>) {
        Some(Ok(name)) => Some(name),
        Some(Err(e)) => {
            c.problem(&key("verify.scheme"), e);
            None
        }
        // An unknown preset names no scheme: its options are not judged against `none`.
        None => preset.map(|p| p.map_or(SchemeName::None, Preset::scheme)),
    };
    let preset = preset.flatten();
    if let (Some(preset), Some(name)) = (preset, scheme_name)
        && verify.scheme.is_some()
        && name != preset.scheme()
    {
        // The preset's keys trust what its own scheme verifies (svix dedupes on the svix-id it checked).
        c.problem(
            &key("verify.scheme"),
            format!("the {preset} preset verifies with {}; drop the preset, or the scheme", preset.scheme()),
        );
    }
    let scheme = scheme_name.and_then(|name| scheme(c, &key("verify"), name, verify));
    let secrets: Vec<Secret> = match &verify.secret {
        Some(secret) => {
            let items = secret.items();
            let many = items.len() > 1 || matches!(secret, super::raw::OneOrMany::Many(_));
            items
                .iter()
                .enumerate()
                .filter_map(|(n, one)| {
                    let at = if many { key(&format!("verify.secret[{n}]")) } else { key("verify.secret") };
                    let secret = c.strong_secret(&at, one)?;
                    let takes_keys = scheme_name.is_some_and(SchemeName::takes_webhook_keys);
                    if takes_keys && let Err(problem) = standard_webhooks::check_secret(secret.expose()) {
                        c.problem(&at, problem);
                        return None;
                    }
                    Some(secret)
                })
                .collect()
        }
        None => Vec::new(),
    };
    if let Some(scheme) = &scheme
        && scheme.needs_secret()
        && verify.secret.is_none()
    {
        c.problem(&key("verify.secret"), "missing: this scheme needs a secret");
    }
    let tolerance = c.duration(&key("verify.tolerance"), verify.tolerance.as_deref(), defaults::TOLERANCE);
    let from_preset = |f: fn(Preset) -> Option<&'static str>| preset.and_then(f);
    let dedupe_key = c.template(&key("dedupe_key"), s.dedupe_key.as_deref().or(from_preset(Preset::dedupe_key)));
    let order_key = c.template(&key("order_key"), s.order_key.as_deref().or(from_preset(Preset::order_key)));
    let coalesce_key =
        c.template(&key("coalesce_key"), s.coalesce_key.as_deref().or(from_preset(Preset::coalesce_key)));
    let event_type = c.template(&key("event_type"), s.event_type.as_deref().or(from_preset(Preset::event_type)));
    if let Some(scheme) = &scheme {
        for (field, template) in [
            ("dedupe_key", &dedupe_key),
            ("order_key", &order_key),
            ("coalesce_key", &coalesce_key),
            ("event_type", &event_type),
        ] {
            if let Some(credential) = template.as_ref().and_then(|t| reads_credential(t, scheme)) {
                c.problem(
                    &key(field),
                    format!("reads {credential}, a credential: keys are stored, shown and forwarded"),
                );
            }
        }
    }
    let window = c.duration(&key("dedupe_window"), s.dedupe_window.as_deref(), defaults::DEDUPE_WINDOW);
    let challenge = match &s.challenge {
        None => Some(None),
        Some(raw) => match (&raw.token_param, &raw.token) {
            (Some(param), Some(token)) => c
                .strong_secret(&key("challenge.token"), token)
                .map(|token| Some(Challenge { param: raw.param.clone(), token: Some((param.clone(), token)) })),
            (None, None) => Some(Some(Challenge { param: raw.param.clone(), token: None })),
            _ => {
                c.problem(&key("challenge"), "token_param and token go together");
                None
            }
        },
    };
    let name = name?;
    let routes = shorthand?
        .map(|destination| Route {
            name: Route::default_name(name, destination),
            destination: destination.to_owned(),
            events: Vec::new(),
            filter: None,
            order_key: None,
            coalesce_key: None,
            enabled: true,
        })
        .into_iter()
        .collect();
    Some(Source {
        name: name.to_owned(),
        event_type,
        routes,
        scheme: scheme?,
        secrets,
        tolerance_secs: tolerance?.as_secs() as i64,
        dedupe_key,
        dedupe_window_ms: window?.as_millis().min(i64::MAX as u128) as i64,
        dedupe_ignore: s.dedupe_ignore.clone(),
        order_key,
        coalesce_key,
        challenge: challenge?,
    })
}

/// `[[routes]]`, each attached to its source (after the source's own
/// `destination` route, if it has one). A source reaches a destination by
/// one route at most: two would deliver each event there twice. A source no
/// route takes is a problem: its events would be stored and go nowhere.
fn routes(c: &mut Checker<'_>, raw: &RawConfig, sources: &mut [Source], destinations: &HashSet<String>) {
    let typed: std::collections::HashMap<&str, bool> = raw
        .sources
        .iter()
        .filter_map(|s| {
            let preset_types = s.preset.as_deref().and_then(|p| p.parse::<Preset>().ok()).and_then(Preset::event_type);
            Some((s.name.as_deref()?, s.event_type.is_some() || preset_types.is_some()))
        })
        .collect();
    // Route name → where it was defined; (source, destination) → the route that joins them.
    let mut named: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    let mut joined: std::collections::HashMap<(String, String), String> = std::collections::HashMap::new();
    for (i, s) in raw.sources.iter().enumerate() {
        if let (Some(source), Some(destination)) = (s.name.as_deref(), s.destination.as_deref()) {
            let name = Route::default_name(source, destination);
            named.insert(name.clone(), format!("sources[{i}].destination"));
            joined.insert((source.to_owned(), destination.to_owned()), name);
        }
    }
    for (i, r) in raw.routes.iter().enumerate() {
        let Some(route) = route(c, i, r, &typed, destinations) else { continue };
        let source = r.source.as_deref().unwrap_or_default();
        if let Some(before) = named.insert(route.name.clone(), format!("routes[{i}]")) {
            c.problem(&format!("routes[{i}].name"), format!("{:?} is defined twice (also {before})", route.name));
            continue;
        }
        if let Some(by) = joined.insert((source.to_owned(), route.destination.clone()), route.name.clone()) {
            c.problem(
                &format!("routes[{i}].destination"),
                format!(
                    "{source} already reaches {} by route {by:?}: each event would be delivered there twice",
                    route.destination
                ),
            );
            continue;
        }
        if let Some(source) = sources.iter_mut().find(|s| s.name == source) {
            source.routes.push(route);
        }
    }
    for (i, s) in raw.sources.iter().enumerate() {
        let Some(name) = s.name.as_deref() else { continue };
        let routed = s.destination.is_some() || raw.routes.iter().any(|r| r.source.as_deref() == Some(name));
        if !routed {
            c.problem(
                &format!("sources[{i}]"),
                format!(
                    "no route takes {name}'s events (they would be stored and go nowhere): set destination = \"…\", \
                     or add a [[routes]] with source = \"{name}\""
                ),
            );
        }
    }
}

/// One `[[routes]]` entry, its problems under `routes[i]`.
fn route(
    c: &mut Checker<'_>,
    i: usize,
    r: &RawRoute,
    typed: &std::collections::HashMap<&str, bool>,
    destinations: &HashSet<String>,
) -> Option<Route> {
    let key = |field: &str| format!("routes[{i}].{field}");
    let source = c.required(&key("source"), &r.source);
    let has_type = match source {
        Some(source) => match typed.get(source) {
            Some(has_type) => Some(*has_type),
            None => {
                c.problem(&key("source"), format!("no source is named {source:?}"));
                None
            }
        },
        None => None,
    };
    let destination = c.required(&key("destination"), &r.destination);
    if let Some(destination) = destination
        && !destinations.contains(destination)
    {
        c.problem(&key("destination"), format!("no destination is named {destination:?}"));
    }
    if let Some(name) = r.name.as_deref()
        && name.trim().is_empty()
    {
        c.problem(&key("name"), "must not be empty (leave it out for the default, source->destination)");
    }
    let mut events = Vec::new();
    if let Some(globs) = &r.events {
        if globs.is_empty() {
            c.problem(&key("events"), "an empty list matches nothing: leave events out to take every event");
        }
        for (n, glob) in globs.iter().enumerate() {
            if glob.is_empty() {
                c.problem(&key(&format!("events[{n}]")), "must not be empty");
            }
            events.push(hookgate_core::filter::Glob::new(glob));
        }
        if has_type == Some(false) {
            c.problem(
                &key("events"),
                format!(
                    "the source {:?} has no event_type to match (set sources[].event_type, e.g. \"{{json.type}}\", \
                     or use a preset that sets one)",
                    source.unwrap_or_default()
                ),
            );
        }
    }
    let filter = match &r.filter {
        None => Some(None),
        Some(table) => {
            let json = serde_json::to_value(table).unwrap_or(serde_json::Value::Null);
            match hookgate_core::filter::Filter::parse(&json) {
                Ok(filter) => Some(Some(filter)),
                Err(error) => {
                    let at = if error.path.is_empty() { key("filter") } else { key(&format!("filter.{}", error.path)) };
                    c.problem(&at, &error.message);
                    None
                }
            }
        }
    };
    let order_key = c.template(&key("order_key"), r.order_key.as_deref());
    let coalesce_key = c.template(&key("coalesce_key"), r.coalesce_key.as_deref());
    let (source, destination) = (source?, destination?);
    Some(Route {
        name: r.name.clone().unwrap_or_else(|| Route::default_name(source, destination)),
        destination: destination.to_owned(),
        events,
        filter: filter?,
        order_key,
        coalesce_key,
        enabled: r.enabled.unwrap_or(true),
    })
}

/// The credential a key template would copy into the key, if it reads one:
/// the headers ingest removes, and the token a `token` source checks.
fn reads_credential(template: &Template, scheme: &Scheme) -> Option<String> {
    use hookgate_core::headers::CREDENTIALS;
    let token_header = match scheme {
        Scheme::Token(TokenAt::Header(name)) => Some(name.as_str()),
        _ => None,
    };
    let token_query = match scheme {
        Scheme::Token(TokenAt::Query(name)) => Some(name.as_str()),
        _ => None,
    };
    template
        .headers()
        .find(|h| CREDENTIALS.contains(h) || Some(*h) == token_header)
        .map(|h| format!("{{header.{h}}}"))
        .or_else(|| template.query_params().find(|q| Some(*q) == token_query).map(|q| format!("{{query.{q}}}")))
}

/// The verifier a source's `verify` table describes; its problems under `key`.
fn scheme(c: &mut Checker<'_>, key: &str, name: SchemeName, verify: &RawVerify) -> Option<Scheme> {
    let options = SchemeOptions {
        header: verify.header.clone(),
        encoding: verify.encoding.clone(),
        prefix: verify.prefix.clone(),
        timestamp_header: verify.timestamp_header.clone(),
        signed_content: verify.signed_content.clone(),
        username: verify.username.clone(),
        query: verify.query.clone(),
        public_url: verify.public_url.clone(),
    };
    if name == SchemeName::None && verify.secret.is_some() {
        c.problem(&format!("{key}.secret"), "the none scheme does not use it");
    }
    name.build(&options)
        .map_err(|problems| {
            for (field, problem) in problems {
                let at = field.map_or_else(|| key.to_owned(), |field| format!("{key}.{field}"));
                c.problem(&at, problem);
            }
        })
        .ok()
}

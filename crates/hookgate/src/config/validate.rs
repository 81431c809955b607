//! From the file's shape to a typed [`Config`]: defaults applied, every value
//! checked, every problem collected under its key. A value out of range is
//! reported, never quietly corrected.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use hookgate_core::{RetryPolicy, Secret, Template};
use hookgate_verify::standard_webhooks::SigningKey;
use hookgate_verify::{Encoding, GenericHmac, HashAlgorithm, PLACEHOLDERS, Preset, Scheme, SchemeName, TokenAt};

use super::raw::{RawConfig, RawDestination, RawSource, RawStorage, RawVerify};
use super::units::{parse_duration, parse_size};
use super::{Challenge, Config, Destination, Env, Problems, Source, Storage, defaults};

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

    /// A secret is `env:NAME` (read from the environment) or a literal.
    fn secret(&mut self, key: &str, text: &str) -> Option<Secret> {
        match text.strip_prefix("env:") {
            Some(name) => match self.env.get(name) {
                Some(value) if !value.is_empty() => Some(Secret::new(value)),
                _ => {
                    self.problem(key, format!("environment variable {name} is not set"));
                    None
                }
            },
            None => Some(Secret::new(text)),
        }
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
        .ok();
    let storage = storage(&mut c, &raw.storage);
    let admin_token = raw.admin.token.as_deref().and_then(|t| c.secret("admin.token", t));

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

    match (c.problems.is_empty(), listen, max_body_bytes, storage) {
        (true, Some(listen), Some(max_body_bytes), Some(storage)) => {
            Ok(Config { listen, max_body_bytes, storage, admin_token, destinations, sources })
        }
        _ => Err(Problems(c.problems)),
    }
}

fn storage(c: &mut Checker<'_>, raw: &RawStorage) -> Option<Storage> {
    let url = raw.url.as_deref().unwrap_or(defaults::STORAGE_URL);
    let pool = c.in_range("storage.pool", raw.pool.unwrap_or(defaults::POOL), 2..=1_000);
    if let Some(path) = url.strip_prefix("sqlite://") {
        if path.is_empty() {
            c.problem("storage.url", "sqlite:// needs a file path, e.g. sqlite://hookgate.db");
            return None;
        }
        return Some(Storage::Sqlite(PathBuf::from(path)));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
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
    let signing_key = match d.signing_secret.as_deref() {
        Some(text) => match c.secret(&key("signing_secret"), text).map(|s| SigningKey::from_secret(&s)) {
            Some(Ok(key)) => Some(Some(key)),
            Some(Err(_)) => {
                c.problem(&key("signing_secret"), "must be whsec_ followed by base64");
                None
            }
            None => None,
        },
        None => Some(None),
    };
    let retry = retry(c, &key("retry"), d);
    Some(Destination {
        name: name?.to_owned(),
        url: url?,
        timeout: timeout?,
        concurrency: concurrency? as usize,
        signing_key: signing_key?,
        retry: retry?,
    })
}

fn retry(c: &mut Checker<'_>, key: &str, d: &RawDestination) -> Option<RetryPolicy> {
    let max_attempts =
        c.in_range(&format!("{key}.max_attempts"), d.retry.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS), 1..=1_000);
    let initial = c.duration(&format!("{key}.initial"), d.retry.initial.as_deref(), defaults::RETRY_INITIAL)?;
    let max = c.duration(&format!("{key}.max"), d.retry.max.as_deref(), defaults::RETRY_MAX)?;
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
    let destination = c.required(&key("destination"), &s.destination);
    if let Some(dest) = destination
        && !destinations.contains(dest)
    {
        c.problem(&key("destination"), format!("no destination is named {dest:?}"));
    }
    let preset: Option<Preset> = match s.preset.as_deref().map(str::parse) {
        Some(Ok(preset)) => Some(preset),
        Some(Err(e)) => {
            c.problem(&key("preset"), e);
            None
        }
        None => None,
    };
    let default_verify = RawVerify::default();
    let verify = s.verify.as_ref().unwrap_or(&default_verify);
    let scheme_name = match verify.scheme.as_deref().map(str::parse::<SchemeName>) {
        Some(Ok(name)) => Some(name),
        Some(Err(e)) => {
            c.problem(&key("verify.scheme"), e);
            None
        }
        None => Some(preset.map_or(SchemeName::None, Preset::scheme)),
    };
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
                    c.secret(&at, one)
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
    let window = c.duration(&key("dedupe_window"), s.dedupe_window.as_deref(), defaults::DEDUPE_WINDOW);
    let challenge = match &s.challenge {
        None => Some(None),
        Some(raw) => match (&raw.token_param, &raw.token) {
            (Some(param), Some(token)) => c
                .secret(&key("challenge.token"), token)
                .map(|token| Some(Challenge { param: raw.param.clone(), token: Some((param.clone(), token)) })),
            (None, None) => Some(Some(Challenge { param: raw.param.clone(), token: None })),
            _ => {
                c.problem(&key("challenge"), "token_param and token go together");
                None
            }
        },
    };
    Some(Source {
        name: name?.to_owned(),
        destination: destination?.to_owned(),
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

/// The verifier a source's `verify` table describes, or a problem under `key`.
fn scheme(c: &mut Checker<'_>, key: &str, name: SchemeName, verify: &RawVerify) -> Option<Scheme> {
    let at = |field: &str| format!("{key}.{field}");
    unused_options(c, key, name, verify);
    let need = |c: &mut Checker<'_>, value: &Option<String>, field: &str| {
        if value.is_none() {
            c.problem(&at(field), format!("missing: the {name} scheme needs it"));
        }
        value.clone()
    };
    if let Some(scheme) = name.without_options() {
        return Some(scheme);
    }
    let scheme = match name {
        SchemeName::Twilio => {
            let url = need(c, &verify.public_url, "public_url")?;
            if reqwest::Url::parse(&url).is_err() {
                c.problem(&at("public_url"), format!("{url:?} is not a URL"));
                return None;
            }
            Scheme::Twilio { public_url: url }
        }
        SchemeName::HmacSha256 | SchemeName::HmacSha512 => Scheme::Hmac(generic_hmac(c, key, name, verify)?),
        SchemeName::Basic => Scheme::Basic { username: need(c, &verify.username, "username")? },
        SchemeName::Token => match (&verify.header, &verify.query) {
            (Some(header), None) => Scheme::Token(TokenAt::Header(header.to_ascii_lowercase())),
            (None, Some(query)) => Scheme::Token(TokenAt::Query(query.clone())),
            _ => {
                c.problem(key, "the token scheme needs exactly one of header or query");
                return None;
            }
        },
        _ => unreachable!("schemes without options returned above"),
    };
    Some(scheme)
}

/// An option the chosen scheme does not read is a mistake to report (a
/// misplaced `header`, a `username` for a token scheme), not to ignore.
fn unused_options(c: &mut Checker<'_>, key: &str, name: SchemeName, verify: &RawVerify) {
    let given = [
        ("header", verify.header.is_some()),
        ("encoding", verify.encoding.is_some()),
        ("prefix", verify.prefix.is_some()),
        ("timestamp_header", verify.timestamp_header.is_some()),
        ("signed_content", verify.signed_content.is_some()),
        ("username", verify.username.is_some()),
        ("query", verify.query.is_some()),
        ("public_url", verify.public_url.is_some()),
        ("secret", verify.secret.is_some() && name == SchemeName::None),
    ];
    let used: &[&str] = match name {
        SchemeName::HmacSha256 | SchemeName::HmacSha512 => {
            &["header", "encoding", "prefix", "timestamp_header", "signed_content"]
        }
        SchemeName::Basic => &["username"],
        SchemeName::Token => &["header", "query"],
        SchemeName::Twilio => &["public_url"],
        _ => &[],
    };
    for (field, set) in given {
        if set && !used.contains(&field) {
            c.problem(&format!("{key}.{field}"), format!("the {name} scheme does not use it"));
        }
    }
}

fn generic_hmac(c: &mut Checker<'_>, key: &str, name: SchemeName, verify: &RawVerify) -> Option<GenericHmac> {
    let at = |field: &str| format!("{key}.{field}");
    let Some(header) = &verify.header else {
        c.problem(&at("header"), format!("missing: the {name} scheme needs it"));
        return None;
    };
    let encoding = match verify.encoding.as_deref() {
        None | Some("hex") => Encoding::Hex,
        Some("base64") => Encoding::Base64,
        Some(other) => {
            c.problem(&at("encoding"), format!("{other:?}: expected \"hex\" or \"base64\""));
            return None;
        }
    };
    let timestamp_header = verify.timestamp_header.as_ref().map(|h| h.to_ascii_lowercase());
    if let Some(template) = &verify.signed_content {
        let rest = PLACEHOLDERS.iter().fold(template.clone(), |rest, p| rest.replace(p, ""));
        if rest.contains('{') {
            c.problem(&at("signed_content"), "only {timestamp} and {body} may be used");
            return None;
        }
        if template.contains("{timestamp}") != timestamp_header.is_some() {
            c.problem(&at("signed_content"), "{timestamp} and timestamp_header go together");
            return None;
        }
    }
    Some(GenericHmac {
        algorithm: if name == SchemeName::HmacSha512 { HashAlgorithm::Sha512 } else { HashAlgorithm::Sha256 },
        header: header.to_ascii_lowercase(),
        encoding,
        prefix: verify.prefix.clone().unwrap_or_default(),
        timestamp_header,
        signed_content: verify.signed_content.clone(),
    })
}

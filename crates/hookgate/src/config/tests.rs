use super::*;
use hookgate_verify::{Encoding, HashAlgorithm, HeaderFamily};

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
    verify = { secret = ["env:STRIPE", "whsec_old_0123456789"] }
    order_key = "{json.data.object.id}"
    [[sources]]
    name = "acuity"
    destination = "app"
    preset = "acuity"
    verify = { secret = "acuity-key-0123456789" }
"#;

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, Problems> {
    let base = [("ADMIN", "admin-token-0123456789"), ("STRIPE", "whsec_new_0123456789")];
    Config::from_toml(text, &Env::from_pairs(base.into_iter().chain(vars.iter().copied())))
}

#[test]
fn good_config_fills_presets_and_defaults() {
    let config = load(GOOD, &[]).unwrap();
    assert_eq!(config.admin_token.as_ref().map(Secret::expose), Some("admin-token-0123456789"));
    assert_eq!(config.max_body_bytes, 1 << 20);
    assert_eq!(config.storage, Storage::Sqlite { path: "x.db".into(), min_free: 64 << 20 });
    let app = &config.destinations[0];
    assert_eq!((app.timeout, app.concurrency), (Duration::from_secs(30), 64));
    assert_eq!(app.retry, RetryPolicy { max_attempts: 20, initial_ms: 10_000, max_ms: 6 * 3_600_000 });
    let (shortest, _) = app.retry.span_ms();
    assert!(shortest >= 24 * 3_600_000, "the default schedule outlasts a day of outage: {shortest} ms");
    assert!(
        STARTING_CONFIG.contains(&format!("retry for {} at the least", hookgate_core::human_duration(shortest))),
        "init says how long the defaults retry"
    );
    let stripe = &config.sources[0];
    assert_eq!(stripe.scheme, Scheme::Stripe);
    assert_eq!(stripe.secrets, vec![Secret::new("whsec_new_0123456789"), Secret::new("whsec_old_0123456789")]);
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
    assert_eq!(pg.unwrap().storage, Storage::Postgres { url: Secret::new("postgres://u@db/hookgate"), pool: 20 });
}

#[test]
fn every_problem_names_its_key() {
    let text = GOOD
        .replace("{json.data.object.id}", "{jsn.id}")
        .replace("url = \"http://127.0.0.1:9/hooks\"", "url = \"http://127.0.0.1:9/hooks\"\ntimeout = \"3 weeks\"")
        .replace("destination = \"app\"\n    preset = \"acuity\"", "destination = \"nope\"\n    preset = \"acuity\"");
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
    let problems = load(&GOOD.replace("verify = { secret = \"acuity-key-0123456789\" }", ""), &[]).unwrap_err().0;
    assert_eq!(problems, vec!["sources[1].verify.secret: missing: this scheme needs a secret"]);
}

#[test]
fn scheme_options_are_checked_per_scheme() {
    let with_verify = |verify: &str| {
        GOOD.replace(r#"verify = { secret = "acuity-key-0123456789" }"#, verify).replace("preset = \"acuity\"", "")
    };
    let problems = |verify: &str| load(&with_verify(verify), &[]).err().map(|p| p.0).unwrap_or_default();
    assert_eq!(
        problems(r#"verify = { scheme = "twilio", secret = "sender-secret-0123456789" }"#),
        vec!["sources[1].verify.public_url: missing: the twilio scheme needs it"]
    );
    assert_eq!(
        problems(r#"verify = { scheme = "hmac-sha256", secret = "sender-secret-0123456789" }"#),
        vec!["sources[1].verify.header: missing: the hmac-sha256 scheme needs it"]
    );
    assert_eq!(
        problems(r#"verify = { scheme = "token", secret = "sender-secret-0123456789", header = "x", query = "y" }"#),
        vec!["sources[1].verify: the token scheme needs exactly one of header or query"]
    );
    assert_eq!(
        problems(
            r#"verify = { scheme = "hmac-sha256", secret = "sender-secret-0123456789", header = "x", signed_content = "{id}.{body}" }"#
        ),
        vec!["sources[1].verify.signed_content: only {timestamp} and {body} may be used"]
    );
    assert!(
        problems(r#"verify = { scheme = "md5", secret = "sender-secret-0123456789" }"#)[0]
            .starts_with(r#"sources[1].verify.scheme: unknown scheme "md5""#)
    );
    let ok = load(
        &with_verify(
            r#"verify = { scheme = "hmac-sha512", secret = "sender-secret-0123456789", header = "X-Sig", encoding = "base64", timestamp_header = "X-Ts", signed_content = "{timestamp}.{body}" }"#,
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
        let secret = if matches!(preset, "svix" | "standard-webhooks") {
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw" // the Standard Webhooks schemes take whsec_ keys
        } else {
            "sender-secret-0123456789"
        };
        GOOD.replace(r#"preset = "acuity""#, &format!(r#"preset = "{preset}""#)).replace(
            r#"verify = { secret = "acuity-key-0123456789" }"#,
            &format!(r#"verify = {{ secret = "{secret}"{extra} }}"#),
        )
    };
    for (preset, extra, scheme, dedupe) in [
        ("github", "", Scheme::Github, "{header.x-github-delivery}"),
        ("shopify", "", Scheme::Shopify, "{header.x-shopify-event-id}"),
        ("slack", "", Scheme::Slack, "{json.event_id}"),
        ("svix", "", Scheme::StandardWebhooks(HeaderFamily::Svix), "{header.svix-id}"),
        ("standard-webhooks", "", Scheme::StandardWebhooks(HeaderFamily::Webhook), "{header.webhook-id}"),
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
fn out_of_range_values_are_problems_not_corrections() {
    let text = GOOD.replace(
        "signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"",
        "concurrency = 0\nretry = { max_attempts = 0, initial = \"10s\", max = \"1s\" }",
    );
    let problems = load(&text, &[("HOOKGATE_STORAGE__POOL", "1")]).unwrap_err().0;
    assert_eq!(
        problems,
        vec![
            "storage.pool: must be between 2 and 1000",
            "destinations[0].concurrency: must be between 1 and 10000",
            "destinations[0].retry.max_attempts: must be between 1 and 1000",
            "destinations[0].retry.max: must be at least retry.initial (10s)",
        ]
    );
}

#[test]
fn options_a_scheme_does_not_use_are_named() {
    let text = GOOD.replace(
        r#"verify = { secret = "acuity-key-0123456789" }"#,
        r#"verify = { secret = "sender-secret-0123456789", header = "x-sig", username = "u" }"#,
    );
    assert_eq!(
        load(&text, &[]).unwrap_err().0,
        vec![
            "sources[1].verify.header: the acuity scheme does not use it",
            "sources[1].verify.username: the acuity scheme does not use it"
        ]
    );
}

#[test]
fn secrets_never_show_in_debug_output() {
    let config = load(GOOD, &[("HOOKGATE_STORAGE__URL", "postgres://u:hunter2@db/hookgate")]).unwrap();
    let shown = format!("{config:?}");
    for secret in [
        "admin-token-0123456789",
        "whsec_new_0123456789",
        "whsec_old_0123456789",
        "hunter2",
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn empty_and_short_secrets_are_refused_by_name() {
    let with_token = |token: &str| GOOD.replace("token = \"env:ADMIN\"", &format!("token = \"{token}\""));
    assert_eq!(load(&with_token(""), &[]).unwrap_err().0, vec!["admin.token: must not be empty"]);
    assert_eq!(
        load(&with_token("short"), &[]).unwrap_err().0,
        vec!["admin.token: must be at least 16 bytes (a short secret is guessable)"]
    );
    assert_eq!(
        load(GOOD, &[("ADMIN", "")]).unwrap_err().0,
        vec!["admin.token: environment variable ADMIN is empty"],
        "an empty variable is not a token"
    );
    assert_eq!(
        load(GOOD, &[("HOOKGATE_ADMIN__TOKEN", "")]).unwrap_err().0,
        vec!["admin.token: must not be empty"],
        "nor is an empty override"
    );
    let short_verify = GOOD.replace("acuity-key-0123456789", "acuity-key");
    assert_eq!(
        load(&short_verify, &[]).unwrap_err().0,
        vec!["sources[1].verify.secret: must be at least 16 bytes (a short secret is guessable)"]
    );
}

#[test]
fn standard_webhooks_keys_are_checked_at_load() {
    let with = |secret: &str| {
        GOOD.replace("preset = \"acuity\"", "preset = \"standard-webhooks\"").replace("acuity-key-0123456789", secret)
    };
    assert!(load(&with("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), &[]).is_ok());
    let problems = load(&with("whsec_not*base64*at*all"), &[]).unwrap_err().0;
    assert!(problems[0].starts_with("sources[1].verify.secret: must be whsec_"), "{problems:?}");
    let problems = load(&with("whpk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"), &[]).unwrap_err().0;
    assert!(problems[0].starts_with("sources[1].verify.secret: a whpk_ key"), "{problems:?}");
}

#[test]
fn destination_headers_are_checked_and_may_be_secrets() {
    let with = |headers: &str| {
        GOOD.replace(
            "url = \"http://127.0.0.1:9/hooks\"",
            &format!("url = \"http://127.0.0.1:9/hooks\"\nheaders = {headers}"),
        )
    };
    let config = load(&with(r#"{ authorization = "env:ADMIN", x-tenant = "acme" }"#), &[]).unwrap();
    let headers: Vec<_> = config.destinations[0].headers.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
    assert_eq!(headers, vec![("authorization", "admin-token-0123456789"), ("x-tenant", "acme")]);
    assert!(!format!("{config:?}").contains("admin-token-0123456789"), "a header's secret never prints");
    assert_eq!(
        load(&with(r#"{ webhook-id = "x", "bad name" = "y" }"#), &[]).unwrap_err().0,
        vec![
            "destinations[0].headers.bad name: not a header name",
            "destinations[0].headers.webhook-id: hookgate sets this header itself",
        ]
    );
}

#[test]
fn an_unknown_preset_is_one_problem() {
    let text = GOOD.replace("preset = \"acuity\"", "preset = \"mailgun\"");
    let problems = load(&text, &[]).unwrap_err().0;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].starts_with("sources[1].preset: unknown preset \"mailgun\""));
}

#[test]
fn a_preset_keeps_its_scheme_and_keys_never_read_credentials() {
    let text = GOOD.replace(r#"verify = { secret = "acuity-key-0123456789" }"#, r#"verify = { scheme = "none" }"#);
    assert_eq!(
        load(&text, &[]).unwrap_err().0,
        vec!["sources[1].verify.scheme: the acuity preset verifies with acuity; drop the preset, or the scheme"]
    );
    let text = GOOD.replace("order_key = \"{json.data.object.id}\"", "order_key = \"{header.Authorization}\"");
    assert_eq!(
        load(&text, &[]).unwrap_err().0,
        vec!["sources[0].order_key: reads {header.authorization}, a credential: keys are stored, shown and forwarded"]
    );
}

#[test]
fn the_storage_url_may_come_from_the_environment() {
    let text = GOOD.replace("url = \"sqlite://x.db\"", "url = \"env:DB_URL\"");
    let config = load(&text, &[("DB_URL", "postgres://u:pw@db/hookgate")]).unwrap();
    assert_eq!(config.storage, Storage::Postgres { url: Secret::new("postgres://u:pw@db/hookgate"), pool: 8 });
}

#[test]
fn the_disk_kept_free_is_a_size_or_zero() {
    let sqlite = |vars: &[(&str, &str)]| load(GOOD, vars).map(|c| c.storage);
    let kept = |min_free: u64| Storage::Sqlite { path: "x.db".into(), min_free };
    assert_eq!(sqlite(&[("HOOKGATE_STORAGE__MIN_FREE", "1GiB")]).unwrap(), kept(1 << 30));
    assert_eq!(sqlite(&[("HOOKGATE_STORAGE__MIN_FREE", "0")]).unwrap(), kept(0));
    assert_eq!(
        sqlite(&[("HOOKGATE_STORAGE__MIN_FREE", "lots")]).unwrap_err().0,
        vec!["storage.min_free: \"lots\" is not a size like 1MiB, 512KiB or 1000000"]
    );
}

#[test]
fn a_size_may_be_a_number_of_bytes() {
    let text = GOOD.replace("[storage]", "[storage]\nmin_free = 1000000");
    assert_eq!(load(&text, &[]).unwrap().storage, Storage::Sqlite { path: "x.db".into(), min_free: 1_000_000 });
    let text = GOOD.replace("[storage]", "[storage]\nmin_free = true");
    let problems = load(&text, &[]).unwrap_err().0;
    assert!(problems[0].starts_with("storage.min_free:") && problems[0].contains("a size like"), "{problems:?}");
}

#[test]
fn rate_limits_and_circuit_breakers() {
    use super::{CircuitBreaker, RateLimit};
    let with = |extra: &str| GOOD.replace("[[destinations]]\n", &format!("[[destinations]]\n{extra}\n"));
    let config = load(&with("rate_limit = \"600/m\"\ncircuit_breaker = { failures = 5 }"), &[]).unwrap();
    let app = &config.destinations[0];
    assert_eq!(app.rate_limit, Some(RateLimit { per_second: 10.0 }));
    assert_eq!(app.circuit_breaker, Some(CircuitBreaker { failures: 5, cooldown: Duration::from_secs(30) }));
    assert_eq!(load(GOOD, &[]).unwrap().destinations[0].rate_limit, None);
    let problems =
        load(&with("rate_limit = \"fast\"\ncircuit_breaker = { failures = 0, cooldown = \"0s\" }"), &[]).unwrap_err().0;
    assert_eq!(
        problems,
        vec![
            "destinations[0].rate_limit: \"fast\" is not a rate like \"200/s\", \"600/m\" or \"3600/h\"",
            "destinations[0].circuit_breaker.failures: must be between 1 and 100000",
        ]
    );
    let problems = load(&with("rate_limit = \"0/s\""), &[]).unwrap_err().0;
    assert_eq!(problems, vec!["destinations[0].rate_limit: \"0/s\": the rate must be more than zero"]);
}

#[test]
fn the_starting_config_is_accepted_as_printed() {
    let env = Env::from_pairs([
        ("HOOKGATE_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef0123456789abcdef"),
    ]);
    let config = Config::from_toml(super::STARTING_CONFIG, &env).unwrap_or_else(|p| panic!("{}", p.0.join("\n")));
    assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(config.storage, Storage::Sqlite { path: "hookgate.db".into(), min_free: 64 << 20 });
    assert_eq!((config.destinations.len(), config.sources.len()), (1, 1));
    // Every key the config knows is in it, set or commented out.
    for key in [
        "listen",
        "max_body",
        "max_connections",
        "header_timeout",
        "body_timeout",
        "max_inflight_bytes",
        "shutdown_grace",
        "url",
        "min_free",
        "pool",
        "token",
        "delivered",
        "dead",
        "superseded",
        "name",
        "timeout",
        "concurrency",
        "retry.max_attempts",
        "retry.initial",
        "retry.max",
        "signing_secret",
        "headers",
        "rate_limit",
        "circuit_breaker",
        "destination",
        "preset",
        "verify",
        "order_key",
        "dedupe_key",
        "coalesce_key",
        "dedupe_window",
        "dedupe_ignore",
        "challenge",
    ] {
        assert!(
            super::STARTING_CONFIG.lines().any(|l| l.trim_start_matches(['#', ' ']).starts_with(&format!("{key} ="))),
            "{key} is missing from `hookgate init`"
        );
    }
}

#[test]
fn postgres_tls_settings_are_checked_with_the_url() {
    let text = GOOD.replace("url = \"sqlite://x.db\"", "url = \"env:DB_URL\"");
    let url = "postgres://u:secret-pw@db/hookgate?sslmode=require&application_name=hg";
    assert!(load(&text, &[("DB_URL", url)]).is_ok(), "sslmode taken out, the rest handed on");
    let missing = "postgres://u:secret-pw@db/hookgate?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem";
    let problems = load(&text, &[("DB_URL", missing)]).unwrap_err().0;
    assert!(problems[0].starts_with("storage.url: sslrootcert /nonexistent/ca.pem"), "{problems:?}");
    assert!(!problems[0].contains("secret-pw"), "{problems:?}");
    let problems = load(&text, &[("DB_URL", "postgres://u:secret-pw@db/hookgate?sslmode=sometimes")]).unwrap_err().0;
    assert_eq!(
        problems,
        vec!["storage.url: sslmode=sometimes: expected disable, prefer, require, verify-ca or verify-full"]
    );
}

#[test]
fn every_problem_of_the_server_section_is_reported() {
    let vars = [
        ("HOOKGATE_SERVER__MAX_BODY", "1MiB"),
        ("HOOKGATE_SERVER__MAX_INFLIGHT_BYTES", "1MiB"),
        ("HOOKGATE_SERVER__HEADER_TIMEOUT", "0s"),
        ("HOOKGATE_SERVER__BODY_TIMEOUT", "0s"),
    ];
    let problems = load(GOOD, &vars).unwrap_err().0;
    assert_eq!(
        problems,
        vec![
            "server.max_inflight_bytes: must be at least twice server.max_body (one request must fit)",
            "server.header_timeout: must be more than zero",
            "server.body_timeout: must be more than zero",
        ]
    );
}

#[test]
fn retention_under_a_minute_is_refused_by_name() {
    let with = |section: &str| format!("{GOOD}\n[retention]\n{section}\n");
    assert_eq!(
        load(&with("dead = \"1ms\""), &[]).unwrap_err().0,
        vec![
            "retention.dead: 1ms is under the minimum of 1m: events would be deleted before anyone could look at \
             or replay them (\"1ms\" for \"1m\"?)"
        ]
    );
    let problems = load(&with("delivered = \"59s\"\nsuperseded = \"0s\""), &[]).unwrap_err().0;
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].starts_with("retention.delivered: 59s is under the minimum of 1m"), "{problems:?}");
    assert!(problems[1].starts_with("retention.superseded: 0ns is under the minimum of 1m"), "{problems:?}");
    let kept = load(&with("delivered = \"1m\"\ndead = \"90d\""), &[]).unwrap();
    assert_eq!(kept.retention.delivered, Duration::from_secs(60));
}

#[test]
fn secrets_may_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("admin_token");
    std::fs::write(&token, "admin-token-from-a-file\n").unwrap();
    let db_url = dir.path().join("db_url");
    std::fs::write(&db_url, "postgres://u:hunter2@db/hookgate\r\n").unwrap();
    let text = GOOD
        .replace("token = \"env:ADMIN\"", &format!("token = \"file:{}\"", token.display()))
        .replace("url = \"sqlite://x.db\"", &format!("url = \"file:{}\"", db_url.display()));
    let config = load(&text, &[]).unwrap();
    assert_eq!(config.admin_token.as_ref().map(Secret::expose), Some("admin-token-from-a-file"), "newline trimmed");
    assert_eq!(config.storage, Storage::Postgres { url: Secret::new("postgres://u:hunter2@db/hookgate"), pool: 8 });

    // systemd's LoadCredential= puts files under $CREDENTIALS_DIRECTORY.
    let systemd = GOOD.replace("token = \"env:ADMIN\"", "token = \"file:${CREDENTIALS_DIRECTORY}/admin_token\"");
    let dir_text = dir.path().display().to_string();
    let config = load(&systemd, &[("CREDENTIALS_DIRECTORY", &dir_text)]).unwrap();
    assert_eq!(config.admin_token.as_ref().map(Secret::expose), Some("admin-token-from-a-file"));
    assert_eq!(
        load(&systemd, &[]).unwrap_err().0,
        vec!["admin.token: CREDENTIALS_DIRECTORY is not set (systemd sets it with LoadCredential=)"]
    );

    let missing = dir.path().join("nope");
    let text = GOOD.replace("acuity-key-0123456789", &format!("file:{}", missing.display()));
    let problems = load(&text, &[]).unwrap_err().0;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with(&format!("sources[1].verify.secret: cannot read the file {}: ", missing.display())),
        "{problems:?}"
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let text = GOOD.replace("acuity-key-0123456789", &format!("file:{}", empty.display()));
    assert_eq!(
        load(&text, &[]).unwrap_err().0,
        vec![format!("sources[1].verify.secret: the file {} is empty", empty.display())]
    );
    let short = dir.path().join("short");
    std::fs::write(&short, "short\n").unwrap();
    let text = GOOD.replace("acuity-key-0123456789", &format!("file:{}", short.display()));
    assert_eq!(
        load(&text, &[]).unwrap_err().0,
        vec!["sources[1].verify.secret: must be at least 16 bytes (a short secret is guessable)"],
        "a file's secret is held to the same rules"
    );
}

#[test]
fn a_destination_signs_in_the_format_it_names() {
    let with = |lines: &str| GOOD.replace("signing_secret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"", lines);
    let config = load(&with("signing = \"stripe\"\nsigning_secret = \"whsec_app_side_secret_0123\""), &[]).unwrap();
    assert_eq!(config.destinations[0].signer.as_ref().map(|s| s.format().as_str()), Some("stripe"));
    let config = load(GOOD, &[]).unwrap();
    assert_eq!(
        config.destinations[0].signer.as_ref().map(|s| s.format().as_str()),
        Some("standard-webhooks"),
        "the default with a secret"
    );
    assert!(load(&with(""), &[]).unwrap().destinations[0].signer.is_none(), "no secret, no signature");
    assert_eq!(
        load(&with("signing = \"github\""), &[]).unwrap_err().0,
        vec!["destinations[0].signing_secret: missing: signing = \"github\" needs the secret to sign with"]
    );
    let problems = load(&with("signing = \"svix\"\nsigning_secret = \"x\""), &[]).unwrap_err().0;
    assert!(problems[0].starts_with("destinations[0].signing: unknown signing format \"svix\""), "{problems:?}");
    assert_eq!(
        load(&with("signing = \"shopify\"\nsigning_secret = \"short\""), &[]).unwrap_err().0,
        vec!["destinations[0].signing_secret: must be at least 16 bytes (a short secret is guessable)"]
    );
}

#[test]
fn log_telemetry_and_kept_answers_default_and_validate() {
    let config = load(GOOD, &[]).unwrap();
    assert_eq!(config.log, Log { json: false, level: "info".into() });
    assert_eq!(config.telemetry, None, "off unless an endpoint is set");
    assert_eq!(config.keep_response, 1024);

    // The standard OpenTelemetry variables when the file says nothing…
    let config =
        load(GOOD, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"), ("OTEL_SERVICE_NAME", "gw")]).unwrap();
    let telemetry = config.telemetry.unwrap();
    assert_eq!(telemetry.traces_url.as_str(), "http://collector:4318/v1/traces");
    assert_eq!((telemetry.service_name.as_str(), telemetry.sample_ratio), ("gw", 1.0));
    let signal = load(GOOD, &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom")]).unwrap();
    assert_eq!(signal.telemetry.unwrap().traces_url.as_str(), "http://c:4318/custom", "the signal's URL as given");
    // …and the file (or HOOKGATE_*) over them.
    let text = format!(
        "{GOOD}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\nsample_ratio = 0.5\n[log]\nformat = \"json\"\n"
    );
    let config = load(&text, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://other:4318")]).unwrap();
    assert_eq!(config.telemetry.as_ref().unwrap().traces_url.as_str(), "http://127.0.0.1:4318/v1/traces");
    assert_eq!(config.telemetry.unwrap().sample_ratio, 0.5);
    assert!(config.log.json);
    let config = load(GOOD, &[("HOOKGATE_LOG__FORMAT", "json"), ("HOOKGATE_LOG__LEVEL", "debug")]).unwrap();
    assert_eq!(config.log, Log { json: true, level: "debug".into() });

    let bad = format!(
        "{GOOD}\n[log]\nformat = \"yaml\"\nlevel = \"loud\"\n[telemetry]\notlp_endpoint = \"collector:4318\"\n\
         sample_ratio = 2.0\n"
    );
    let problems = load(&bad.replace("[storage]\n", "[storage]\nkeep_response = \"1MiB\"\n"), &[]).unwrap_err().0;
    for key in ["log.format", "log.level", "telemetry.sample_ratio", "storage.keep_response"] {
        assert!(problems.iter().any(|p| p.starts_with(&format!("{key}: "))), "{key} not named: {problems:?}");
    }
    let problems = load(&bad.replace("sample_ratio = 2.0", "sample_ratio = 1.0"), &[]).unwrap_err().0;
    assert!(problems.iter().any(|p| p.starts_with("telemetry.otlp_endpoint: ")), "{problems:?}");
    // gRPC is not spoken: said, not silently dropped.
    let grpc = load(GOOD, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
    assert!(grpc.unwrap_err().0.iter().any(|p| p.starts_with("OTEL_EXPORTER_OTLP_PROTOCOL: ")));
    let http = load(
        GOOD,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")],
    );
    assert!(http.unwrap().telemetry.is_some());
}

/// A base for the route cases: two destinations, a typed source (a preset
/// sets its event type) and an untyped one, neither with a destination of its own.
const ROUTED: &str = r#"
    [storage]
    url = "sqlite://x.db"
    [[destinations]]
    name = "billing"
    url = "http://127.0.0.1:9/billing"
    [[destinations]]
    name = "warehouse"
    url = "http://127.0.0.1:9/warehouse"
    [[sources]]
    name = "stripe"
    preset = "stripe"
    verify = { secret = "whsec_new_0123456789" }
    [[sources]]
    name = "shop"
    verify = { scheme = "none" }
"#;

#[test]
fn routes_attach_to_their_source_in_order_with_their_own_keys() {
    let text = format!(
        r#"{ROUTED}
    [[routes]]
    source = "stripe"
    destination = "billing"
    events = ["invoice.*", "charge.succeeded"]
    [routes.filter]
    "json.data.object.amount_paid" = {{ gte = 10000 }}
    [[routes]]
    name = "to the warehouse"
    source = "stripe"
    destination = "warehouse"
    order_key = "{{json.data.object.customer}}"
    enabled = false
    [[routes]]
    source = "shop"
    destination = "billing"
"#
    );
    let config = load(&text, &[]).unwrap();
    let stripe = &config.sources[0];
    assert_eq!(stripe.event_type.as_ref().map(Template::as_str), Some("{json.type}"), "the preset's");
    let names: Vec<&str> = stripe.routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["stripe->billing", "to the warehouse"]);
    let billing = &stripe.routes[0];
    assert_eq!((billing.destination.as_str(), billing.events.len(), billing.enabled), ("billing", 2, true));
    assert!(billing.filter.is_some() && billing.order_key.is_none());
    let warehouse = &stripe.routes[1];
    assert_eq!(warehouse.order_key.as_ref().map(Template::as_str), Some("{json.data.object.customer}"));
    assert!(!warehouse.enabled);
    assert_eq!(config.sources[1].routes.len(), 1);
    assert!(config.sources[1].event_type.is_none(), "no preset, none set");

    // `destination =` on the source is one unfiltered route, before its [[routes]].
    let both = text.replace("name = \"shop\"\n", "name = \"shop\"\n    destination = \"warehouse\"\n");
    let config = load(&both, &[]).unwrap();
    let names: Vec<&str> = config.sources[1].routes.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["shop->warehouse", "shop->billing"]);
}

#[test]
fn every_route_problem_names_its_key() {
    let route = |body: &str| format!("\n    [[routes]]\n{body}\n");
    let text = [
        ROUTED.to_owned(),
        // 0: fine, and takes stripe's events.
        route("    source = \"stripe\"\n    destination = \"billing\""),
        // 1: a source that is not there; a destination that is not there.
        route("    source = \"paypal\"\n    destination = \"ledger\""),
        // 2: the same source and destination again.
        route("    source = \"stripe\"\n    destination = \"billing\"\n    name = \"again\""),
        // 3: globs on a source with no event type; an empty glob.
        route("    source = \"shop\"\n    destination = \"billing\"\n    events = [\"order.*\", \"\"]"),
        // 4: a filter with an operand of the wrong type, a bad key template, an empty name.
        route(
            "    source = \"shop\"\n    destination = \"warehouse\"\n    name = \" \"\n    order_key = \"{jsn.id}\"\n    \
             filter = { \"json.amount\" = { gte = \"100\" } }",
        ),
        // 5: no source, and an empty list of events.
        route("    destination = \"warehouse\"\n    events = []"),
    ]
    .concat();
    let problems = load(&text, &[]).unwrap_err().0;
    let expected = [
        r#"routes[1].source: no source is named "paypal""#,
        r#"routes[1].destination: no destination is named "ledger""#,
        "routes[2].destination: stripe already reaches billing by route \"stripe->billing\": each event would be \
         delivered there twice",
        "routes[3].events[1]: must not be empty",
        "routes[3].events: the source \"shop\" has no event_type to match",
        "routes[4].name: must not be empty",
        "routes[4].filter.\"json.amount\".gte: expected a number, found a string",
        "routes[4].order_key:",
        "routes[5].source:",
        "routes[5].events: an empty list matches nothing",
    ];
    for want in expected {
        assert!(problems.iter().any(|p| p.starts_with(want)), "no problem starts {want:?}: {problems:#?}");
    }
    assert_eq!(problems.len(), expected.len(), "{problems:#?}");

    // A source no route takes is named, with what to do.
    let unrouted = load(&format!("{ROUTED}{}", route("    source = \"stripe\"\n    destination = \"billing\"")), &[]);
    assert_eq!(
        unrouted.unwrap_err().0,
        vec![
            "sources[1]: no route takes shop's events (they would be stored and go nowhere): set destination = \"…\", \
             or add a [[routes]] with source = \"shop\""
        ]
    );
}

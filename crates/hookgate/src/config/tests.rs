use super::*;
use hookgate_verify::{Encoding, HashAlgorithm};

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

fn load(text: &str, vars: &[(&str, &str)]) -> Result<Config, Problems> {
    let base = [("ADMIN", "admintoken"), ("STRIPE", "whsec_new")];
    Config::from_toml(text, &Env::from_pairs(base.into_iter().chain(vars.iter().copied())))
}

#[test]
fn good_config_fills_presets_and_defaults() {
    let config = load(GOOD, &[]).unwrap();
    assert_eq!(config.admin_token.as_ref().map(Secret::expose), Some("admintoken"));
    assert_eq!(config.max_body_bytes, 1 << 20);
    assert_eq!(config.storage, Storage::Sqlite("x.db".into()));
    let app = &config.destinations[0];
    assert_eq!((app.timeout, app.concurrency), (Duration::from_secs(30), 64));
    assert_eq!(app.retry, RetryPolicy { max_attempts: 10, initial_ms: 1_000, max_ms: 3_600_000 });
    let stripe = &config.sources[0];
    assert_eq!(stripe.scheme, Scheme::Stripe);
    assert_eq!(stripe.secrets, vec![Secret::new("whsec_new"), Secret::new("whsec_old")]);
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
        problems(r#"verify = { scheme = "hmac-sha256", secret = "k", header = "x", signed_content = "{id}.{body}" }"#),
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
    let text =
        GOOD.replace(r#"verify = { secret = "k" }"#, r#"verify = { secret = "k", header = "x-sig", username = "u" }"#);
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
    for secret in ["admintoken", "whsec_new", "whsec_old", "hunter2", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

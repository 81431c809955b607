//! Every preset and generic scheme end to end through `POST /in/{source}`:
//! signed as the sender signs, stored with the preset's dedupe key, delivered;
//! unsigned or forged, refused with the reason. Plus the handshakes.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::support::*;

const SECRET: &str = "sender-test-secret";
const TWILIO_URL: &str = "https://hooks.example.com/in/twilio";

fn config(receiver: &Receiver, db: &std::path::Path) -> String {
    let mut text = config_text(&receiver.url(), db, "");
    for (name, extra) in [
        ("github", String::new()),
        ("shopify", String::new()),
        ("svix", String::new()),
        ("slack", String::new()),
        ("twilio", format!(r#", public_url = "{TWILIO_URL}""#)),
    ] {
        let secret = if name == "svix" { SIGNING_SECRET } else { SECRET };
        text.push_str(&format!(
            "\n[[sources]]\nname = \"{name}\"\ndestination = \"app\"\npreset = \"{name}\"\nverify = {{ secret = \"{secret}\"{extra} }}\n"
        ));
    }
    text.push_str(&format!(
        r#"
[[sources]]
name = "custom"
destination = "app"
dedupe_key = "{{header.x-delivery}}"
verify = {{ scheme = "hmac-sha512", secret = ["an-old-secret-0123456789", "{SECRET}"], header = "x-sig", encoding = "base64", prefix = "sha512=", timestamp_header = "x-ts", signed_content = "{{timestamp}}:{{body}}" }}

[[sources]]
name = "basic"
destination = "app"
verify = {{ scheme = "basic", username = "sender", secret = "{SECRET}" }}

[[sources]]
name = "token"
destination = "app"
verify = {{ scheme = "token", query = "key", secret = "{SECRET}" }}

[[sources]]
name = "hub"
destination = "app"
verify = {{ scheme = "token", header = "x-token", secret = "{SECRET}" }}
challenge = {{ param = "hub.challenge", token_param = "hub.verify_token", token = "{SECRET}" }}
"#
    ));
    text
}

struct Case {
    source: &'static str,
    path_query: String,
    headers: Vec<(&'static str, String)>,
    body: String,
    dedupe_key: Option<&'static str>,
}

fn cases() -> Vec<Case> {
    let now = unix_now();
    let form = "CallSid=CA1&From=%2B15550001&To=%2B15550002".to_string();
    let json_body = |id: &str| json!({"id": id, "event_id": "Ev42", "type": "event_callback"}).to_string();
    let svix_key = hookgate_verify::standard_webhooks::secret_key(SIGNING_SECRET).unwrap();
    let generic = hookgate_verify::GenericHmac {
        algorithm: hookgate_verify::HashAlgorithm::Sha512,
        header: "x-sig".into(),
        encoding: hookgate_verify::Encoding::Base64,
        prefix: "sha512=".into(),
        timestamp_header: Some("x-ts".into()),
        signed_content: Some("{timestamp}:{body}".into()),
    };
    let b = json_body("c1");
    vec![
        Case {
            source: "github",
            path_query: String::new(),
            headers: vec![
                ("x-hub-signature-256", hookgate_verify::github_sign(SECRET, json_body("g1").as_bytes())),
                ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958".into()),
            ],
            body: json_body("g1"),
            dedupe_key: Some("72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        },
        Case {
            source: "shopify",
            path_query: String::new(),
            headers: vec![
                ("x-shopify-hmac-sha256", hookgate_verify::shopify_sign(SECRET, json_body("s1").as_bytes())),
                ("x-shopify-event-id", "98880550-7158-44d4-b7cd-2c97c8a091b5".into()),
            ],
            body: json_body("s1"),
            dedupe_key: Some("98880550-7158-44d4-b7cd-2c97c8a091b5"),
        },
        Case {
            source: "svix",
            path_query: String::new(),
            headers: vec![
                ("svix-id", "msg_svix1".into()),
                ("svix-timestamp", now.to_string()),
                (
                    "svix-signature",
                    hookgate_verify::standard_webhooks::sign(&svix_key, "msg_svix1", now, json_body("x1").as_bytes()),
                ),
            ],
            body: json_body("x1"),
            dedupe_key: Some("msg_svix1"),
        },
        Case {
            source: "swh",
            path_query: String::new(),
            headers: vec![
                ("webhook-id", "msg_swh1".into()),
                ("webhook-timestamp", now.to_string()),
                (
                    "webhook-signature",
                    hookgate_verify::standard_webhooks::sign(&svix_key, "msg_swh1", now, json_body("w1").as_bytes()),
                ),
            ],
            body: json_body("w1"),
            dedupe_key: Some("msg_swh1"),
        },
        Case {
            source: "slack",
            path_query: String::new(),
            headers: vec![
                ("x-slack-request-timestamp", now.to_string()),
                ("x-slack-signature", hookgate_verify::slack_sign(SECRET, now, json_body("k1").as_bytes())),
            ],
            body: json_body("k1"),
            dedupe_key: Some("Ev42"),
        },
        Case {
            source: "twilio",
            path_query: String::new(),
            headers: vec![
                ("x-twilio-signature", hookgate_verify::twilio_sign(SECRET, TWILIO_URL, form.as_bytes())),
                ("i-twilio-idempotency-token", "idem-1".into()),
                ("content-type", "application/x-www-form-urlencoded".into()),
            ],
            body: form.clone(),
            dedupe_key: Some("idem-1"),
        },
        Case {
            source: "custom",
            path_query: String::new(),
            headers: vec![
                ("x-ts", now.to_string()),
                ("x-sig", generic.sign(SECRET, Some(&now.to_string()), b.as_bytes())),
                ("x-delivery", "d-1".into()),
            ],
            body: b,
            dedupe_key: Some("d-1"),
        },
        Case {
            source: "basic",
            path_query: String::new(),
            headers: vec![(
                "authorization",
                format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("sender:{SECRET}"))),
            )],
            body: json_body("b1"),
            dedupe_key: None,
        },
        Case {
            source: "token",
            path_query: format!("?key={SECRET}"),
            headers: vec![],
            body: json_body("t1"),
            dedupe_key: None,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_and_scheme_end_to_end() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&receiver, &dir.path().join("hookgate.db"));
    let app = spawn_with(dir, &text).await;
    let cases = cases();
    for case in &cases {
        let url = app.url(&format!("/in/{}{}", case.source, case.path_query));
        let (status, answer) = post_with(&app.http, &url, &case.headers, case.body.clone().into_bytes()).await;
        assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")), "{}: {answer}", case.source);
        let event = app.admin(&format!("/api/events/{}", answer["id"].as_str().unwrap())).await;
        assert_eq!(event["dedupe_key"].as_str(), case.dedupe_key, "{}: preset dedupe key", case.source);
        if case.dedupe_key.is_some() {
            let (_, again) = post_with(&app.http, &url, &case.headers, case.body.clone().into_bytes()).await;
            assert_eq!((again["status"].as_str(), &again["id"]), (Some("duplicate"), &answer["id"]), "{}", case.source);
        }
        // Forged: the same request with the body changed.
        let (status, refused) = post_with(&app.http, &url, &case.headers, format!("{}x", case.body).into_bytes()).await;
        let expected = if matches!(case.source, "basic" | "token") { 200 } else { 401 };
        assert_eq!(status, expected, "{}: a changed body {refused}", case.source);
        // Unsigned: no credentials at all.
        let bare = app.url(&format!("/in/{}", case.source));
        let (status, refused) = post_with(&app.http, &bare, &[], case.body.clone().into_bytes()).await;
        assert_eq!(status, 401, "{}: unsigned", case.source);
        let reason = refused["error"].as_str().unwrap();
        assert!(
            reason.starts_with("missing_header") || reason.starts_with("missing_query"),
            "{}: {reason}",
            case.source
        );
        assert!(!reason.contains(SECRET), "a refusal never shows a secret");
    }
    receiver
        .wait_for(Duration::from_secs(10), "a delivery per source", |r| {
            cases.iter().all(|c| r.iter().any(|r| r.header("hookgate-source") == c.source))
        })
        .await;
    app.stop().await;
}

#[tokio::test]
async fn wrong_credentials_say_why() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&receiver, &dir.path().join("hookgate.db"));
    let app = spawn_with(dir, &text).await;
    let wrong_token = app.url("/in/token?key=nope");
    let (status, answer) = post_with(&app.http, &wrong_token, &[], b"{}".to_vec()).await;
    assert_eq!((status, answer["error"].as_str().map(|e| e.starts_with("bad_credentials"))), (401, Some(true)));
    let stale = unix_now() - 3_600;
    let headers = vec![
        ("x-slack-request-timestamp", stale.to_string()),
        ("x-slack-signature", hookgate_verify::slack_sign(SECRET, stale, b"{}")),
    ];
    let (status, answer) = app.post("slack", &headers, b"{}".to_vec()).await;
    assert_eq!((status, answer["error"].as_str().map(|e| e.starts_with("stale_timestamp"))), (401, Some(true)));
    let metrics = app.http.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(r#"source="token",reason="bad_credentials""#)
            || metrics.contains(r#"reason="bad_credentials",source="token""#)
    );
    app.stop().await;
}

#[tokio::test]
async fn slack_url_verification_is_answered_and_not_stored() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&receiver, &dir.path().join("hookgate.db"));
    let app = spawn_with(dir, &text).await;
    let now = unix_now();
    let body = json!({"token": "t", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P", "type": "url_verification"}).to_string();
    let headers = vec![
        ("x-slack-request-timestamp", now.to_string()),
        ("x-slack-signature", hookgate_verify::slack_sign(SECRET, now, body.as_bytes())),
    ];
    let (status, answer) = app.post("slack", &headers, body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(answer, json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"}));
    let (status, _) = app.post("slack", &[], body).await;
    assert_eq!(status, 401, "an unsigned handshake is refused like any request");
    let listed: Value = app.admin("/api/events?source=slack").await;
    assert_eq!(listed["events"], json!([]), "the handshake is not an event");
    app.stop().await;
}

#[tokio::test]
async fn get_echo_challenge_checks_the_verify_token() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&receiver, &dir.path().join("hookgate.db"));
    let app = spawn_with(dir, &text).await;
    let get = |q: String| {
        let url = app.url(&format!("/in/hub{q}"));
        let http = app.http.clone();
        async move {
            let response = http.get(url).send().await.unwrap();
            let headers = response.headers().clone();
            assert_eq!(headers["x-content-type-options"], "nosniff", "every answer, refusals too");
            let status = response.status().as_u16();
            if status == 200 {
                // Never a type a browser would run as a script or render as a page.
                assert_eq!(headers["content-type"], "text/plain; charset=utf-8");
            }
            (status, response.text().await.unwrap())
        }
    };
    assert_eq!(
        get(format!("?hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={SECRET}")).await,
        (200, "1158201444".into())
    );
    assert_eq!(get("?hub.challenge=1158201444&hub.verify_token=wrong".into()).await.0, 401);
    assert_eq!(get(format!("?hub.verify_token={SECRET}")).await.0, 400);
    let plain = app.http.get(app.url("/in/plain")).send().await.unwrap();
    assert_eq!(plain.status(), 405, "a source without a challenge takes POST only");
    for path in ["/in/plain", "/in/nowhere", "/metrics", "/healthz", "/api/events", "/nothing-here"] {
        let answer = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(answer.headers()["x-content-type-options"], "nosniff", "{path}");
    }
    app.stop().await;
}

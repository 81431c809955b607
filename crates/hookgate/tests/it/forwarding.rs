//! What reaches the app and what is kept: the sender's credentials never
//! leave hookgate and are never stored; the destination's own headers are
//! added; signature headers stay.

use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::support::*;

const TOKEN: &str = "sender-token-0123456789";
const PASSWORD: &str = "sender-password-0123456789";
const APP_CREDENTIAL: &str = "Bearer app-credential-0123456789";

#[tokio::test]
async fn credentials_are_neither_forwarded_nor_stored() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let with_url_credentials = receiver.url().replace("http://", "http://app-user:app-pass@");
    let mut text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "");
    text = text.replacen(
        "retry = {",
        &format!("headers = {{ authorization = \"{APP_CREDENTIAL}\", x-app-tenant = \"acme\" }}\nretry = {{"),
        1,
    );
    text.push_str(&format!(
        r#"
[[destinations]]
name = "app2"
url = "{with_url_credentials}"

[[sources]]
name = "tok"
destination = "app"
verify = {{ scheme = "token", header = "X-Webhook-Token", secret = "{TOKEN}" }}

[[sources]]
name = "basic"
destination = "app2"
verify = {{ scheme = "basic", username = "sender", secret = "{PASSWORD}" }}
"#
    ));
    let app = spawn_with(dir, &text).await;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("sender:{PASSWORD}")));
    let noise = |mut headers: Vec<(&'static str, String)>| {
        headers.extend([
            ("cookie", "session=s3cr3t".to_owned()),
            ("accept-encoding", "gzip".to_owned()),
            ("proxy-authorization", "Basic cHJveHk6cHc=".to_owned()),
            ("connection", "keep-alive, x-hop".to_owned()),
            ("x-hop", "only for this hop".to_owned()),
            ("x-custom", "kept".to_owned()),
        ]);
        headers
    };
    let sent = [
        ("plain", noise(vec![("authorization", "Bearer sender-secret".to_owned())])),
        ("tok", noise(vec![("x-webhook-token", TOKEN.to_owned())])),
        ("basic", noise(vec![("authorization", basic.clone())])),
    ];
    let mut ids = Vec::new();
    for (n, (source, headers)) in sent.iter().enumerate() {
        let (status, answer) = app.post(source, headers, format!(r#"{{"id":"f{n}","object":"o{n}"}}"#)).await;
        assert_eq!(status, 200, "{source}: {answer}");
        ids.push(answer["id"].as_str().unwrap().to_owned());
    }
    receiver.wait_for(Duration::from_secs(10), "three deliveries", |r| r.len() == 3).await;

    let never = ["cookie", "accept-encoding", "proxy-authorization", "x-webhook-token", "x-hop", "connection"];
    for got in receiver.received() {
        for name in never {
            assert!(got.headers.get(name).is_none(), "{name} reached the app");
        }
        assert_eq!(got.header("x-custom"), "kept");
        let authorization = got.header("authorization");
        assert!(!authorization.contains("sender"), "the sender's Authorization reached the app: {authorization}");
        if got.header("hookgate-source") == "basic" {
            let own = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("app-user:app-pass"));
            assert_eq!(authorization, own, "the destination URL's own credentials");
        } else {
            assert_eq!(authorization, APP_CREDENTIAL, "the destination's configured header");
            assert_eq!(got.header("x-app-tenant"), "acme");
        }
    }
    for id in &ids {
        let event: Value = app.admin(&format!("/api/events/{id}")).await;
        let stored: Vec<&str> = event["headers"].as_array().unwrap().iter().map(|h| h[0].as_str().unwrap()).collect();
        for name in never.iter().chain(&["authorization"]) {
            assert!(!stored.contains(name), "{name} was stored: {stored:?}");
        }
        assert!(!event.to_string().contains(TOKEN) && !event.to_string().contains("s3cr3t"), "{event}");
    }
    app.stop().await;
}

//! Re-signing in the sender's own format (`destinations[].signing`), checked
//! by the senders' own libraries as the app would run them
//! (`verify_deliveries.py`: `stripe.Webhook.construct_event`,
//! `standardwebhooks`, and GitHub's and Shopify's documented checks). The
//! sender's original Stripe signature, a day old as any late retry's is,
//! fails Stripe's own check; hookgate's, made at the attempt, passes.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Each format's secret, as the app holds it: the destination's, not the sender's.
const SECRETS: [(&str, &str); 4] = [
    ("stripe", "whsec_billing_app_side_secret"),
    ("github", "github-app-side-secret-0123"),
    ("shopify", "shopify-app-side-secret-0123"),
    ("standard-webhooks", SIGNING_SECRET),
];
/// The sender's own Stripe secret: what signed the original.
const SENDER_SECRET: &str = "whsec_the_senders_own_secret";

fn config(receiver: &Receiver, db: &std::path::Path) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[storage]\nurl = \"sqlite://{}\"\n[admin]\ntoken = \"{ADMIN_TOKEN}\"\n",
        db.display()
    );
    let formats = SECRETS.iter().map(|(format, secret)| (*format, Some(*secret))).chain([("unsigned", None)]);
    for (format, secret) in formats {
        text.push_str(&format!(
            "[[destinations]]\nname = \"{format}\"\nurl = \"{}\"\nretry = {{ max_attempts = 3, initial = \"50ms\", max = \"100ms\" }}\n",
            receiver.url()
        ));
        if let Some(secret) = secret {
            text.push_str(&format!("signing = \"{format}\"\nsigning_secret = \"{secret}\"\n"));
        }
        text.push_str(&format!("[[sources]]\nname = \"{format}\"\ndestination = \"{format}\"\n"));
    }
    text
}

/// What `verify_deliveries.py` said of each delivery, or `None` where the
/// libraries are not installed (`tests/requirements.txt`).
fn verdicts(deliveries: &Value) -> Option<Vec<String>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/verify_deliveries.py");
    let imports = Command::new("python3").args(["-c", "import stripe, standardwebhooks"]).output();
    if !imports.is_ok_and(|o| o.status.success()) {
        hookgate_store::conformance::skip(
            "python3 with stripe and standardwebhooks is not here (pip install -r crates/hookgate/tests/requirements.txt)",
        );
        return None;
    }
    let mut child = Command::new("python3").arg(script).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(deliveries.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    Some(String::from_utf8(out.stdout).unwrap().lines().map(str::to_owned).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_destination_is_signed_so_its_senders_library_accepts_it() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&receiver, &dir.path().join("hookgate.db"));
    let app = spawn_with(dir, &text).await;

    // The sender signed a day ago: what every late retry and replay carries.
    let body = r#"{"id":"evt_1","object":"event","type":"invoice.paid","data":{"object":{"id":"in_1"}}}"#;
    let stale = hookgate_verify::stripe_sign(SENDER_SECRET, unix_now() - 86_400, body.as_bytes());
    let sources = ["stripe", "github", "shopify", "standard-webhooks", "unsigned"];
    for source in sources {
        let (status, answer) = app.post(source, &[("stripe-signature", stale.clone())], body).await;
        assert_eq!(status, 200, "{answer}");
    }
    receiver.wait_for(Duration::from_secs(10), "a delivery to each", |r| r.len() == sources.len()).await;

    let secrets: BTreeMap<&str, &str> = SECRETS.into_iter().collect();
    let deliveries: Vec<Value> = receiver
        .received()
        .iter()
        .map(|r| {
            let source = r.header("hookgate-source");
            let headers: BTreeMap<String, String> =
                r.headers.iter().map(|(n, v)| (n.to_owned(), String::from_utf8_lossy(v).into_owned())).collect();
            // The unsigned destination forwards the sender's original: the app checks it with the sender's secret.
            let (format, secret) = match secrets.get(source.as_str()) {
                Some(secret) => (source.clone(), *secret),
                None => ("stripe".to_owned(), SENDER_SECRET),
            };
            assert_eq!(r.body, body.as_bytes(), "{source}: the body as the sender sent it");
            json!({"source": source, "format": format, "secret": secret, "headers": headers, "body": body})
        })
        .collect();
    let Some(verdicts) = verdicts(&Value::Array(deliveries.clone())) else { return };
    let by_source: BTreeMap<&str, &str> =
        deliveries.iter().map(|d| d["source"].as_str().unwrap()).zip(verdicts.iter().map(String::as_str)).collect();
    assert_eq!(by_source["stripe"], "stripe ok", "stripe.Webhook.construct_event passes, however late");
    assert_eq!(by_source["github"], "github ok");
    assert_eq!(by_source["shopify"], "shopify ok");
    assert_eq!(by_source["standard-webhooks"], "standard-webhooks ok");
    assert!(
        by_source["unsigned"].contains("Timestamp outside the tolerance zone"),
        "the original goes stale: {}",
        by_source["unsigned"]
    );
    app.stop().await;
}

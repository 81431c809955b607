//! A test request as each sender would make it: its usual body and headers,
//! signed as it signs (`hookgate send`). The first signed event is the
//! hardest step of a first hour; this makes it one command, and a test holds
//! every scheme's sample to its own verifier.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hookgate_core::Secret;

use crate::{Scheme, TokenAt};

/// A request to send to `POST /in/{source}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleRequest {
    pub headers: Vec<(String, String)>,
    /// The query string, without `?` (a `token` source's token, say).
    pub query: String,
    pub body: Vec<u8>,
}

/// What a sender of `scheme` would send now (`now`: seconds since the
/// epoch). `body`: the caller's, or `None` for the sender's usual kind of
/// test event; `nonce` makes its ids unique. The secret is the source's
/// first; a scheme that needs one fails without it, and an Ed25519 public
/// key (`whpk_`) cannot sign.
pub fn sample(
    scheme: &Scheme,
    secret: Option<&Secret>,
    body: Option<Vec<u8>>,
    now: i64,
    nonce: &str,
) -> Result<SampleRequest, String> {
    let secret = || secret.map(Secret::expose).ok_or_else(|| "this scheme needs a secret to sign with".to_owned());
    let form = matches!(scheme, Scheme::Acuity | Scheme::Twilio { .. });
    let body = body.unwrap_or_else(|| usual_body(scheme, now, nonce).into_bytes());
    let content_type = if form { "application/x-www-form-urlencoded" } else { "application/json" };
    let mut headers = vec![("content-type".to_owned(), content_type.to_owned())];
    let mut header = |name: &str, value: String| headers.push((name.to_owned(), value));
    let mut query = String::new();
    match scheme {
        Scheme::None => {}
        Scheme::Stripe => header("stripe-signature", crate::stripe::sign(secret()?, now, &body)),
        Scheme::Github => {
            header("x-github-event", "ping".into());
            header("x-github-delivery", format!("hookgate-send-{nonce}"));
            header("x-hub-signature-256", crate::github::sign(secret()?, &body));
        }
        Scheme::Shopify => {
            header("x-shopify-topic", "hookgate/test".into());
            header("x-shopify-event-id", format!("hookgate-send-{nonce}"));
            header("x-shopify-hmac-sha256", crate::shopify::sign(secret()?, &body));
        }
        Scheme::StandardWebhooks(family) => {
            let key = crate::standard_webhooks::secret_key(secret()?)
                .map_err(|_| "a whpk_ key only verifies: hookgate cannot sign as this sender".to_owned())?;
            let [id, timestamp, signature] = family.names();
            let msg_id = format!("msg_hookgate_send_{nonce}");
            header(signature, crate::standard_webhooks::sign(&key, &msg_id, now, &body));
            header(id, msg_id);
            header(timestamp, now.to_string());
        }
        Scheme::Acuity => header("x-acuity-signature", crate::acuity::sign(secret()?, &body)),
        Scheme::Slack => {
            header("x-slack-request-timestamp", now.to_string());
            header("x-slack-signature", crate::slack::sign(secret()?, now, &body));
        }
        Scheme::Twilio { public_url } => {
            header("i-twilio-idempotency-token", format!("hookgate-send-{nonce}"));
            header("x-twilio-signature", crate::twilio::sign(secret()?, public_url, &body));
        }
        Scheme::Hmac(hmac) => {
            let timestamp = now.to_string();
            let signed = hmac.timestamp_header.as_ref().map(|name| {
                header(name, timestamp.clone());
                timestamp.as_str()
            });
            header(&hmac.header, hmac.sign(secret()?, signed, &body));
        }
        Scheme::Basic { username } => {
            header("authorization", format!("Basic {}", STANDARD.encode(format!("{username}:{}", secret()?))));
        }
        Scheme::Token(TokenAt::Header(name)) => header(name, secret()?.to_owned()),
        Scheme::Token(TokenAt::Query(name)) => {
            query = form_urlencoded::Serializer::new(String::new()).append_pair(name, secret()?).finish();
        }
    }
    Ok(SampleRequest { headers, query, body })
}

/// The kind of event each sender sends when asked for a test, with the
/// fields its preset's keys read.
fn usual_body(scheme: &Scheme, now: i64, nonce: &str) -> String {
    match scheme {
        Scheme::Stripe => format!(
            r#"{{"id":"evt_hookgate_send_{nonce}","object":"event","type":"hookgate.test","created":{now},"data":{{"object":{{"id":"cus_hookgate_test","object":"customer"}}}}}}"#
        ),
        Scheme::Github => r#"{"zen":"hookgate send: a test event","hook_id":0}"#.to_owned(),
        Scheme::Shopify => r#"{"id":1,"note":"hookgate send: a test event"}"#.to_owned(),
        Scheme::StandardWebhooks(_) => r#"{"type":"hookgate.test","data":{"id":"hookgate_test_object"}}"#.to_owned(),
        Scheme::Acuity => "action=appointment.changed&id=1&calendarID=1&appointmentTypeID=1".to_owned(),
        Scheme::Slack => format!(
            r#"{{"type":"event_callback","event_id":"Ev_hookgate_send_{nonce}","event":{{"type":"hookgate_test"}}}}"#
        ),
        Scheme::Twilio { .. } => format!("MessageSid=SMhookgatesend{nonce}&Body=hookgate+send"),
        _ => format!(r#"{{"id":"hookgate_send_{nonce}","type":"hookgate.test"}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SchemeName, SchemeOptions, Signed, verify};
    use hookgate_core::Headers;

    /// Every scheme's sample passes that scheme's own verifier: what `hookgate send` posts is accepted.
    #[test]
    fn every_schemes_sample_verifies() {
        let now = 1_800_000_000;
        for name in SchemeName::ALL {
            let options = SchemeOptions {
                header: Some("x-signature".into())
                    .filter(|_| name.as_str().starts_with("hmac") || name == SchemeName::Token),
                timestamp_header: Some("x-timestamp".into()).filter(|_| name == SchemeName::HmacSha512),
                signed_content: Some("{timestamp}.{body}".into()).filter(|_| name == SchemeName::HmacSha512),
                username: Some("sender".into()).filter(|_| name == SchemeName::Basic),
                public_url: Some("https://hooks.example.com/in/twilio".into()).filter(|_| name == SchemeName::Twilio),
                ..Default::default()
            };
            let scheme = name.build(&options).unwrap_or_else(|p| panic!("{name}: {p:?}"));
            let secret = Secret::new(match name {
                SchemeName::StandardWebhooks | SchemeName::Svix => "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                _ => "a-source-secret-0123456789",
            });
            let request = sample(&scheme, Some(&secret), None, now, "n1").unwrap();
            let headers: Headers = request.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
            let signed = Signed { headers: &headers, body: &request.body, query: request.query.as_bytes(), now };
            assert_eq!(verify(&scheme, std::slice::from_ref(&secret), 300, &signed), Ok(()), "{name}");
            if name != SchemeName::None {
                let wrong = Secret::new("another-secret-0123456789");
                assert!(verify(&scheme, &[wrong], 300, &signed).is_err(), "{name}: bound to its secret");
            }
            let own = sample(&scheme, Some(&secret), Some(b"{\"mine\":1}".to_vec()), now, "n1").unwrap();
            assert_eq!(own.body, b"{\"mine\":1}", "{name}: the caller's body as it is");
        }
    }

    #[test]
    fn a_public_key_cannot_sign() {
        let scheme = Scheme::StandardWebhooks(crate::HeaderFamily::Webhook);
        let key = Secret::new("whpk_not*base64");
        assert!(sample(&scheme, Some(&key), None, 0, "n").unwrap_err().contains("whpk_"));
        assert!(sample(&Scheme::Stripe, None, None, 0, "n").unwrap_err().contains("needs a secret"));
    }
}

//! Slack: `X-Slack-Signature: v0=<hex>`, HMAC-SHA256 of `"v0:{ts}:{body}"`
//! keyed with the signing secret, `ts` from `X-Slack-Request-Timestamp`.

use hookgate_core::Secret;

use crate::mac::{Hash, equal, tag};
use crate::{Signed, VerifyError, check_tolerance};

pub fn verify(secrets: &[Secret], tolerance_secs: i64, request: &Signed<'_>) -> Result<(), VerifyError> {
    let timestamp = request.header("x-slack-request-timestamp")?.trim();
    let unix: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed("timestamp is not a number"))?;
    check_tolerance(unix, request.now, tolerance_secs)?;
    let given = request.header("x-slack-signature")?.trim();
    let given = given.strip_prefix("v0=").ok_or(VerifyError::Malformed("expected v0=<hex>"))?;
    let given = hex::decode(given).map_err(|_| VerifyError::Malformed("signature is not hex"))?;
    let valid = secrets.iter().any(|s| {
        equal(&tag(Hash::Sha256, s.expose().as_bytes(), &[b"v0:", timestamp.as_bytes(), b":", request.body]), &given)
    });
    if valid { Ok(()) } else { Err(VerifyError::BadSignature) }
}

/// Sign as Slack does.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!("v0={}", hex::encode(tag(Hash::Sha256, secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body])))
}

/// The `challenge` of a `url_verification` request: Slack's one-time check
/// that the endpoint is ours, answered with `{"challenge": …}` and never stored.
pub fn url_verification(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Handshake {
        #[serde(rename = "type")]
        kind: String,
        challenge: Option<String>,
    }
    let handshake: Handshake = serde_json::from_slice(body).ok()?;
    if handshake.kind == "url_verification" { handshake.challenge } else { None }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_only_url_verification() {
        let body = br#"{"token":"x","challenge":"3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P","type":"url_verification"}"#;
        assert_eq!(url_verification(body).as_deref(), Some("3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"));
        assert_eq!(url_verification(br#"{"type":"event_callback","challenge":"x"}"#), None);
        assert_eq!(url_verification(b"not json"), None);
    }
}

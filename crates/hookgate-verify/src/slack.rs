//! Slack: `X-Slack-Signature: v0=<hex>`, HMAC-SHA256 of `"v0:{ts}:{body}"`
//! keyed with the signing secret, `ts` from `X-Slack-Request-Timestamp`.

use crate::mac::{Hash, equal, tag};
use crate::{Signed, VerifyError, check_tolerance};

pub fn verify(secrets: &[String], tolerance_secs: i64, request: &Signed<'_>) -> Result<(), VerifyError> {
    let timestamp = request.header("x-slack-request-timestamp")?.trim();
    let unix: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed("timestamp is not a number"))?;
    let given = request.header("x-slack-signature")?.trim();
    let given = given.strip_prefix("v0=").ok_or(VerifyError::Malformed("expected v0=<hex>"))?;
    let given = hex::decode(given).map_err(|_| VerifyError::Malformed("signature is not hex"))?;
    let valid = secrets
        .iter()
        .any(|s| equal(&tag(Hash::Sha256, s.as_bytes(), &[b"v0:", timestamp.as_bytes(), b":", request.body]), &given));
    if !valid {
        return Err(VerifyError::BadSignature);
    }
    check_tolerance(unix, request.now, tolerance_secs)
}

/// Sign as Slack does.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let ts = timestamp.to_string();
    format!("v0={}", hex::encode(tag(Hash::Sha256, secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body])))
}

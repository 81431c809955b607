//! Shopify: `X-Shopify-Hmac-Sha256: <base64>`, HMAC-SHA256 of the body keyed
//! with the app's client secret. No timestamp; `X-Shopify-Event-Id` is the id
//! to dedupe on.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use hookgate_core::Secret;

use crate::mac::{Hash, equal, tag};
use crate::{Signed, VerifyError};

const HEADER: &str = "x-shopify-hmac-sha256";

pub fn verify(secrets: &[Secret], request: &Signed<'_>) -> Result<(), VerifyError> {
    let given = STANDARD
        .decode(request.header(HEADER)?.trim())
        .map_err(|_| VerifyError::Malformed("signature is not base64"))?;
    let valid = secrets.iter().any(|s| equal(&tag(Hash::Sha256, s.expose().as_bytes(), &[request.body]), &given));
    if valid { Ok(()) } else { Err(VerifyError::BadSignature) }
}

/// Sign as Shopify does.
pub fn sign(secret: &str, body: &[u8]) -> String {
    STANDARD.encode(tag(Hash::Sha256, secret.as_bytes(), &[body]))
}

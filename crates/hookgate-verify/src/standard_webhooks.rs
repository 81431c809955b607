//! Standard Webhooks (standardwebhooks.com; Svix uses the same scheme under
//! `svix-*` header names): HMAC-SHA256 of `"{id}.{timestamp}.{body}"`, keyed
//! with the base64 part of a `whsec_…` secret; `webhook-signature` holds a
//! space-separated list of `v1,<base64>` signatures.
//!
//! hookgate also *signs* what it delivers with this scheme, so [`sign`] lives here.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use hookgate_core::Secret;

use crate::mac::{Hash, equal, tag};
use crate::{Signed, VerifyError, check_tolerance};

const SECRET_PREFIX: &str = "whsec_";

/// Decode a `whsec_<base64>` secret to its key bytes. A secret without the
/// prefix is taken as bare base64, as the reference libraries do.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, base64::DecodeError> {
    STANDARD.decode(secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret))
}

/// The `webhook-signature` value for one message: `v1,<base64>`.
pub fn sign(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = tag(Hash::Sha256, key, &[id.as_bytes(), b".", timestamp.to_string().as_bytes(), b".", body]);
    format!("v1,{}", STANDARD.encode(mac))
}

/// The key that signs what hookgate delivers (a destination's
/// `signing_secret`). Its `Debug` prints `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey(Vec<u8>);

impl SigningKey {
    /// From a `whsec_<base64>` secret.
    pub fn from_secret(secret: &Secret) -> Result<Self, base64::DecodeError> {
        secret_key(secret.expose()).map(SigningKey)
    }

    /// The `webhook-signature` value for one delivery.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        sign(&self.0, id, timestamp, body)
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Prefix of an Ed25519 public key, for `v1a` signatures.
const PUBLIC_KEY_PREFIX: &str = "whpk_";

fn public_key(base64: &str) -> Option<ed25519_dalek::VerifyingKey> {
    let bytes: [u8; 32] = STANDARD.decode(base64).ok()?.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}

fn either<'r>(request: &'r Signed<'_>, name: &'static str, svix: &'static str) -> Result<&'r str, VerifyError> {
    request.header(name).or_else(|_| request.header(svix))
}

pub fn verify(secrets: &[Secret], tolerance_secs: i64, request: &Signed<'_>) -> Result<(), VerifyError> {
    let id = either(request, "webhook-id", "svix-id")?;
    let timestamp = either(request, "webhook-timestamp", "svix-timestamp")?;
    let signatures = either(request, "webhook-signature", "svix-signature")?;
    let unix: i64 =
        timestamp.trim().parse().map_err(|_| VerifyError::Malformed("webhook-timestamp is not a number"))?;
    let decoded = |version: &str| -> Vec<Vec<u8>> {
        signatures
            .split_whitespace()
            .filter_map(|entry| entry.strip_prefix(version))
            .filter_map(|b64| STANDARD.decode(b64).ok())
            .collect()
    };
    let (symmetric, asymmetric) = (decoded("v1,"), decoded("v1a,"));
    if symmetric.is_empty() && asymmetric.is_empty() {
        return Err(VerifyError::Malformed("no v1 or v1a signature"));
    }
    let content = [id.as_bytes(), b".", timestamp.as_bytes(), b".", request.body].concat();
    let valid = secrets.iter().any(|secret| match secret.expose().strip_prefix(PUBLIC_KEY_PREFIX) {
        // v1a: an Ed25519 public key (`whpk_…`) checks asymmetric signatures.
        Some(public) => public_key(public).is_some_and(|key| {
            asymmetric.iter().any(|sig| {
                ed25519_dalek::Signature::from_slice(sig).is_ok_and(|sig| key.verify_strict(&content, &sig).is_ok())
            })
        }),
        None => secret_key(secret.expose()).is_ok_and(|key| {
            let mac = tag(Hash::Sha256, &key, &[&content]);
            symmetric.iter().any(|sig| equal(&mac, sig))
        }),
    });
    if !valid {
        return Err(VerifyError::BadSignature);
    }
    check_tolerance(unix, request.now, tolerance_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    // The reference test vector of the Standard Webhooks specification
    // (also in the svix libraries' test suites).
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &str = r#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn check(id: &str, ts: &str, sig: &str, body: &str, now: i64) -> Result<(), VerifyError> {
        let headers = headers(&[("webhook-id", id), ("webhook-timestamp", ts), ("webhook-signature", sig)]);
        verify(
            &crate::test_support::secrets(&[SECRET]),
            300,
            &Signed { headers: &headers, body: body.as_bytes(), query: b"", now },
        )
    }

    #[test]
    fn signs_the_reference_vector() {
        assert_eq!(sign(&secret_key(SECRET).unwrap(), ID, TS, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn verifies_the_reference_vector_among_others() {
        let ts = TS.to_string();
        assert_eq!(check(ID, &ts, SIGNATURE, BODY, TS), Ok(()));
        let list = format!("v1,Ymxh v1a,xyz {SIGNATURE}");
        assert_eq!(check(ID, &ts, &list, BODY, TS + 299), Ok(()));
    }

    #[test]
    fn accepts_svix_header_names() {
        let ts = TS.to_string();
        let headers = headers(&[("svix-id", ID), ("svix-timestamp", &ts), ("svix-signature", SIGNATURE)]);
        let request = Signed { headers: &headers, body: BODY.as_bytes(), query: b"", now: TS };
        assert_eq!(verify(&crate::test_support::secrets(&[SECRET]), 300, &request), Ok(()));
    }

    #[test]
    fn rejects_tampering_staleness_and_missing_parts() {
        let ts = TS.to_string();
        assert_eq!(check(ID, &ts, SIGNATURE, r#"{"test": 2432232315}"#, TS), Err(VerifyError::BadSignature));
        assert_eq!(check("msg_other", &ts, SIGNATURE, BODY, TS), Err(VerifyError::BadSignature));
        assert_eq!(check(ID, &(TS + 1).to_string(), SIGNATURE, BODY, TS), Err(VerifyError::BadSignature));
        assert_eq!(check(ID, &ts, SIGNATURE, BODY, TS + 301), Err(VerifyError::StaleTimestamp));
        assert_eq!(check(ID, &ts, SIGNATURE, BODY, TS - 301), Err(VerifyError::StaleTimestamp));
        assert!(matches!(check(ID, &ts, "v2,abc", BODY, TS), Err(VerifyError::Malformed(_))));
        assert!(matches!(check(ID, "soon", SIGNATURE, BODY, TS), Err(VerifyError::Malformed(_))));
        let partial = headers(&[("webhook-id", ID)]);
        let request = Signed { headers: &partial, body: BODY.as_bytes(), query: b"", now: TS };
        assert_eq!(
            verify(&crate::test_support::secrets(&[SECRET]), 300, &request),
            Err(VerifyError::MissingHeader("svix-timestamp".into()))
        );
    }
}

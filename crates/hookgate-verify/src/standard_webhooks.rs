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
use crate::{MAX_SIGNATURES, Signed, VerifyError, check_tolerance};

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
    /// From a `whsec_<base64>` secret of at least [`MIN_KEY_BYTES`] decoded bytes.
    pub fn from_secret(secret: &Secret) -> Result<Self, &'static str> {
        match secret_key(secret.expose()) {
            Ok(key) if key.len() >= MIN_KEY_BYTES => Ok(SigningKey(key)),
            Ok(_) => Err("the key must decode to at least 16 bytes"),
            Err(_) => Err("must be whsec_ followed by base64"),
        }
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

/// Decoded key bytes at least: a shorter HMAC key is guessable.
pub const MIN_KEY_BYTES: usize = 16;

/// Whether `secret` is a key this scheme can use: `whsec_<base64>` (or bare
/// base64) for `v1`, `whpk_<base64 of 32 bytes>` for `v1a`. Checked when the
/// config is read, so a malformed key is a config error, not a stream of 401s.
pub fn check_secret(secret: &str) -> Result<(), &'static str> {
    match secret.strip_prefix(PUBLIC_KEY_PREFIX) {
        Some(public) if public_key(public).is_some() => Ok(()),
        Some(_) => Err("a whpk_ key must be the base64 of a 32-byte Ed25519 public key"),
        None => match secret_key(secret) {
            Ok(key) if key.len() >= MIN_KEY_BYTES => Ok(()),
            Ok(_) => Err("the key must decode to at least 16 bytes"),
            Err(_) => Err("must be whsec_ followed by base64 (or whpk_ and an Ed25519 public key)"),
        },
    }
}

fn public_key(base64: &str) -> Option<ed25519_dalek::VerifyingKey> {
    let bytes: [u8; 32] = STANDARD.decode(base64).ok()?.try_into().ok()?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).ok()
}

/// Which header names carry the id, timestamp and signatures. A source reads
/// one family only: the id it verifies is then the id its preset dedupes on,
/// and a captured request cannot pass with a fresh id in the other family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderFamily {
    /// `webhook-id`, `webhook-timestamp`, `webhook-signature` (the specification's).
    Webhook,
    /// `svix-id`, `svix-timestamp`, `svix-signature` (Svix's).
    Svix,
}

impl HeaderFamily {
    pub fn names(self) -> [&'static str; 3] {
        match self {
            HeaderFamily::Webhook => ["webhook-id", "webhook-timestamp", "webhook-signature"],
            HeaderFamily::Svix => ["svix-id", "svix-timestamp", "svix-signature"],
        }
    }
}

pub fn verify(
    family: HeaderFamily,
    secrets: &[Secret],
    tolerance_secs: i64,
    request: &Signed<'_>,
) -> Result<(), VerifyError> {
    let [id_header, timestamp_header, signature_header] = family.names();
    let id = request.header(id_header)?;
    let timestamp = request.header(timestamp_header)?;
    let signatures = request.header(signature_header)?;
    let unix: i64 = timestamp.trim().parse().map_err(|_| VerifyError::Malformed("the timestamp is not a number"))?;
    check_tolerance(unix, request.now, tolerance_secs)?;
    if signatures.split_whitespace().count() > MAX_SIGNATURES {
        return Err(VerifyError::Malformed("too many signatures"));
    }
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
    let parts: [&[u8]; 5] = [id.as_bytes(), b".", timestamp.as_bytes(), b".", request.body];
    // Ed25519 needs the message in one piece; the HMAC takes its parts, and most requests are HMAC'd.
    let content = std::cell::OnceCell::new();
    let valid = secrets.iter().any(|secret| match secret.expose().strip_prefix(PUBLIC_KEY_PREFIX) {
        // v1a: an Ed25519 public key (`whpk_…`) checks asymmetric signatures.
        Some(public) => public_key(public).is_some_and(|key| {
            asymmetric.iter().any(|sig| {
                let content: &Vec<u8> = content.get_or_init(|| parts.concat());
                ed25519_dalek::Signature::from_slice(sig).is_ok_and(|sig| key.verify_strict(content, &sig).is_ok())
            })
        }),
        None => secret_key(secret.expose()).is_ok_and(|key| {
            let mac = tag(Hash::Sha256, &key, &parts);
            symmetric.iter().any(|sig| equal(&mac, sig))
        }),
    });
    if valid { Ok(()) } else { Err(VerifyError::BadSignature) }
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
            HeaderFamily::Webhook,
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
    fn each_family_reads_its_own_headers_only() {
        let ts = TS.to_string();
        let svix = headers(&[("svix-id", ID), ("svix-timestamp", &ts), ("svix-signature", SIGNATURE)]);
        let request = Signed { headers: &svix, body: BODY.as_bytes(), query: b"", now: TS };
        let secrets = crate::test_support::secrets(&[SECRET]);
        assert_eq!(verify(HeaderFamily::Svix, &secrets, 300, &request), Ok(()));
        assert_eq!(
            verify(HeaderFamily::Webhook, &secrets, 300, &request),
            Err(VerifyError::MissingHeader("webhook-id".into())),
            "svix-* headers do not stand in for webhook-*"
        );
    }

    #[test]
    fn a_stale_or_crowded_header_is_refused_before_any_signature_is_checked() {
        let ts = TS.to_string();
        // Garbage signatures: only the timestamp can be the reason.
        assert_eq!(check(ID, &ts, "v1,AAAA", BODY, TS + 301), Err(VerifyError::StaleTimestamp));
        let crowded = ["v1a,AAAA"; MAX_SIGNATURES + 1].join(" ");
        assert_eq!(check(ID, &ts, &crowded, BODY, TS), Err(VerifyError::Malformed("too many signatures")));
        let within = format!("{} {SIGNATURE}", ["v1,AAAA"; MAX_SIGNATURES - 1].join(" "));
        assert_eq!(check(ID, &ts, &within, BODY, TS), Ok(()));
    }

    #[test]
    fn rejects_tampering_staleness_and_missing_parts() {
        let ts = TS.to_string();
        assert_eq!(check(ID, &ts, SIGNATURE, r#"{"test": 2432232315}"#, TS), Err(VerifyError::BadSignature));
        assert_eq!(check("msg_other", &ts, SIGNATURE, BODY, TS), Err(VerifyError::BadSignature));
        assert_eq!(check(ID, &(TS + 1).to_string(), SIGNATURE, BODY, TS), Err(VerifyError::BadSignature));
        assert_eq!(check_secret("whsec_AAAAAAAAAAAAAAAAAAAAAA=="), Ok(()));
        assert!(check_secret("whsec_AAAA").is_err(), "3 bytes of key");
        assert!(check_secret("whpk_AAAA").is_err(), "not 32 bytes");
        assert!(check_secret("not base64!").is_err());
        assert_eq!(check(ID, &ts, SIGNATURE, BODY, TS + 301), Err(VerifyError::StaleTimestamp));
        assert_eq!(check(ID, &ts, SIGNATURE, BODY, TS - 301), Err(VerifyError::StaleTimestamp));
        assert!(matches!(check(ID, &ts, "v2,abc", BODY, TS), Err(VerifyError::Malformed(_))));
        assert!(matches!(check(ID, "soon", SIGNATURE, BODY, TS), Err(VerifyError::Malformed(_))));
        let partial = headers(&[("webhook-id", ID)]);
        let request = Signed { headers: &partial, body: BODY.as_bytes(), query: b"", now: TS };
        assert_eq!(
            verify(HeaderFamily::Webhook, &crate::test_support::secrets(&[SECRET]), 300, &request),
            Err(VerifyError::MissingHeader("webhook-timestamp".into()))
        );
    }
}

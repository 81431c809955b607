//! Stripe: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=<hex>…]`, HMAC-SHA256 of
//! `"{t}.{body}"` keyed with the endpoint secret (`whsec_…`, used as is).

use hookgate_core::Secret;

use crate::mac::{Hash, equal, tag};
use crate::{MAX_SIGNATURES, Signed, VerifyError, check_tolerance};

const HEADER: &str = "stripe-signature";

pub fn verify(secrets: &[Secret], tolerance_secs: i64, request: &Signed<'_>) -> Result<(), VerifyError> {
    let header = request.header(HEADER)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            // Other schemes (v0 is Stripe's test-mode scheme) are ignored, as Stripe's libraries do.
            Some(("v1", sig)) => {
                if signatures.len() == MAX_SIGNATURES {
                    return Err(VerifyError::Malformed("too many signatures"));
                }
                signatures.push(hex::decode(sig).map_err(|_| VerifyError::Malformed("v1 is not hex"))?)
            }
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed("no t= timestamp"))?;
    let unix: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed("t= is not a number"))?;
    check_tolerance(unix, request.now, tolerance_secs)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed("no v1= signature"));
    }
    let valid = secrets.iter().any(|secret| {
        let mac = tag(Hash::Sha256, secret.expose().as_bytes(), &[timestamp.as_bytes(), b".", request.body]);
        signatures.iter().any(|sig| equal(&mac, sig))
    });
    if valid { Ok(()) } else { Err(VerifyError::BadSignature) }
}

/// Sign as Stripe does; used by tests and the demo's simulated sender.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mac = tag(Hash::Sha256, secret.as_bytes(), &[timestamp.to_string().as_bytes(), b".", body]);
    format!("t={timestamp},v1={}", hex::encode(mac))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    // Made with Stripe's own Python library (pip package `stripe` 16.1.0):
    //   stripe.WebhookSignature._compute_signature("1700000000." + PAYLOAD, SECRET)
    // and checked with stripe.WebhookSignature.verify_header(PAYLOAD, header, SECRET).
    const SECRET: &str = "whsec_test_secret";
    const PAYLOAD: &str = "{\n  \"id\": \"evt_test_webhook\",\n  \"object\": \"event\"\n}";
    const T: i64 = 1_700_000_000;
    const STRIPE_HEADER: &str = "t=1700000000,v1=4f1cd7feda9826e746b7d482c4badebb657398df1099e1046364f6196a230150";

    fn check(header: &str, body: &str, now: i64, secrets: &[&str]) -> Result<(), VerifyError> {
        let headers = headers(&[("Stripe-Signature", header)]);
        let secrets = crate::test_support::secrets(secrets);
        verify(&secrets, 300, &Signed { headers: &headers, body: body.as_bytes(), query: b"", now })
    }

    #[test]
    fn accepts_the_stripe_library_vector() {
        assert_eq!(check(STRIPE_HEADER, PAYLOAD, T + 10, &[SECRET]), Ok(()));
        assert_eq!(sign(SECRET, T, PAYLOAD.as_bytes()), STRIPE_HEADER);
    }

    #[test]
    fn accepts_own_signature_and_rotation() {
        let header = sign(SECRET, T, PAYLOAD.as_bytes());
        assert_eq!(check(&header, PAYLOAD, T + 10, &[SECRET]), Ok(()));
        assert_eq!(check(&header, PAYLOAD, T, &["whsec_old", SECRET]), Ok(()));
        assert_eq!(check(&format!("{header},v0=abcd"), PAYLOAD, T, &[SECRET]), Ok(()));
    }

    #[test]
    fn rejects_tampering_wrong_secret_and_staleness() {
        let header = sign(SECRET, T, PAYLOAD.as_bytes());
        assert_eq!(check(&header, "{}", T, &[SECRET]), Err(VerifyError::BadSignature));
        assert_eq!(check(&header, PAYLOAD, T, &["whsec_other"]), Err(VerifyError::BadSignature));
        assert_eq!(check(&header, PAYLOAD, T + 301, &[SECRET]), Err(VerifyError::StaleTimestamp));
        assert_eq!(check(&header, PAYLOAD, T - 301, &[SECRET]), Err(VerifyError::StaleTimestamp));
        let moved = header.replace(&T.to_string(), &(T + 1).to_string());
        assert_eq!(check(&moved, PAYLOAD, T, &[SECRET]), Err(VerifyError::BadSignature));
        assert!(matches!(check(&format!("t={T}"), PAYLOAD, T, &[SECRET]), Err(VerifyError::Malformed(_))));
        assert_eq!(
            check("t=1,v1=00", PAYLOAD, T, &[SECRET]),
            Err(VerifyError::StaleTimestamp),
            "checked before any MAC"
        );
        let crowded = format!("t={T},{}", ["v1=00"; crate::MAX_SIGNATURES + 1].join(","));
        assert_eq!(check(&crowded, PAYLOAD, T, &[SECRET]), Err(VerifyError::Malformed("too many signatures")));
        assert!(matches!(check("v1=zz", PAYLOAD, T, &[SECRET]), Err(VerifyError::Malformed(_))));
        let none = headers(&[]);
        let secrets = crate::test_support::secrets(&[SECRET]);
        assert_eq!(
            verify(&secrets, 300, &Signed { headers: &none, body: b"", query: b"", now: T }),
            Err(VerifyError::MissingHeader("stripe-signature".into()))
        );
    }
}

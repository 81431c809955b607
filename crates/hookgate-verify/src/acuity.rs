//! Acuity Scheduling: `X-Acuity-Signature: <base64>`, HMAC-SHA256 of the raw
//! body keyed with the account's API key. Acuity signs no timestamp, so a
//! replayed request verifies; its events are thin, so ordering and coalescing,
//! not the signature, keep a replay harmless.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use hookgate_core::Secret;

use crate::mac::{Hash, equal, tag};
use crate::{Signed, VerifyError};

const HEADER: &str = "x-acuity-signature";

pub fn verify(secrets: &[Secret], request: &Signed<'_>) -> Result<(), VerifyError> {
    let given = STANDARD
        .decode(request.header(HEADER)?.trim())
        .map_err(|_| VerifyError::Malformed("signature is not base64"))?;
    let valid = secrets.iter().any(|key| equal(&tag(Hash::Sha256, key.expose().as_bytes(), &[request.body]), &given));
    if valid { Ok(()) } else { Err(VerifyError::BadSignature) }
}

/// Sign as Acuity does; used by tests and the demo's simulated sender.
pub fn sign(api_key: &str, body: &[u8]) -> String {
    STANDARD.encode(tag(Hash::Sha256, api_key.as_bytes(), &[body]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    // Computed with Python's standard library, independently of this code:
    //   base64.b64encode(hmac.new(b"acuity_api_key_123", body, hashlib.sha256).digest())
    const KEY: &str = "acuity_api_key_123";
    const BODY: &str = "action=appointment.changed&id=42&calendarID=7&appointmentTypeID=3";
    const SIGNATURE: &str = "QvB2BE+A2qQSB6SqwhEV0UJj5Xx2h82FQnyyQn/G6iE=";

    fn check(signature: &str, body: &str, key: &str) -> Result<(), VerifyError> {
        let headers = headers(&[("X-Acuity-Signature", signature)]);
        verify(
            &crate::test_support::secrets(&[key]),
            &Signed { headers: &headers, body: body.as_bytes(), query: b"", now: 0 },
        )
    }

    #[test]
    fn accepts_the_reference_signature() {
        assert_eq!(check(SIGNATURE, BODY, KEY), Ok(()));
        assert_eq!(sign(KEY, BODY.as_bytes()), SIGNATURE);
    }

    #[test]
    fn rejects_tampering_and_wrong_key() {
        assert_eq!(check(SIGNATURE, &BODY.replace("42", "43"), KEY), Err(VerifyError::BadSignature));
        assert_eq!(check(SIGNATURE, BODY, "other"), Err(VerifyError::BadSignature));
        assert!(matches!(check("***", BODY, KEY), Err(VerifyError::Malformed(_))));
    }
}

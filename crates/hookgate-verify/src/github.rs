//! GitHub: `X-Hub-Signature-256: sha256=<hex>`, HMAC-SHA256 of the body keyed
//! with the webhook secret. GitHub signs no timestamp; `X-GitHub-Delivery` is
//! the id to dedupe on.

use hookgate_core::Secret;

use crate::mac::{Hash, equal, tag};
use crate::{Signed, VerifyError};

const HEADER: &str = "x-hub-signature-256";

pub fn verify(secrets: &[Secret], request: &Signed<'_>) -> Result<(), VerifyError> {
    let given = request.header(HEADER)?.trim();
    let hex_part = given.strip_prefix("sha256=").ok_or(VerifyError::Malformed("expected sha256=<hex>"))?;
    let given = hex::decode(hex_part).map_err(|_| VerifyError::Malformed("signature is not hex"))?;
    let valid = secrets.iter().any(|s| equal(&tag(Hash::Sha256, s.expose().as_bytes(), &[request.body]), &given));
    if valid { Ok(()) } else { Err(VerifyError::BadSignature) }
}

/// Sign as GitHub does.
pub fn sign(secret: &str, body: &[u8]) -> String {
    format!("sha256={}", hex::encode(tag(Hash::Sha256, secret.as_bytes(), &[body])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    // GitHub's documented example ("Validating webhook deliveries"):
    // secret "It's a Secret to Everybody", payload "Hello, World!".
    const SECRET: &str = "It's a Secret to Everybody";
    const BODY: &str = "Hello, World!";
    const SIGNATURE: &str = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

    fn check(signature: &str, body: &str, secret: &str) -> Result<(), VerifyError> {
        let headers = headers(&[("X-Hub-Signature-256", signature)]);
        verify(
            &crate::test_support::secrets(&[secret]),
            &Signed { headers: &headers, body: body.as_bytes(), query: b"", now: 0 },
        )
    }

    #[test]
    fn the_documented_example() {
        assert_eq!(sign(SECRET, BODY.as_bytes()), SIGNATURE);
        assert_eq!(check(SIGNATURE, BODY, SECRET), Ok(()));
        assert_eq!(check(SIGNATURE, "Hello, World?", SECRET), Err(VerifyError::BadSignature));
        assert_eq!(check(SIGNATURE, BODY, "wrong"), Err(VerifyError::BadSignature));
        assert!(matches!(check("sha1=abc", BODY, SECRET), Err(VerifyError::Malformed(_))));
    }
}

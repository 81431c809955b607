use std::fmt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A secret from the configuration: a signing key, a token, a password.
///
/// `Debug` prints `***`, so a config printed in a log line, a panic or an
/// error message never shows one. There is no `Display`: `format!("{secret}")`
/// does not compile, and reading the value takes an explicit
/// [`Secret::expose`], which is easy to find in a review.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `given` is this secret, in time that depends on neither its
    /// contents nor its length: the SHA-256 digests of both (32 bytes each,
    /// whatever was given) are compared in constant time. Comparing the bytes
    /// themselves returns early on a length mismatch, and tells an attacker
    /// the token's length. An empty `given` never matches.
    pub fn matches(&self, given: &[u8]) -> bool {
        let expected = Sha256::digest(self.0.as_bytes());
        let given_digest = Sha256::digest(given);
        !given.is_empty() && bool::from(expected.as_slice().ct_eq(given_digest.as_slice()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_prints_its_value() {
        let secret = Secret::new("hunter2-hunter2-hunter2");
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(format!("{:?}", vec![secret.clone()]), "[***]");
        assert_eq!(secret.expose(), "hunter2-hunter2-hunter2");
    }

    #[test]
    fn matches_only_the_same_bytes() {
        let secret = Secret::new("admin-token-0123456789");
        assert!(secret.matches(b"admin-token-0123456789"));
        for other in [&b""[..], b"admin-token-012345678", b"admin-token-01234567890", b"Admin-token-0123456789"] {
            assert!(!secret.matches(other), "{other:?}");
        }
        assert!(!Secret::new("").matches(b""), "an empty token never matches");
    }
}

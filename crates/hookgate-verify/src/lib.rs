//! Sender signature schemes, each a pure function over
//! (headers, raw body, secrets, now). No I/O, no clocks, no async: the caller
//! passes `now`, so tolerance rules are tested with plain numbers.
//!
//! Every comparison of a signature goes through [`hmac::Mac::verify_slice`],
//! which is constant time. A source may hold several secrets (rotation): any
//! one that matches passes.

mod acuity;
mod mac;
pub mod standard_webhooks;
mod stripe;

/// The request as the verifier sees it. Header names are lowercase.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
    /// Seconds since the Unix epoch.
    pub now: i64,
}

impl Signed<'_> {
    fn header(&self, name: &'static str) -> Result<&str, VerifyError> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str()).ok_or(VerifyError::MissingHeader(name))
    }
}

/// Which scheme a source's `verify.scheme` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    None,
    Stripe,
    StandardWebhooks,
    Acuity,
}

impl Scheme {
    pub const NAMES: &'static [&'static str] = &["none", "stripe", "standard-webhooks", "acuity"];

    pub fn parse(name: &str) -> Option<Scheme> {
        match name {
            "none" => Some(Scheme::None),
            "stripe" => Some(Scheme::Stripe),
            "standard-webhooks" => Some(Scheme::StandardWebhooks),
            "acuity" => Some(Scheme::Acuity),
            _ => None,
        }
    }

    /// Whether the scheme signs a timestamp, so `tolerance` applies.
    pub fn is_timestamped(self) -> bool {
        matches!(self, Scheme::Stripe | Scheme::StandardWebhooks)
    }

    /// Whether the scheme needs a secret at all.
    pub fn needs_secret(self) -> bool {
        self != Scheme::None
    }
}

/// Why a request was refused. The [`VerifyError::reason`] is the metric label
/// and the start of the 401 body; no variant carries a secret or the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    #[error("no signature matches")]
    BadSignature,
    #[error("timestamp outside tolerance")]
    StaleTimestamp,
}

impl VerifyError {
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::Malformed(_) => "malformed_header",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::StaleTimestamp => "stale_timestamp",
        }
    }
}

/// Check one request against a scheme. `secrets` holds every currently valid
/// secret (more than one while rotating); `tolerance_secs` bounds how far a
/// signed timestamp may be from `now`, either way.
pub fn verify(
    scheme: Scheme,
    secrets: &[String],
    tolerance_secs: i64,
    request: &Signed<'_>,
) -> Result<(), VerifyError> {
    match scheme {
        Scheme::None => Ok(()),
        Scheme::Stripe => stripe::verify(secrets, tolerance_secs, request),
        Scheme::StandardWebhooks => standard_webhooks::verify(secrets, tolerance_secs, request),
        Scheme::Acuity => acuity::verify(secrets, request),
    }
}

fn check_tolerance(timestamp: i64, now: i64, tolerance_secs: i64) -> Result<(), VerifyError> {
    if now.abs_diff(timestamp) > tolerance_secs.unsigned_abs() { Err(VerifyError::StaleTimestamp) } else { Ok(()) }
}

#[cfg(test)]
pub(crate) mod test_support {
    pub fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.to_string())).collect()
    }
}

pub use acuity::sign as acuity_sign;
pub use stripe::sign as stripe_sign;

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// A signature made for one body never verifies another.
        #[test]
        fn a_signature_binds_its_body(a in proptest::collection::vec(any::<u8>(), 0..256),
                                      b in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assume!(a != b);
            let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
            let key = standard_webhooks::secret_key(&secret).unwrap();
            let headers = test_support::headers(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", "100"),
                ("webhook-signature", &standard_webhooks::sign(&key, "msg_1", 100, &a)),
                ("stripe-signature", &stripe_sign(&secret, 100, &a)),
            ]);
            for scheme in [Scheme::StandardWebhooks, Scheme::Stripe] {
                let on_a = Signed { headers: &headers, body: &a, now: 100 };
                let on_b = Signed { headers: &headers, body: &b, now: 100 };
                prop_assert_eq!(verify(scheme, std::slice::from_ref(&secret), 300, &on_a), Ok(()));
                prop_assert_eq!(verify(scheme, std::slice::from_ref(&secret), 300, &on_b), Err(VerifyError::BadSignature));
            }
        }
    }
}

//! Sender signature schemes, each a pure function over
//! (headers, raw body, query, secrets, now). No I/O, no clocks, no async: the
//! caller passes `now`, so tolerance rules are tested with plain numbers.
//!
//! Every comparison of a signature or credential is constant time
//! (`mac::equal`, over `subtle`). A source may hold several secrets
//! (rotation): any one that matches passes.

mod acuity;
mod credentials;
mod generic;
mod github;
mod mac;
mod presets;
pub mod sample;
mod scheme;
mod shopify;
pub mod signing;
mod slack;
pub mod standard_webhooks;
mod stripe;
mod twilio;

pub use acuity::sign as acuity_sign;
pub use generic::{Encoding, GenericHmac, HashAlgorithm, PLACEHOLDERS};
pub use github::sign as github_sign;
use hookgate_core::{Headers, Secret};
pub use presets::{ParsePresetError, Preset};
pub use scheme::{ParseSchemeError, Scheme, SchemeName, SchemeOptions, TokenAt};
pub use shopify::sign as shopify_sign;
pub use slack::sign as slack_sign;
pub use standard_webhooks::HeaderFamily;
pub use stripe::sign as stripe_sign;
pub use twilio::sign as twilio_sign;

/// The request as the verifier sees it.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    pub headers: &'a Headers,
    pub body: &'a [u8],
    /// The raw query string, without `?` (empty when there is none).
    pub query: &'a [u8],
    /// Seconds since the Unix epoch.
    pub now: i64,
}

impl Signed<'_> {
    /// A header every scheme reads as text (signatures, timestamps, ids).
    fn header(&self, name: &str) -> Result<&str, VerifyError> {
        match self.headers.get_str(name) {
            Some(Ok(value)) => Ok(value),
            Some(Err(_)) => Err(VerifyError::Malformed("a signature header is not text")),
            None => Err(VerifyError::MissingHeader(name.to_owned())),
        }
    }

    fn query_param(&self, name: &str) -> Option<Vec<u8>> {
        hookgate_core::urlencoded::find(self.query, name.as_bytes())
    }
}

/// Why a request was refused. The [`VerifyError::reason`] is the metric label
/// and the start of the 401 body; no variant carries a secret or the body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(String),
    #[error("missing query parameter {0}")]
    MissingQuery(String),
    #[error("malformed signature header: {0}")]
    Malformed(&'static str),
    #[error("no signature matches")]
    BadSignature,
    #[error("timestamp outside tolerance")]
    StaleTimestamp,
    #[error("credentials do not match")]
    BadCredentials,
}

impl VerifyError {
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::MissingHeader(_) => "missing_header",
            VerifyError::MissingQuery(_) => "missing_query",
            VerifyError::Malformed(_) => "malformed_header",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::StaleTimestamp => "stale_timestamp",
            VerifyError::BadCredentials => "bad_credentials",
        }
    }
}

/// Check one request against a scheme. `secrets` holds every currently valid
/// secret (more than one while rotating): any one that matches passes.
/// `tolerance_secs` bounds how far a signed timestamp may be from `now`, either way.
pub fn verify(
    scheme: &Scheme,
    secrets: &[Secret],
    tolerance_secs: i64,
    request: &Signed<'_>,
) -> Result<(), VerifyError> {
    match scheme {
        Scheme::None => Ok(()),
        Scheme::Stripe => stripe::verify(secrets, tolerance_secs, request),
        Scheme::Github => github::verify(secrets, request),
        Scheme::Shopify => shopify::verify(secrets, request),
        Scheme::StandardWebhooks(family) => standard_webhooks::verify(*family, secrets, tolerance_secs, request),
        Scheme::Acuity => acuity::verify(secrets, request),
        Scheme::Slack => slack::verify(secrets, tolerance_secs, request),
        Scheme::Twilio { public_url } => twilio::verify(public_url, secrets, request),
        Scheme::Hmac(generic) => generic.verify(secrets, tolerance_secs, request),
        Scheme::Basic { username } => credentials::basic(username, secrets, request),
        Scheme::Token(at) => credentials::token(at, secrets, request),
    }
}

/// Checked before any MAC or signature: a stale request costs a comparison, not a hash of its body.
fn check_tolerance(timestamp: i64, now: i64, tolerance_secs: i64) -> Result<(), VerifyError> {
    if now.abs_diff(timestamp) > tolerance_secs.unsigned_abs() { Err(VerifyError::StaleTimestamp) } else { Ok(()) }
}

/// Signatures one header may carry that are checked, at most. Senders send
/// one, or two while rotating; a header with hundreds would make each request
/// cost hundreds of signature checks over its body.
pub const MAX_SIGNATURES: usize = 5;

#[cfg(test)]
pub(crate) mod test_support {
    use hookgate_core::{Headers, Secret};

    pub fn headers(pairs: &[(&str, &str)]) -> Headers {
        pairs.iter().map(|(k, v)| (*k, v.as_bytes())).collect()
    }

    pub fn secrets(values: &[&str]) -> Vec<Secret> {
        values.iter().map(|v| Secret::new(*v)).collect()
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn every_scheme() -> Vec<Scheme> {
        let url = || Some("https://h.example/in/t".to_owned());
        SchemeName::ALL
            .into_iter()
            .flat_map(|name| {
                let options = match name {
                    SchemeName::Twilio => vec![SchemeOptions { public_url: url(), ..Default::default() }],
                    SchemeName::HmacSha256 | SchemeName::HmacSha512 => vec![
                        SchemeOptions { header: Some("x-sig".into()), prefix: Some("v=".into()), ..Default::default() },
                        SchemeOptions {
                            header: Some("x-sig".into()),
                            encoding: Some("base64".into()),
                            timestamp_header: Some("x-ts".into()),
                            signed_content: Some("{timestamp}.{body}".into()),
                            ..Default::default()
                        },
                    ],
                    SchemeName::Basic => vec![SchemeOptions { username: Some("u".into()), ..Default::default() }],
                    SchemeName::Token => vec![
                        SchemeOptions { header: Some("x-token".into()), ..Default::default() },
                        SchemeOptions { query: Some("token".into()), ..Default::default() },
                    ],
                    _ => vec![SchemeOptions::default()],
                };
                options.into_iter().map(move |o| name.build(&o).unwrap())
            })
            .collect()
    }

    /// Header names every scheme reads, so arbitrary values reach their parsers.
    const READ_HEADERS: &[&str] = &[
        "stripe-signature",
        "x-hub-signature-256",
        "x-shopify-hmac-sha256",
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "svix-id",
        "svix-timestamp",
        "svix-signature",
        "x-acuity-signature",
        "x-slack-request-timestamp",
        "x-slack-signature",
        "x-twilio-signature",
        "x-sig",
        "x-ts",
        "authorization",
        "x-token",
    ];

    proptest! {
        /// Any bytes in any header a scheme reads, any body and any query:
        /// an answer, never a panic.
        #[test]
        fn arbitrary_requests_never_panic(
            values in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), READ_HEADERS.len()),
            body in proptest::collection::vec(any::<u8>(), 0..128),
            query in proptest::collection::vec(any::<u8>(), 0..48),
            now in any::<i64>(),
        ) {
            let headers: Headers = READ_HEADERS.iter().zip(&values).map(|(n, v)| (*n, v.as_slice())).collect();
            let secrets = test_support::secrets(&["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whpk_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwAAAAAAA="]);
            for scheme in every_scheme() {
                let request = Signed { headers: &headers, body: &body, query: &query, now };
                let _ = verify(&scheme, &secrets, i64::MAX, &request);
            }
        }

        /// A signature made for one body never verifies another, in every
        /// scheme that signs the raw body.
        #[test]
        fn a_signature_binds_its_body(a in proptest::collection::vec(any::<u8>(), 0..256),
                                      b in proptest::collection::vec(any::<u8>(), 0..256)) {
            prop_assume!(a != b);
            let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
            let secrets = test_support::secrets(&[&secret]);
            let key = standard_webhooks::secret_key(&secret).unwrap();
            let generic = GenericHmac {
                algorithm: HashAlgorithm::Sha512,
                header: "x-signature".into(),
                encoding: Encoding::Hex,
                prefix: "sha512=".into(),
                timestamp_header: Some("x-timestamp".into()),
                signed_content: Some("{timestamp}.{body}".into()),
            };
            let headers = test_support::headers(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", "100"),
                ("webhook-signature", &standard_webhooks::sign(&key, "msg_1", 100, &a)),
                ("stripe-signature", &stripe_sign(&secret, 100, &a)),
                ("x-hub-signature-256", &github_sign(&secret, &a)),
                ("x-shopify-hmac-sha256", &shopify_sign(&secret, &a)),
                ("x-acuity-signature", &acuity_sign(&secret, &a)),
                ("x-slack-request-timestamp", "100"),
                ("x-slack-signature", &slack_sign(&secret, 100, &a)),
                ("x-timestamp", "100"),
                ("x-signature", &generic.sign(&secret, Some("100"), &a)),
            ]);
            let schemes = [Scheme::StandardWebhooks(HeaderFamily::Webhook), Scheme::Stripe, Scheme::Github, Scheme::Shopify,
                           Scheme::Acuity, Scheme::Slack, Scheme::Hmac(generic.clone())];
            for scheme in schemes {
                let on_a = Signed { headers: &headers, body: &a, query: b"", now: 100 };
                let on_b = Signed { headers: &headers, body: &b, query: b"", now: 100 };
                prop_assert_eq!(verify(&scheme, &secrets, 300, &on_a), Ok(()), "{:?}", scheme);
                prop_assert_eq!(verify(&scheme, &secrets, 300, &on_b), Err(VerifyError::BadSignature), "{:?}", scheme);
            }
        }
    }
}

//! How hookgate signs what it delivers: a destination's `signing` and
//! `signing_secret`. Each attempt is signed afresh (a new timestamp where the
//! format has one), so an app's own check, with its default five-minute
//! tolerance, passes on a retry or a replay days later; the sender's original
//! signature cannot, its timestamp is as old as the event.
//!
//! Formats:
//! - `standard-webhooks` (the default): `webhook-signature: v1,<base64>` over
//!   `"{webhook-id}.{webhook-timestamp}.{body}"`, a `whsec_` key;
//! - `stripe`: `Stripe-Signature: t=<now>,v1=<hex>` over `"{t}.{body}"`, keyed
//!   with the secret as it is (what `stripe.Webhook.construct_event` checks);
//! - `github`: `X-Hub-Signature-256: sha256=<hex>` of the body;
//! - `shopify`: `X-Shopify-Hmac-Sha256: <base64>` of the body.
//!
//! The sender's own header of the same format is replaced (it would not
//! verify with the destination's secret); the sender's other headers stay.

use std::fmt;
use std::str::FromStr;

use hookgate_core::Secret;

use crate::standard_webhooks::SigningKey;

/// The formats `signing` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigningFormat {
    StandardWebhooks,
    Stripe,
    Github,
    Shopify,
}

impl SigningFormat {
    pub const ALL: [SigningFormat; 4] =
        [SigningFormat::StandardWebhooks, SigningFormat::Stripe, SigningFormat::Github, SigningFormat::Shopify];

    pub fn as_str(self) -> &'static str {
        match self {
            SigningFormat::StandardWebhooks => "standard-webhooks",
            SigningFormat::Stripe => "stripe",
            SigningFormat::Github => "github",
            SigningFormat::Shopify => "shopify",
        }
    }

    /// The header this format's signature travels in (lowercase).
    pub fn header(self) -> &'static str {
        match self {
            SigningFormat::StandardWebhooks => "webhook-signature",
            SigningFormat::Stripe => "stripe-signature",
            SigningFormat::Github => "x-hub-signature-256",
            SigningFormat::Shopify => "x-shopify-hmac-sha256",
        }
    }

    /// The sender's headers this format's signature replaces: a signature of
    /// the same kind made with the sender's secret would not verify with the
    /// destination's (GitHub's SHA-1 one included).
    pub fn replaces(self) -> &'static [&'static str] {
        match self {
            SigningFormat::StandardWebhooks => &["webhook-signature"],
            SigningFormat::Stripe => &["stripe-signature"],
            SigningFormat::Github => &["x-hub-signature-256", "x-hub-signature"],
            SigningFormat::Shopify => &["x-shopify-hmac-sha256"],
        }
    }
}

impl fmt::Display for SigningFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SigningFormat {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        SigningFormat::ALL.into_iter().find(|f| f.as_str() == text).ok_or_else(|| {
            let known: Vec<&str> = SigningFormat::ALL.iter().map(|f| f.as_str()).collect();
            format!("unknown signing format {text:?}; expected one of {}", known.join(", "))
        })
    }
}

/// A destination's signer: a format and its key.
#[derive(Clone, PartialEq, Eq)]
pub enum Signer {
    StandardWebhooks(SigningKey),
    Stripe(Secret),
    Github(Secret),
    Shopify(Secret),
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({}, ***)", self.format())
    }
}

impl Signer {
    /// The signer for `format` with `secret`; a Standard Webhooks key must
    /// be `whsec_` + base64 of at least 16 bytes.
    pub fn new(format: SigningFormat, secret: &Secret) -> Result<Signer, &'static str> {
        Ok(match format {
            SigningFormat::StandardWebhooks => Signer::StandardWebhooks(SigningKey::from_secret(secret)?),
            SigningFormat::Stripe => Signer::Stripe(secret.clone()),
            SigningFormat::Github => Signer::Github(secret.clone()),
            SigningFormat::Shopify => Signer::Shopify(secret.clone()),
        })
    }

    pub fn format(&self) -> SigningFormat {
        match self {
            Signer::StandardWebhooks(_) => SigningFormat::StandardWebhooks,
            Signer::Stripe(_) => SigningFormat::Stripe,
            Signer::Github(_) => SigningFormat::Github,
            Signer::Shopify(_) => SigningFormat::Shopify,
        }
    }

    /// The signature header's value for one attempt: `id` is the
    /// `webhook-id` sent with it, `now` the `webhook-timestamp` (seconds).
    pub fn sign(&self, id: &str, now: i64, body: &[u8]) -> String {
        match self {
            Signer::StandardWebhooks(key) => key.sign(id, now, body),
            Signer::Stripe(secret) => crate::stripe::sign(secret.expose(), now, body),
            Signer::Github(secret) => crate::github::sign(secret.expose(), body),
            Signer::Shopify(secret) => crate::shopify::sign(secret.expose(), body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Scheme, Signed, VerifyError, verify};
    use hookgate_core::Headers;

    const BODY: &[u8] = br#"{"id":"evt_1","type":"invoice.paid"}"#;

    fn check(scheme: Scheme, secret: &str, header: &str, value: &str, now: i64) -> Result<(), VerifyError> {
        let mut headers: Headers = [(header, value.as_bytes())].into_iter().collect();
        headers.push("webhook-id", "evt_0");
        headers.push("webhook-timestamp", now.to_string());
        let signed = Signed { headers: &headers, body: BODY, query: b"", now };
        verify(&scheme, &[Secret::new(secret)], 300, &signed)
    }

    /// Each format's signature passes the matching sender scheme's verifier
    /// (checked against the senders' own libraries in `tests/vectors.rs`).
    #[test]
    fn every_format_verifies_as_its_sender() {
        let now = 1_800_000_000;
        let cases = [
            (
                SigningFormat::StandardWebhooks,
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                Scheme::StandardWebhooks(crate::HeaderFamily::Webhook),
            ),
            (SigningFormat::Stripe, "whsec_destination_secret", Scheme::Stripe),
            (SigningFormat::Github, "github-destination-secret", Scheme::Github),
            (SigningFormat::Shopify, "shopify-destination-secret", Scheme::Shopify),
        ];
        for (format, secret, scheme) in cases {
            let signer = Signer::new(format, &Secret::new(secret)).unwrap();
            let value = signer.sign("evt_0", now, BODY);
            assert_eq!(check(scheme.clone(), secret, format.header(), &value, now), Ok(()), "{format}");
            let other = check(scheme, "another-secret-0123456789", format.header(), &value, now);
            assert!(other.is_err(), "{format}: bound to its secret");
        }
    }

    #[test]
    fn formats_parse_by_name() {
        for format in SigningFormat::ALL {
            assert_eq!(format.as_str().parse::<SigningFormat>(), Ok(format));
        }
        assert!("svix".parse::<SigningFormat>().unwrap_err().contains("standard-webhooks, stripe, github, shopify"));
        assert!(Signer::new(SigningFormat::StandardWebhooks, &Secret::new("not base64!")).is_err());
        let signer = Signer::new(SigningFormat::Stripe, &Secret::new("whsec_destination_secret")).unwrap();
        assert_eq!(format!("{signer:?}"), "Signer(stripe, ***)");
    }
}

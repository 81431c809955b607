//! What a source's `verify` table says, typed: the scheme's name, its
//! options, and [`SchemeName::build`], which turns them into the [`Scheme`]
//! that verifies requests, or says which option is wrong. Everything about a
//! scheme's options lives here, beside the schemes, so a new scheme touches
//! this crate only.

use std::fmt;
use std::str::FromStr;

use crate::generic::{Encoding, GenericHmac, HashAlgorithm, PLACEHOLDERS};
use crate::standard_webhooks::HeaderFamily;

/// How a source's requests are verified (`verify.scheme` and its options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scheme {
    None,
    Stripe,
    Github,
    Shopify,
    /// Standard Webhooks, reading one family of header names only, so the
    /// id it verified is the id a preset dedupes on.
    StandardWebhooks(HeaderFamily),
    Acuity,
    Slack,
    /// Twilio signs the URL it called: the public URL of this source, as the
    /// sender sees it (hookgate usually sits behind a proxy).
    Twilio {
        public_url: String,
    },
    Hmac(GenericHmac),
    /// HTTP Basic: the secret is the password.
    Basic {
        username: String,
    },
    /// A shared token in a header or a query parameter: the secret is the token.
    Token(TokenAt),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenAt {
    /// Header name, lowercase.
    Header(String),
    Query(String),
}

/// The names `verify.scheme` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemeName {
    None,
    Stripe,
    Github,
    Shopify,
    StandardWebhooks,
    /// The Standard Webhooks scheme under Svix's `svix-*` header names.
    Svix,
    Acuity,
    Slack,
    Twilio,
    HmacSha256,
    HmacSha512,
    Basic,
    Token,
}

/// A `verify` table's options other than the secret and tolerance, as written.
#[derive(Debug, Clone, Default)]
pub struct SchemeOptions {
    /// hmac-*: the signature's header; token: the token's header.
    pub header: Option<String>,
    /// hmac-*: "hex" (default) or "base64".
    pub encoding: Option<String>,
    /// hmac-*: text before the signature, e.g. "sha256=".
    pub prefix: Option<String>,
    /// hmac-*: a signed timestamp's header; needs `signed_content`.
    pub timestamp_header: Option<String>,
    /// hmac-*: what is signed, from `{timestamp}` and `{body}`; default the body.
    pub signed_content: Option<String>,
    /// basic: the user name (the secret is the password).
    pub username: Option<String>,
    /// token: the query parameter holding the token (instead of `header`).
    pub query: Option<String>,
    /// twilio: this source's URL as the sender calls it.
    pub public_url: Option<String>,
}

/// One thing wrong with a `verify` table: the option it is about (`None`: the
/// table as a whole) and what is wrong.
pub type OptionProblem = (Option<&'static str>, String);

impl SchemeName {
    pub const ALL: [SchemeName; 13] = [
        SchemeName::None,
        SchemeName::Stripe,
        SchemeName::Github,
        SchemeName::Shopify,
        SchemeName::StandardWebhooks,
        SchemeName::Svix,
        SchemeName::Acuity,
        SchemeName::Slack,
        SchemeName::Twilio,
        SchemeName::HmacSha256,
        SchemeName::HmacSha512,
        SchemeName::Basic,
        SchemeName::Token,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchemeName::None => "none",
            SchemeName::Stripe => "stripe",
            SchemeName::Github => "github",
            SchemeName::Shopify => "shopify",
            SchemeName::StandardWebhooks => "standard-webhooks",
            SchemeName::Svix => "svix",
            SchemeName::Acuity => "acuity",
            SchemeName::Slack => "slack",
            SchemeName::Twilio => "twilio",
            SchemeName::HmacSha256 => "hmac-sha256",
            SchemeName::HmacSha512 => "hmac-sha512",
            SchemeName::Basic => "basic",
            SchemeName::Token => "token",
        }
    }

    /// Whether the scheme checks signatures made with keys in the Standard
    /// Webhooks form (`whsec_…` / `whpk_…`), which can be checked at load.
    pub fn takes_webhook_keys(self) -> bool {
        matches!(self, SchemeName::StandardWebhooks | SchemeName::Svix)
    }

    /// The options this scheme reads.
    fn reads(self) -> &'static [&'static str] {
        match self {
            SchemeName::HmacSha256 | SchemeName::HmacSha512 => {
                &["header", "encoding", "prefix", "timestamp_header", "signed_content"]
            }
            SchemeName::Basic => &["username"],
            SchemeName::Token => &["header", "query"],
            SchemeName::Twilio => &["public_url"],
            _ => &[],
        }
    }

    /// The scheme these options describe, or every problem with them. An
    /// option the scheme does not read is a problem too: a misplaced
    /// `header` is a mistake to report, not to ignore.
    pub fn build(self, options: &SchemeOptions) -> Result<Scheme, Vec<OptionProblem>> {
        let mut problems: Vec<OptionProblem> = options
            .given()
            .filter(|field| !self.reads().contains(field))
            .map(|field| (Some(field), format!("the {self} scheme does not use it")))
            .collect();
        let mut need = |field: &'static str, value: &Option<String>| {
            if value.is_none() {
                problems.push((Some(field), format!("missing: the {self} scheme needs it")));
            }
            value.clone()
        };
        let scheme = match self {
            SchemeName::None => Some(Scheme::None),
            SchemeName::Stripe => Some(Scheme::Stripe),
            SchemeName::Github => Some(Scheme::Github),
            SchemeName::Shopify => Some(Scheme::Shopify),
            SchemeName::StandardWebhooks => Some(Scheme::StandardWebhooks(HeaderFamily::Webhook)),
            SchemeName::Svix => Some(Scheme::StandardWebhooks(HeaderFamily::Svix)),
            SchemeName::Acuity => Some(Scheme::Acuity),
            SchemeName::Slack => Some(Scheme::Slack),
            SchemeName::Twilio => need("public_url", &options.public_url).and_then(|url| {
                if url.starts_with("https://") || url.starts_with("http://") {
                    Some(Scheme::Twilio { public_url: url })
                } else {
                    problems.push((Some("public_url"), format!("{url:?} is not an http(s) URL")));
                    None
                }
            }),
            SchemeName::HmacSha256 | SchemeName::HmacSha512 => match generic_hmac(self, options) {
                Ok(generic) => Some(Scheme::Hmac(generic)),
                Err(problem) => {
                    problems.push(problem);
                    None
                }
            },
            SchemeName::Basic => need("username", &options.username).map(|username| Scheme::Basic { username }),
            SchemeName::Token => match (&options.header, &options.query) {
                (Some(header), None) => Some(Scheme::Token(TokenAt::Header(header.to_ascii_lowercase()))),
                (None, Some(query)) => Some(Scheme::Token(TokenAt::Query(query.clone()))),
                _ => {
                    problems.push((None, "the token scheme needs exactly one of header or query".into()));
                    None
                }
            },
        };
        match scheme {
            Some(scheme) if problems.is_empty() => Ok(scheme),
            _ => Err(problems),
        }
    }
}

impl SchemeOptions {
    /// The names of the options that are set.
    fn given(&self) -> impl Iterator<Item = &'static str> + '_ {
        [
            ("header", self.header.is_some()),
            ("encoding", self.encoding.is_some()),
            ("prefix", self.prefix.is_some()),
            ("timestamp_header", self.timestamp_header.is_some()),
            ("signed_content", self.signed_content.is_some()),
            ("username", self.username.is_some()),
            ("query", self.query.is_some()),
            ("public_url", self.public_url.is_some()),
        ]
        .into_iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| name)
    }
}

fn generic_hmac(name: SchemeName, options: &SchemeOptions) -> Result<GenericHmac, OptionProblem> {
    let header =
        options.header.as_ref().ok_or_else(|| (Some("header"), format!("missing: the {name} scheme needs it")))?;
    let encoding = match options.encoding.as_deref() {
        None | Some("hex") => Encoding::Hex,
        Some("base64") => Encoding::Base64,
        Some(other) => return Err((Some("encoding"), format!("{other:?}: expected \"hex\" or \"base64\""))),
    };
    let timestamp_header = options.timestamp_header.as_ref().map(|h| h.to_ascii_lowercase());
    match (&options.signed_content, &timestamp_header) {
        (Some(template), _) => {
            let rest = PLACEHOLDERS.iter().fold(template.clone(), |rest, p| rest.replace(p, ""));
            if rest.contains('{') {
                return Err((Some("signed_content"), "only {timestamp} and {body} may be used".into()));
            }
            if template.contains("{timestamp}") != timestamp_header.is_some() {
                return Err((Some("signed_content"), "{timestamp} and timestamp_header go together".into()));
            }
        }
        // A timestamp that is not signed proves nothing: anyone can change it.
        (None, Some(_)) => {
            return Err((
                Some("timestamp_header"),
                "needs signed_content with {timestamp}: a timestamp that is not signed proves nothing".into(),
            ));
        }
        (None, None) => {}
    }
    Ok(GenericHmac {
        algorithm: if name == SchemeName::HmacSha512 { HashAlgorithm::Sha512 } else { HashAlgorithm::Sha256 },
        header: header.to_ascii_lowercase(),
        encoding,
        prefix: options.prefix.clone().unwrap_or_default(),
        timestamp_header,
        signed_content: options.signed_content.clone(),
    })
}

impl fmt::Display for SchemeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown scheme {0:?} (expected one of {names})", names = SchemeName::ALL.map(SchemeName::as_str).join(", "))]
pub struct ParseSchemeError(String);

impl FromStr for SchemeName {
    type Err = ParseSchemeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        SchemeName::ALL.into_iter().find(|n| n.as_str() == s).ok_or_else(|| ParseSchemeError(s.to_owned()))
    }
}

impl Scheme {
    /// The scheme's name as `verify.scheme` takes it.
    pub fn name(&self) -> SchemeName {
        match self {
            Scheme::None => SchemeName::None,
            Scheme::Stripe => SchemeName::Stripe,
            Scheme::Github => SchemeName::Github,
            Scheme::Shopify => SchemeName::Shopify,
            Scheme::StandardWebhooks(HeaderFamily::Webhook) => SchemeName::StandardWebhooks,
            Scheme::StandardWebhooks(HeaderFamily::Svix) => SchemeName::Svix,
            Scheme::Acuity => SchemeName::Acuity,
            Scheme::Slack => SchemeName::Slack,
            Scheme::Twilio { .. } => SchemeName::Twilio,
            Scheme::Hmac(GenericHmac { algorithm: HashAlgorithm::Sha256, .. }) => SchemeName::HmacSha256,
            Scheme::Hmac(GenericHmac { algorithm: HashAlgorithm::Sha512, .. }) => SchemeName::HmacSha512,
            Scheme::Basic { .. } => SchemeName::Basic,
            Scheme::Token(_) => SchemeName::Token,
        }
    }

    /// Whether the scheme signs a timestamp, so `tolerance` applies.
    pub fn is_timestamped(&self) -> bool {
        match self {
            Scheme::Stripe | Scheme::StandardWebhooks(_) | Scheme::Slack => true,
            Scheme::Hmac(generic) => generic.timestamp_header.is_some(),
            _ => false,
        }
    }

    /// Whether the scheme needs a secret at all.
    pub fn needs_secret(&self) -> bool {
        *self != Scheme::None
    }

    /// The answer to a sender's one-time handshake, for a request that has
    /// already verified: such a request is answered, never stored. Today only
    /// Slack's `url_verification` (answered `{"challenge": …}`).
    pub fn handshake(&self, body: &[u8]) -> Option<String> {
        match self {
            Scheme::Slack => crate::slack::url_verification(body),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(name: SchemeName, options: SchemeOptions) -> Vec<OptionProblem> {
        name.build(&options).unwrap_err()
    }

    #[test]
    fn every_name_builds_with_its_options() {
        let url = || Some("https://h.example/in/t".to_owned());
        for name in SchemeName::ALL {
            let options = match name {
                SchemeName::Twilio => SchemeOptions { public_url: url(), ..Default::default() },
                SchemeName::HmacSha256 | SchemeName::HmacSha512 | SchemeName::Token => {
                    SchemeOptions { header: Some("X-Sig".into()), ..Default::default() }
                }
                SchemeName::Basic => SchemeOptions { username: Some("u".into()), ..Default::default() },
                _ => SchemeOptions::default(),
            };
            assert!(name.build(&options).is_ok(), "{name}");
            assert_eq!(name.as_str().parse::<SchemeName>(), Ok(name));
        }
        assert_eq!(
            SchemeName::Svix.build(&SchemeOptions::default()),
            Ok(Scheme::StandardWebhooks(HeaderFamily::Svix)),
            "svix verifies svix-* headers only"
        );
    }

    #[test]
    fn wrong_options_are_named() {
        let hmac = |o: SchemeOptions| problems(SchemeName::HmacSha256, o);
        assert_eq!(
            hmac(SchemeOptions::default()),
            vec![(Some("header"), "missing: the hmac-sha256 scheme needs it".into())]
        );
        assert_eq!(
            hmac(SchemeOptions {
                header: Some("x".into()),
                timestamp_header: Some("x-ts".into()),
                ..Default::default()
            })[0]
                .0,
            Some("timestamp_header"),
            "an unsigned timestamp proves nothing"
        );
        assert_eq!(
            problems(SchemeName::Acuity, SchemeOptions { username: Some("u".into()), ..Default::default() }),
            vec![(Some("username"), "the acuity scheme does not use it".into())]
        );
        assert_eq!(
            problems(
                SchemeName::Token,
                SchemeOptions { header: Some("x".into()), query: Some("y".into()), ..Default::default() }
            ),
            vec![(None, "the token scheme needs exactly one of header or query".into())]
        );
    }
}

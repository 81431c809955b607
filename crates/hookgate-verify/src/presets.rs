//! Presets: each sender's right defaults in one place — the scheme that
//! verifies it, and the keys its events carry (`preset = "stripe"` in a
//! source). A source's own `verify.scheme` or keys override them.

use std::fmt;
use std::str::FromStr;

use crate::SchemeName;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    Stripe,
    Github,
    Shopify,
    StandardWebhooks,
    Svix,
    Slack,
    Twilio,
    Acuity,
}

impl Preset {
    pub const ALL: [Preset; 8] = [
        Preset::Stripe,
        Preset::Github,
        Preset::Shopify,
        Preset::StandardWebhooks,
        Preset::Svix,
        Preset::Slack,
        Preset::Twilio,
        Preset::Acuity,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Preset::Stripe => "stripe",
            Preset::Github => "github",
            Preset::Shopify => "shopify",
            Preset::StandardWebhooks => "standard-webhooks",
            Preset::Svix => "svix",
            Preset::Slack => "slack",
            Preset::Twilio => "twilio",
            Preset::Acuity => "acuity",
        }
    }

    /// The scheme that verifies this sender.
    pub fn scheme(self) -> SchemeName {
        match self {
            Preset::Stripe => SchemeName::Stripe,
            Preset::Github => SchemeName::Github,
            Preset::Shopify => SchemeName::Shopify,
            Preset::StandardWebhooks => SchemeName::StandardWebhooks,
            Preset::Svix => SchemeName::Svix,
            Preset::Slack => SchemeName::Slack,
            Preset::Twilio => SchemeName::Twilio,
            Preset::Acuity => SchemeName::Acuity,
        }
    }

    /// The sender's own event id: copies of one event carry the same.
    pub fn dedupe_key(self) -> Option<&'static str> {
        match self {
            Preset::Stripe => Some("{json.id}"),
            Preset::Github => Some("{header.x-github-delivery}"),
            Preset::Shopify => Some("{header.x-shopify-event-id}"),
            Preset::StandardWebhooks => Some("{header.webhook-id}"),
            Preset::Svix => Some("{header.svix-id}"),
            Preset::Slack => Some("{json.event_id}"),
            Preset::Twilio => Some("{header.i-twilio-idempotency-token}"),
            // Acuity sends no id: its thin events are ordered and coalesced instead.
            Preset::Acuity => None,
        }
    }

    pub fn order_key(self) -> Option<&'static str> {
        match self {
            Preset::Acuity => Some("{form.id}"),
            _ => None,
        }
    }

    pub fn coalesce_key(self) -> Option<&'static str> {
        match self {
            Preset::Acuity => Some("{form.action}:{form.id}"),
            _ => None,
        }
    }

    /// What kind of event it is, as the sender names it: what a route's `events` globs match.
    pub fn event_type(self) -> Option<&'static str> {
        match self {
            Preset::Stripe | Preset::StandardWebhooks | Preset::Svix => Some("{json.type}"),
            Preset::Github => Some("{header.x-github-event}"),
            Preset::Shopify => Some("{header.x-shopify-topic}"),
            Preset::Acuity => Some("{form.action}"),
            Preset::Slack => Some("{json.event.type}"),
            // Twilio names no event type in what it sends.
            Preset::Twilio => None,
        }
    }
}

impl fmt::Display for Preset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown preset {0:?} (expected one of {names})", names = Preset::ALL.map(Preset::as_str).join(", "))]
pub struct ParsePresetError(String);

impl FromStr for Preset {
    type Err = ParsePresetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Preset::ALL.into_iter().find(|p| p.as_str() == s).ok_or_else(|| ParsePresetError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_every_preset_parses_its_keys() {
        for preset in Preset::ALL {
            assert_eq!(preset.as_str().parse::<Preset>(), Ok(preset));
            assert_eq!(preset.scheme().as_str().parse::<SchemeName>(), Ok(preset.scheme()));
            let keys = [preset.dedupe_key(), preset.order_key(), preset.coalesce_key(), preset.event_type()];
            for key in keys.into_iter().flatten() {
                assert!(key.parse::<hookgate_core::Template>().is_ok(), "{preset}: {key}");
            }
        }
        assert_eq!(
            "mailgun".parse::<Preset>().unwrap_err().to_string(),
            r#"unknown preset "mailgun" (expected one of stripe, github, shopify, standard-webhooks, svix, slack, twilio, acuity)"#
        );
    }

    /// Each preset's event type read off a request shaped as its sender
    /// documents it: the header or body field a route's `events` globs match.
    #[test]
    fn every_preset_reads_the_event_type_its_sender_sends() {
        use hookgate_core::{Headers, RequestView, Template};
        let stripe = br#"{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"invoice.paid"}"#.as_slice();
        let svix = br#"{"type":"user.created","timestamp":"2022-11-03T20:26:10.344522Z","data":{}}"#.as_slice();
        let slack = br#"{"type":"event_callback","event_id":"Ev08MFMKH6","event":{"type":"app_mention"}}"#.as_slice();
        let acuity = b"action=scheduled&id=1234&calendarID=1&appointmentTypeID=2".as_slice();
        type Case<'a> = (Preset, &'a [(&'a str, &'a str)], &'a [u8], Option<&'a str>);
        let cases: [Case; 8] = [
            (Preset::Stripe, &[], stripe, Some("invoice.paid")),
            (Preset::Github, &[("x-github-event", "pull_request")], b"{}", Some("pull_request")),
            (Preset::Shopify, &[("x-shopify-topic", "orders/create")], b"{}", Some("orders/create")),
            (Preset::StandardWebhooks, &[], svix, Some("user.created")),
            (Preset::Svix, &[], svix, Some("user.created")),
            (Preset::Slack, &[], slack, Some("app_mention")),
            (Preset::Acuity, &[], acuity, Some("scheduled")),
            (Preset::Twilio, &[], b"CallSid=CA1&CallStatus=completed", None),
        ];
        for (preset, headers, body, expected) in cases {
            let headers: Headers = headers.iter().map(|(name, value)| (*name, value.as_bytes())).collect();
            let view = RequestView::new(&headers, body, b"", &[]);
            let read = preset.event_type().map(|t| {
                let key = t.parse::<Template>().unwrap().render(&view).unwrap_or_else(|m| panic!("{preset}: {m:?}"));
                key.to_text_lossy()
            });
            assert_eq!(read.as_deref(), expected, "{preset}");
        }
    }
}

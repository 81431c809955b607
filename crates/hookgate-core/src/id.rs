use std::fmt;
use std::str::FromStr;

/// hookgate's own id for a stored event: `evt_` + a UUIDv7 in hex.
///
/// Time-ordered, so ids sort roughly by arrival; prefixed, so an id pasted in
/// a log or a ticket says what it is. It is sent as `webhook-id` on every
/// delivery attempt and replay of the event, so receivers can dedupe on it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventId(String);

const PREFIX: &str = "evt_";

impl EventId {
    /// A new id for an event arriving now: reads the clock and the random source.
    pub fn generate() -> Self {
        EventId(format!("{PREFIX}{}", uuid::Uuid::now_v7().simple()))
    }

    /// The id of an event arriving at `unix_ms`, from given random bits: the
    /// same inputs make the same id (the simulation replays by seed).
    pub fn from_parts(unix_ms: u64, random: [u8; 10]) -> Self {
        let uuid = uuid::Builder::from_unix_timestamp_millis(unix_ms, &random).into_uuid();
        EventId(format!("{PREFIX}{}", uuid.simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an event id (expected evt_ followed by 32 hex digits): {0:?}")]
pub struct ParseEventIdError(String);

impl FromStr for EventId {
    type Err = ParseEventIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix(PREFIX).ok_or_else(|| ParseEventIdError(s.to_owned()))?;
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(EventId(s.to_ascii_lowercase()))
        } else {
            Err(ParseEventIdError(s.to_owned()))
        }
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// hookgate's id for one delivery of an event to one destination: `dlv_` +
/// a UUIDv7 in hex. Sent as `hookgate-delivery-id` (the event's
/// `webhook-id` stays the event's: an app dedupes on that).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeliveryId(String);

const DELIVERY_PREFIX: &str = "dlv_";

impl DeliveryId {
    pub fn generate() -> Self {
        DeliveryId(format!("{DELIVERY_PREFIX}{}", uuid::Uuid::now_v7().simple()))
    }

    /// From a time and given random bits: the same inputs make the same id.
    pub fn from_parts(unix_ms: u64, random: [u8; 10]) -> Self {
        let uuid = uuid::Builder::from_unix_timestamp_millis(unix_ms, &random).into_uuid();
        DeliveryId(format!("{DELIVERY_PREFIX}{}", uuid.simple()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a delivery id (expected dlv_ followed by 32 hex digits): {0:?}")]
pub struct ParseDeliveryIdError(String);

impl FromStr for DeliveryId {
    type Err = ParseDeliveryIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let hex = s.strip_prefix(DELIVERY_PREFIX).ok_or_else(|| ParseDeliveryIdError(s.to_owned()))?;
        if hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(DeliveryId(s.to_ascii_lowercase()))
        } else {
            Err(ParseDeliveryIdError(s.to_owned()))
        }
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_round_trip_and_sort_by_time() {
        let a = EventId::generate();
        let b = EventId::generate();
        assert_eq!(a.as_str().parse::<EventId>().unwrap(), a);
        assert!(a < b, "{a} should sort before {b}");
    }

    #[test]
    fn delivery_ids_round_trip_and_are_not_event_ids() {
        let d = DeliveryId::generate();
        assert_eq!(d.as_str().parse::<DeliveryId>().unwrap(), d);
        assert!(d.as_str().parse::<EventId>().is_err());
        assert!(EventId::generate().as_str().parse::<DeliveryId>().is_err());
    }

    #[test]
    fn rejects_foreign_ids() {
        assert!("evt_123".parse::<EventId>().is_err());
        assert!("msg_0192f3a4b5c6d7e8f90a1b2c3d4e5f60".parse::<EventId>().is_err());
        assert!("evt_0192f3a4b5c6d7e8f90a1b2c3d4e5fzz".parse::<EventId>().is_err());
    }
}

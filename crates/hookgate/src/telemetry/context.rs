//! W3C trace context (`traceparent`): one trace per event, from ingest
//! through every attempt however much later, on whichever instance.
//!
//! At ingest an event gets the context of its ingest span: the sender's
//! trace continued when it sent a valid `traceparent`, a new one otherwise.
//! It is stored with the event; each attempt is a child of that span, and
//! the app receives the attempt's own `traceparent`, so its spans join the
//! same trace.

/// A span's place in a trace: what a `traceparent` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// Whether the trace is recorded (the `sampled` flag).
    pub sampled: bool,
}

impl TraceContext {
    /// Reads a `traceparent` header (version `00`, or a later version's first
    /// four fields, as the W3C spec asks). `None` for anything malformed,
    /// including the all-zero ids the spec forbids.
    pub fn parse(header: &[u8]) -> Option<TraceContext> {
        let text = std::str::from_utf8(header).ok()?.trim();
        let mut parts = text.split('-');
        let (version, trace, span, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let version = lower_hex::<1>(version)?[0];
        // Version ff is invalid; version 00 has exactly four fields; a later one may have more.
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let trace_id = lower_hex::<16>(trace)?;
        let span_id = lower_hex::<8>(span)?;
        let flags = lower_hex::<1>(flags)?[0];
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The `traceparent` header naming this span.
    pub fn header(&self) -> String {
        let flags = if self.sampled { "01" } else { "00" };
        format!("00-{}-{}-{flags}", hex::encode(self.trace_id), hex::encode(self.span_id))
    }

    /// A child span of this one: same trace, a new span id.
    pub fn child(&self, span_id: [u8; 8]) -> TraceContext {
        TraceContext { span_id, ..*self }
    }

    /// The trace id as 32 lowercase hex digits (what logs and collectors show).
    pub fn trace_hex(&self) -> String {
        hex::encode(self.trace_id)
    }
}

/// The context of an event's ingest span: a child of the sender's span when
/// it sent a valid `traceparent` (its trace and its sampling decision kept),
/// else the root of a new trace, recorded when its id falls under
/// `sample_ratio`. Also the sender's span, the ingest span's parent.
pub fn for_ingest(
    sender: Option<&[u8]>,
    sample_ratio: f64,
    random: impl FnOnce() -> ([u8; 16], [u8; 8]),
) -> (TraceContext, Option<[u8; 8]>) {
    let (trace_id, span_id) = random();
    let span_id = nonzero(span_id);
    match sender.and_then(TraceContext::parse) {
        Some(parent) => (parent.child(span_id), Some(parent.span_id)),
        None => {
            let trace_id = if trace_id == [0; 16] { [1; 16] } else { trace_id };
            (TraceContext { trace_id, span_id, sampled: sampled_by_ratio(&trace_id, sample_ratio) }, None)
        }
    }
}

/// An event's ingest span, from the `traceparent` stored with it; an event
/// stored without one (before traces were kept) gets [`for_untraced_event`]'s.
pub fn of_event(stored: Option<&str>, event_id: &str) -> TraceContext {
    stored.and_then(|t| TraceContext::parse(t.as_bytes())).unwrap_or_else(|| for_untraced_event(event_id))
}

/// The trace of an event stored without one (before traces were kept): a
/// trace id made from its id, so its attempts still share one trace.
pub fn for_untraced_event(event_id: &str) -> TraceContext {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(event_id.as_bytes());
    let mut trace_id = [0; 16];
    trace_id.copy_from_slice(&digest[..16]);
    let mut span_id = [0; 8];
    span_id.copy_from_slice(&digest[16..24]);
    TraceContext { trace_id, span_id: nonzero(span_id), sampled: true }
}

/// OpenTelemetry's `TraceIdRatioBased`: recorded when the trace id's last 8
/// bytes, read as a number, fall under the ratio of the range, so every
/// instance decides alike about one trace.
fn sampled_by_ratio(trace_id: &[u8; 16], ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio <= 0.0 || ratio.is_nan() {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    let low = u64::from_be_bytes(trace_id[8..].try_into().expect("8 bytes")) >> 1;
    low < bound
}

fn nonzero(span_id: [u8; 8]) -> [u8; 8] {
    if span_id == [0; 8] { [1; 8] } else { span_id }
}

fn lower_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in digits.chunks_exact(2).enumerate() {
        out[i] = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The W3C Trace Context spec's own example.
    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_and_writes_the_specs_example() {
        let context = TraceContext::parse(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(context.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert!(context.sampled);
        assert_eq!(context.header(), EXAMPLE);
        let unsampled = TraceContext::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
    }

    #[test]
    fn refuses_what_the_spec_refuses() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad.as_bytes()), None, "{bad:?}");
        }
        // A later version may add fields after the four it shares with 00.
        assert!(TraceContext::parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
        assert_eq!(TraceContext::parse(b"\xff\xfe"), None);
    }

    #[test]
    fn ingest_continues_a_senders_trace_and_keeps_its_decision() {
        let ids = || ([7; 16], [9; 8]);
        let (context, parent) = for_ingest(Some(EXAMPLE.as_bytes()), 0.0, ids);
        assert_eq!(context.trace_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id, [9; 8]);
        assert!(context.sampled, "the sender's decision, not the ratio");
        assert_eq!(parent, Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]));
        let (fresh, parent) = for_ingest(Some(b"garbage"), 1.0, ids);
        assert_eq!((fresh.trace_id, fresh.span_id, fresh.sampled, parent), ([7; 16], [9; 8], true, None));
        let (unsampled, _) = for_ingest(None, 0.0, ids);
        assert!(!unsampled.sampled);
    }

    #[test]
    fn the_ratio_samples_about_its_share_and_alike_everywhere() {
        let mut recorded = 0;
        for n in 0u64..10_000 {
            let mut trace_id = [0; 16];
            trace_id[8..].copy_from_slice(&n.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_be_bytes());
            recorded += u32::from(sampled_by_ratio(&trace_id, 0.25));
            assert_eq!(sampled_by_ratio(&trace_id, 0.25), sampled_by_ratio(&trace_id, 0.25));
        }
        assert!((2_300..2_700).contains(&recorded), "{recorded} of 10000 at 0.25");
    }

    #[test]
    fn an_untraced_event_gets_one_trace_of_its_own() {
        let a = for_untraced_event("evt_1");
        assert_eq!(a, for_untraced_event("evt_1"));
        assert_ne!(a.trace_id, for_untraced_event("evt_2").trace_id);
    }
}

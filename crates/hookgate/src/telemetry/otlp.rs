//! OTLP's trace request (`ExportTraceServiceRequest`) in protobuf, written
//! by hand: the few messages a span needs, each field by its number in
//! opentelemetry-proto's `trace.proto`, `common.proto` and `resource.proto`.
//! The tests decode what this writes with the generated types of
//! `opentelemetry-proto`, the protocol's own.

use super::{Span, SpanKind, Value};

/// Protobuf's wire types.
const VARINT: u32 = 0;
const FIXED64: u32 = 1;
const LEN: u32 = 2;

#[derive(Default)]
struct Writer(Vec<u8>);

impl Writer {
    fn varint(&mut self, mut value: u64) {
        while value >= 0x80 {
            self.0.push((value as u8) | 0x80);
            value >>= 7;
        }
        self.0.push(value as u8);
    }

    fn tag(&mut self, field: u32, wire: u32) {
        self.varint(u64::from(field << 3 | wire));
    }

    fn bytes(&mut self, field: u32, bytes: &[u8]) {
        self.tag(field, LEN);
        self.varint(bytes.len() as u64);
        self.0.extend_from_slice(bytes);
    }

    fn string(&mut self, field: u32, text: &str) {
        self.bytes(field, text.as_bytes());
    }

    fn uint(&mut self, field: u32, value: u64) {
        self.tag(field, VARINT);
        self.varint(value);
    }

    fn fixed64(&mut self, field: u32, value: u64) {
        self.tag(field, FIXED64);
        self.0.extend_from_slice(&value.to_le_bytes());
    }

    /// A nested message, written into its own buffer first for its length.
    fn message(&mut self, field: u32, write: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        write(&mut inner);
        self.bytes(field, &inner.0);
    }
}

/// `KeyValue { string key = 1; AnyValue value = 2; }`, with `AnyValue`'s
/// `string_value = 1`, `bool_value = 2`, `int_value = 3`.
fn key_value(w: &mut Writer, field: u32, key: &str, value: &Value) {
    w.message(field, |kv| {
        kv.string(1, key);
        kv.message(2, |any| match value {
            Value::Text(text) => any.string(1, text),
            Value::Bool(b) => any.uint(2, u64::from(*b)),
            Value::Int(n) => any.uint(3, *n as u64),
        });
    });
}

/// One request holding `spans`, all from one service.
pub fn export_request(service: &[(&str, Value)], spans: &[Span]) -> Vec<u8> {
    let mut request = Writer::default();
    // ExportTraceServiceRequest { repeated ResourceSpans resource_spans = 1; }
    request.message(1, |resource_spans| {
        // ResourceSpans { Resource resource = 1; repeated ScopeSpans scope_spans = 2; }
        resource_spans.message(1, |resource| {
            // Resource { repeated KeyValue attributes = 1; }
            for (key, value) in service {
                key_value(resource, 1, key, value);
            }
        });
        resource_spans.message(2, |scope_spans| {
            // ScopeSpans { InstrumentationScope scope = 1; repeated Span spans = 2; }
            scope_spans.message(1, |scope| {
                scope.string(1, "hookgate");
                scope.string(2, env!("CARGO_PKG_VERSION"));
            });
            for span in spans {
                scope_spans.message(2, |s| write_span(s, span));
            }
        });
    });
    request.0
}

/// `Span`: trace_id = 1, span_id = 2, parent_span_id = 4, name = 5,
/// kind = 6, start_time_unix_nano = 7 (fixed64), end_time_unix_nano = 8,
/// attributes = 9, status = 15 (`Status { message = 2; code = 3 }`), flags = 16.
fn write_span(s: &mut Writer, span: &Span) {
    s.bytes(1, &span.context.trace_id);
    s.bytes(2, &span.context.span_id);
    if let Some(parent) = &span.parent {
        s.bytes(4, parent);
    }
    s.string(5, &span.name);
    s.uint(
        6,
        match span.kind {
            SpanKind::Server => 2,
            SpanKind::Client => 3,
        },
    );
    s.fixed64(7, span.start_unix_nano);
    s.fixed64(8, span.end_unix_nano);
    for (key, value) in &span.attributes {
        key_value(s, 9, key, value);
    }
    s.message(15, |status| match &span.error {
        // STATUS_CODE_ERROR = 2, with the reason.
        Some(message) => {
            status.string(2, message);
            status.uint(3, 2);
        }
        // STATUS_CODE_OK = 1.
        None => status.uint(3, 1),
    });
    // The sampled flag, as the span's W3C trace flags (fixed32 field 16).
    s.tag(16, 5);
    s.0.extend_from_slice(&u32::from(span.context.sampled).to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_as_protobuf_writes_them() {
        // protobuf's encoding guide: 1 → 01, 150 → 96 01, 300 → ac 02.
        for (value, bytes) in [(1u64, vec![0x01]), (150, vec![0x96, 0x01]), (300, vec![0xac, 0x02])] {
            let mut w = Writer::default();
            w.varint(value);
            assert_eq!(w.0, bytes, "{value}");
        }
        let mut w = Writer::default();
        w.uint(1, 150);
        assert_eq!(w.0, [0x08, 0x96, 0x01], "the guide's Test1 message");
        let mut w = Writer::default();
        w.string(2, "testing");
        assert_eq!(w.0, b"\x12\x07testing", "the guide's Test2 message");
    }
}

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS};

/// The sender's credentials: removed at ingest (after verification), never
/// stored, never forwarded, and never read into a key (keys are stored and shown).
pub const CREDENTIALS: &[&str] = &["authorization", "cookie", "proxy-authorization"];

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1), plus
/// those a new request sets for itself (`host`, `content-length`, `expect`)
/// and `accept-encoding` (hookgate's client answers for its own). Removed at
/// ingest, and never forwarded whatever is stored.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "expect",
    "accept-encoding",
];

/// Whether ingest removes `name` (lowercase) before storing: a credential or
/// hop-by-hop. One list for ingest, delivery and config validation.
pub fn never_kept(name: &str) -> bool {
    CREDENTIALS.contains(&name) || HOP_BY_HOP.contains(&name)
}

/// Bytes percent-encoded in a header hookgate makes (`hookgate-order-key`…):
/// controls (NUL, CR, LF…), space, `%` itself, and every byte that is not
/// ASCII. What is left is visible ASCII, sent as it is.
const NOT_AS_IS: &AsciiSet = &CONTROLS.add(b' ').add(b'%');

/// A header value hookgate makes from bytes that may not be sendable as
/// they are (a key with NUL, CR, LF or bytes that are not UTF-8): RFC 3986
/// percent-encoding of [`NOT_AS_IS`]. Every value is encoded the same way, so
/// an app always decodes (`urllib.parse.unquote_to_bytes`, `decodeURIComponent`)
/// and gets the original bytes back; a key of visible ASCII without `%` is
/// unchanged.
pub fn header_text(bytes: &[u8]) -> String {
    percent_encoding::percent_encode(bytes, NOT_AS_IS).to_string()
}

/// A request's headers as they arrived: names lowercased (HTTP names are
/// case-insensitive), values byte for byte (HTTP allows values that are not
/// UTF-8, and hookgate forwards what it received, not a "fixed" copy), in
/// arrival order, repeated names kept.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Vec<u8>)>);

impl Headers {
    pub fn new() -> Self {
        Headers(Vec::new())
    }

    pub fn with_capacity(capacity: usize) -> Self {
        Headers(Vec::with_capacity(capacity))
    }

    /// Append one header; the name is lowercased.
    pub fn push(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    /// The first value of `name` (any case).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// The first value of `name` as text: `Err(NotText)` when it is present but not UTF-8.
    pub fn get_str(&self, name: &str) -> Option<Result<&str, NotText>> {
        self.get(name).map(|v| std::str::from_utf8(v).map_err(|_| NotText))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }

    /// Keep only the headers for which `keep(name)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.0.retain(|(n, _)| keep(n));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes of names and values: what holding these headers costs.
    pub fn byte_len(&self) -> usize {
        self.0.iter().map(|(n, v)| n.len() + v.len()).sum()
    }
}

/// A header value that is not UTF-8 where text was needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotText;

impl<'a> FromIterator<(&'a str, &'a [u8])> for Headers {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a [u8])>>(iter: I) -> Self {
        let mut headers = Headers::new();
        for (name, value) in iter {
            headers.push(name, value);
        }
        headers
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|(n, v)| (n, String::from_utf8_lossy(v)))).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_is_visible_ascii_and_decodes_to_the_original() {
        assert_eq!(header_text(b"cus_1"), "cus_1", "plain keys are unchanged");
        assert_eq!(header_text(b"gid://shopify/Order/1"), "gid://shopify/Order/1");
        assert_eq!(header_text(b"a\x00b\r\nc d%e\xff"), "a%00b%0D%0Ac%20d%25e%FF");
        assert_eq!(header_text("caf\u{e9}".as_bytes()), "caf%C3%A9");
    }

    proptest::proptest! {
        #[test]
        fn header_text_round_trips(bytes: Vec<u8>) {
            let text = header_text(&bytes);
            proptest::prop_assert!(text.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            let back: Vec<u8> = percent_encoding::percent_decode_str(&text).collect();
            proptest::prop_assert_eq!(back, bytes);
        }
    }

    #[test]
    fn names_are_case_insensitive_and_values_bytes() {
        let headers: Headers =
            [("X-Id", b"a".as_slice()), ("x-raw", b"\xff\x00z".as_slice()), ("x-id", b"b")].into_iter().collect();
        assert_eq!(headers.get("x-ID"), Some(b"a".as_slice()), "the first of a repeated name");
        assert_eq!(headers.get("x-raw"), Some(b"\xff\x00z".as_slice()));
        assert_eq!(headers.get_str("x-raw"), Some(Err(NotText)));
        assert_eq!(headers.get_str("x-id"), Some(Ok("a")));
        assert_eq!(headers.get("missing"), None);
        assert_eq!(headers.iter().map(|(n, _)| n).collect::<Vec<_>>(), ["x-id", "x-raw", "x-id"]);
    }
}

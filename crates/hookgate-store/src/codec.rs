//! How an event's headers and warnings are stored, the same on every
//! backend. Headers are bytes (a value need not be UTF-8), so they are kept in
//! a small length-prefixed binary form rather than as JSON text:
//!
//! `1` (format version), then per header: name length (u16, big endian),
//! name, value length (u32, big endian), value.

use hookgate_core::Headers;

use crate::{Result, StoreError};

const VERSION: u8 = 1;

pub fn encode_headers(headers: &Headers) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + headers.len() * 6 + headers.byte_len());
    out.push(VERSION);
    for (name, value) in headers.iter() {
        // Names come from an HTTP request head (bounded far below 64 KiB by
        // the server), values likewise below 4 GiB: the casts cannot truncate.
        debug_assert!(name.len() <= u16::MAX as usize && value.len() <= u32::MAX as usize);
        out.extend_from_slice(&(name.len() as u16).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value);
    }
    out
}

pub fn decode_headers(mut bytes: &[u8]) -> Result<Headers> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("headers: {what}"));
    let (&version, rest) = bytes.split_first().ok_or_else(|| corrupt("empty"))?;
    if version != VERSION {
        return Err(corrupt(&format!("unknown format {version}")));
    }
    bytes = rest;
    let mut headers = Headers::new();
    while !bytes.is_empty() {
        let (name, rest) = take(bytes, 2).ok_or_else(|| corrupt("truncated name"))?;
        let name_len = u16::from_be_bytes([name[0], name[1]]) as usize;
        let (name, rest) = take(rest, name_len).ok_or_else(|| corrupt("truncated name"))?;
        let name = std::str::from_utf8(name).map_err(|_| corrupt("name is not text"))?;
        let (len, rest) = take(rest, 4).ok_or_else(|| corrupt("truncated value"))?;
        let value_len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let (value, rest) = take(rest, value_len).ok_or_else(|| corrupt("truncated value"))?;
        headers.push(name, value);
        bytes = rest;
    }
    Ok(headers)
}

fn take(bytes: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (bytes.len() >= n).then(|| bytes.split_at(n))
}

/// Warnings are text we wrote: a JSON array, `None` when there are none.
pub fn encode_warnings(warnings: &[String]) -> Option<String> {
    (!warnings.is_empty()).then(|| serde_json::to_string(warnings).expect("strings serialize"))
}

pub fn decode_warnings(text: Option<&str>) -> Result<Vec<String>> {
    match text {
        Some(text) => serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("warnings: {e}"))),
        None => Ok(Vec::new()),
    }
}

/// Each route's verdict on an event, kept with it: JSON text we wrote.
pub fn encode_routing(routing: &[crate::RouteVerdict]) -> String {
    serde_json::to_string(routing).expect("verdicts serialize")
}

pub fn decode_routing(text: Option<&str>) -> Result<Vec<crate::RouteVerdict>> {
    match text {
        Some(text) => serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("routing: {e}"))),
        None => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn headers_round_trip_byte_for_byte(
            pairs in proptest::collection::vec(("[a-z0-9-]{1,20}", proptest::collection::vec(any::<u8>(), 0..40)), 0..8)
        ) {
            let headers: Headers = pairs.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
            prop_assert_eq!(decode_headers(&encode_headers(&headers)).unwrap(), headers);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_headers(&bytes);
        }
    }

    #[test]
    fn truncation_is_corruption_not_a_panic() {
        let headers: Headers = [("x-a", b"value".as_slice())].into_iter().collect();
        let encoded = encode_headers(&headers);
        for cut in 0..encoded.len() - 1 {
            if cut == 1 {
                continue; // the version byte alone is a valid empty list
            }
            assert!(decode_headers(&encoded[..cut]).is_err(), "cut at {cut}");
        }
    }
}

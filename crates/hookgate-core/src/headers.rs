use std::fmt;

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

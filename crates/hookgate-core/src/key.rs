use std::fmt;

/// A dedupe, order or coalesce key: bytes, as its template rendered them.
///
/// Not `String`: a header or query value that is not UTF-8 would have to be
/// "fixed" to become text, and two different values would then make one key
/// (a false duplicate, a lost event). Shown as text, with bytes that are not
/// UTF-8 replaced, only where a person reads it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key(Vec<u8>);

impl Key {
    /// Longest key kept as it came. A longer one is replaced by its SHA-256
    /// (`sha256:<hex>`): unique all the same, and small enough for every
    /// index (PostgreSQL refuses a btree row over about 2.7 KB).
    pub const MAX_BYTES: usize = 256;

    /// The key for rendered bytes: themselves, or their digest when too long.
    pub fn bounded(bytes: Vec<u8>) -> Key {
        if bytes.len() <= Self::MAX_BYTES {
            return Key(bytes);
        }
        use sha2::{Digest, Sha256};
        Key(format!("sha256:{}", hex::encode(Sha256::digest(&bytes))).into_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    /// For people: the key as text, bytes that are not UTF-8 replaced.
    pub fn to_text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
}

impl From<Vec<u8>> for Key {
    fn from(bytes: Vec<u8>) -> Self {
        Key(bytes)
    }
}

impl From<&[u8]> for Key {
    fn from(bytes: &[u8]) -> Self {
        Key(bytes.to_vec())
    }
}

impl From<&str> for Key {
    fn from(text: &str) -> Self {
        Key(text.as_bytes().to_vec())
    }
}

impl From<String> for Key {
    fn from(text: String) -> Self {
        Key(text.into_bytes())
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_keys_become_their_digest() {
        let short = Key::bounded(vec![b'a'; Key::MAX_BYTES]);
        assert_eq!(short.as_bytes().len(), Key::MAX_BYTES);
        let long = Key::bounded(vec![b'a'; Key::MAX_BYTES + 1]);
        assert!(long.to_text_lossy().starts_with("sha256:") && long.as_bytes().len() == 71);
        assert_ne!(long, Key::bounded(vec![b'b'; Key::MAX_BYTES + 1]), "still unique");
        assert_eq!(long, Key::bounded(vec![b'a'; Key::MAX_BYTES + 1]), "and stable");
    }
}

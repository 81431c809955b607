//! `hmac-sha256` / `hmac-sha512`: any sender that signs with an HMAC.
//! The signature is in `header`, hex or base64, after an optional `prefix`
//! (`sha256=`). By default the body alone is signed; with `timestamp_header`
//! and `signed_content` (e.g. `"{timestamp}.{body}"`) a timestamp is signed too
//! and checked against `tolerance`.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use hookgate_core::Secret;

use crate::mac::{Hash, equal, tag};
use crate::{Signed, VerifyError, check_tolerance};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashAlgorithm {
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericHmac {
    pub algorithm: HashAlgorithm,
    /// Lowercase header name.
    pub header: String,
    pub encoding: Encoding,
    /// Text before the signature in the header, e.g. `sha256=`; may be empty.
    pub prefix: String,
    pub timestamp_header: Option<String>,
    /// What is signed, with `{timestamp}` and `{body}`; `None` is the body alone.
    pub signed_content: Option<String>,
}

/// The placeholders `signed_content` may use.
pub const PLACEHOLDERS: &[&str] = &["{timestamp}", "{body}"];

impl GenericHmac {
    fn hash(&self) -> Hash {
        match self.algorithm {
            HashAlgorithm::Sha256 => Hash::Sha256,
            HashAlgorithm::Sha512 => Hash::Sha512,
        }
    }

    /// The bytes signed, in parts (the body is not copied): the template
    /// with its placeholders filled, or the body alone.
    fn parts<'a>(&'a self, timestamp: Option<&'a str>, body: &'a [u8]) -> Vec<&'a [u8]> {
        let Some(template) = &self.signed_content else {
            return vec![body];
        };
        let mut parts = Vec::new();
        let mut rest = template.as_str();
        while let Some(at) = rest.find('{') {
            parts.push(&rest.as_bytes()[..at]);
            let tail = &rest[at..];
            if let Some(after) = tail.strip_prefix("{body}") {
                parts.push(body);
                rest = after;
            } else if let Some(after) = tail.strip_prefix("{timestamp}") {
                parts.push(timestamp.unwrap_or_default().as_bytes());
                rest = after;
            } else {
                parts.push(b"{");
                rest = &tail[1..];
            }
        }
        parts.push(rest.as_bytes());
        parts
    }

    pub fn verify(&self, secrets: &[Secret], tolerance_secs: i64, request: &Signed<'_>) -> Result<(), VerifyError> {
        let timestamp = match &self.timestamp_header {
            Some(name) => Some(request.header(name)?.trim()),
            None => None,
        };
        if let Some(timestamp) = timestamp {
            let unix: i64 = timestamp.parse().map_err(|_| VerifyError::Malformed("timestamp is not a number"))?;
            check_tolerance(unix, request.now, tolerance_secs)?;
        }
        let header = request.header(&self.header)?.trim();
        let encoded = header.strip_prefix(self.prefix.as_str()).ok_or(VerifyError::Malformed("prefix missing"))?;
        let given = match self.encoding {
            Encoding::Hex => hex::decode(encoded).map_err(|_| VerifyError::Malformed("signature is not hex"))?,
            Encoding::Base64 => {
                STANDARD.decode(encoded).map_err(|_| VerifyError::Malformed("signature is not base64"))?
            }
        };
        let parts = self.parts(timestamp, request.body);
        let valid = secrets.iter().any(|s| equal(&tag(self.hash(), s.expose().as_bytes(), &parts), &given));
        if valid { Ok(()) } else { Err(VerifyError::BadSignature) }
    }

    /// The header value a sender using this scheme would send.
    pub fn sign(&self, secret: &str, timestamp: Option<&str>, body: &[u8]) -> String {
        let raw = tag(self.hash(), secret.as_bytes(), &self.parts(timestamp, body));
        let encoded = match self.encoding {
            Encoding::Hex => hex::encode(raw),
            Encoding::Base64 => STANDARD.encode(raw),
        };
        format!("{}{encoded}", self.prefix)
    }
}

//! Twilio: `X-Twilio-Signature: <base64>`, HMAC-SHA1 keyed with the auth
//! token over the URL Twilio called followed by every form parameter, sorted
//! by name, as name then value. For JSON bodies Twilio instead puts
//! `bodySHA256=<hex sha256 of the body>` in the URL's query, signs the URL
//! alone, and the body is checked against that hash.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};

use hookgate_core::{Secret, urlencoded};

use crate::mac::{Hash, equal, tag};
use crate::{Signed, VerifyError};

const HEADER: &str = "x-twilio-signature";

/// The URL as Twilio called it: the configured public URL plus the query.
fn called_url(public_url: &str, query: &[u8]) -> Vec<u8> {
    let mut url = public_url.as_bytes().to_vec();
    if !query.is_empty() {
        url.push(b'?');
        url.extend_from_slice(query);
    }
    url
}

/// Form fields Twilio sends, at most: a few dozen. A body of half a million
/// `a&a&…` would otherwise be sorted, field by field, before any check.
const MAX_FIELDS: usize = 1_000;

/// What Twilio signs: the URL, then (for a form body) every parameter sorted.
fn content(url: &[u8], body: &[u8], query: &[u8]) -> Result<Vec<u8>, VerifyError> {
    let mut content = url.to_vec();
    let json = urlencoded::pairs(query).any(|(k, _)| k == b"bodySHA256");
    if !json {
        let mut params: Vec<(Vec<u8>, Vec<u8>)> = urlencoded::pairs(body).take(MAX_FIELDS + 1).collect();
        if params.len() > MAX_FIELDS {
            return Err(VerifyError::Malformed("too many form fields"));
        }
        params.sort();
        for (name, value) in params {
            content.extend_from_slice(&name);
            content.extend_from_slice(&value);
        }
    }
    Ok(content)
}

pub fn verify(public_url: &str, secrets: &[Secret], request: &Signed<'_>) -> Result<(), VerifyError> {
    let given = STANDARD
        .decode(request.header(HEADER)?.trim())
        .map_err(|_| VerifyError::Malformed("signature is not base64"))?;
    let url = called_url(public_url, request.query);
    let signed = content(&url, request.body, request.query)?;
    let valid = secrets.iter().any(|s| equal(&tag(Hash::Sha1, s.expose().as_bytes(), &[&signed]), &given));
    if !valid {
        return Err(VerifyError::BadSignature);
    }
    match request.query_param("bodySHA256") {
        Some(hash) if !equal(&hash.to_ascii_lowercase(), hex::encode(Sha256::digest(request.body)).as_bytes()) => {
            Err(VerifyError::BadSignature)
        }
        _ => Ok(()),
    }
}

/// Sign as Twilio does, for a request to `url` (query included) with a form body.
pub fn sign(auth_token: &str, url: &str, body: &[u8]) -> String {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    let signed = content(url.as_bytes(), body, query.as_bytes()).expect("a sender's own form has few fields");
    STANDARD.encode(tag(Hash::Sha1, auth_token.as_bytes(), &[&signed]))
}

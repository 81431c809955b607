//! For senders that offer no signature: HTTP Basic credentials, or a shared
//! token in a header or the query. Compared in constant time whatever their
//! lengths ([`Secret::matches`]: a password's or token's length is secret too).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use hookgate_core::Secret;

use crate::{Signed, TokenAt, VerifyError};

/// `Authorization: Basic base64(username:password)`; each secret is a password.
pub fn basic(username: &str, passwords: &[Secret], request: &Signed<'_>) -> Result<(), VerifyError> {
    let header = request.header("authorization")?.trim();
    let encoded = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .ok_or(VerifyError::Malformed("expected Basic credentials"))?;
    let given = STANDARD.decode(encoded.trim()).map_err(|_| VerifyError::Malformed("credentials are not base64"))?;
    let valid =
        passwords.iter().any(|password| Secret::new(format!("{username}:{}", password.expose())).matches(&given));
    if valid { Ok(()) } else { Err(VerifyError::BadCredentials) }
}

/// A token in a header or a query parameter; each secret is an accepted token.
pub fn token(at: &TokenAt, tokens: &[Secret], request: &Signed<'_>) -> Result<(), VerifyError> {
    let given = match at {
        TokenAt::Header(name) => request.header(name)?.trim().as_bytes().to_vec(),
        TokenAt::Query(name) => request.query_param(name).ok_or_else(|| VerifyError::MissingQuery(name.clone()))?,
    };
    let valid = tokens.iter().any(|token| token.matches(&given));
    if valid { Ok(()) } else { Err(VerifyError::BadCredentials) }
}

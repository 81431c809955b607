//! The senders' own libraries' signatures (see `vectors/README.md`).

use hookgate_core::{Headers, Secret};
use hookgate_verify::{Scheme, SchemeName, SchemeOptions, Signed, VerifyError, verify};
use serde_json::Value;

const TOLERANCE: i64 = 300;

struct Vector {
    scheme: Scheme,
    made_with: String,
    secret: String,
    headers: Headers,
    body: String,
    query: String,
    now: i64,
}

fn load(text: &str) -> Vec<Vector> {
    let vectors: Vec<Value> = serde_json::from_str(text).expect("vector file is JSON");
    vectors
        .into_iter()
        .map(|v| {
            let name: SchemeName = v["scheme"].as_str().unwrap().parse().unwrap();
            let options =
                SchemeOptions { public_url: v["public_url"].as_str().map(str::to_owned), ..Default::default() };
            let scheme = name.build(&options).unwrap_or_else(|p| panic!("{name}: {p:?}"));
            let headers = v["headers"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str().unwrap().as_bytes()))
                .collect();
            Vector {
                scheme,
                made_with: v["made_with"].as_str().unwrap().to_owned(),
                secret: v["secret"].as_str().unwrap().to_owned(),
                headers,
                body: v["body"].as_str().unwrap().to_owned(),
                query: v["query"].as_str().unwrap_or("").to_owned(),
                now: v["now"].as_i64().unwrap(),
            }
        })
        .collect()
}

fn all() -> Vec<Vector> {
    let mut vectors = load(include_str!("vectors/python.json"));
    vectors.extend(load(include_str!("vectors/node.json")));
    vectors
}

impl Vector {
    fn check(&self, headers: &Headers, body: &str, secret: &str, now: i64) -> Result<(), VerifyError> {
        let request = Signed { headers, body: body.as_bytes(), query: self.query.as_bytes(), now };
        verify(&self.scheme, &[Secret::new(secret)], TOLERANCE, &request)
    }
}

#[test]
fn every_vector_verifies() {
    let vectors = all();
    assert_eq!(vectors.len(), 11, "9 from Python libraries, 2 from GitHub's");
    for v in &vectors {
        assert_eq!(v.check(&v.headers, &v.body, &v.secret, v.now), Ok(()), "{:?} ({})", v.scheme, v.made_with);
        // Rotation: the right secret among others still passes.
        let request = Signed { headers: &v.headers, body: v.body.as_bytes(), query: v.query.as_bytes(), now: v.now };
        let secrets = [Secret::new("whsec_b2xkLXNlY3JldA=="), Secret::new(&v.secret)];
        assert_eq!(verify(&v.scheme, &secrets, TOLERANCE, &request), Ok(()), "{:?} rotation", v.scheme);
    }
}

#[test]
fn tampered_wrong_secret_missing_and_stale_are_refused() {
    for v in all() {
        let what = format!("{:?} ({})", v.scheme, v.made_with);
        let tampered = format!("{}x", v.body);
        assert!(v.check(&v.headers, &tampered, &v.secret, v.now).is_err(), "tampered body passed: {what}");
        let wrong =
            if v.secret.starts_with("whsec_") { "whsec_d3Jvbmctc2VjcmV0".to_owned() } else { format!("{}x", v.secret) };
        assert_eq!(v.check(&v.headers, &v.body, &wrong, v.now), Err(VerifyError::BadSignature), "wrong secret: {what}");
        assert!(
            matches!(v.check(&Headers::new(), &v.body, &v.secret, v.now), Err(VerifyError::MissingHeader(_))),
            "no headers: {what}"
        );
        if v.scheme.is_timestamped() {
            let stale = v.check(&v.headers, &v.body, &v.secret, v.now + TOLERANCE + 1);
            assert_eq!(stale, Err(VerifyError::StaleTimestamp), "stale: {what}");
        }
    }
}

/// hookgate's outbound signing (`destinations[].signing`) makes, byte for
/// byte, the header the sender's own library made for the same secret,
/// timestamp and body: an app that checks with that library (pointed at the
/// destination's secret) accepts what hookgate sends.
#[test]
fn outbound_signing_matches_the_senders_libraries() {
    use hookgate_verify::signing::{Signer, SigningFormat};
    let mut matched = Vec::new();
    for v in all() {
        let format = match &v.scheme {
            Scheme::Stripe => SigningFormat::Stripe,
            Scheme::Github => SigningFormat::Github,
            Scheme::Shopify => SigningFormat::Shopify,
            Scheme::StandardWebhooks(_) if v.secret.starts_with("whsec_") => SigningFormat::StandardWebhooks,
            _ => continue,
        };
        let signer = Signer::new(format, &Secret::new(&v.secret)).unwrap();
        let id = v.headers.get_str("webhook-id").map(Result::unwrap).unwrap_or("unused");
        let made = signer.sign(id, v.now, v.body.as_bytes());
        let theirs = v.headers.get_str(format.header()).unwrap().unwrap();
        assert_eq!(made, theirs, "{format} against {}", v.made_with);
        matched.push(format);
    }
    matched.dedup();
    assert_eq!(matched.len(), 4, "every format met a vector: {matched:?}");
}

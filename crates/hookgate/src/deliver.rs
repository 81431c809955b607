//! The delivery client: the only code in hookgate that sends HTTP requests
//! to destinations. One attempt in, one [`Outcome`] out; what to do next is
//! the dispatcher's decision.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use hookgate_core::headers::header_text;
use hookgate_store::Claim;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};

use crate::clock::{self, Clock};
use crate::config::Destination;
use crate::telemetry::TraceContext;

/// Bytes of a failed response kept for the attempt's error text.
const ERROR_BODY_BYTES: usize = 512;
/// Bytes of any response read at most; a larger answer is cut off (and its
/// connection not reused) rather than held in memory.
const RESPONSE_BODY_BYTES: usize = 64 * 1024;

/// What one attempt came to.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub status: Option<u16>,
    pub error: Option<String>,
    /// The destination's `Retry-After` on a 429 or 503, in milliseconds.
    pub retry_after_ms: Option<u64>,
    pub duration: Duration,
    /// The first bytes of the answer's body (`[storage] keep_response`), 2xx included.
    pub response: Option<bytes::Bytes>,
}

impl Outcome {
    pub fn delivered(&self) -> bool {
        self.status.is_some_and(|s| (200..300).contains(&s))
    }
}

/// Makes one delivery attempt. The dispatcher is generic over it so its loop
/// can be tested on virtual time; [`Client`] is the one real implementation.
/// `trace` is the attempt's own span: the app gets it as its `traceparent`.
pub trait Deliver: Clone + Send + Sync + 'static {
    fn attempt(
        &self,
        destination: &Destination,
        claim: &Claim,
        trace: &TraceContext,
    ) -> impl Future<Output = Outcome> + Send;
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// `webhook-timestamp` and `Retry-After` dates are read against it.
    clock: Arc<dyn Clock>,
    /// Bytes of each answer kept for the attempt's record.
    keep_response: usize,
}

impl Deliver for Client {
    fn attempt(
        &self,
        destination: &Destination,
        claim: &Claim,
        trace: &TraceContext,
    ) -> impl Future<Output = Outcome> + Send {
        self.send(destination, claim, *trace)
    }
}

impl Client {
    /// `keep_response`: bytes of each answer kept (at most [`RESPONSE_BODY_BYTES`] are read).
    pub fn new(clock: Arc<dyn Clock>, keep_response: usize) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            // A redirect would send the event somewhere nobody configured.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("hookgate/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Client { http, clock, keep_response: keep_response.min(RESPONSE_BODY_BYTES) })
    }

    async fn send(&self, destination: &Destination, claim: &Claim, trace: TraceContext) -> Outcome {
        let started = Instant::now();
        let now_ms = self.clock.now_ms();
        let request = self
            .http
            .post(destination.url.clone())
            .timeout(destination.timeout)
            .headers(headers_for(destination, claim, now_ms / 1_000, &trace))
            .body(claim.body.clone());
        match request.send().await {
            Ok(mut response) => {
                let status = response.status().as_u16();
                let retry_after_ms = matches!(status, 429 | 503)
                    .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
                    .flatten()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, clock::system_time(now_ms)));
                // Read the answer's body up to a cap: its start explains a
                // failure and is kept with the attempt, and a body read to its
                // end lets the connection be reused.
                let wanted = ERROR_BODY_BYTES.max(self.keep_response);
                let mut snippet = Vec::new();
                let mut read = 0;
                while read < RESPONSE_BODY_BYTES {
                    match response.chunk().await {
                        Ok(Some(chunk)) => {
                            read += chunk.len();
                            if snippet.len() < wanted {
                                let room = wanted - snippet.len();
                                snippet.extend_from_slice(&chunk[..chunk.len().min(room)]);
                            }
                        }
                        _ => break,
                    }
                }
                let kept = (self.keep_response > 0 && !snippet.is_empty())
                    .then(|| bytes::Bytes::copy_from_slice(&snippet[..snippet.len().min(self.keep_response)]));
                let error = (!(200..300).contains(&status)).then(|| {
                    if let Some(redirect) = redirect_error(status, response.headers()) {
                        return redirect;
                    }
                    snippet.truncate(ERROR_BODY_BYTES);
                    let text = printable(&snippet);
                    format!("HTTP {status}: {}", text.trim()).trim_end_matches([':', ' ']).to_owned()
                });
                Outcome { status: Some(status), error, retry_after_ms, duration: started.elapsed(), response: kept }
            }
            Err(e) => {
                let kind = if e.is_timeout() {
                    "timeout"
                } else if e.is_connect() {
                    "connection failed"
                } else {
                    "request failed"
                };
                // Without the URL: its query may hold the app's own credentials.
                let e = e.without_url();
                Outcome {
                    status: None,
                    error: Some(format!("{kind}: {}", error_chain(&e))),
                    retry_after_ms: None,
                    duration: started.elapsed(),
                    response: None,
                }
            }
        }
    }
}

/// A redirect is a failure, and says where it pointed: following it could
/// send the event (and the app's credentials in `headers`) anywhere the
/// answer names. The usual cause is a URL missing its trailing slash
/// (Django's `APPEND_SLASH`) or `http` answered by a redirect to `https`.
fn redirect_error(status: u16, headers: &HeaderMap) -> Option<String> {
    if !(300..400).contains(&status) {
        return None;
    }
    let location = headers.get(reqwest::header::LOCATION).map(|v| printable(v.as_bytes()));
    let location: String =
        location.as_deref().unwrap_or("nowhere (no Location)").chars().take(ERROR_BODY_BYTES).collect();
    Some(format!(
        "HTTP {status}: redirected to {location}; redirects are not followed (one could send the event anywhere): \
         set the destination's url to where the app wants it"
    ))
}

/// An app's answer as text for the attempt log: bytes that are not UTF-8
/// replaced, control characters (NUL, escape sequences) written out as
/// `\u{…}`, so the log is safe to store anywhere and to print on a terminal.
pub fn printable(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| {
            // Bidirectional overrides and isolates would reorder what a terminal or the console shows.
            let bidi = matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}');
            if (c.is_control() && c != '\n' && c != '\t') || bidi {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The sender's headers, cleaned, plus hookgate's own; `trace` is the
/// attempt's span, sent as `traceparent` (the sender's own, if it sent one,
/// is the parent of the event's trace, not of this request).
pub fn headers_for(destination: &Destination, claim: &Claim, now_unix: i64, trace: &TraceContext) -> HeaderMap {
    let mut headers = HeaderMap::new();
    // The sender's `tracestate` belongs to its trace: kept only when the event continued it.
    let senders_trace = claim.headers.get("traceparent").and_then(TraceContext::parse);
    let tracestate_fits = senders_trace.is_some_and(|sender| sender.trace_id == trace.trace_id);
    for (name, value) in claim.headers.iter() {
        let ours = name.starts_with("webhook-")
            || name.starts_with("hookgate-")
            || name == "traceparent"
            || (name == "tracestate" && !tracestate_fits);
        // The sender's own signature in the format hookgate signs in goes: it would not verify
        // with the destination's secret. Credentials and hop-by-hop headers are never forwarded
        // whatever is stored (ingest already removed them: a second line of defence).
        let replaced = destination.signer.as_ref().is_some_and(|s| s.format().replaces().contains(&name));
        if ours || replaced || hookgate_core::headers::never_kept(name) {
            continue;
        }
        // Byte for byte: a value that is not UTF-8 goes out as it came in.
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::from_bytes(value)) {
            headers.append(name, value);
        }
    }
    // The destination's own headers (its credentials, say) replace a sender's of the same name.
    for (name, value) in &destination.headers {
        if let Ok(mut value) = HeaderValue::from_str(value.expose()) {
            value.set_sensitive(true);
            headers.insert(name.clone(), value);
        }
    }
    // hookgate's own headers are percent-encoded where a byte could not be sent as it is
    // (a key with NUL, CR, LF or bytes that are not UTF-8): an app decodes them and gets the bytes.
    let mut set = |name: &'static str, value: &[u8]| {
        let value = HeaderValue::try_from(header_text(value)).expect("percent-encoded text is a valid header value");
        headers.insert(name, value);
    };
    let id = claim.id.as_str();
    set("webhook-id", id.as_bytes());
    set("webhook-timestamp", now_unix.to_string().as_bytes());
    if let Some(signer) = &destination.signer {
        set(signer.format().header(), signer.sign(id, now_unix, &claim.body).as_bytes());
    }
    set("hookgate-delivery-id", claim.delivery.as_str().as_bytes());
    set("hookgate-source", claim.source.as_bytes());
    set("hookgate-route", claim.route.as_bytes());
    set("hookgate-attempt", claim.attempt.to_string().as_bytes());
    if let Some(order_key) = &claim.order_key {
        set("hookgate-order-key", order_key.as_bytes());
    }
    set("traceparent", trace.header().as_bytes());
    headers
}

/// `Retry-After` is seconds or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<u64> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(seconds.saturating_mul(1_000));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).map_or(0, |d| d.as_millis() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hookgate_core::{EventId, RetryPolicy, Secret};
    use hookgate_verify::signing::{Signer, SigningFormat};

    fn destination(signer: Option<Signer>) -> Destination {
        Destination {
            name: "app".into(),
            url: "http://127.0.0.1:9/".parse().unwrap(),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            signer,
            retry: RetryPolicy { max_attempts: 3, initial_ms: 10, max_ms: 100 },
            headers: vec![(HeaderName::from_static("authorization"), Secret::new("Bearer app-token"))],
            rate_limit: None,
            circuit_breaker: None,
        }
    }

    const TRACE: TraceContext = TraceContext { trace_id: [0x4b; 16], span_id: [0x0f; 8], sampled: true };

    fn claim() -> Claim {
        Claim {
            delivery: hookgate_core::DeliveryId::generate(),
            id: EventId::generate(),
            source: "stripe".into(),
            destination: "app".into(),
            route: "stripe->app".into(),
            order_key: Some("cus_1".into()),
            received_at_ms: 0,
            headers: [
                ("content-type", b"application/json".as_slice()),
                ("host", b"sender.example"),
                ("connection", b"keep-alive"),
                ("content-length", b"2"),
                ("webhook-id", b"msg_from_sender"),
                ("x-custom", b"kept"),
                ("traceparent", b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                ("tracestate", b"vendor=1"),
                ("x-latin1", b"caf\xe9"),
            ]
            .into_iter()
            .collect(),
            body: bytes::Bytes::from_static(b"{}"),
            attempt: 3,
            round_attempt: 3,
            trace: None,
        }
    }

    #[test]
    fn forwards_sender_headers_and_adds_ours() {
        let claim = claim();
        let key = Signer::new(SigningFormat::StandardWebhooks, &Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"))
            .unwrap();
        let headers = headers_for(&destination(Some(key.clone())), &claim, 1_700_000_000, &TRACE);
        let get = |n: &str| headers.get(n).map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(get("content-type").as_deref(), Some("application/json"));
        assert_eq!(get("x-custom").as_deref(), Some("kept"));
        assert_eq!(headers.get("x-latin1").unwrap().as_bytes(), b"caf\xe9", "byte for byte");
        assert_eq!(get("authorization").as_deref(), Some("Bearer app-token"), "the destination's own headers");
        for dropped in ["host", "connection", "content-length"] {
            assert_eq!(get(dropped), None, "{dropped}");
        }
        assert_eq!(get("webhook-id").as_deref(), Some(claim.id.as_str()));
        assert_eq!(get("webhook-timestamp").as_deref(), Some("1700000000"));
        assert_eq!(get("hookgate-attempt").as_deref(), Some("3"));
        assert_eq!(get("hookgate-source").as_deref(), Some("stripe"));
        assert_eq!(get("hookgate-route").as_deref(), Some("stripe->app"));
        assert_eq!(get("hookgate-delivery-id").as_deref(), Some(claim.delivery.as_str()));
        assert_eq!(get("hookgate-order-key").as_deref(), Some("cus_1"));
        assert_eq!(get("traceparent"), Some(TRACE.header()), "the attempt's span, not the sender's");
        assert_eq!(get("tracestate"), None, "the sender's tracestate goes with its trace, which this is not");
        let continued = TraceContext {
            trace_id: [0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36],
            ..TRACE
        };
        let headers = headers_for(&destination(None), &claim, 1, &continued);
        assert_eq!(headers.get("tracestate").unwrap(), "vendor=1", "kept in the sender's own trace");
        let expected = key.sign(claim.id.as_str(), 1_700_000_000, b"{}");
        assert_eq!(get("webhook-signature"), Some(expected));
        let unsigned = headers_for(&destination(None), &claim, 1, &TRACE);
        assert!(unsigned.get("webhook-signature").is_none());
    }

    #[test]
    fn a_destination_signs_in_its_senders_format_and_the_senders_signature_goes() {
        let mut claim = claim();
        claim.headers.push("stripe-signature", "t=1,v1=the-senders");
        claim.headers.push("x-hub-signature", "sha1=the-senders");
        let stripe = Signer::new(SigningFormat::Stripe, &Secret::new("whsec_destination_secret")).unwrap();
        let headers = headers_for(&destination(Some(stripe.clone())), &claim, 1_700_000_000, &TRACE);
        let all: Vec<_> = headers.get_all("stripe-signature").iter().collect();
        assert_eq!(all.len(), 1, "the sender's is replaced, not added to");
        assert_eq!(all[0].to_str().unwrap(), stripe.sign(claim.id.as_str(), 1_700_000_000, b"{}"));
        assert!(all[0].to_str().unwrap().starts_with("t=1700000000,v1="), "a fresh timestamp: the attempt's");
        assert!(headers.get("webhook-signature").is_none(), "one signature, in the format asked for");
        assert_eq!(headers.get("x-hub-signature").unwrap(), "sha1=the-senders", "another format's stays");
        let github = Signer::new(SigningFormat::Github, &Secret::new("github-destination-secret")).unwrap();
        let headers = headers_for(&destination(Some(github)), &claim, 1_700_000_000, &TRACE);
        assert!(headers.get("x-hub-signature").is_none(), "GitHub's SHA-1 signature goes with its SHA-256 one");
        assert!(headers.get("x-hub-signature-256").unwrap().to_str().unwrap().starts_with("sha256="));
        assert_eq!(headers.get("stripe-signature").unwrap(), "t=1,v1=the-senders");
    }

    #[test]
    fn a_redirect_names_where_it_pointed() {
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::LOCATION, HeaderValue::from_static("http://app/webhooks/"));
        let error = redirect_error(301, &headers).unwrap();
        assert!(
            error.starts_with("HTTP 301: redirected to http://app/webhooks/; redirects are not followed"),
            "{error}"
        );
        assert!(redirect_error(302, &HeaderMap::new()).unwrap().contains("nowhere (no Location)"));
        assert_eq!(redirect_error(404, &headers), None);
    }

    #[test]
    fn answers_become_printable_text() {
        assert_eq!(printable(b"bad\x00input\x1b[31m\xff ok\n"), "bad\\u{0}input\\u{1b}[31m\u{fffd} ok\n");
        assert_eq!(printable("abc\u{202e}fed".as_bytes()), "abc\\u{202e}fed", "a bidi override is written out");
    }

    #[test]
    fn reads_retry_after_in_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(parse_retry_after("120", now), Some(120_000));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(parse_retry_after(&later, now), Some(30_000));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(0));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

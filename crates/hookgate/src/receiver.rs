//! A receiving app that records what hookgate delivers: the demo's app and
//! the integration tests' receiver. It answers as a script says (status, how
//! long the work takes), notes every request with its times, and watches for
//! what hookgate promises never happens: two requests for one order key in
//! its hands at once.
//!
//! The work runs in a task of its own, as a real app's would: if hookgate
//! hangs up (or dies) mid-request, the app still finishes what it started.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hookgate_core::Headers;

/// How the app answers one request.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    /// How long the app works before it answers.
    pub work: Duration,
    /// A `Retry-After` to send with the answer.
    pub retry_after: Option<String>,
    /// The answer's body.
    pub body: Vec<u8>,
}

impl From<(u16, Duration)> for Answer {
    fn from((status, work): (u16, Duration)) -> Self {
        Answer { status, work, retry_after: None, body: Vec::new() }
    }
}

/// Decides each answer from the request's headers and body.
pub type Script = Arc<dyn Fn(&Headers, &[u8]) -> Answer + Send + Sync>;
/// An independent check of each request's signature (tests plug a Standard Webhooks library in).
pub type SignatureCheck = Arc<dyn Fn(&HeaderMap, &[u8]) -> bool + Send + Sync>;

/// One request as the app saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub started: Instant,
    pub finished: Instant,
    pub headers: Headers,
    pub body: Vec<u8>,
    pub status: u16,
    /// What the signature check said (true when there is none).
    pub signature_ok: bool,
    webhook_id: String,
    order_key: String,
}

impl Received {
    /// A header as text (bytes that are not UTF-8 replaced); empty when absent.
    pub fn header(&self, name: &str) -> String {
        self.headers.get(name).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
    }
    pub fn webhook_id(&self) -> &str {
        &self.webhook_id
    }
    pub fn order_key(&self) -> &str {
        &self.order_key
    }
    pub fn delivered(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

#[derive(Default)]
struct Log {
    received: Vec<Received>,
    in_flight: HashMap<String, usize>,
    /// Order keys that ever had two requests in the app's hands at once.
    overlaps: Vec<String>,
    max_in_flight_per_key: usize,
    /// Requests the app has begun working on (finished or not).
    started: usize,
}

#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    log: Arc<Mutex<Log>>,
}

struct App {
    log: Arc<Mutex<Log>>,
    script: Script,
    check: Option<SignatureCheck>,
}

impl Receiver {
    /// Start on a free port of 127.0.0.1; any path takes `POST`s.
    pub async fn start(script: Script, check: Option<SignatureCheck>) -> std::io::Result<Receiver> {
        let log = Arc::new(Mutex::new(Log::default()));
        let app = Arc::new(App { log: log.clone(), script, check });
        let router = axum::Router::new().fallback(record).with_state(app);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move { axum::serve(listener, router).await });
        Ok(Receiver { addr, log })
    }

    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    fn log(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Every request finished so far, in the order they finished.
    pub fn received(&self) -> Vec<Received> {
        self.log().received.clone()
    }

    pub fn delivered(&self) -> Vec<Received> {
        self.received().into_iter().filter(Received::delivered).collect()
    }

    /// Requests the app has begun, including those still in its hands.
    pub fn started(&self) -> usize {
        self.log().started
    }

    pub fn overlaps(&self) -> Vec<String> {
        self.log().overlaps.clone()
    }

    /// The most requests of one order key ever in the app's hands at once.
    pub fn max_in_flight_per_key(&self) -> usize {
        self.log().max_in_flight_per_key
    }

    /// The `webhook-id`s of one order key in the order each was first
    /// started (a redelivery repeats an id; it must not jump the queue).
    pub fn first_deliveries(&self, order_key: &str) -> Vec<String> {
        let mut by_start = self.received();
        by_start.sort_by_key(|r| r.started);
        let mut firsts: Vec<String> = Vec::new();
        for r in by_start.iter().filter(|r| r.order_key == order_key) {
            if !firsts.contains(&r.webhook_id) {
                firsts.push(r.webhook_id.clone());
            }
        }
        firsts
    }
}

async fn record(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Response {
    let app = app.clone();
    let work = tokio::spawn(async move {
        let started = Instant::now();
        let mut received = Headers::with_capacity(headers.len());
        for (name, value) in &headers {
            received.push(name.as_str(), value.as_bytes());
        }
        let text = |name: &str| received.get(name).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        let (webhook_id, order_key) = (text("webhook-id"), text("hookgate-order-key"));
        {
            let mut log = app.log.lock().unwrap_or_else(|p| p.into_inner());
            log.started += 1;
            if !order_key.is_empty() {
                let n = log.in_flight.entry(order_key.clone()).or_default();
                *n += 1;
                let n = *n;
                log.max_in_flight_per_key = log.max_in_flight_per_key.max(n);
                if n > 1 {
                    log.overlaps.push(order_key.clone());
                }
            }
        }
        let answer = (app.script)(&received, &body);
        tokio::time::sleep(answer.work).await;
        let signature_ok = app.check.as_ref().is_none_or(|check| check(&headers, &body));
        let mut log = app.log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = log.in_flight.get_mut(&order_key) {
            *n -= 1;
        }
        log.received.push(Received {
            started,
            finished: Instant::now(),
            headers: received,
            body: body.to_vec(),
            status: answer.status,
            signature_ok,
            webhook_id,
            order_key,
        });
        answer
    });
    let Ok(answer) = work.await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match answer.retry_after {
        Some(after) => (status, [(header::RETRY_AFTER, after)], answer.body).into_response(),
        None => (status, answer.body).into_response(),
    }
}

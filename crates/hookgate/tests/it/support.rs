//! Test harness: a real hookgate on port 0 with its own database file, a real
//! receiving app that records what it gets, and helpers to sign and send.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookgate::Server;
pub use hookgate::api::Stats;
use hookgate::config::{Config, Env};
pub use hookgate::receiver::{Answer, Received};
pub use hookgate_core::State;
use serde_json::Value;

pub const SIGNING_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
pub const STRIPE_SECRET: &str = "whsec_stripe_test";
pub const ACUITY_KEY: &str = "acuity_api_key_for_tests";
pub const ADMIN_TOKEN: &str = "test-admin-token";

/// What the receiver answers to one request: a status and how long it works
/// first (a 503 also says `Retry-After: 1`).
pub type Script = Arc<dyn Fn(&hookgate_core::Headers, &[u8]) -> (u16, Duration) + Send + Sync>;

/// The library's recording app, checking every signature with an
/// independent Standard Webhooks library.
#[derive(Clone)]
pub struct Receiver(hookgate::receiver::Receiver);

impl std::ops::Deref for Receiver {
    type Target = hookgate::receiver::Receiver;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

pub async fn receiver(script: Script) -> Receiver {
    receiver_answering(Arc::new(move |headers, body| {
        let (status, work) = script(headers, body);
        let retry_after = (status == 503).then(|| "1".to_owned());
        Answer { status, work, retry_after, body: Vec::new() }
    }))
    .await
}

pub async fn receiver_answering(script: hookgate::receiver::Script) -> Receiver {
    let check: hookgate::receiver::SignatureCheck =
        Arc::new(|headers, body| standardwebhooks::Webhook::new(SIGNING_SECRET).unwrap().verify(body, headers).is_ok());
    Receiver(hookgate::receiver::Receiver::start(script, Some(check)).await.unwrap())
}

pub fn always_ok() -> Script {
    Arc::new(|_, _| (200, Duration::ZERO))
}

impl Receiver {
    /// Per order key, the ids in the order each was first received (a
    /// redelivery after a crash repeats an id; it must not jump the queue).
    pub fn assert_first_deliveries_in_order(&self, sent: &HashMap<String, Vec<String>>) {
        for (order_key, ids) in sent {
            assert_eq!(&self.first_deliveries(order_key), ids, "{order_key}: first deliveries in the order sent");
        }
    }

    /// Wait until `done` holds for what was received, or panic after `limit`.
    pub async fn wait_for(&self, limit: Duration, what: &str, done: impl Fn(&[Received]) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if done(&self.received()) {
                return;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}; received {}", self.received().len());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The standard test config: sources `stripe`, `acuity`, `plain` (no
/// verification, order key from JSON) and `swh` (Standard Webhooks), all to
/// one destination `app`.
pub fn config_text(receiver_url: &str, db: &std::path::Path, extra_destination: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
max_body = "64KiB"

[storage]
url = "sqlite://{db}"

[admin]
token = "{ADMIN_TOKEN}"

[[destinations]]
name = "app"
url = "{receiver_url}"
timeout = "5s"
concurrency = 16
signing_secret = "{SIGNING_SECRET}"
retry = {{ max_attempts = 4, initial = "100ms", max = "400ms" }}
{extra_destination}

[[sources]]
name = "stripe"
destination = "app"
preset = "stripe"
verify = {{ secret = "{STRIPE_SECRET}" }}
order_key = "{{json.data.object.id}}"

[[sources]]
name = "acuity"
destination = "app"
preset = "acuity"
verify = {{ secret = "{ACUITY_KEY}" }}

[[sources]]
name = "plain"
destination = "app"
order_key = "{{json.object}}"
dedupe_key = "{{json.id}}"

[[sources]]
name = "swh"
destination = "app"
preset = "standard-webhooks"
verify = {{ secret = "{SIGNING_SECRET}" }}
"#,
        db = db.display()
    )
}

pub struct TestApp {
    pub server: Option<Server>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    /// Holds the database file; removed when the test ends.
    _dir: tempfile::TempDir,
}

pub async fn spawn_app(receiver: &Receiver) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "");
    spawn_with(dir, &text).await
}

pub async fn spawn_with(dir: tempfile::TempDir, config_text: &str) -> TestApp {
    let config = Config::from_toml(config_text, &Env::default()).expect("test config is valid");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = Server::start(listener, config).await.expect("server starts");
    let addr = server.addr();
    TestApp { server: Some(server), addr, http: reqwest::Client::new(), _dir: dir }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn post(&self, source: &str, headers: &[(&str, String)], body: impl Into<Vec<u8>>) -> (u16, Value) {
        post_with(&self.http, &self.url(&format!("/in/{source}")), headers, body.into()).await
    }

    pub async fn admin(&self, path: &str) -> Value {
        admin_get(&self.http, &self.url(""), path).await
    }

    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.stop().await.unwrap();
        }
    }
}

/// `GET` an admin API path of the hookgate at `base`, with the token; its JSON.
pub async fn admin_get(http: &reqwest::Client, base: &str, path: &str) -> Value {
    let response = http.get(format!("{base}{path}")).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
    assert!(response.status().is_success(), "{path}: {}", response.status());
    response.json().await.unwrap()
}

pub async fn post_with(http: &reqwest::Client, url: &str, headers: &[(&str, String)], body: Vec<u8>) -> (u16, Value) {
    let mut request = http.post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

pub fn stripe_headers(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/json".to_string()),
        ("stripe-signature", hookgate_verify::stripe_sign(STRIPE_SECRET, unix_now(), body)),
    ]
}

pub fn acuity_headers(body: &[u8]) -> Vec<(&'static str, String)> {
    vec![
        ("content-type", "application/x-www-form-urlencoded".to_string()),
        ("x-acuity-signature", hookgate_verify::acuity_sign(ACUITY_KEY, body)),
    ]
}

/// A `hookgate serve` process, killed and reaped when dropped.
pub struct Gateway {
    child: std::process::Child,
    pub base: String,
}

impl Gateway {
    pub fn start(config: &std::path::Path) -> Gateway {
        let port = free_port();
        Gateway::start_on(config, port)
    }

    pub fn start_on(config: &std::path::Path, port: u16) -> Gateway {
        Gateway::spawn(config, port, std::process::Stdio::inherit(), "warn")
    }

    /// Its log (stderr, at INFO) written to `log`, for a test to read.
    pub fn start_logging(config: &std::path::Path, log: &std::path::Path) -> Gateway {
        Gateway::spawn(config, free_port(), std::fs::File::create(log).unwrap().into(), "info")
    }

    fn spawn(config: &std::path::Path, port: u16, stderr: std::process::Stdio, level: &str) -> Gateway {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .args(["serve", "--config"])
            .arg(config)
            .env("HOOKGATE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", level)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Gateway { child, base: format!("http://127.0.0.1:{port}") }
    }

    pub async fn healthy(self, http: &reqwest::Client) -> Self {
        let deadline = Instant::now() + Duration::from_secs(30);
        while http.get(format!("{}/healthz", self.base)).send().await.is_err() {
            assert!(Instant::now() < deadline, "hookgate did not start");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        self
    }

    /// SIGTERM, then wait for the process to exit; its exit code.
    pub fn terminate(mut self) -> Option<i32> {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        self.child.wait().unwrap().code()
    }

    /// The process's peak resident memory so far (`VmHWM`), in bytes.
    pub fn peak_rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmHWM:")).expect("VmHWM in /proc/PID/status");
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A PostgreSQL URL whose connections use a new, empty schema; `None` (the
/// test then passes, saying it skipped) when HOOKGATE_TEST_POSTGRES_URL is unset.
pub async fn postgres_schema_url() -> Option<String> {
    let Ok(url) = std::env::var("HOOKGATE_TEST_POSTGRES_URL") else {
        hookgate_store::conformance::skip("HOOKGATE_TEST_POSTGRES_URL is not set");
        return None;
    };
    let schema = format!("hg_it_{}", uuid::Uuid::now_v7().simple());
    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(connection);
    client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{separator}options=-c%20search_path%3D{schema}"))
}

/// Wait until nothing is pending or delivering (asked of the store directly,
/// through the listing), then return counts taken after that, in which
/// nothing is owed either. The two listings are two snapshots: a delivery
/// in flight at the first and retried (pending again) by the second is in
/// neither, so the counts, one statement's snapshot, have the last word,
/// and while they show one owed the wait goes on.
pub async fn wait_drained(http: &reqwest::Client, base: &str, limit: Duration) -> Stats {
    let deadline = Instant::now() + limit;
    let active = |state: &'static str| {
        let request = http.get(format!("{base}/api/events?state={state}&limit=1")).bearer_auth(ADMIN_TOKEN);
        async move {
            let page: Value = request.send().await.ok()?.json().await.ok()?;
            Some(!page["events"].as_array()?.is_empty())
        }
    };
    loop {
        loop {
            if active("pending").await == Some(false) && active("delivering").await == Some(false) {
                break;
            }
            assert!(Instant::now() < deadline, "the queue did not drain");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let drained_at = hookgate::clock::now_ms();
        let stats = loop {
            if let Ok(response) = http.get(format!("{base}/api/stats")).bearer_auth(ADMIN_TOKEN).send().await
                && let Ok(stats) = response.json::<Stats>().await
                && stats.counted_at_ms.is_some_and(|at| at >= drained_at)
            {
                break stats;
            }
            assert!(Instant::now() < deadline, "no counts after the drain");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let owed = stats.destinations.values().flatten().any(|(state, n)| state.is_active() && *n > 0);
        if !owed {
            return stats;
        }
        assert!(Instant::now() < deadline, "the queue did not drain: {stats:?}");
    }
}

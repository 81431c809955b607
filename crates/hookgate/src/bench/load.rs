//! The load generator: keep-alive HTTP/1.1 connections, each sending signed
//! 1 KiB JSON events one after another (closed loop), or at a fixed rate.
//! Built on hyper's client connection directly, so the generator costs as
//! little as it can: on one machine it shares the CPU with what it measures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;

use super::clock_us;

/// What every event looks like.
pub struct Spec {
    pub path: String,
    /// The HMAC-SHA256 key the source verifies with (`x-signature: sha256=<hex>`).
    pub secret: String,
    /// Order keys to spread events over.
    pub objects: usize,
    /// The share of requests that repeat an event already sent (a sender's retry).
    pub duplicates: f64,
    /// Total body size, about.
    pub body_bytes: usize,
}

/// Counters shared by every connection of a run.
#[derive(Default)]
pub struct Counts {
    pub ok: AtomicU64,
    pub failed: AtomicU64,
}

pub struct Run {
    stop: Arc<AtomicBool>,
    connections: Vec<tokio::task::JoinHandle<Vec<u32>>>,
    pub counts: Arc<Counts>,
    pub started: Instant,
}

/// Start `connections` connections spread over `targets`; each sends at
/// `rate_per_connection` events a second, or as fast as answered when `None`.
pub fn start(targets: &[SocketAddr], connections: usize, spec: Arc<Spec>, rate_per_connection: Option<f64>) -> Run {
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let handles = (0..connections)
        .map(|n| {
            let target = targets[n % targets.len()];
            let (stop, counts, spec) = (stop.clone(), counts.clone(), spec.clone());
            tokio::spawn(async move { connection(target, n, stop, counts, spec, rate_per_connection).await })
        })
        .collect();
    Run { stop, connections: handles, counts, started: Instant::now() }
}

impl Run {
    /// Stop sending; the ack latency of every answered request, in microseconds.
    pub async fn stop(mut self) -> (Vec<u32>, Duration) {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let mut latencies = Vec::new();
        for connection in std::mem::take(&mut self.connections) {
            latencies.extend(connection.await.unwrap_or_default());
        }
        (latencies, elapsed)
    }
}

/// A run dropped without `stop` (the bench interrupted) stops its connections too.
impl Drop for Run {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn connection(
    target: SocketAddr,
    n: usize,
    stop: Arc<AtomicBool>,
    counts: Arc<Counts>,
    spec: Arc<Spec>,
    rate: Option<f64>,
) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(64 * 1024);
    let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let mut next_send = Instant::now();
    let mut sent = 0u64;
    let mut last_id = String::new();
    let pad = "x".repeat(spec.body_bytes.saturating_sub(110));
    'reconnect: while !stop.load(Ordering::Relaxed) {
        let Ok(stream) = tokio::net::TcpStream::connect(target).await else {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, driver)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            continue;
        };
        tokio::spawn(driver);
        while !stop.load(Ordering::Relaxed) {
            if let Some(interval) = interval {
                let now = Instant::now();
                if next_send > now {
                    tokio::time::sleep(next_send - now).await;
                }
                next_send += interval;
            }
            // A retry of the last event, or a new one.
            let repeat = !last_id.is_empty() && rand::random::<f64>() < spec.duplicates;
            if !repeat {
                sent += 1;
                last_id = format!("c{n}-{sent}-{:08x}", rand::random::<u32>());
            }
            let object = rand::random_range(0..spec.objects.max(1));
            let body = format!(r#"{{"id":"{last_id}","object":"o{object}","t":{},"pad":"{pad}"}}"#, clock_us());
            let signature = sign(&spec.secret, body.as_bytes());
            let request = Request::post(spec.path.as_str())
                .header("host", "hookgate")
                .header("content-type", "application/json")
                .header("x-signature", signature)
                .body(Full::new(Bytes::from(body)))
                .expect("a valid request");
            let started = Instant::now();
            if sender.ready().await.is_err() {
                continue 'reconnect;
            }
            match sender.send_request(request).await {
                Ok(response) => {
                    let ok = response.status().is_success();
                    let _ = response.into_body().collect().await;
                    if ok {
                        counts.ok.fetch_add(1, Ordering::Relaxed);
                        latencies.push(started.elapsed().as_micros().min(u32::MAX as u128) as u32);
                    } else {
                        counts.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(_) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    continue 'reconnect;
                }
            }
        }
    }
    latencies
}

fn sign(secret: &str, body: &[u8]) -> String {
    hookgate_verify::GenericHmac {
        algorithm: hookgate_verify::HashAlgorithm::Sha256,
        header: "x-signature".into(),
        encoding: hookgate_verify::Encoding::Hex,
        prefix: "sha256=".into(),
        timestamp_header: None,
        signed_content: None,
    }
    .sign(secret, None, body)
}

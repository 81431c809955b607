//! The receiving app of a bench run: answers 200 at once, counts, and notes
//! each event's end-to-end latency (from the `t` its sender wrote into it).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;

use super::clock_us;

#[derive(Default)]
pub struct Seen {
    pub delivered: AtomicU64,
    /// End-to-end latencies (sent → delivered), microseconds.
    latencies: Mutex<Vec<u32>>,
}

impl Seen {
    /// The latencies noted since the last take.
    pub fn take_latencies(&self) -> Vec<u32> {
        std::mem::take(&mut *self.latencies.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

pub async fn start() -> std::io::Result<(SocketAddr, Arc<Seen>)> {
    let seen = Arc::new(Seen::default());
    let router = axum::Router::new().fallback(receive).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, router).await });
    Ok((addr, seen))
}

async fn receive(State(seen): State<Arc<Seen>>, body: Bytes) -> &'static str {
    seen.delivered.fetch_add(1, Ordering::Relaxed);
    if let Some(sent) = sent_at(&body) {
        let latency = clock_us().saturating_sub(sent).min(u32::MAX as u64) as u32;
        seen.latencies.lock().unwrap_or_else(|p| p.into_inner()).push(latency);
    }
    "ok"
}

/// The `"t":<microseconds>` the load generator wrote, found without parsing the JSON.
fn sent_at(body: &[u8]) -> Option<u64> {
    let at = body.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits: &[u8] = &body[at..body[at..].iter().position(|b| !b.is_ascii_digit()).map_or(body.len(), |n| at + n)];
    std::str::from_utf8(digits).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_send_time() {
        assert_eq!(super::sent_at(br#"{"id":"a","object":"o1","t":123456,"pad":"x"}"#), Some(123_456));
        assert_eq!(super::sent_at(b"{}"), None);
    }
}

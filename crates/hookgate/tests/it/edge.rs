//! The HTTP edge under hostile clients, against the real binary: slow
//! headers, stalled uploads and SIGTERM with both still open.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::*;

fn gateway_config(dir: &std::path::Path, receiver: &Receiver, server: &str) -> std::path::PathBuf {
    let text = config_text(&receiver.url(), &dir.join("hookgate.db"), "")
        .replace("max_body = \"64KiB\"", &format!("max_body = \"64KiB\"\n{server}"));
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// A connection that sends a request head one header at a time, forever.
async fn dribble_headers(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"POST /in/plain HTTP/1.1\r\nHost: hookgate\r\n").await.unwrap();
    stream
}

/// A connection that sends a whole head, promises a body, sends a little and stops.
async fn stall_upload(addr: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /in/plain HTTP/1.1\r\nHost: hookgate\r\nContent-Length: 60000\r\n\r\n{\"id\":")
        .await
        .unwrap();
    stream
}

/// Until the server closes the connection (feeding it one more header line
/// every `every`, for the dribblers): when, and what it said first.
async fn until_closed(mut stream: TcpStream, every: Option<Duration>, limit: Duration) -> (Duration, String) {
    let started = Instant::now();
    let mut said = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let tick = every.unwrap_or(limit);
        tokio::select! {
            read = stream.read(&mut buffer) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => said.extend_from_slice(&buffer[..n]),
            },
            _ = tokio::time::sleep(tick) => {
                if every.is_some() && stream.write_all(b"X-Slow: yes\r\n").await.is_err() {
                    break;
                }
            }
        }
        assert!(started.elapsed() < limit, "still open after {limit:?}");
    }
    (started.elapsed(), String::from_utf8_lossy(&said).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn slow_clients_are_cut_off_and_starve_no_one() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), &receiver, "header_timeout = \"1s\"\nbody_timeout = \"2s\"");
    let http = reqwest::Client::new();
    let gateway = Gateway::start(&config).healthy(&http).await;
    let addr = gateway.base.trim_start_matches("http://").to_owned();

    let mut dribblers = Vec::new();
    for _ in 0..500 {
        let stream = dribble_headers(&addr).await;
        dribblers.push(tokio::spawn(until_closed(stream, Some(Duration::from_millis(300)), Duration::from_secs(10))));
    }
    let mut stalled = Vec::new();
    for _ in 0..50 {
        let stream = stall_upload(&addr).await;
        stalled.push(tokio::spawn(until_closed(stream, None, Duration::from_secs(10))));
    }

    let started = Instant::now();
    let (status, _) = post_with(
        &http,
        &format!("{}/in/plain", gateway.base),
        &[],
        json!({"id": "n1", "object": "o"}).to_string().into_bytes(),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(status, 200);
    assert!(took < Duration::from_secs(1), "a normal request waited {took:?} behind 550 slow ones");

    for dribbler in dribblers {
        let (after, _) = dribbler.await.unwrap();
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(3),
            "a slow head was cut after {after:?}"
        );
    }
    for upload in stalled {
        let (after, said) = upload.await.unwrap();
        assert!(
            after >= Duration::from_millis(1_900) && after < Duration::from_secs(4),
            "a stalled body was cut after {after:?}"
        );
        assert!(said.starts_with("HTTP/1.1 408"), "a stalled body is answered 408: {said:?}");
    }
    let metrics = http.get(format!("{}/metrics", gateway.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"reason="body_timeout""#), "stalled bodies are counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_exits_within_the_grace_despite_stalled_uploads() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = "header_timeout = \"30s\"\nbody_timeout = \"30s\"\nshutdown_grace = \"2s\"";
    let config = gateway_config(dir.path(), &receiver, server);
    let http = reqwest::Client::new();
    let gateway = Gateway::start(&config).healthy(&http).await;
    let addr = gateway.base.trim_start_matches("http://").to_owned();
    let mut open = Vec::new();
    for _ in 0..20 {
        open.push(stall_upload(&addr).await);
        open.push(dribble_headers(&addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let code = tokio::task::spawn_blocking(move || gateway.terminate()).await.unwrap();
    let took = started.elapsed();
    assert_eq!(code, Some(0));
    assert!(took >= Duration::from_millis(1_900), "exited after {took:?}: the grace was not given");
    assert!(took < Duration::from_millis(3_500), "exited after {took:?}: past the 2 s grace");
    drop(open);
}

/// Uploads that promise bodies and send nothing hold no budget: budget is
/// taken as bytes arrive, so they cannot shut out the senders that do send.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promised_bodies_hold_no_budget() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = "max_inflight_bytes = \"256KiB\"\nbody_timeout = \"30s\"";
    let config = gateway_config(dir.path(), &receiver, server);
    let http = reqwest::Client::new();
    let gateway = Gateway::start(&config).healthy(&http).await;
    let addr = gateway.base.trim_start_matches("http://").to_owned();
    let mut promises = Vec::new();
    for _ in 0..50 {
        // 50 × 60 KB promised: far beyond the 256 KiB budget, were it reserved up front.
        promises.push(stall_upload(&addr).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let body = json!({"id": "real", "object": "o", "pad": "x".repeat(50_000)}).to_string();
    let (status, answer) = post_with(&http, &format!("{}/in/plain", gateway.base), &[], body.into_bytes()).await;
    assert_eq!(status, 200, "{answer}");
    drop(promises);
}

/// A client that sends request after request and never reads the answers
/// fills the socket; hookgate's writes then stall, and it hangs up rather
/// than hold the connection for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_client_that_never_reads_is_cut_off() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), &receiver, "header_timeout = \"1s\"");
    let http = reqwest::Client::new();
    let gateway = Gateway::start(&config).healthy(&http).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(gateway.base.trim_start_matches("http://").parse().unwrap()).await.unwrap();
    // Enough answers to fill the kernel's buffers (loopback lets a send buffer grow to megabytes).
    const SENT: usize = 20_000;
    let pipeline = "GET /metrics HTTP/1.1\r\nHost: hookgate\r\n\r\n".repeat(SENT);
    // Written from a task: once hookgate stops reading, so does this write.
    let (mut reader, mut writer) = stream.split();
    let _ = tokio::time::timeout(Duration::from_secs(3), writer.write_all(pipeline.as_bytes())).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let mut answers = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut answers)).await;
    assert!(read.is_ok(), "the connection is closed, so reading ends");
    let answered = String::from_utf8_lossy(&answers).matches("HTTP/1.1 200").count();
    assert!(answered < SENT, "cut off after {answered} of {SENT} answers, not served to the end");
}

/// One request on a keep-alive connection, the answer read whole.
async fn one_request(stream: &mut TcpStream, id: &str) -> String {
    let body = json!({"id": id, "object": id}).to_string();
    let head = format!("POST /in/plain HTTP/1.1\r\nHost: hookgate\r\nContent-Length: {}\r\n\r\n", body.len());
    stream.write_all(format!("{head}{body}").as_bytes()).await.unwrap();
    let mut said = Vec::new();
    let mut buffer = [0u8; 4096];
    // The answer is small: read until its body (JSON) is in.
    while !said.ends_with(b"}") {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(n > 0, "closed before answering");
        said.extend_from_slice(&buffer[..n]);
    }
    String::from_utf8_lossy(&said).into_owned()
}

/// `max_connections`: beyond it a new connection waits (in the kernel's
/// accept queue) and is served as soon as one closes; an idle keep-alive
/// connection is closed after `header_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connections_beyond_the_limit_wait_and_idle_ones_are_closed() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = gateway_config(dir.path(), &receiver, "max_connections = 2\nheader_timeout = \"1500ms\"");
    let gateway = Gateway::start(&config).healthy(&reqwest::Client::new()).await;
    let addr = gateway.base.trim_start_matches("http://").to_owned();
    // healthy()'s own connections may still hold slots: let them go idle and close.
    tokio::time::sleep(Duration::from_millis(1_800)).await;

    let mut first = TcpStream::connect(&addr).await.unwrap();
    let mut second = TcpStream::connect(&addr).await.unwrap();
    assert!(one_request(&mut first, "c1").await.starts_with("HTTP/1.1 200"));
    assert!(one_request(&mut second, "c2").await.starts_with("HTTP/1.1 200"));
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(500), one_request(&mut third, "c3")).await;
    assert!(waiting.is_err(), "a third connection was served beyond max_connections = 2");
    drop(first);
    // The third request was sent already: it is answered once a slot frees.
    let mut said = Vec::new();
    let mut buffer = [0u8; 4096];
    let answered = tokio::time::timeout(Duration::from_secs(3), async {
        while !said.ends_with(b"}") {
            let n = third.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed before answering");
            said.extend_from_slice(&buffer[..n]);
        }
    })
    .await;
    assert!(answered.is_ok(), "the waiting connection was never served");
    assert!(String::from_utf8_lossy(&said).starts_with("HTTP/1.1 200"));

    // `second` has been idle since its answer: closed after header_timeout.
    let (after, _) = until_closed(second, None, Duration::from_secs(5)).await;
    assert!(after < Duration::from_secs(3), "an idle keep-alive connection stayed open {after:?}");
}

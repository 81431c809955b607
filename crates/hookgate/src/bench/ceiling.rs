//! `hookgate bench-ceiling`: the bare HTTP ceiling. The same HTTP server
//! hookgate runs (hyper HTTP/1 with the same limits), answering every request
//! 202 without looking at it: what this machine can do before hookgate does
//! any work.

use axum::http::StatusCode;
use tokio::sync::watch;

use crate::config::Limits;
use crate::serve::serve;

pub async fn run(listen: std::net::SocketAddr) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let router = axum::Router::new().fallback(|| async { StatusCode::ACCEPTED });
    let limits = Limits {
        max_connections: 10_000,
        header_timeout: std::time::Duration::from_secs(10),
        body_timeout: std::time::Duration::from_secs(30),
        max_inflight_bytes: 256 << 20,
        shutdown_grace: std::time::Duration::from_secs(1),
    };
    let (_stop, stopping) = watch::channel(false);
    serve(listener, router, limits, stopping).await;
    Ok(())
}

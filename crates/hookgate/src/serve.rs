//! The HTTP server: accept connections within `max_connections`, serve each
//! with hyper's HTTP/1 (its own timer cuts off a request head that does not
//! arrive within `header_timeout`, and so an idle keep-alive connection too),
//! and stop within `shutdown_grace`: stop accepting, let requests in flight
//! finish, then cut off what is still open (a stalled upload included).
//!
//! HTTP/1.1 only: webhook senders speak it, and a TLS proxy in front of
//! hookgate speaks it to us. Fewer protocols, fewer ways to hold a connection open.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_io_timeout::TimeoutStream;

use crate::config::Limits;

/// Pause after a failed `accept` (out of file descriptors, say) before the next.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// A connection's read buffer, at most: a request head must fit in it (a
/// longer one is answered 431), and each open connection may hold this much
/// while a body streams through. hyper's default (~400 KiB, grown while a
/// body arrives fast) made a thousand uploads hold 400 MiB outside the body budget.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Serve `router` on `listener` until `stop` turns true; returns once every
/// connection has finished or been cut off.
pub async fn serve(listener: TcpListener, router: Router, limits: Limits, mut stop: watch::Receiver<bool>) {
    check_file_limit(limits.max_connections);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(READ_BUFFER_BYTES)
        .keep_alive(true);
    let (closing, close) = watch::channel(false);
    let mut connections = JoinSet::new();
    loop {
        // A free slot first: beyond max_connections, new ones wait in the kernel's accept queue.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the connection semaphore is never closed"),
            _ = stopped(&mut stop) => break,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped(&mut stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(error) => {
                log_accept_error(&error);
                tokio::time::sleep(ACCEPT_RETRY).await;
                continue;
            }
        };
        while connections.try_join_next().is_some() {}
        let _ = stream.set_nodelay(true);
        // A client that stops reading its answers blocks our writes, and then hyper reads no
        // further head, so no header timer runs: a write stuck this long ends the connection.
        let mut stream = TimeoutStream::new(stream);
        stream.set_write_timeout(Some(limits.header_timeout));
        let io = TokioIo::new(Box::pin(stream));
        let connection = builder.serve_connection(io, TowerToHyperService::new(router.clone()));
        let close = close.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut connection = std::pin::pin!(connection);
            let mut close = close;
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = stopped(&mut close) => {
                    // Finish the request in flight, take no other.
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_grace, drained).await.is_err() {
        tracing::warn!(open = connections.len(), "cutting off connections still open at the end of the grace");
        connections.abort_all();
    }
}

/// Descriptors kept free beyond `max_connections`: the database, the
/// destinations' connections, the log, files.
const RESERVED_FILES: u64 = 512;

/// Raise the soft open-file limit to the hard one, and say so if
/// `max_connections` still does not fit: beyond the limit, `accept` fails,
/// and so do deliveries and database connections.
fn check_file_limit(max_connections: usize) {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if (max_connections as u64).saturating_add(RESERVED_FILES) > limit => tracing::warn!(
            max_connections,
            open_file_limit = limit,
            "server.max_connections does not fit in the open-file limit; raise the limit (ulimit -n, \
             LimitNOFILE=) or lower max_connections"
        ),
        Ok(_) => {}
        Err(error) => tracing::debug!(%error, "cannot read the open-file limit"),
    }
}

/// Resolves once the flag turns true (or its sender is gone).
async fn stopped(flag: &mut watch::Receiver<bool>) {
    let _ = flag.wait_for(|stop| *stop).await;
}

fn log_accept_error(error: &io::Error) {
    // Running out of descriptors is worth a warning; a peer resetting before accept is not.
    if matches!(error.kind(), io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset) {
        tracing::debug!(%error, "accept failed");
    } else {
        tracing::warn!(%error, "accept failed; retrying");
    }
}

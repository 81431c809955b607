//! Reading a request body within the edge's limits: its size (`max_body`),
//! the bytes all bodies in memory may hold together (`max_inflight_bytes`),
//! and the time it may take to arrive (`body_timeout`). Budget is taken as
//! bytes arrive — a connection that promises a megabyte and sends nothing
//! holds nothing — and kept until the request is answered, so bodies waiting
//! on a slow store count too: a stalled disk turns into 503s, not into an
//! out-of-memory kill.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a chunk waits for room in the byte budget before the request is
/// told to retry. Short: under memory pressure, the answer must be quick.
const BUDGET_WAIT: Duration = Duration::from_millis(50);

/// Budget taken per byte of body. A stored body exists twice while it waits
/// for the store: as received, and copied into the database driver's buffer
/// (tokio-postgres's send buffer, SQLite's bound blob). Counting both keeps
/// `max_inflight_bytes` true to what the bodies cost.
const COPIES: usize = 2;

pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
    /// One permit per byte of request bodies in memory, at most `max_inflight_bytes`.
    pub budget: Arc<Semaphore>,
}

/// A body, and its share of the budget: given back when both are dropped.
pub struct HeldBody {
    pub bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

pub enum BodyError {
    TooLarge,
    /// The byte budget is spent: too many bodies in memory right now. The
    /// rest of the body is handed back unread, to be [`discard`]ed before the answer.
    Busy(Body),
    Timeout,
    Unreadable(String),
}

/// How long a refused request's body is read and thrown away so the sender
/// can read the answer (a server that answers and closes while the client is
/// still sending shows it a broken pipe, not a 503). Memory is not held: each
/// chunk is dropped as it arrives.
const DISCARD_WAIT: Duration = Duration::from_secs(5);

/// Read what is left of a refused request's body, up to `max_bytes`, and
/// drop it: the "lingering close" of HTTP servers.
pub async fn discard(body: Body, max_bytes: usize) {
    let drain = async {
        let mut body = body;
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, |d| d.len());
            if read > max_bytes {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(DISCARD_WAIT, drain).await;
}

pub async fn read(limits: &BodyLimits, headers: &HeaderMap, body: Body) -> Result<HeldBody, BodyError> {
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limits.max_bytes) {
        return Err(BodyError::TooLarge);
    }
    let deadline = tokio::time::Instant::now() + limits.timeout;
    let mut body = body;
    // The chunks as they arrive (no buffer sized up front, none grown by
    // doubling), joined once at the end.
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut length = 0;
    let mut held: Option<OwnedSemaphorePermit> = None;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::Timeout),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(BodyError::Unreadable(e.to_string())),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else { continue };
        if length + data.len() > limits.max_bytes {
            return Err(BodyError::TooLarge);
        }
        let permits = u32::try_from(data.len() * COPIES).map_err(|_| BodyError::TooLarge)?;
        match tokio::time::timeout(BUDGET_WAIT, limits.budget.clone().acquire_many_owned(permits)).await {
            Ok(permit) => {
                let permit = permit.expect("the budget semaphore is never closed");
                match held.as_mut() {
                    Some(held) => held.merge(permit),
                    None => held = Some(permit),
                }
            }
            Err(_) => return Err(BodyError::Busy(body)),
        }
        length += data.len();
        chunks.push(data);
    }
    let bytes = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.remove(0),
        _ => {
            let mut joined = BytesMut::with_capacity(length);
            chunks.iter().for_each(|chunk| joined.extend_from_slice(chunk));
            joined.freeze()
        }
    };
    Ok(HeldBody { bytes, _budget: held })
}

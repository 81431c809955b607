//! Reading a request body within the edge's limits: its size (`max_body`),
//! the bytes all bodies in memory may hold together (`max_inflight_bytes`),
//! and the time it may take to arrive (`body_timeout`). The budget is held
//! until the request is answered, so bodies waiting on a slow store count too:
//! a stalled disk turns into 503s, not into an out-of-memory kill.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, header};
use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long a request waits for room in the byte budget before it is told to
/// retry. Short: under memory pressure, the answer must be quick.
const BUDGET_WAIT: Duration = Duration::from_millis(50);

pub struct BodyLimits {
    pub max_bytes: usize,
    pub timeout: Duration,
    /// One permit per byte of request bodies in memory, at most `max_inflight_bytes`.
    pub budget: Arc<Semaphore>,
}

/// A body, and its share of the budget: given back when both are dropped.
pub struct HeldBody {
    pub bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

pub enum BodyError {
    TooLarge,
    /// The byte budget is spent: too many bodies in memory right now. The
    /// body is handed back unread, to be [`discard`]ed before the answer.
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
    // A body of unknown length may grow to the limit: reserve that much.
    let reserve = declared.unwrap_or(limits.max_bytes);
    let permits = u32::try_from(reserve).map_err(|_| BodyError::TooLarge)?;
    let budget = match tokio::time::timeout(BUDGET_WAIT, limits.budget.clone().acquire_many_owned(permits)).await {
        Ok(permit) => permit.expect("the budget semaphore is never closed"),
        Err(_) => return Err(BodyError::Busy(body)),
    };
    let collect = async {
        let mut body = body;
        let mut bytes = BytesMut::with_capacity(reserve.min(64 * 1024));
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BodyError::Unreadable(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                if bytes.len() + data.len() > limits.max_bytes {
                    return Err(BodyError::TooLarge);
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(bytes.freeze())
    };
    let bytes = tokio::time::timeout(limits.timeout, collect).await.map_err(|_| BodyError::Timeout)??;
    Ok(HeldBody { bytes, _budget: budget })
}

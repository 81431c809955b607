//! Read queries: single statements on a pooled connection.

use hookgate_core::{EventId, State};
use hookgate_store::{Attempt, EventDetail, EventRecord, ListFilter, Page, Result, StateCount, StoreError};
use tokio_postgres::{Client, Row};

use crate::{parse_id, unavailable};

/// Listing pages hold this many events at most, whatever the caller asks.
pub const MAX_PAGE: usize = 500;

const RECORD_COLUMNS: &str = "rid, id, source, destination, state, received_at, updated_at, dedupe_key, order_key,
     coalesce_key, warnings, duplicates, attempts, due_at, superseded_by";

pub fn decode_headers(text: String) -> Result<Vec<(String, String)>> {
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("headers: {e}")))
}

fn record(row: &Row) -> Result<EventRecord> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let state: State = row.get::<_, String>(4).parse().map_err(|e| corrupt("state", &e))?;
    let warnings: Option<String> = row.get(10);
    Ok(EventRecord {
        id: parse_id(row.get(1))?,
        source: row.get(2),
        destination: row.get(3),
        state,
        received_at_ms: row.get(5),
        updated_at_ms: row.get(6),
        dedupe_key: row.get(7),
        order_key: row.get(8),
        coalesce_key: row.get(9),
        warnings: match warnings {
            Some(text) => serde_json::from_str(&text).map_err(|e| corrupt("warnings", &e))?,
            None => Vec::new(),
        },
        duplicates: row.get::<_, i64>(11) as u64,
        attempts: row.get::<_, i32>(12) as u32,
        next_attempt_at_ms: if state == State::Pending { row.get(13) } else { None },
        superseded_by: row.get::<_, Option<String>>(14).map(parse_id).transpose()?,
    })
}

pub async fn get(c: &Client, id: &EventId) -> Result<Option<EventDetail>> {
    let Some(row) = c
        .query_opt(&format!("SELECT {RECORD_COLUMNS}, headers, body FROM events WHERE id = $1"), &[&id.as_str()])
        .await
        .map_err(unavailable)?
    else {
        return Ok(None);
    };
    let attempts = c
        .query(
            "SELECT attempt, started_at, duration_ms, status, error FROM attempts WHERE event_id = $1 ORDER BY attempt",
            &[&id.as_str()],
        )
        .await
        .map_err(unavailable)?
        .iter()
        .map(|r| Attempt {
            attempt: r.get::<_, i32>(0) as u32,
            started_at_ms: r.get(1),
            duration_ms: r.get(2),
            status: r.get::<_, Option<i32>>(3).map(|s| s as u16),
            error: r.get(4),
        })
        .collect();
    Ok(Some(EventDetail { record: record(&row)?, headers: decode_headers(row.get(15))?, body: row.get(16), attempts }))
}

pub async fn list(c: &Client, filter: &ListFilter) -> Result<Page> {
    let limit = filter.limit.clamp(1, MAX_PAGE);
    let before: Option<i64> = match &filter.cursor {
        Some(cursor) => Some(cursor.parse().map_err(|_| StoreError::Corrupt(format!("bad cursor {cursor:?}")))?),
        None => None,
    };
    let rows = c
        .query(
            &format!(
                "SELECT {RECORD_COLUMNS} FROM events
                 WHERE ($1::text IS NULL OR source = $1) AND ($2::text IS NULL OR state = $2)
                   AND ($3::text IS NULL OR order_key = $3) AND ($4::bigint IS NULL OR rid < $4)
                 ORDER BY rid DESC LIMIT $5"
            ),
            &[&filter.source, &filter.state.map(State::as_str), &filter.order_key, &before, &(limit as i64 + 1)],
        )
        .await
        .map_err(unavailable)?;
    let more = rows.len() > limit;
    let mut events = Vec::with_capacity(limit);
    let mut last_rid = None;
    for row in rows.iter().take(limit) {
        last_rid = Some(row.get::<_, i64>(0));
        events.push(record(row)?);
    }
    Ok(Page { events, next_cursor: if more { last_rid.map(|r| r.to_string()) } else { None } })
}

pub async fn stats(c: &Client) -> Result<Vec<StateCount>> {
    let rows =
        c.query("SELECT source, state, COUNT(*) FROM events GROUP BY source, state", &[]).await.map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            let state = r.get::<_, String>(1).parse().map_err(|e| StoreError::Corrupt(format!("state: {e}")))?;
            Ok(StateCount { source: r.get(0), state, count: r.get::<_, i64>(2) as u64 })
        })
        .collect()
}

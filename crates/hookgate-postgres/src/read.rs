//! Read queries: single statements on a pooled connection.

use deadpool_postgres::ClientWrapper as Client;
use hookgate_core::{EventId, State};
use hookgate_store::{
    Attempt, EventDetail, ListFilter, Page, RawRecord, Result, StateCount, StoreError, codec, page_limit,
};
use tokio_postgres::Row;

use crate::unavailable;

/// The columns a [`RawRecord`] is read from, in its order; `e` is `events`
/// joined with its duplicate count `d`.
const RECORD_COLUMNS: &str = "e.rid, e.id, e.source, e.destination, e.state, e.received_at, e.updated_at, \
     e.dedupe_key, e.order_key, e.coalesce_key, e.warnings, COALESCE(d.n, 0), e.attempts, e.due_at, e.superseded_by";
/// What [`RECORD_COLUMNS`] reads from.
const RECORD_FROM: &str = "events e LEFT JOIN event_duplicates d ON d.event_id = e.id";

fn record(row: &Row) -> RawRecord {
    RawRecord {
        row: row.get(0),
        id: row.get(1),
        source: row.get(2),
        destination: row.get(3),
        state: row.get(4),
        received_at: row.get(5),
        updated_at: row.get(6),
        dedupe_key: row.get(7),
        order_key: row.get(8),
        coalesce_key: row.get(9),
        warnings: row.get(10),
        duplicates: row.get(11),
        attempts: row.get::<_, i32>(12).into(),
        due_at: row.get(13),
        superseded_by: row.get(14),
    }
}

pub async fn get(c: &Client, id: &EventId) -> Result<Option<EventDetail>> {
    let statement = c
        .prepare_cached(&format!("SELECT {RECORD_COLUMNS}, e.headers, e.body FROM {RECORD_FROM} WHERE e.id = $1"))
        .await
        .map_err(unavailable)?;
    let Some(row) = c.query_opt(&statement, &[&id.as_str()]).await.map_err(unavailable)? else {
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
    Ok(Some(EventDetail {
        record: record(&row).parse()?,
        headers: codec::decode_headers(row.get(15))?,
        body: row.get::<_, Vec<u8>>(16).into(),
        attempts,
    }))
}

pub async fn list(c: &Client, filter: &ListFilter) -> Result<Page> {
    let limit = page_limit(filter);
    let statement = c
        .prepare_cached(&format!(
            "SELECT {RECORD_COLUMNS} FROM {RECORD_FROM}
             WHERE ($1::text IS NULL OR e.source = $1) AND ($2::text IS NULL OR e.state = $2)
               AND ($3::bytea IS NULL OR e.order_key = $3) AND ($4::bigint IS NULL OR e.rid < $4)
               AND ($6::bytea IS NULL OR e.dedupe_key = $6)
               AND ($7::bigint IS NULL OR e.received_at >= $7) AND ($8::bigint IS NULL OR e.received_at < $8)
             ORDER BY e.rid DESC LIMIT $5"
        ))
        .await
        .map_err(unavailable)?;
    let rows = c
        .query(
            &statement,
            &[
                &filter.source,
                &filter.state.map(State::as_str),
                &filter.order_key.as_ref().map(|k| k.as_bytes()),
                &filter.cursor.map(|c| c.row()),
                &(limit as i64 + 1),
                &filter.dedupe_key.as_ref().map(|k| k.as_bytes()),
                &filter.since_ms,
                &filter.until_ms,
            ],
        )
        .await
        .map_err(unavailable)?;
    hookgate_store::page(rows.iter().map(record).collect(), limit)
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

//! Queries on the read-only connections.

use hookgate_core::{EventId, State};
use hookgate_store::{
    Attempt, EventDetail, ListFilter, Page, RawRecord, Result, StateCount, StoreError, codec, page_limit,
};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::db_error;

/// The columns a [`RawRecord`] is read from, in its order.
const RECORD_COLUMNS: &str = "rid, id, source, destination, state, received_at, updated_at, dedupe_key, order_key, \
     coalesce_key, warnings, duplicates, attempts, due_at, superseded_by";

fn record(row: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        row: row.get(0)?,
        id: row.get(1)?,
        source: row.get(2)?,
        destination: row.get(3)?,
        state: row.get(4)?,
        received_at: row.get(5)?,
        updated_at: row.get(6)?,
        dedupe_key: row.get(7)?,
        order_key: row.get(8)?,
        coalesce_key: row.get(9)?,
        warnings: row.get(10)?,
        duplicates: row.get(11)?,
        attempts: row.get(12)?,
        due_at: row.get(13)?,
        superseded_by: row.get(14)?,
    })
}

pub fn get(c: &Connection, id: &EventId) -> Result<Option<EventDetail>> {
    let found = c
        .prepare_cached(&format!("SELECT {RECORD_COLUMNS}, headers, body FROM events WHERE id = ?1"))
        .and_then(|mut s| {
            s.query_row([id.as_str()], |row| Ok((record(row)?, row.get::<_, Vec<u8>>(15)?, row.get::<_, Vec<u8>>(16)?)))
                .optional()
        })
        .map_err(db_error)?;
    let Some((raw, headers, body)) = found else {
        return Ok(None);
    };
    let attempts = c
        .prepare_cached(
            "SELECT attempt, started_at, duration_ms, status, error FROM attempts WHERE event_id = ?1 ORDER BY attempt",
        )
        .and_then(|mut s| {
            s.query_map([id.as_str()], |r| {
                Ok(Attempt {
                    attempt: r.get(0)?,
                    started_at_ms: r.get(1)?,
                    duration_ms: r.get(2)?,
                    status: r.get(3)?,
                    error: r.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    Ok(Some(EventDetail {
        record: raw.parse()?,
        headers: codec::decode_headers(&headers)?,
        body: body.into(),
        attempts,
    }))
}

pub fn list(c: &Connection, filter: &ListFilter) -> Result<Page> {
    let limit = page_limit(filter);
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM events
         WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR order_key = ?3)
           AND (?4 IS NULL OR rid < ?4) AND (?6 IS NULL OR dedupe_key = ?6)
           AND (?7 IS NULL OR received_at >= ?7) AND (?8 IS NULL OR received_at < ?8)
         ORDER BY rid DESC LIMIT ?5"
    );
    let rows = c
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(
                params![
                    filter.source,
                    filter.state.map(State::as_str),
                    filter.order_key.as_ref().map(|k| k.as_bytes()),
                    filter.cursor.map(|c| c.row()),
                    limit as i64 + 1,
                    filter.dedupe_key.as_ref().map(|k| k.as_bytes()),
                    filter.since_ms,
                    filter.until_ms,
                ],
                record,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    hookgate_store::page(rows, limit)
}

pub fn stats(c: &Connection) -> Result<Vec<StateCount>> {
    let rows = c
        .prepare_cached("SELECT source, state, COUNT(*) FROM events GROUP BY source, state")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    rows.into_iter()
        .map(|(source, state, count)| {
            let state = state.parse().map_err(|e| StoreError::Corrupt(format!("state: {e}")))?;
            Ok(StateCount { source, state, count: count as u64 })
        })
        .collect()
}

pub fn next_due(c: &Connection, destination: &str, now: i64) -> Result<Option<i64>> {
    if crate::write::is_paused(c, destination)? {
        return Ok(None);
    }
    c.prepare_cached(
        "SELECT MIN(due_at) FROM events
         WHERE destination = ?1 AND head = 1 AND state IN ('pending', 'delivering') AND due_at > ?2",
    )
    .and_then(|mut s| s.query_row(params![destination, now], |r| r.get(0)))
    .map_err(db_error)
}

pub fn paused(c: &Connection) -> Result<Vec<String>> {
    c.prepare_cached("SELECT destination FROM paused ORDER BY destination")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>())
        .map_err(db_error)
}

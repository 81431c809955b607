//! Queries on the read-only connections.

use hookgate_core::{EventId, State};
use hookgate_store::{Attempt, EventDetail, EventRecord, ListFilter, Page, Result, StateCount, StoreError};
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::writer::parse_id;
use crate::{db_error, decode_headers};

/// Listing pages hold this many events at most, whatever the caller asks.
pub const MAX_PAGE: usize = 500;

const RECORD_COLUMNS: &str = "rid, id, source, destination, state, received_at, updated_at, dedupe_key, order_key,
     coalesce_key, warnings, duplicates, attempts, due_at, superseded_by";

fn record(row: &Row<'_>) -> rusqlite::Result<(i64, RawRecord)> {
    Ok((
        row.get(0)?,
        RawRecord {
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
        },
    ))
}

/// A row as SQLite returns it, before its text columns are parsed.
struct RawRecord {
    id: String,
    source: String,
    destination: String,
    state: String,
    received_at: i64,
    updated_at: i64,
    dedupe_key: Option<String>,
    order_key: Option<String>,
    coalesce_key: Option<String>,
    warnings: Option<String>,
    duplicates: i64,
    attempts: u32,
    due_at: Option<i64>,
    superseded_by: Option<String>,
}

impl RawRecord {
    fn parse(self) -> Result<EventRecord> {
        let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
        let state: State = self.state.parse().map_err(|e| corrupt("state", &e))?;
        Ok(EventRecord {
            id: parse_id(self.id)?,
            source: self.source,
            destination: self.destination,
            state,
            received_at_ms: self.received_at,
            updated_at_ms: self.updated_at,
            dedupe_key: self.dedupe_key,
            order_key: self.order_key,
            coalesce_key: self.coalesce_key,
            warnings: match self.warnings {
                Some(text) => serde_json::from_str(&text).map_err(|e| corrupt("warnings", &e))?,
                None => Vec::new(),
            },
            duplicates: self.duplicates as u64,
            attempts: self.attempts,
            next_attempt_at_ms: if state == State::Pending { self.due_at } else { None },
            superseded_by: self.superseded_by.map(parse_id).transpose()?,
        })
    }
}

pub fn get(c: &Connection, id: &EventId) -> Result<Option<EventDetail>> {
    let found = c
        .prepare_cached(&format!("SELECT {RECORD_COLUMNS}, headers, body FROM events WHERE id = ?1"))
        .and_then(|mut s| {
            s.query_row([id.as_str()], |row| {
                Ok((record(row)?.1, row.get::<_, String>(15)?, row.get::<_, Vec<u8>>(16)?))
            })
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
    Ok(Some(EventDetail { record: raw.parse()?, headers: decode_headers(&headers)?, body, attempts }))
}

pub fn list(c: &Connection, filter: &ListFilter) -> Result<Page> {
    let limit = filter.limit.clamp(1, MAX_PAGE);
    let before: Option<i64> = match &filter.cursor {
        Some(cursor) => Some(cursor.parse().map_err(|_| StoreError::Corrupt(format!("bad cursor {cursor:?}")))?),
        None => None,
    };
    let sql = format!(
        "SELECT {RECORD_COLUMNS} FROM events
         WHERE (?1 IS NULL OR source = ?1) AND (?2 IS NULL OR state = ?2) AND (?3 IS NULL OR order_key = ?3)
           AND (?4 IS NULL OR rid < ?4)
         ORDER BY rid DESC LIMIT ?5"
    );
    let rows = c
        .prepare_cached(&sql)
        .and_then(|mut s| {
            s.query_map(
                params![filter.source, filter.state.map(State::as_str), filter.order_key, before, limit as i64 + 1],
                record,
            )?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    let more = rows.len() > limit;
    let mut events = Vec::with_capacity(limit);
    let mut last_rid = None;
    for (rid, raw) in rows.into_iter().take(limit) {
        last_rid = Some(rid);
        events.push(raw.parse()?);
    }
    Ok(Page { events, next_cursor: if more { last_rid.map(|r| r.to_string()) } else { None } })
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
    c.prepare_cached(
        "SELECT MIN(due_at) FROM events
         WHERE destination = ?1 AND head = 1 AND state IN ('pending', 'delivering') AND due_at > ?2",
    )
    .and_then(|mut s| s.query_row(params![destination, now], |r| r.get(0)))
    .map_err(db_error)
}

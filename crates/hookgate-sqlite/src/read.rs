//! Queries on the read-only connections.

use hookgate_core::EventId;
use hookgate_store::query::{self, Dialect, KeyArm, Param, Placeholder};
use hookgate_store::{
    Attempt, Cursor, DeliveryDetail, DeliveryFilter, DeliveryPage, DeliveryRecord, EventDetail, ListFilter, Page,
    RawDelivery, RawRecord, Result, StateCount, StoreError, codec, page_of,
};
use rusqlite::{Connection, OptionalExtension, Row, ToSql, params_from_iter};

use crate::db_error;

/// SQLite's listings: `?n` placeholders; a key's deliveries in three arms,
/// each its own index: those owed (the queue index), those finished and
/// numbered up to the key file's mark (the key file's `filed`, each entry
/// joined back to its row: row, event and key alike, so an entry of a
/// deleted delivery matches nothing), and those numbered past it
/// (`deliveries_finished`: what the key file's last round has not copied,
/// read from the mark on). See `crate::keyfile`.
pub const DIALECT: Dialect = Dialect {
    placeholder: Placeholder::Question,
    key_arms: &[
        KeyArm { table: "deliveries {t}", condition: "{t}.owed = 1" },
        KeyArm {
            // The entry's columns stand for the row's, so the listing's key and
            // cursor bound the key file's primary key.
            table: "(SELECT kf.delivery_rid AS rid, kf.event_rid AS event_rid, kf.order_key AS order_key, kd.id AS id,
                            kd.source AS source, kd.destination AS destination, kd.route AS route,
                            kd.coalesce_key AS coalesce_key, kd.seq AS seq, kd.state AS state,
                            kd.updated_at AS updated_at, kd.attempts AS attempts, kd.round_base AS round_base,
                            kd.due_at AS due_at, kd.head AS head, kd.superseded_by AS superseded_by,
                            kd.owed AS owed, kd.finished_seq AS finished_seq
                     FROM keys.filed kf CROSS JOIN deliveries kd
                         ON kd.rid = kf.delivery_rid AND kd.event_rid = kf.event_rid AND kd.order_key = kf.order_key) {t}",
            condition: concat!("{t}.owed = 0 AND {t}.finished_seq <= ", mark!()),
        },
        KeyArm {
            table: "deliveries {t} INDEXED BY deliveries_finished",
            condition: concat!(finished!("{t}."), " AND {t}.finished_seq > ", mark!(), " AND {t}.owed = 0"),
        },
    ],
};

fn record(row: &Row<'_>) -> rusqlite::Result<RawRecord> {
    Ok(RawRecord {
        row: row.get(0)?,
        id: row.get(1)?,
        source: row.get(2)?,
        received_at: row.get(3)?,
        dedupe_key: row.get(4)?,
        order_key: row.get(5)?,
        coalesce_key: row.get(6)?,
        event_type: row.get(7)?,
        warnings: row.get(8)?,
        duplicates: row.get(9)?,
        last_copy_at: row.get(10)?,
    })
}

fn delivery(row: &Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok(RawDelivery {
        row: row.get(0)?,
        id: row.get(1)?,
        event_row: row.get(2)?,
        event: row.get(3)?,
        source: row.get(4)?,
        destination: row.get(5)?,
        route: row.get(6)?,
        state: row.get(7)?,
        order_key: row.get(8)?,
        coalesce_key: row.get(9)?,
        received_at: row.get(10)?,
        updated_at: row.get(11)?,
        attempts: row.get(12)?,
        due_at: row.get(13)?,
        superseded_by: row.get(14)?,
        last_error: row.get(15)?,
    })
}

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self.0 {
            Param::Int(n) => n.to_sql(),
            Param::Text(text) => text.to_sql(),
            Param::Bytes(bytes) => bytes.to_sql(),
        }
    }
}

/// A [`Param`] bound by rusqlite.
struct Bind<'a>(&'a Param);

/// Run a listing query; each row read on its own (one damaged row is left out, not the page).
fn rows<T>(
    c: &Connection,
    q: &query::Query,
    read: impl Fn(&Row<'_>) -> rusqlite::Result<(Cursor, T)>,
) -> Result<Vec<(Cursor, T)>> {
    c.prepare_cached(&q.sql)
        .and_then(|mut s| s.query_map(params_from_iter(q.params.iter().map(Bind)), read)?.collect())
        .map_err(db_error)
}

/// An event's deliveries, in the order they were made.
fn deliveries_of(c: &Connection, event_rid: i64) -> Result<Vec<DeliveryRecord>> {
    let sql = format!(
        "SELECT {} FROM deliveries d JOIN events e ON e.rid = d.event_rid WHERE d.event_rid = ?1 ORDER BY d.rid",
        query::DELIVERY_COLUMNS
    );
    let raw = c
        .prepare_cached(&sql)
        .and_then(|mut s| s.query_map([event_rid], delivery)?.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_error)?;
    raw.into_iter().map(RawDelivery::parse).collect()
}

pub fn get(c: &Connection, id: &EventId) -> Result<Option<EventDetail>> {
    let found = c
        .prepare_cached(&format!(
            "SELECT {}, e.headers, e.body, e.trace, e.routing FROM events e WHERE e.id = ?1",
            query::EVENT_COLUMNS
        ))
        .and_then(|mut s| {
            s.query_row([id.as_str()], |row| {
                // The columns after EVENT_COLUMNS' eleven.
                Ok((
                    record(row)?,
                    row.get::<_, Vec<u8>>(11)?,
                    row.get::<_, Vec<u8>>(12)?,
                    row.get::<_, Option<String>>(13)?,
                    row.get::<_, Option<String>>(14)?,
                ))
            })
            .optional()
        })
        .map_err(db_error)?;
    let Some((raw, headers, body, trace, routing)) = found else {
        return Ok(None);
    };
    let records = deliveries_of(c, raw.row)?;
    let mut deliveries = Vec::with_capacity(records.len());
    let mut attempts = c
        .prepare_cached(
            "SELECT a.attempt, a.started_at, a.duration_ms, a.status, a.error, a.response
             FROM attempts a JOIN deliveries d ON d.rid = a.delivery_rid
             WHERE d.id = ?1 ORDER BY a.attempt",
        )
        .map_err(db_error)?;
    for record in &records {
        let list = attempts
            .query_map([record.id.as_str()], |r| {
                Ok(Attempt {
                    attempt: r.get(0)?,
                    started_at_ms: r.get(1)?,
                    duration_ms: r.get(2)?,
                    status: r.get(3)?,
                    error: r.get(4)?,
                    response: r.get::<_, Option<Vec<u8>>>(5)?.map(Into::into),
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(db_error)?;
        deliveries.push(DeliveryDetail { record: record.clone(), attempts: list });
    }
    Ok(Some(EventDetail {
        record: raw.parse(&records)?,
        headers: codec::decode_headers(&headers)?,
        body: body.into(),
        trace,
        routing: hookgate_store::RouteVerdict::stored(routing.as_deref(), &records)?,
        deliveries,
    }))
}

pub fn get_delivery(c: &Connection, id: &hookgate_core::DeliveryId) -> Result<Option<DeliveryRecord>> {
    let sql = format!(
        "SELECT {} FROM deliveries d JOIN events e ON e.rid = d.event_rid WHERE d.id = ?1",
        query::DELIVERY_COLUMNS
    );
    let raw =
        c.prepare_cached(&sql).and_then(|mut s| s.query_row([id.as_str()], delivery).optional()).map_err(db_error)?;
    raw.map(RawDelivery::parse).transpose()
}

/// A row's `e.received_at`, for a time-ordered page's cursor. A time that is
/// not an integer (stored damaged: only by hand) is the record's to report,
/// not the page's: a real is taken as SQLite compares it (its whole part),
/// anything else sorts after every number, as SQLite orders it, so the page
/// after it goes on with every event whose time is a number.
fn cursor_time(row: &rusqlite::Row<'_>, column: usize) -> i64 {
    row.get::<_, i64>(column).or_else(|_| row.get::<_, f64>(column).map(|t| t as i64)).unwrap_or(i64::MAX)
}

pub fn list(c: &Connection, filter: &ListFilter) -> Result<Page> {
    let q = query::events(filter, &DIALECT);
    let raw = rows(c, &q, |row| {
        let (rid, at): (i64, i64) = (row.get(0)?, cursor_time(row, query::EVENT_RECEIVED_AT));
        Ok((q.cursor(Cursor::before_row(rid), at), record(row)))
    })?;
    let mut parsed = Vec::with_capacity(raw.len());
    for (at, read) in raw {
        let record = read.map_err(|e| StoreError::Corrupt(e.to_string())).and_then(|raw| {
            let deliveries = deliveries_of(c, raw.row)?;
            raw.parse(&deliveries)
        });
        parsed.push((at, record));
    }
    let (events, next_cursor) = page_of(parsed, q.limit);
    Ok(Page { events, next_cursor })
}

pub fn list_deliveries(c: &Connection, filter: &DeliveryFilter) -> Result<DeliveryPage> {
    let q = query::deliveries(filter, &DIALECT);
    let raw = rows(c, &q, |row| {
        let (rid, event_rid): (i64, i64) = (row.get(0)?, row.get(2)?);
        let at = cursor_time(row, query::DELIVERY_RECEIVED_AT);
        Ok((q.cursor(Cursor::before_pair(event_rid, rid), at), delivery(row)))
    })?;
    let parsed = raw
        .into_iter()
        .map(|(at, read)| (at, read.map_err(|e| StoreError::Corrupt(e.to_string())).and_then(RawDelivery::parse)))
        .collect();
    let (deliveries, next_cursor) = page_of(parsed, q.limit);
    Ok(DeliveryPage { deliveries, next_cursor })
}

pub fn stats(c: &Connection) -> Result<Vec<StateCount>> {
    let rows = c
        .prepare_cached(
            "SELECT g.source, g.destination, g.state, g.n, e.received_at
             FROM (SELECT source, destination, state, COUNT(*) AS n, MIN(event_rid) AS oldest
                   FROM deliveries GROUP BY source, destination, state) g
             LEFT JOIN events e ON e.rid = g.oldest
             UNION ALL
             SELECT source, '', 'unrouted', COUNT(*), MIN(received_at) FROM events WHERE unrouted = 1 GROUP BY source",
        )
        .and_then(|mut s| {
            s.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    rows.into_iter()
        .map(|(source, destination, state, count, oldest_received_ms)| {
            let state = state.parse().map_err(|e| StoreError::Corrupt(format!("state: {e}")))?;
            Ok(StateCount { source, destination, state, count: count as u64, oldest_received_ms })
        })
        .collect()
}

pub fn next_due(c: &Connection, destination: &str, now: i64) -> Result<Option<i64>> {
    if crate::write::is_paused(c, destination)? {
        return Ok(None);
    }
    c.prepare_cached(
        "SELECT MIN(due_at) FROM deliveries
         WHERE destination = ?1 AND head = 1 AND owed = 1 AND due_at > ?2",
    )
    .and_then(|mut s| s.query_row(rusqlite::params![destination, now], |r| r.get(0)))
    .map_err(db_error)
}

pub fn paused(c: &Connection) -> Result<Vec<String>> {
    c.prepare_cached("SELECT destination FROM paused ORDER BY destination")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>())
        .map_err(db_error)
}

#[cfg(test)]
mod tests {
    use hookgate_core::{EventState, Key, State};

    use super::*;

    fn plan(c: &Connection, q: &query::Query) -> String {
        let mut s = c.prepare(&format!("EXPLAIN QUERY PLAN {}", q.sql)).unwrap();
        let rows = s.query_map(params_from_iter(q.params.iter().map(Bind)), |r| r.get::<_, String>(3)).unwrap();
        rows.collect::<rusqlite::Result<Vec<_>>>().unwrap().join("; ")
    }

    /// Every filter a listing offers is served by an index: no plan reads a
    /// table from end to end to find its rows (at 500,000 events, a scan is
    /// most of a second a page, and grows with the table).
    #[test]
    fn every_listing_filter_is_served_by_an_index() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plans.db");
        let mut c = Connection::open(&path).unwrap();
        crate::schema::migrate(&mut c).unwrap();
        let store = crate::keyfile::Store::read(&c).unwrap();
        let _keys = crate::keyfile::KeyFile::open(&path, crate::keyfile::Filing::default(), store).unwrap();
        crate::attach_keys(&c, &crate::keyfile::path_for(&path)).unwrap();
        let key = Some(Key::from("k"));
        let cursor = Some(hookgate_store::Cursor::before_row(1_000));
        let timed = Some(hookgate_store::Cursor::before_pair(1_000, 7).at_time(5));
        let events = [
            ("source", ListFilter { source: Some("s".into()), ..Default::default() }),
            ("order_key", ListFilter { order_key: key.clone(), ..Default::default() }),
            ("order_key, a later page", ListFilter { order_key: key.clone(), cursor, ..Default::default() }),
            ("dedupe_key", ListFilter { dedupe_key: key.clone(), ..Default::default() }),
            ("destination", ListFilter { destination: Some("app".into()), ..Default::default() }),
            ("since", ListFilter { since_ms: Some(1), ..Default::default() }),
            ("until", ListFilter { until_ms: Some(1), ..Default::default() }),
            ("since, a later page", ListFilter { since_ms: Some(1), cursor: timed, ..Default::default() }),
            (
                "since, a cursor from a page in row order",
                ListFilter { since_ms: Some(1), cursor, ..Default::default() },
            ),
            ("source, until", ListFilter { source: Some("s".into()), until_ms: Some(1), ..Default::default() }),
        ];
        let states =
            EventState::ALL.map(|state| (state.as_str(), ListFilter { state: Some(state), ..Default::default() }));
        let deliveries = [
            ("destination", DeliveryFilter { destination: Some("app".into()), ..Default::default() }),
            ("source", DeliveryFilter { source: Some("s".into()), ..Default::default() }),
            ("order_key", DeliveryFilter { order_key: key.clone(), ..Default::default() }),
            ("order_key, a later page", DeliveryFilter { order_key: key.clone(), cursor, ..Default::default() }),
            ("since", DeliveryFilter { since_ms: Some(1), ..Default::default() }),
            ("until", DeliveryFilter { until_ms: Some(1), ..Default::default() }),
            ("until, a later page", DeliveryFilter { until_ms: Some(1), cursor: timed, ..Default::default() }),
            ("source, since", DeliveryFilter { source: Some("s".into()), since_ms: Some(1), ..Default::default() }),
        ];
        let delivery_states =
            State::ALL.map(|state| (state.as_str(), DeliveryFilter { state: Some(state), ..Default::default() }));
        let mut plans = Vec::new();
        for (name, filter) in events.into_iter().chain(states) {
            plans.push((format!("events by {name}"), plan(&c, &query::events(&filter, &DIALECT))));
        }
        for (name, filter) in deliveries.into_iter().chain(delivery_states) {
            plans.push((format!("deliveries by {name}"), plan(&c, &query::deliveries(&filter, &DIALECT))));
        }
        // Every step a search; a listing by order key reads the key file by
        // its primary key (key, then event: a later page starts at its
        // cursor) and the store's finished deliveries from the mark on.
        for (what, plan) in &plans {
            eprintln!("{what}: {plan}");
            let steps: Vec<&str> = plan.split("; ").collect();
            let scans = steps.iter().filter(|step| step.starts_with("SCAN"));
            assert_eq!(scans.count(), 0, "{what} scans a table or an index: {plan}");
            // A time window's page is read off `events_received` in order, never sorted
            // whole; with a source, off the source's index in row order, the window checked.
            if what.contains("since") || what.contains("until") {
                assert!(!plan.contains("TEMP B-TREE"), "{what} sorts its window: {plan}");
            }
            if what.contains("by since") || what.contains("by until") {
                assert!(plan.starts_with("SEARCH e USING INDEX events_received"), "{what}: {plan}");
            }
            let by_key = what.contains("by order_key");
            let key_file = if what.ends_with("a later page") {
                "SEARCH kf USING PRIMARY KEY (order_key=? AND event_rid<?)"
            } else {
                "SEARCH kf USING PRIMARY KEY (order_key=?)"
            };
            assert_eq!(steps.iter().filter(|step| **step == key_file).count(), usize::from(by_key), "{what}: {plan}");
            let unfiled = "INDEX deliveries_finished (finished_seq>?)";
            let from_mark = steps.iter().filter(|step| step.ends_with(unfiled)).count();
            assert_eq!(from_mark, usize::from(by_key), "{what}: {plan}");
        }
    }
}

//! Read queries: single statements on a pooled connection.

use deadpool_postgres::ClientWrapper as Client;
use hookgate_core::EventId;
use hookgate_store::query::{self, Param, Placeholder};
use hookgate_store::{
    Attempt, Cursor, DeliveryDetail, DeliveryFilter, DeliveryPage, DeliveryRecord, EventDetail, ListFilter, Page,
    RawDelivery, RawRecord, Result, RouteVerdict, StateCount, StoreError, codec, page_of,
};
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::unavailable;

/// PostgreSQL's listings: `$n` placeholders; a key's deliveries in two arms
/// by state (the queue index, `deliveries_done_key`).
const DIALECT: query::Dialect = query::Dialect { placeholder: Placeholder::Dollar, key_arms: query::ARMS_BY_STATE };

/// The event columns (`query::EVENT_COLUMNS`) but for the duplicate count,
/// which lives apart from the event row (`event_duplicates`).
fn event_columns() -> String {
    query::EVENT_COLUMNS
        .replace("e.duplicates", "COALESCE((SELECT n FROM event_duplicates x WHERE x.event_id = e.id), 0)")
        .replace("e.last_copy_at", "(SELECT last_at FROM event_duplicates x WHERE x.event_id = e.id)")
}

fn record(row: &Row) -> Result<RawRecord> {
    let corrupt = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    Ok(RawRecord {
        row: row.try_get(0).map_err(corrupt)?,
        id: row.try_get(1).map_err(corrupt)?,
        source: row.try_get(2).map_err(corrupt)?,
        received_at: row.try_get(3).map_err(corrupt)?,
        dedupe_key: row.try_get(4).map_err(corrupt)?,
        order_key: row.try_get(5).map_err(corrupt)?,
        coalesce_key: row.try_get(6).map_err(corrupt)?,
        event_type: row.try_get(7).map_err(corrupt)?,
        warnings: row.try_get(8).map_err(corrupt)?,
        duplicates: row.try_get(9).map_err(corrupt)?,
        last_copy_at: row.try_get(10).map_err(corrupt)?,
    })
}

/// A row's `e.received_at`, for a time-ordered page's cursor (`BIGINT NOT
/// NULL`: always read; were it not, the row's own parse reports it).
fn at(row: &Row, column: usize) -> i64 {
    row.try_get(column).unwrap_or(0)
}

fn delivery(row: &Row) -> Result<RawDelivery> {
    let corrupt = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    Ok(RawDelivery {
        row: row.try_get(0).map_err(corrupt)?,
        id: row.try_get(1).map_err(corrupt)?,
        event_row: row.try_get(2).map_err(corrupt)?,
        event: row.try_get(3).map_err(corrupt)?,
        source: row.try_get(4).map_err(corrupt)?,
        destination: row.try_get(5).map_err(corrupt)?,
        route: row.try_get(6).map_err(corrupt)?,
        state: row.try_get(7).map_err(corrupt)?,
        order_key: row.try_get(8).map_err(corrupt)?,
        coalesce_key: row.try_get(9).map_err(corrupt)?,
        received_at: row.try_get(10).map_err(corrupt)?,
        updated_at: row.try_get(11).map_err(corrupt)?,
        attempts: row.try_get::<_, i32>(12).map_err(corrupt)?.into(),
        due_at: row.try_get(13).map_err(corrupt)?,
        superseded_by: row.try_get(14).map_err(corrupt)?,
        last_error: row.try_get(15).map_err(corrupt)?,
    })
}

/// The values of a query's parameters, typed as PostgreSQL is told they are.
fn bound(params: &[Param]) -> Vec<Box<dyn ToSql + Sync + Send>> {
    params
        .iter()
        .map(|p| -> Box<dyn ToSql + Sync + Send> {
            match p {
                Param::Int(n) => Box::new(*n),
                Param::Text(text) => Box::new(text.clone()),
                Param::Bytes(bytes) => Box::new(bytes.clone()),
            }
        })
        .collect()
}

async fn run(c: &Client, sql: &str, params: &[Param]) -> Result<Vec<Row>> {
    let statement = c.prepare_cached(sql).await.map_err(unavailable)?;
    let values = bound(params);
    let refs: Vec<&(dyn ToSql + Sync)> = values.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
    c.query(&statement, &refs).await.map_err(unavailable)
}

/// The deliveries of each event given (row ids), each event's in the order
/// they were made: (its event's row, its own row, the delivery).
async fn deliveries_of(c: &Client, events: &[i64]) -> Result<Vec<(i64, i64, Result<DeliveryRecord>)>> {
    let sql = format!(
        "SELECT {} FROM deliveries d JOIN events e ON e.rid = d.event_rid WHERE d.event_rid = ANY($1) ORDER BY d.rid",
        query::DELIVERY_COLUMNS
    );
    let statement = c.prepare_cached(&sql).await.map_err(unavailable)?;
    let rows = c.query(&statement, &[&events]).await.map_err(unavailable)?;
    Ok(rows
        .iter()
        .map(|row| (row.get::<_, i64>(2), row.get::<_, i64>(0), delivery(row).and_then(RawDelivery::parse)))
        .collect())
}

pub async fn get(c: &Client, id: &EventId) -> Result<Option<EventDetail>> {
    let sql =
        format!("SELECT {}, e.headers, e.body, e.trace, e.routing FROM events e WHERE e.id = $1", event_columns());
    let statement = c.prepare_cached(&sql).await.map_err(unavailable)?;
    let Some(row) = c.query_opt(&statement, &[&id.as_str()]).await.map_err(unavailable)? else {
        return Ok(None);
    };
    let raw = record(&row)?;
    let mut rids = Vec::new();
    let mut records = Vec::new();
    for (_, rid, delivery) in deliveries_of(c, &[raw.row]).await? {
        rids.push(rid);
        records.push(delivery?);
    }
    let statement = c
        .prepare_cached(
            "SELECT a.delivery_rid, a.attempt, a.started_at, a.duration_ms, a.status, a.error, a.response
             FROM attempts a JOIN deliveries d ON d.rid = a.delivery_rid
             WHERE d.event_rid = $1 ORDER BY a.delivery_rid, a.attempt",
        )
        .await
        .map_err(unavailable)?;
    let attempts = c.query(&statement, &[&raw.row]).await.map_err(unavailable)?;
    let deliveries = records
        .iter()
        .zip(&rids)
        .map(|(record, rid)| {
            let attempts = attempts
                .iter()
                .filter(|a| a.get::<_, i64>(0) == *rid)
                .map(|r| Attempt {
                    attempt: r.get::<_, i32>(1) as u32,
                    started_at_ms: r.get(2),
                    duration_ms: r.get(3),
                    status: r.get::<_, Option<i32>>(4).map(|s| s as u16),
                    error: r.get(5),
                    response: r.get::<_, Option<Vec<u8>>>(6).map(Into::into),
                })
                .collect();
            DeliveryDetail { record: record.clone(), attempts }
        })
        .collect();
    Ok(Some(EventDetail {
        // The columns after EVENT_COLUMNS' eleven.
        routing: RouteVerdict::stored(row.get::<_, Option<&str>>(14), &records)?,
        record: raw.parse(&records)?,
        headers: codec::decode_headers(row.get(11))?,
        body: row.get::<_, Vec<u8>>(12).into(),
        trace: row.get(13),
        deliveries,
    }))
}

pub async fn get_delivery(c: &Client, id: &hookgate_core::DeliveryId) -> Result<Option<DeliveryRecord>> {
    let sql = format!(
        "SELECT {} FROM deliveries d JOIN events e ON e.rid = d.event_rid WHERE d.id = $1",
        query::DELIVERY_COLUMNS
    );
    let statement = c.prepare_cached(&sql).await.map_err(unavailable)?;
    let row = c.query_opt(&statement, &[&id.as_str()]).await.map_err(unavailable)?;
    row.map(|row| delivery(&row).and_then(RawDelivery::parse)).transpose()
}

pub async fn list(c: &Client, filter: &ListFilter) -> Result<Page> {
    let q = query::events(filter, &DIALECT);
    let sql = q.sql.replace(query::EVENT_COLUMNS, &event_columns());
    let rows = run(c, &sql, &q.params).await?;
    let raws: Vec<(Cursor, Result<RawRecord>)> = rows
        .iter()
        .map(|row| (q.cursor(Cursor::before_row(row.get(0)), at(row, query::EVENT_RECEIVED_AT)), record(row)))
        .collect();
    let rids: Vec<i64> = raws.iter().filter_map(|(_, r)| r.as_ref().ok().map(|r| r.row)).collect();
    let mut by_event: std::collections::HashMap<i64, Vec<Result<DeliveryRecord>>> = Default::default();
    for (event, _, delivery) in deliveries_of(c, &rids).await? {
        by_event.entry(event).or_default().push(delivery);
    }
    let parsed = raws
        .into_iter()
        .map(|(at, raw)| {
            let record = raw.and_then(|raw| {
                let deliveries: Vec<DeliveryRecord> =
                    by_event.remove(&raw.row).unwrap_or_default().into_iter().collect::<Result<_>>()?;
                raw.parse(&deliveries)
            });
            (at, record)
        })
        .collect();
    let (events, next_cursor) = page_of(parsed, q.limit);
    Ok(Page { events, next_cursor })
}

pub async fn list_deliveries(c: &Client, filter: &DeliveryFilter) -> Result<DeliveryPage> {
    let q = query::deliveries(filter, &DIALECT);
    let rows = run(c, &q.sql, &q.params).await?;
    let parsed = rows
        .iter()
        .map(|row| {
            let at = q.cursor(Cursor::before_pair(row.get(2), row.get(0)), at(row, query::DELIVERY_RECEIVED_AT));
            (at, delivery(row).and_then(RawDelivery::parse))
        })
        .collect();
    let (deliveries, next_cursor) = page_of(parsed, q.limit);
    Ok(DeliveryPage { deliveries, next_cursor })
}

pub async fn stats(c: &impl deadpool_postgres::GenericClient) -> Result<Vec<StateCount>> {
    let rows = c
        .query(
            "SELECT g.source, g.destination, g.state, g.n, e.received_at
             FROM (SELECT source, destination, state, COUNT(*) AS n, MIN(event_rid) AS oldest
                   FROM deliveries GROUP BY source, destination, state) g
             LEFT JOIN events e ON e.rid = g.oldest
             UNION ALL
             SELECT source, '', 'unrouted', COUNT(*), MIN(received_at) FROM events WHERE unrouted = 1 GROUP BY source",
            &[],
        )
        .await
        .map_err(unavailable)?;
    rows.iter()
        .map(|r| {
            let state = r.get::<_, String>(2).parse().map_err(|e| StoreError::Corrupt(format!("state: {e}")))?;
            Ok(StateCount {
                source: r.get(0),
                destination: r.get(1),
                state,
                count: r.get::<_, i64>(3) as u64,
                oldest_received_ms: r.get(4),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use hookgate_core::{EventState, Key, State};

    use super::*;
    use crate::test_support::fresh;

    /// The listings, each as a (name, SQL, parameters, in time order) at `limit` a page.
    fn listings(limit: usize, since: i64, until: i64, key: &str) -> Vec<(String, String, Vec<Param>, bool)> {
        let key = Some(Key::from(key));
        let cursor = Some(Cursor::before_row(1_000));
        let timed = Some(Cursor::before_pair(1_000, 1_200).at_time(since + 1_000));
        let (since, until) = (Some(since), Some(until));
        let events = [
            ("source", ListFilter { source: Some("s1".into()), ..Default::default() }),
            ("source, since", ListFilter { source: Some("s1".into()), since_ms: since, ..Default::default() }),
            ("order_key", ListFilter { order_key: key.clone(), ..Default::default() }),
            ("order_key, a later page", ListFilter { order_key: key.clone(), cursor, ..Default::default() }),
            ("dedupe_key", ListFilter { dedupe_key: key.clone(), ..Default::default() }),
            ("destination", ListFilter { destination: Some("billing".into()), ..Default::default() }),
            ("since", ListFilter { since_ms: since, ..Default::default() }),
            ("until", ListFilter { until_ms: until, ..Default::default() }),
            ("since, a later page", ListFilter { since_ms: since, cursor: timed, ..Default::default() }),
        ];
        let states =
            EventState::ALL.map(|state| (state.as_str(), ListFilter { state: Some(state), ..Default::default() }));
        let deliveries = [
            ("destination", DeliveryFilter { destination: Some("billing".into()), ..Default::default() }),
            ("source", DeliveryFilter { source: Some("s1".into()), ..Default::default() }),
            ("source, until", DeliveryFilter { source: Some("s1".into()), until_ms: until, ..Default::default() }),
            ("order_key", DeliveryFilter { order_key: key.clone(), ..Default::default() }),
            ("order_key, a later page", DeliveryFilter { order_key: key.clone(), cursor, ..Default::default() }),
            ("since", DeliveryFilter { since_ms: since, ..Default::default() }),
            ("until", DeliveryFilter { until_ms: until, ..Default::default() }),
            ("until, a later page", DeliveryFilter { until_ms: until, cursor: timed, ..Default::default() }),
        ];
        let delivery_states =
            State::ALL.map(|state| (state.as_str(), DeliveryFilter { state: Some(state), ..Default::default() }));
        // In time order: a window alone (a later page too); with any other filter, row order.
        let windowed = |name: &str| name.starts_with("since") || name.starts_with("until");
        let mut queries = Vec::new();
        for (name, filter) in events.into_iter().chain(states) {
            let q = query::events(&ListFilter { limit, ..filter }, &DIALECT);
            assert_eq!(q.by_time, windowed(name), "events by {name}");
            let sql = q.sql.replace(query::EVENT_COLUMNS, &event_columns());
            queries.push((format!("events by {name}"), sql, q.params, windowed(name)));
        }
        for (name, filter) in deliveries.into_iter().chain(delivery_states) {
            let q = query::deliveries(&DeliveryFilter { limit, ..filter }, &DIALECT);
            assert_eq!(q.by_time, windowed(name), "deliveries by {name}");
            queries.push((format!("deliveries by {name}"), q.sql, q.params, windowed(name)));
        }
        queries
    }

    /// Each listing's plan, as `EXPLAIN` prints it.
    async fn plans(c: &Client, queries: Vec<(String, String, Vec<Param>, bool)>) -> Vec<(String, String, bool)> {
        let mut plans = Vec::new();
        for (what, sql, params, by_time) in queries {
            let rows = run(c, &format!("EXPLAIN {sql}"), &params).await.unwrap();
            let plan = rows.iter().map(|r| r.get::<_, String>(0)).collect::<Vec<_>>().join("\n");
            eprintln!("{what}:\n{plan}");
            plans.push((what, plan, by_time));
        }
        plans
    }

    /// Every filter a listing offers is served by an index on PostgreSQL
    /// too: with sequential scans priced out (`enable_seqscan = off`), no
    /// plan reads `events` or `deliveries` from end to end (a sequential
    /// scan, or an index walked whole with its rows filtered after), but for
    /// the two partial indexes whose predicate is the listing's own filter
    /// (the unrouted events; the deliveries in flight, for events in flight).
    /// On empty tables: what an index can serve, whatever the statistics.
    /// (SQLite's plans are pinned in its own `every_listing_filter_is_served_by_an_index`.)
    #[tokio::test]
    async fn every_listing_filter_is_served_by_an_index() {
        let Some(store) = fresh().await else { return };
        let c = store.reads.get().await.unwrap();
        c.batch_execute("SET enable_seqscan = off").await.unwrap();
        let mut failures = Vec::new();
        for (what, plan, _) in plans(&c, listings(1, 1, 1, "k")).await {
            let own_filter = |scan: &String| {
                (what == "events by unrouted" && scan.contains(" events_unrouted "))
                    || (what == "events by delivering" && scan.contains(" deliveries_one_in_flight "))
            };
            for scan in unbounded_scans(&plan).into_iter().filter(|scan| !own_filter(scan)) {
                failures.push(format!("{what}: {scan} reads a table or an index from end to end:\n{plan}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
        c.batch_execute("RESET enable_seqscan").await.unwrap();
    }

    /// On 50,000 events with statistics, as the planner sees a real table,
    /// at the console's page size, on the admin API's own connections
    /// (`LISTING_PLANS`): no listing scans `events` or `deliveries`, and a
    /// time window's page is read off `events_received` in time order (an
    /// incremental sort of its ties), never the whole window sorted.
    #[tokio::test]
    async fn listings_read_a_page_not_the_table_on_a_real_table() {
        let Some(store) = fresh().await else { return };
        let c = store.reads.get().await.unwrap();
        const T0: i64 = 1_800_000_000_000;
        c.batch_execute(&format!(
            "INSERT INTO events (id, source, received_at, headers, body, dedupe_key, order_key, unrouted)
             SELECT 'evt_' || lpad(n::text, 32, '0'), 's' || (n % 3),
                    {T0} + n - CASE WHEN n % 7 = 0 THEN 50 ELSE 0 END, '\\x'::bytea,
                    convert_to(repeat('x', 200), 'UTF8'),
                    CASE WHEN n % 3 = 0 THEN convert_to('d' || n, 'UTF8') END,
                    CASE WHEN n % 2 = 0 THEN convert_to('k' || (n % 40), 'UTF8') END,
                    CASE WHEN n % 50 = 0 THEN 1 ELSE 0 END
             FROM generate_series(1, 50000) n;
             INSERT INTO deliveries (id, event_rid, source, destination, route, order_key, seq, state, updated_at,
                                     head)
             SELECT 'dlv_' || e.rid || '_' || v.d, e.rid, e.source, v.d, e.source || '->' || v.d, e.order_key,
                    e.rid * 2 + (v.d = 'billing')::int,
                    CASE WHEN e.rid > 49990 AND e.order_key IS NULL THEN 'delivering'
                         WHEN e.rid > 49000 THEN 'pending' WHEN e.rid % 10 = 0 THEN 'dead' ELSE 'delivered' END,
                    e.received_at, e.rid > 49000
             FROM events e CROSS JOIN (VALUES ('app'), ('billing')) AS v(d)
             WHERE e.unrouted = 0 AND (v.d = 'app' OR e.rid % 4 = 0);
             ANALYZE events, deliveries;"
        ))
        .await
        .unwrap();
        let mut failures = Vec::new();
        // Only even events have an order key, `k0`…`k38`: 1,250 events each.
        for (what, plan, by_time) in plans(&c, listings(50, T0 + 100, T0 + 20_000, "k2")).await {
            if plan.contains("Seq Scan on events") || plan.contains("Seq Scan on deliveries") {
                failures.push(format!("{what} scans a table:\n{plan}"));
            }
            let nodes = plan.lines().map(|l| l.trim_start().trim_start_matches("->").trim_start());
            let sorted_whole = nodes.clone().any(|node| node.starts_with("Sort  ("));
            if by_time && (sorted_whole || !plan.contains("Presorted Key: e.received_at")) {
                failures.push(format!("{what}: a time window not read in time order:\n{plan}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    }

    /// The scan nodes of an `EXPLAIN` (text) that no condition bounds: a
    /// sequential scan, or an index walked whole with its rows filtered
    /// after (an `Index Scan` with a `Filter` but no `Index Cond`).
    fn unbounded_scans(plan: &str) -> Vec<String> {
        let lines: Vec<&str> = plan.lines().collect();
        let indent = |line: &str| line.len() - line.trim_start().len();
        let mut found = Vec::new();
        for (n, line) in lines.iter().enumerate() {
            let node = line.trim_start().trim_start_matches("->").trim_start();
            if !node.contains("Scan") || node.starts_with("Bitmap Index Scan") {
                continue;
            }
            let bounded = lines[n + 1..]
                .iter()
                .take_while(|l| indent(l) > indent(line) && !l.trim_start().starts_with("->"))
                .any(|l| l.trim_start().starts_with("Index Cond") || l.trim_start().starts_with("Recheck Cond"));
            if !bounded {
                found.push(node.split("  (").next().unwrap_or(node).to_owned());
            }
        }
        found
    }
}

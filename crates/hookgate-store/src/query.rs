//! The listing queries, written once for both SQL backends (their tables and
//! columns have the same names; only placeholders differ). Each filter is
//! put into the SQL only when it is set, so the planner sees a plain
//! equality it can serve from an index, never an `(? IS NULL OR …)` that
//! makes it scan the table; `every_listing_filter_is_served_by_an_index` tests in each backend pin which
//! index each filter uses.
//!
//! An event's state is its deliveries' summary ([`EventState::of`]), which
//! no column holds (a column would rewrite the event, body and all, at every
//! delivery's move): `state=X` walks the deliveries in state X by event,
//! newest first, keeping the first of each event and only when none of its
//! deliveries is in a state that outranks X.

use std::fmt::Write;

use hookgate_core::{EventState, State};

use crate::{Cursor, DeliveryFilter, ListFilter, clamp_limit};

/// A value bound to a placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Param {
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// How a backend spells its placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder {
    /// `?1`, `?2`, … (SQLite)
    Question,
    /// `$1`, `$2`, … (PostgreSQL)
    Dollar,
}

/// What a backend's listings are written in: its placeholders, and where it
/// keeps the deliveries of one queue key.
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    pub placeholder: Placeholder,
    /// The arms a listing by order key is the union of: between them, every
    /// delivery with an order key exactly once; each served by an index of
    /// its own.
    pub key_arms: &'static [KeyArm],
}

/// One arm of a listing by order key: the deliveries table as the backend
/// names it for this arm (`{t}` is the alias; an SQLite arm may say which
/// index serves it) and the condition that picks the arm's deliveries.
#[derive(Debug, Clone, Copy)]
pub struct KeyArm {
    pub table: &'static str,
    pub condition: &'static str,
}

impl KeyArm {
    /// The table and the condition, each for the alias `t`.
    fn parts(&self, t: &str) -> (String, String) {
        (self.table.replace("{t}", t), self.condition.replace("{t}", t))
    }
}

/// Two arms, by state: those still owed (the queue index, beside the heads)
/// and those finished (an index by key the outcome writes).
pub const ARMS_BY_STATE: &[KeyArm] = &[
    KeyArm { table: "deliveries {t}", condition: "{t}.state IN ('pending', 'delivering')" },
    KeyArm { table: "deliveries {t}", condition: "{t}.state IN ('delivered', 'dead', 'superseded')" },
];

/// A statement and its parameters, in placeholder order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub sql: String,
    pub params: Vec<Param>,
    /// How many rows the page shows (the statement asks for one more).
    pub limit: usize,
    /// The page is in time order ([`events_by_time`], [`deliveries_by_time`]).
    pub by_time: bool,
}

impl Query {
    /// The cursor after a row of this page: with its event's time
    /// (`e.received_at`, read with the row) when the page is in time order.
    pub fn cursor(&self, at: Cursor, received_at: i64) -> Cursor {
        if self.by_time { at.at_time(received_at) } else { at }
    }
}

/// Where `e.received_at` is among [`EVENT_COLUMNS`] and [`DELIVERY_COLUMNS`].
pub const EVENT_RECEIVED_AT: usize = 3;
pub const DELIVERY_RECEIVED_AT: usize = 10;

/// The columns [`crate::RawRecord`] is read from, in its order.
pub const EVENT_COLUMNS: &str = "e.rid, e.id, e.source, e.received_at, e.dedupe_key, e.order_key, \
     e.coalesce_key, e.event_type, e.warnings, e.duplicates, e.last_copy_at";

/// The columns [`crate::RawDelivery`] is read from, in its order.
/// The last: the error of its latest attempt (by the attempts' primary key).
pub const DELIVERY_COLUMNS: &str = "d.rid, d.id, d.event_rid, e.id, d.source, d.destination, d.route, d.state, \
     d.order_key, d.coalesce_key, e.received_at, d.updated_at, d.attempts, d.due_at, d.superseded_by, \
     (SELECT a.error FROM attempts a WHERE a.delivery_rid = d.rid ORDER BY a.attempt DESC LIMIT 1)";

struct Builder {
    style: Placeholder,
    conditions: Vec<String>,
    params: Vec<Param>,
}

impl Builder {
    fn new(style: Placeholder) -> Self {
        Builder { style, conditions: Vec::new(), params: Vec::new() }
    }

    /// A placeholder for `value`.
    fn bind(&mut self, value: Param) -> String {
        self.params.push(value);
        match self.style {
            Placeholder::Question => format!("?{}", self.params.len()),
            Placeholder::Dollar => format!("${}", self.params.len()),
        }
    }

    /// A condition with one value: `template`'s `{}` becomes its placeholder.
    fn when(&mut self, template: &str, value: Param) {
        let at = self.bind(value);
        self.conditions.push(template.replace("{}", &at));
    }

    fn finish(mut self, head: &str, order: &str, limit: usize) -> Query {
        let mut sql = head.to_owned();
        for (n, condition) in self.conditions.iter().enumerate() {
            let _ = write!(sql, "{} {condition}", if n == 0 { " WHERE" } else { " AND" });
        }
        let at = self.bind(Param::Int(limit as i64 + 1));
        let _ = write!(sql, " ORDER BY {order} LIMIT {at}");
        Query { sql, params: self.params, limit, by_time: false }
    }
}

/// The delivery states that outrank `state` in an event's summary.
fn outranking(state: State) -> Vec<&'static str> {
    let rank = EventState::RANKED.iter().position(|s| *s == state).expect("every state is ranked");
    EventState::RANKED[..rank].iter().map(|s| s.as_str()).collect()
}

fn quoted(states: &[&str]) -> String {
    states.iter().map(|s| format!("'{s}'")).collect::<Vec<_>>().join(", ")
}

/// One page of events, newest first.
pub fn events(filter: &ListFilter, dialect: &Dialect) -> Query {
    if filter.order_key.is_some() {
        return events_by_order_key(filter, dialect);
    }
    let limit = clamp_limit(filter.limit);
    let mut q = Builder::new(dialect.placeholder);
    // The row the page is driven by: the event's own, or the delivery whose
    // index serves the filter.
    let (head, rid) = match filter.state {
        Some(EventState::Unrouted) => {
            q.conditions.push("e.unrouted = 1".into());
            if let Some(destination) = &filter.destination {
                // Never true (an unrouted event has no delivery), but said, not assumed.
                q.when(
                    "EXISTS (SELECT 1 FROM deliveries x WHERE x.event_rid = e.rid AND x.destination = {})",
                    Param::Text(destination.clone()),
                );
            }
            (format!("SELECT {EVENT_COLUMNS} FROM events e"), "e.rid")
        }
        Some(summary) => {
            let state = summary.delivery_state().expect("only unrouted has no delivery state");
            q.when("s.state = {}", Param::Text(state.as_str().into()));
            let above = outranking(state);
            let outranked =
                if above.is_empty() { String::new() } else { format!("h.state IN ({}) OR ", quoted(&above)) };
            q.conditions.push(format!(
                "NOT EXISTS (SELECT 1 FROM deliveries h WHERE h.event_rid = s.event_rid \
                 AND ({outranked}(h.state = s.state AND h.rid < s.rid)))"
            ));
            if let Some(destination) = &filter.destination {
                q.when(
                    "EXISTS (SELECT 1 FROM deliveries x WHERE x.event_rid = s.event_rid AND x.destination = {})",
                    Param::Text(destination.clone()),
                );
            }
            (format!("SELECT {EVENT_COLUMNS} FROM deliveries s JOIN events e ON e.rid = s.event_rid"), "s.event_rid")
        }
        None => match &filter.destination {
            Some(destination) => {
                q.when("s.destination = {}", Param::Text(destination.clone()));
                (
                    format!("SELECT {EVENT_COLUMNS} FROM deliveries s JOIN events e ON e.rid = s.event_rid"),
                    "s.event_rid",
                )
            }
            None => (format!("SELECT {EVENT_COLUMNS} FROM events e"), "e.rid"),
        },
    };
    if let Some(source) = &filter.source {
        q.when("e.source = {}", Param::Text(source.clone()));
    }
    if let Some(key) = &filter.dedupe_key {
        q.when("e.dedupe_key = {}", Param::Bytes(key.as_bytes().to_vec()));
    }
    if let Some(at) = filter.since_ms {
        q.when("e.received_at >= {}", Param::Int(at));
    }
    if let Some(at) = filter.until_ms {
        q.when("e.received_at < {}", Param::Int(at));
    }
    if events_by_time(filter) {
        if let Some(cursor) = filter.cursor {
            let condition = after_in_time(&mut q, cursor, false);
            q.conditions.push(condition);
        }
        return Query { by_time: true, ..q.finish(&head, "e.received_at DESC, e.rid DESC", limit) };
    }
    if let Some(cursor) = filter.cursor {
        q.when(&format!("{rid} < {{}}"), Param::Int(cursor.row()));
    }
    q.finish(&head, &format!("{rid} DESC"), limit)
}

/// Whether a listing of events is by time: a time window (`since`,
/// `until`) is its only filter. Its page is then ordered by when each event
/// was received, then by row, which the index on `received_at` serves in
/// that order: a window of a million events yields its newest page by
/// reading a page, not by sorting the million. (Row order and time order
/// differ only for events received at nearly the same moment and stored
/// the other way round.) With any other filter, its index drives the page,
/// in row order, and the window is checked row by row: no index serves a
/// source, say, in time order, so time order would sort all of the
/// source's window for each page.
pub fn events_by_time(filter: &ListFilter) -> bool {
    (filter.since_ms.is_some() || filter.until_ms.is_some())
        && filter.source.is_none()
        && filter.state.is_none()
        && filter.order_key.is_none()
        && filter.dedupe_key.is_none()
        && filter.destination.is_none()
}

/// Whether a listing of deliveries is by their events' time, as
/// [`events_by_time`]: a time window is its only filter.
pub fn deliveries_by_time(filter: &DeliveryFilter) -> bool {
    (filter.since_ms.is_some() || filter.until_ms.is_some())
        && filter.source.is_none()
        && filter.destination.is_none()
        && filter.state.is_none()
        && filter.order_key.is_none()
}

/// Rows after the cursor in (time, event row[, delivery row]) descending
/// order: `e.received_at <= T AND (e.received_at < T OR …)`, whose first
/// term alone bounds the index range. `T` is the cursor's time; a cursor
/// without one (from a page in row order) takes its event's, read from the
/// row (none if it was deleted since: the page is then empty).
fn after_in_time(q: &mut Builder, cursor: Cursor, with_delivery: bool) -> String {
    let row = q.bind(Param::Int(cursor.row()));
    let at = match cursor.time() {
        Some(at) => q.bind(Param::Int(at)),
        None => format!("(SELECT c.received_at FROM events c WHERE c.rid = {row})"),
    };
    let within = if with_delivery {
        let sub = q.bind(Param::Int(cursor.sub()));
        format!("e.rid < {row} OR (e.rid = {row} AND d.rid < {sub})")
    } else {
        format!("e.rid < {row}")
    };
    format!("e.received_at <= {at} AND (e.received_at < {at} OR {within})")
}

/// Events by order key: those with a delivery queued under it (for a source
/// with one route, the events whose order key it is), each once (by its
/// first such delivery), driven by the arms of the key's deliveries
/// ([`Dialect::key_arms`]); every other filter is said of the event.
fn events_by_order_key(filter: &ListFilter, dialect: &Dialect) -> Query {
    let limit = clamp_limit(filter.limit);
    let mut q = Builder::new(dialect.placeholder);
    let key = q.bind(Param::Bytes(filter.order_key.as_ref().expect("called with an order key").as_bytes().to_vec()));
    q.conditions.push(
        "NOT EXISTS (SELECT 1 FROM deliveries x WHERE x.event_rid = k.event_rid AND x.order_key = k.order_key \
         AND x.rid < k.rid)"
            .into(),
    );
    match filter.state {
        Some(EventState::Unrouted) => q.conditions.push("e.unrouted = 1".into()),
        Some(summary) => {
            let state = summary.delivery_state().expect("only unrouted has no delivery state");
            q.when(
                "EXISTS (SELECT 1 FROM deliveries h WHERE h.event_rid = e.rid AND h.state = {})",
                Param::Text(state.as_str().into()),
            );
            let above = outranking(state);
            if !above.is_empty() {
                q.conditions.push(format!(
                    "NOT EXISTS (SELECT 1 FROM deliveries h WHERE h.event_rid = e.rid AND h.state IN ({}))",
                    quoted(&above)
                ));
            }
        }
        None => {}
    }
    if let Some(destination) = &filter.destination {
        q.when(
            "EXISTS (SELECT 1 FROM deliveries x WHERE x.event_rid = e.rid AND x.destination = {})",
            Param::Text(destination.clone()),
        );
    }
    if let Some(source) = &filter.source {
        q.when("e.source = {}", Param::Text(source.clone()));
    }
    if let Some(dedupe) = &filter.dedupe_key {
        q.when("e.dedupe_key = {}", Param::Bytes(dedupe.as_bytes().to_vec()));
    }
    if let Some(at) = filter.since_ms {
        q.when("e.received_at >= {}", Param::Int(at));
    }
    if let Some(at) = filter.until_ms {
        q.when("e.received_at < {}", Param::Int(at));
    }
    if let Some(cursor) = filter.cursor {
        q.when("k.event_rid < {}", Param::Int(cursor.row()));
    }
    let arms: Vec<String> = dialect
        .key_arms
        .iter()
        .map(|arm| {
            let (table, condition) = arm.parts("k");
            let mut conditions = vec![format!("k.order_key = {key}"), condition];
            conditions.extend(q.conditions.iter().cloned());
            format!(
                "SELECT {EVENT_COLUMNS} FROM {table} JOIN events e ON e.rid = k.event_rid WHERE {}",
                conditions.join(" AND ")
            )
        })
        .collect();
    q.conditions.clear();
    // Column 1 of EVENT_COLUMNS: the event's row.
    q.finish(&arms.join(" UNION ALL "), "1 DESC", limit)
}

/// One page of deliveries, by event newest first, then by delivery.
pub fn deliveries(filter: &DeliveryFilter, dialect: &Dialect) -> Query {
    let limit = clamp_limit(filter.limit);
    let mut q = Builder::new(dialect.placeholder);
    if let Some(destination) = &filter.destination {
        q.when("d.destination = {}", Param::Text(destination.clone()));
    }
    if let Some(state) = filter.state {
        q.when("d.state = {}", Param::Text(state.as_str().into()));
    }
    if let Some(source) = &filter.source {
        // A delivery's source is its event's: said of both, either index serves it.
        q.when("d.source = {}", Param::Text(source.clone()));
        q.when("e.source = {}", Param::Text(source.clone()));
    }
    // By order key, the page is the merge of the key's arms (`Dialect::key_arms`).
    let order_key = filter.order_key.as_ref().map(|key| q.bind(Param::Bytes(key.as_bytes().to_vec())));
    if let Some(at) = filter.since_ms {
        q.when("e.received_at >= {}", Param::Int(at));
    }
    if let Some(at) = filter.until_ms {
        q.when("e.received_at < {}", Param::Int(at));
    }
    let head = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries d JOIN events e ON e.rid = d.event_rid");
    let by_event = filter.destination.is_none() && filter.state.is_none() && filter.order_key.is_none();
    if deliveries_by_time(filter) {
        if let Some(cursor) = filter.cursor {
            let condition = after_in_time(&mut q, cursor, true);
            q.conditions.push(condition);
        }
        return Query { by_time: true, ..q.finish(&head, "e.received_at DESC, e.rid DESC, d.rid DESC", limit) };
    }
    if let Some(cursor) = filter.cursor {
        let row = q.bind(Param::Int(cursor.row()));
        let sub = q.bind(Param::Int(cursor.sub()));
        // The first term alone bounds an index range; the second splits the event at the cursor.
        q.conditions.push(format!("d.event_rid <= {row} AND (d.event_rid < {row} OR d.rid < {sub})"));
    }
    if let Some(key) = order_key {
        let arm = |arm: &KeyArm| {
            let (table, condition) = arm.parts("d");
            let mut conditions = vec![format!("d.order_key = {key}"), condition];
            conditions.extend(q.conditions.iter().cloned());
            format!(
                "SELECT {DELIVERY_COLUMNS} FROM {table} JOIN events e ON e.rid = d.event_rid WHERE {}",
                conditions.join(" AND ")
            )
        };
        let union = dialect.key_arms.iter().map(arm).collect::<Vec<_>>().join(" UNION ALL ");
        q.conditions.clear();
        // Columns 3 and 1 of DELIVERY_COLUMNS: the event's row, the delivery's.
        return q.finish(&union, "3 DESC, 1 DESC", limit);
    }
    // Said by the event's row when the event's own indexes serve the filter
    // (source), by the delivery's otherwise: the same order either way,
    // spelled so that the planner walks the index it searched.
    let order = if by_event { "e.rid DESC, d.rid DESC" } else { "d.event_rid DESC, d.rid DESC" };
    q.finish(&head, order, limit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const Q: Dialect = Dialect { placeholder: Placeholder::Question, key_arms: ARMS_BY_STATE };
    const D: Dialect = Dialect { placeholder: Placeholder::Dollar, key_arms: ARMS_BY_STATE };

    #[test]
    fn only_the_filters_given_are_in_the_sql() {
        let q = events(&ListFilter { limit: 10, ..Default::default() }, &Q);
        assert_eq!(q.sql, format!("SELECT {EVENT_COLUMNS} FROM events e ORDER BY e.rid DESC LIMIT ?1"));
        assert_eq!(q.params, [Param::Int(11)]);
        let q = events(
            &ListFilter {
                source: Some("s".into()),
                cursor: Some(Cursor::before_row(7)),
                limit: 5,
                ..Default::default()
            },
            &D,
        );
        assert!(q.sql.ends_with("WHERE e.source = $1 AND e.rid < $2 ORDER BY e.rid DESC LIMIT $3"), "{}", q.sql);
        assert_eq!(q.params, [Param::Text("s".into()), Param::Int(7), Param::Int(6)]);
    }

    #[test]
    fn a_summary_state_excludes_events_a_higher_state_outranks() {
        let q = events(&ListFilter { state: Some(EventState::Dead), limit: 1, ..Default::default() }, &Q);
        assert!(q.sql.contains("h.state IN ('delivering', 'pending') OR"), "{}", q.sql);
        let q = events(&ListFilter { state: Some(EventState::Delivering), limit: 1, ..Default::default() }, &Q);
        assert!(!q.sql.contains("h.state IN"), "nothing outranks delivering: {}", q.sql);
        let q = events(&ListFilter { state: Some(EventState::Unrouted), limit: 1, ..Default::default() }, &Q);
        assert!(q.sql.contains("WHERE e.unrouted = 1"), "{}", q.sql);
    }

    #[test]
    fn a_window_is_ordered_by_time_and_its_cursor_carries_the_time() {
        let window = ListFilter { since_ms: Some(100), limit: 2, ..Default::default() };
        let q = events(&window, &Q);
        assert!(q.by_time && q.sql.ends_with("ORDER BY e.received_at DESC, e.rid DESC LIMIT ?2"), "{}", q.sql);
        assert_eq!(q.cursor(Cursor::before_row(7), 150).to_string(), "150~7");
        let next = ListFilter { cursor: Some("150~7".parse().unwrap()), ..window.clone() };
        let q = events(&next, &Q);
        assert!(
            q.sql.contains("e.received_at <= ?3 AND (e.received_at < ?3 OR e.rid < ?2)"),
            "the first term bounds the range: {}",
            q.sql
        );
        assert_eq!(q.params, [Param::Int(100), Param::Int(7), Param::Int(150), Param::Int(3)]);
        // A state or a destination drives the page by its deliveries' index: row order, as without a window.
        let by_state = ListFilter { state: Some(EventState::Dead), ..window.clone() };
        let q = events(&by_state, &Q);
        assert!(!q.by_time && q.sql.ends_with("ORDER BY s.event_rid DESC LIMIT ?3"), "{}", q.sql);
        assert_eq!(q.cursor(Cursor::before_row(7), 150).to_string(), "7", "a page in row order");
        // Deliveries: time, event, delivery.
        let deliveries_window = DeliveryFilter {
            until_ms: Some(900),
            cursor: Some(Cursor::before_pair(9, 4).at_time(800)),
            limit: 2,
            ..Default::default()
        };
        let q = deliveries(&deliveries_window, &Q);
        assert!(
            q.sql.contains("e.received_at <= ?3 AND (e.received_at < ?3 OR e.rid < ?2 OR (e.rid = ?2 AND d.rid < ?4))")
                && q.sql.ends_with("ORDER BY e.received_at DESC, e.rid DESC, d.rid DESC LIMIT ?5"),
            "{}",
            q.sql
        );
    }

    #[test]
    fn cursors_print_and_parse_back() {
        for text in ["7", "9.4", "150~7", "0~9.4"] {
            assert_eq!(text.parse::<Cursor>().unwrap().to_string(), text);
        }
        assert_eq!("150~9.4".parse::<Cursor>().unwrap(), Cursor::before_pair(9, 4).at_time(150));
        for bad in ["", "0", "-1", "7.", "~7", "x~7", "-5~7", "150~", "1~2~3", "150~0.4"] {
            assert!(bad.parse::<Cursor>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_delivery_cursor_splits_an_event() {
        let filter = DeliveryFilter { cursor: Some(Cursor::before_pair(9, 4)), limit: 2, ..Default::default() };
        let q = deliveries(&filter, &Q);
        assert!(q.sql.contains("d.event_rid <= ?1 AND (d.event_rid < ?1 OR d.rid < ?2)"), "{}", q.sql);
        assert_eq!(q.params, [Param::Int(9), Param::Int(4), Param::Int(3)]);
    }
}

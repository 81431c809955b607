//! Versioned migrations, applied in order at open; `PRAGMA user_version`
//! records how far a database has come, and `PRAGMA application_id` marks the
//! file as hookgate's.

use rusqlite::Connection;

/// "hook" in ASCII: set on every database this version creates. A file with
/// migrations applied but without it was made by a pre-release hookgate whose
/// format (text keys and headers) this version does not read.
const APPLICATION_ID: i64 = 0x686f_6f6b;

/// What each migration does, for the log line that says it ran.
const NAMES: &[&str] = &[
    "events, dedupe keys and attempts",
    "routes: immutable events, one delivery row per destination (each event so far became one delivery)",
    "finished deliveries numbered for the key file (the listing by order key moves out of this file)",
];

const MIGRATIONS: &[&str] = &[
    // 1: events, dedupe keys, attempts. Keys and headers are BLOBs: they are
    // bytes (NUL and non-UTF-8 included), compared byte for byte.
    "
    CREATE TABLE events (
        rid             INTEGER PRIMARY KEY,
        id              TEXT NOT NULL UNIQUE,
        -- Queue position: storage order, renewed by a replay.
        seq             INTEGER NOT NULL,
        source          TEXT NOT NULL,
        destination     TEXT NOT NULL,
        state           TEXT NOT NULL,
        received_at     INTEGER NOT NULL,
        updated_at      INTEGER NOT NULL,
        headers         BLOB NOT NULL,
        body            BLOB NOT NULL,
        dedupe_key      BLOB,
        order_key       BLOB,
        coalesce_key    BLOB,
        warnings        TEXT,
        duplicates      INTEGER NOT NULL DEFAULT 0,
        attempts        INTEGER NOT NULL DEFAULT 0,
        -- attempts at the last replay; attempts - round_base is what max_attempts counts.
        round_base      INTEGER NOT NULL DEFAULT 0,
        -- pending: when the next attempt is due; delivering: when the lease ends.
        due_at          INTEGER,
        -- 1 for the first active event of its (source, order key) queue, and
        -- for every active event without an order key: only heads are claimed.
        head            INTEGER NOT NULL DEFAULT 0,
        superseded_by   TEXT
    );
    -- The dispatcher's scan: claimable heads of one destination, soonest due first.
    -- Blocked events behind a head are not in it, so a long queue costs nothing to scan.
    CREATE INDEX events_due ON events(destination, due_at, seq)
        WHERE head = 1 AND state IN ('pending', 'delivering');
    -- Finding the next head of an order key's queue.
    CREATE INDEX events_order ON events(source, order_key, seq) WHERE state IN ('pending', 'delivering');
    CREATE INDEX events_coalesce ON events(source, coalesce_key) WHERE state = 'pending' AND coalesce_key IS NOT NULL;
    -- Retention's scan (finished events of one state, oldest first) and counts by state.
    CREATE INDEX events_state ON events(state, updated_at);

    CREATE TABLE dedupe (
        source     TEXT NOT NULL,
        key        BLOB NOT NULL,
        event_id   TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        PRIMARY KEY (source, key)
    ) WITHOUT ROWID;
    CREATE INDEX dedupe_expiry ON dedupe(expires_at);

    -- Destinations whose deliveries are paused (events are still stored).
    CREATE TABLE paused (destination TEXT PRIMARY KEY) WITHOUT ROWID;

    -- One row, rewritten by the readiness probe after a write failed: whether writes work again.
    CREATE TABLE health (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        at INTEGER NOT NULL
    );

    CREATE TABLE attempts (
        event_id    TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        started_at  INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        status      INTEGER,
        error       TEXT,
        PRIMARY KEY (event_id, attempt)
    ) WITHOUT ROWID;
    ",
    // 2: routes. The event row is written once (body, headers, keys, each
    // route's verdict); what moves lives in a small delivery row per
    // (event, destination), so a state change never rewrites the body. A
    // queue is (destination, source, order key). Every event so far becomes
    // one delivery to its destination, keeping its row id (its delivery's
    // id is its own with the `dlv_` prefix), queue position, state, attempts
    // and lease; attempts are re-keyed by delivery. Every filter a listing
    // offers has an index (`every_listing_filter_is_served_by_an_index` pins which).
    "
    ALTER TABLE events RENAME TO events_v1;
    ALTER TABLE attempts RENAME TO attempts_v1;
    DROP INDEX events_due;
    DROP INDEX events_order;
    DROP INDEX events_coalesce;
    DROP INDEX events_state;

    CREATE TABLE events (
        rid             INTEGER PRIMARY KEY,
        id              TEXT NOT NULL UNIQUE,
        source          TEXT NOT NULL,
        received_at     INTEGER NOT NULL,
        headers         BLOB NOT NULL,
        body            BLOB NOT NULL,
        dedupe_key      BLOB,
        -- Until when a copy (the same source and dedupe key) is a duplicate of this event.
        dedupe_expires_at INTEGER,
        -- The source's keys (each delivery carries the ones its queue uses).
        order_key       BLOB,
        coalesce_key    BLOB,
        event_type      TEXT,
        warnings        TEXT,
        -- Each route's verdict: JSON text.
        routing         TEXT,
        trace           TEXT,
        duplicates      INTEGER NOT NULL DEFAULT 0,
        -- When the last copy (answered as a duplicate of this event) arrived.
        last_copy_at    INTEGER,
        -- 1 while the event has no delivery (no route matched it).
        unrouted        INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX events_source ON events(source);
    -- Dedupe: the latest event of a (dedupe key, source) decides whether a copy
    -- is a duplicate; the same index serves listings by dedupe key. The
    -- `dedupe` table keeps only the keys of events retention deleted within
    -- their window (so a late copy of a deleted event is still a duplicate).
    CREATE INDEX events_dedupe ON events(dedupe_key, source) WHERE dedupe_key IS NOT NULL;
    CREATE INDEX events_received ON events(received_at);
    CREATE INDEX events_unrouted ON events(unrouted) WHERE unrouted = 1;

    CREATE TABLE deliveries (
        rid             INTEGER PRIMARY KEY,
        id              TEXT NOT NULL UNIQUE,
        event_rid       INTEGER NOT NULL,
        source          TEXT NOT NULL,
        destination     TEXT NOT NULL,
        route           TEXT NOT NULL,
        order_key       BLOB,
        coalesce_key    BLOB,
        -- Queue position: storage order, renewed by a replay.
        seq             INTEGER NOT NULL,
        state           TEXT NOT NULL,
        updated_at      INTEGER NOT NULL,
        attempts        INTEGER NOT NULL DEFAULT 0,
        -- attempts at the last replay; attempts - round_base is what max_attempts counts.
        round_base      INTEGER NOT NULL DEFAULT 0,
        -- pending: when the next attempt is due; delivering: when the lease ends.
        due_at          INTEGER,
        -- 1 for the first active delivery of its (destination, source, order
        -- key) queue, and for every active one without an order key: only
        -- heads are claimed.
        head            INTEGER NOT NULL DEFAULT 0,
        superseded_by   TEXT,
        -- 1 once a finished delivery is in deliveries_filed (the writer files them in bulk).
        filed           INTEGER NOT NULL DEFAULT 0,
        -- 1 while the delivery is owed (pending or delivering). The partial
        -- indexes of owed deliveries say `owed = 1`, not the two states, so a
        -- claim (pending -> delivering) leaves their entries where they are
        -- instead of deleting and re-inserting each.
        owed            INTEGER NOT NULL DEFAULT 1 CHECK (owed = (state IN ('pending', 'delivering')))
    );
    -- An event's deliveries; listings by event.
    CREATE INDEX deliveries_event ON deliveries(event_rid);
    -- Listings by state (and events by their summary), by destination.
    CREATE INDEX deliveries_state ON deliveries(state, event_rid);
    CREATE INDEX deliveries_destination ON deliveries(destination, event_rid);
    -- Listings by order key (deliveries', and events' through theirs), in
    -- three arms: those owed are in deliveries_queue; the finished ones are
    -- filed by key here, hundreds at a time, so each index page the filing
    -- writes takes many of them (an outcome writing its own entry wrote a page
    -- of this big, randomly-keyed index for each delivery: most of a delivery's
    -- WAL); and those finished since the last filing (a few thousand at most)
    -- are in deliveries_unfiled, by event.
    CREATE INDEX deliveries_filed ON deliveries(order_key, event_rid) WHERE filed = 1;
    CREATE INDEX deliveries_unfiled ON deliveries(event_rid) WHERE filed = 0 AND order_key IS NOT NULL AND owed = 0;
    -- The dispatcher's scan: claimable heads of one destination, soonest due first.
    -- Deliveries blocked behind a head are not in it, so a long queue costs nothing to scan.
    CREATE INDEX deliveries_due ON deliveries(destination, due_at, seq) WHERE head = 1 AND owed = 1;
    -- Finding the next head of a queue; the owed arm of a listing by order key.
    CREATE INDEX deliveries_queue ON deliveries(order_key, destination, source, seq) WHERE owed = 1;
    CREATE INDEX deliveries_coalesce ON deliveries(destination, source, coalesce_key)
        WHERE state = 'pending' AND coalesce_key IS NOT NULL;

    CREATE TABLE attempts (
        delivery_rid    INTEGER NOT NULL,
        attempt         INTEGER NOT NULL,
        started_at      INTEGER NOT NULL,
        duration_ms     INTEGER NOT NULL,
        status          INTEGER,
        error           TEXT,
        -- The first bytes of the answer, when kept ([storage] keep_response).
        response        BLOB,
        PRIMARY KEY (delivery_rid, attempt)
    ) WITHOUT ROWID;

    -- A migrated event's routing stays NULL: read as the one route it took (`RouteVerdict::before_routes`).
    INSERT INTO events (rid, id, source, received_at, headers, body, dedupe_key, dedupe_expires_at, order_key,
                        coalesce_key, warnings, duplicates, unrouted)
    SELECT v.rid, v.id, v.source, v.received_at, v.headers, v.body, v.dedupe_key,
           (SELECT d.expires_at FROM dedupe d WHERE d.source = v.source AND d.key = v.dedupe_key AND d.event_id = v.id),
           v.order_key, v.coalesce_key, v.warnings, v.duplicates, 0
    FROM events_v1 v;
    -- The keys of stored events now live with them; the table keeps those of deleted ones.
    DELETE FROM dedupe WHERE event_id IN (SELECT id FROM events);
    INSERT INTO deliveries (rid, id, event_rid, source, destination, route, order_key, coalesce_key, seq, state,
                            updated_at, attempts, round_base, due_at, head, superseded_by, filed, owed)
    SELECT rid, 'dlv_' || substr(id, 5), rid, source, destination, source || '->' || destination, order_key,
           coalesce_key, seq, state, updated_at, attempts, round_base, due_at, head, superseded_by,
           order_key IS NOT NULL AND state IN ('delivered', 'dead', 'superseded'), state IN ('pending', 'delivering')
    FROM events_v1;
    INSERT INTO attempts (delivery_rid, attempt, started_at, duration_ms, status, error)
    SELECT e.rid, a.attempt, a.started_at, a.duration_ms, a.status, a.error
    FROM attempts_v1 a JOIN events_v1 e ON e.id = a.event_id;
    DROP TABLE attempts_v1;
    DROP TABLE events_v1;
    ",
    // 3: the listing of finished deliveries by order key moves to the key
    // file (`crate::keyfile`), kept by a thread of its own: its index was a
    // page of WAL per delivery on the writer's time. Each finished delivery
    // with an order key gets a number, in the order they finish, that the
    // key file files up to. Those finished so far are numbered by row.
    "
    DROP INDEX deliveries_filed;
    DROP INDEX deliveries_unfiled;
    ALTER TABLE deliveries DROP COLUMN filed;
    -- Set once, when a delivery with an order key first finishes (replays keep
    -- it): the key file holds every one numbered up to its mark.
    ALTER TABLE deliveries ADD COLUMN finished_seq INTEGER;
    UPDATE deliveries SET finished_seq = rid WHERE owed = 0 AND order_key IS NOT NULL;
    -- Key and event beside the number, and owed: a listing by key reads the
    -- numbers past the key file's mark (all keys) from this index alone,
    -- and looks up only the rows with its key.
    CREATE INDEX deliveries_finished ON deliveries(finished_seq, order_key, event_rid, owed)
        WHERE finished_seq IS NOT NULL AND order_key IS NOT NULL;
    -- What the key file is checked against at open (`crate::keyfile`):
    -- this store's id (made here: a key file made for another store, or
    -- before this migration ran again on a restored backup, is made again),
    -- how many times retention deleted finished deliveries, and the highest
    -- number among them (a store restored from a backup is behind its key file).
    CREATE TABLE key_file_check (
        id         INTEGER PRIMARY KEY CHECK (id = 0),
        store_id   INTEGER NOT NULL,
        deletions  INTEGER NOT NULL,
        numbered   INTEGER NOT NULL
    );
    INSERT INTO key_file_check (id, store_id, deletions, numbered) VALUES (0, random(), 0, 0);
    ",
];

const _: () = assert!(NAMES.len() == MIGRATIONS.len(), "a name for every migration");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "made by a pre-release hookgate in a format this version does not read; \
         move it aside (nothing in it is converted) and start again"
    )]
    PreRelease,
    #[error("made by a newer hookgate (schema {found}, this version knows {known}); upgrade hookgate")]
    Newer { found: usize, known: usize },
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

pub fn migrate(conn: &mut Connection) -> Result<(), MigrateError> {
    let current: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let id: i64 = conn.pragma_query_value(None, "application_id", |row| row.get(0))?;
    if current > 0 && id != APPLICATION_ID {
        return Err(MigrateError::PreRelease);
    }
    if current > MIGRATIONS.len() {
        return Err(MigrateError::Newer { found: current, known: MIGRATIONS.len() });
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n + 1)?;
        tx.pragma_update(None, "application_id", APPLICATION_ID)?;
        tx.commit()?;
        tracing::info!(version = n + 1, "schema migrated: {}", NAMES.get(n).copied().unwrap_or("(unnamed)"));
    }
    Ok(())
}

/// Where the database at `path` stands, read without changing it (nor
/// creating it): what `hookgate check` reports.
pub fn inspect(path: &std::path::Path) -> rusqlite::Result<hookgate_store::SchemaVersion> {
    let latest = MIGRATIONS.len();
    if !path.exists() {
        return Ok(hookgate_store::SchemaVersion { at: 0, latest });
    }
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let at: usize = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    Ok(hookgate_store::SchemaVersion { at, latest })
}

#[cfg(test)]
mod tests {
    use hookgate_core::State;
    use hookgate_store::conformance::{T0, event};

    use super::*;
    use crate::SqliteStore;

    /// Apply the migrations up to `version` only: a database as an older hookgate left it.
    fn migrate_to(conn: &mut Connection, version: usize) {
        for (n, sql) in MIGRATIONS.iter().enumerate().take(version) {
            let tx = conn.transaction().unwrap();
            tx.execute_batch(sql).unwrap();
            tx.pragma_update(None, "user_version", n + 1).unwrap();
            tx.pragma_update(None, "application_id", APPLICATION_ID).unwrap();
            tx.commit().unwrap();
        }
    }

    /// One event as schema 1's ingest and outcomes left it (the columns its
    /// INSERT and UPDATEs wrote), with its attempts.
    #[allow(clippy::too_many_arguments)]
    fn v1_event(
        c: &Connection,
        seq: i64,
        destination: &str,
        order_key: Option<&str>,
        dedupe_key: &str,
        state: &str,
        attempts: u32,
        due_at: Option<i64>,
        head: bool,
    ) -> String {
        let new = event("stripe", T0 + seq);
        c.execute(
            "INSERT INTO events (id, seq, source, destination, state, received_at, updated_at, headers, body,
                                 dedupe_key, order_key, coalesce_key, warnings, attempts, due_at, head)
             VALUES (?1, ?2, 'stripe', ?3, ?4, ?5, ?5, ?6, ?7, ?8, ?9, NULL, NULL, ?10, ?11, ?12)",
            rusqlite::params![
                new.id.as_str(),
                seq,
                destination,
                state,
                T0 + seq,
                hookgate_store::codec::encode_headers(&new.headers),
                format!("{{\"seq\":{seq}}}").as_bytes(),
                dedupe_key.as_bytes(),
                order_key.map(str::as_bytes),
                attempts,
                due_at,
                head,
            ],
        )
        .unwrap();
        c.execute(
            "INSERT INTO dedupe (source, key, event_id, expires_at) VALUES ('stripe', ?1, ?2, ?3)",
            rusqlite::params![dedupe_key.as_bytes(), new.id.as_str(), T0 + 86_400_000],
        )
        .unwrap();
        // An attempt in flight has no row yet: its outcome writes it.
        let recorded = if state == "delivering" { attempts - 1 } else { attempts };
        for attempt in 1..=recorded {
            c.execute(
                "INSERT INTO attempts (event_id, attempt, started_at, duration_ms, status, error)
                 VALUES (?1, ?2, ?3, 5, 500, NULL)",
                rusqlite::params![new.id.as_str(), attempt, T0 + seq],
            )
            .unwrap();
        }
        new.id.as_str().to_owned()
    }

    /// A database made by schema 1 — delivered, dead and pending events, an
    /// order key's queue with its head in flight when the process stopped, a
    /// paused destination, dedupe keys — opens under schema 2 with nothing
    /// lost (`conformance::migrated` says what that means).
    #[tokio::test]
    async fn a_schema_1_database_migrates_in_place_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let ids = {
            let mut c = Connection::open(&path).unwrap();
            migrate_to(&mut c, 1);
            let ids = [
                v1_event(&c, 1, "app", None, "d1", "delivered", 1, None, false),
                v1_event(&c, 2, "app", None, "d2", "dead", 3, None, false),
                // The queue of cus_1: its head was in flight when hookgate stopped, two wait behind it.
                v1_event(&c, 3, "app", Some("cus_1"), "d3", "delivering", 2, Some(T0 + 30_000), true),
                v1_event(&c, 4, "app", Some("cus_1"), "d4", "pending", 0, Some(T0 + 4), false),
                v1_event(&c, 5, "app", Some("cus_1"), "d5", "pending", 0, Some(T0 + 5), false),
                v1_event(&c, 6, "crm", None, "d6", "pending", 0, Some(T0 + 6), true),
            ];
            c.execute("INSERT INTO paused (destination) VALUES ('crm')", []).unwrap();
            ids.map(|id| id.parse::<hookgate_core::EventId>().unwrap())
        };

        let store = SqliteStore::open(&path, T0 + 10).unwrap();
        let at = inspect(&path).unwrap();
        assert_eq!((at.at, at.latest), (3, 3));
        let expected = [
            (State::Delivered, 1),
            (State::Dead, 3),
            (State::Pending, 2), // recovered at open: the cut-off attempt recorded, due when its lease ends
            (State::Pending, 0),
            (State::Pending, 0),
            (State::Pending, 0),
        ];
        hookgate_store::conformance::migrated::before_routes_lost_nothing(&store, &ids, expected).await;
    }

    /// A database made by schema 2, with finished deliveries filed by key and
    /// not yet filed, and one owed: at open under schema 3 each finished one
    /// is numbered, the key file is made and filled, and a listing by key
    /// holds all three, before the key file's first round and after it.
    #[tokio::test]
    async fn a_schema_2_database_moves_its_listing_by_key_to_the_key_file() {
        use hookgate_core::{DeliveryId, EventId};
        use hookgate_store::{DeliveryFilter, Store};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hookgate.db");
        let mut ids = Vec::new();
        {
            let mut c = Connection::open(&path).unwrap();
            migrate_to(&mut c, 2);
            for (rid, state, filed) in [(1, "delivered", 1), (2, "dead", 0), (3, "pending", 0)] {
                let owed = i64::from(state == "pending");
                let (event, delivery) = (EventId::generate(), DeliveryId::generate());
                c.execute(
                    "INSERT INTO events (rid, id, source, received_at, headers, body, order_key)
                     VALUES (?1, ?2, 'stripe', ?3, ?4, x'7b7d', CAST('K' AS BLOB))",
                    rusqlite::params![
                        rid,
                        event.as_str(),
                        T0 + rid,
                        hookgate_store::codec::encode_headers(&Default::default())
                    ],
                )
                .unwrap();
                c.execute(
                    "INSERT INTO deliveries (rid, id, event_rid, source, destination, route, order_key, seq, state,
                                             updated_at, head, filed, owed)
                     VALUES (?1, ?2, ?1, 'stripe', 'app', 'stripe->app', CAST('K' AS BLOB), ?1, ?3, ?4, ?5, ?6, ?5)",
                    rusqlite::params![rid, delivery.as_str(), state, T0 + rid, owed, filed],
                )
                .unwrap();
                ids.push((delivery.to_string(), state.parse::<State>().unwrap()));
            }
        }
        let options = crate::Options { filing: crate::Filing { every: None, slice: 16 }, ..Default::default() };
        let store = SqliteStore::open_with(&path, T0 + 10, options).unwrap();
        assert_eq!(inspect(&path).unwrap().at, 3);
        let listed = || async {
            let filter = DeliveryFilter { order_key: Some("K".into()), limit: 10, ..Default::default() };
            let page = store.list_deliveries(&filter).await.unwrap().deliveries;
            page.iter().map(|d| (d.id.to_string(), d.state)).collect::<Vec<_>>()
        };
        let expected: Vec<(String, State)> = ids.into_iter().rev().collect();
        assert_eq!(listed().await, expected, "read from the store");
        assert_eq!(store.file_keys().await.unwrap(), 2, "the two finished ones");
        assert_eq!(listed().await, expected, "read from the key file");
    }
}

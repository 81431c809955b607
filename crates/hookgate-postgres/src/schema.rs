//! Versioned migrations, applied at connect under a session advisory lock, so
//! several instances starting at once apply each migration exactly once.
//! `hookgate_version` records how far a schema has come.

use tokio_postgres::Client;

/// Advisory lock key held while migrating ("hookgate" in ASCII, as a number).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_6761_7465;

/// What each migration does, for the log line that says it ran.
const NAMES: &[&str] = &[
    "events, dedupe keys, attempts and paused destinations",
    "rate-limit buckets",
    "early, unthrottled autovacuum of events",
    "routes: immutable events, one delivery row per destination (each event so far became one delivery)",
];

const MIGRATIONS: &[&str] = &[
    // 1: events, dedupe keys, attempts. Keys and headers are bytea: bytes (NUL
    // and non-UTF-8 included), which text cannot hold.
    r#"
    -- Queue positions: a batch draws one value and numbers its events under it
    -- (value * 1024 + its place in the batch), so `seq` grows in commit order per key.
    CREATE SEQUENCE events_seq;
    CREATE TABLE events (
        rid           BIGSERIAL PRIMARY KEY,
        id            TEXT NOT NULL UNIQUE,
        -- Queue position: per order key, the order of commits (see the ingest lock).
        seq           BIGINT NOT NULL,
        source        TEXT NOT NULL,
        destination   TEXT NOT NULL,
        state         TEXT NOT NULL,
        received_at   BIGINT NOT NULL,
        updated_at    BIGINT NOT NULL,
        headers       BYTEA NOT NULL,
        body          BYTEA NOT NULL,
        dedupe_key    BYTEA,
        order_key     BYTEA,
        coalesce_key  BYTEA,
        warnings      TEXT,
        attempts      INTEGER NOT NULL DEFAULT 0,
        round_base    INTEGER NOT NULL DEFAULT 0,
        -- pending: when the next attempt is due; delivering: when the lease ends.
        due_at        BIGINT,
        superseded_by TEXT,
        -- First among the active events of its order key (always, without one):
        -- the only events a claim looks at, so a deep queue behind a head costs
        -- a claim nothing. Changed only under the queue's advisory lock.
        head          BOOLEAN NOT NULL DEFAULT false
    );
    CREATE INDEX events_due ON events (destination, due_at, seq) WHERE head AND state IN ('pending', 'delivering');
    -- Finding the next head of a queue.
    CREATE INDEX events_order ON events (source, order_key, seq) WHERE state IN ('pending', 'delivering');
    CREATE INDEX events_coalesce ON events (source, coalesce_key) WHERE state = 'pending' AND coalesce_key IS NOT NULL;
    -- Retention's scan (finished events of one state, oldest first) and counts by state.
    CREATE INDEX events_state ON events (state, updated_at);
    -- The database itself refuses a second in-flight delivery of one order key,
    -- whichever instance tries: the last line of defence behind the claim query.
    CREATE UNIQUE INDEX events_one_in_flight ON events (source, order_key) WHERE state = 'delivering';

    CREATE TABLE dedupe (
        source     TEXT NOT NULL,
        key        BYTEA NOT NULL,
        event_id   TEXT NOT NULL,
        expires_at BIGINT NOT NULL,
        PRIMARY KEY (source, key)
    );
    CREATE INDEX dedupe_expiry ON dedupe (expires_at);

    -- How many copies each event had, apart from the event row: a copy is
    -- counted under its dedupe key's advisory lock only, so ingest never
    -- waits on an events row that a claim or an outcome holds (in whatever
    -- order those take them), and cannot deadlock with them.
    CREATE TABLE event_duplicates (
        event_id TEXT PRIMARY KEY,
        n        BIGINT NOT NULL
    );

    -- Destinations whose deliveries are paused: every instance's claim reads it.
    CREATE TABLE paused_destinations (name TEXT PRIMARY KEY);

    CREATE TABLE attempts (
        event_id    TEXT NOT NULL,
        attempt     INTEGER NOT NULL,
        started_at  BIGINT NOT NULL,
        duration_ms BIGINT NOT NULL,
        status      INTEGER,
        error       TEXT,
        PRIMARY KEY (event_id, attempt)
    );
    "#,
    // 2: rate-limit buckets, one per destination, shared by every instance.
    r#"
    CREATE TABLE rate_buckets (
        destination  TEXT PRIMARY KEY,
        tokens       DOUBLE PRECISION NOT NULL,
        refilled_at  BIGINT NOT NULL
    );
    "#,
    // 3: vacuum the queue table early and at full speed. Every claim, outcome
    // and promotion writes a new row version, and the old one stays in the
    // heads index (`events_due`) until a vacuum: a claim's index walk steps
    // over the dead entries of every head delivered since the last one. The
    // default trigger (a fifth of the table dead) lets a table of 10⁶ events
    // pile up 200,000, and with the default throttle (a pause every few
    // hundred pages) a vacuum of it takes minutes: draining 10⁶ events with the
    // trigger at 1%, two vacuums in 3.5 minutes and claims walking 4,000
    // buffers; unthrottled, one a minute, and the drain 1.16× faster than
    // throttled and 1.33× faster than with no vacuum (docs/benchmarks.md).
    r#"
    ALTER TABLE events SET (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
                            autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.02);
    "#,
    // 4: routes. The event row is written once (body, headers, keys, each
    // route's verdict); what moves lives in a small delivery row per (event,
    // destination), so a state change writes a new version of ~150 bytes,
    // never of the body. A queue is (destination, source, order key).
    // In place: every event becomes one delivery to its destination (the
    // delivery keeps the event's row id, queue position, state, attempts and
    // lease; its id is the event's with the `dlv_` prefix), then the event's
    // moving columns are dropped (an instant change of the catalog: no body is
    // copied). Attempts are re-keyed by delivery, and those whose event is
    // gone (a late outcome after retention) are deleted with it.
    r#"
    ALTER SEQUENCE events_seq RENAME TO deliveries_seq;
    CREATE TABLE deliveries (
        rid           BIGSERIAL PRIMARY KEY,
        id            TEXT NOT NULL UNIQUE,
        event_rid     BIGINT NOT NULL,
        source        TEXT NOT NULL,
        destination   TEXT NOT NULL,
        route         TEXT NOT NULL,
        order_key     BYTEA,
        coalesce_key  BYTEA,
        -- Queue position: per queue, the order of commits (see the ingest lock).
        -- A batch draws one value of deliveries_seq and numbers its deliveries under
        -- it: value * 2^20 + place (schema 3's were value * 1024 + place, all below).
        seq           BIGINT NOT NULL,
        state         TEXT NOT NULL,
        updated_at    BIGINT NOT NULL,
        attempts      INTEGER NOT NULL DEFAULT 0,
        round_base    INTEGER NOT NULL DEFAULT 0,
        -- pending: when the next attempt is due; delivering: when the lease ends.
        due_at        BIGINT,
        superseded_by TEXT,
        -- First among the active deliveries of its queue (always, without an
        -- order key): the only ones a claim looks at. Changed only under the
        -- queue's advisory lock.
        head          BOOLEAN NOT NULL DEFAULT false
    ) WITH (autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_threshold = 1000,
            autovacuum_vacuum_cost_delay = 0, autovacuum_analyze_scale_factor = 0.02);
    INSERT INTO deliveries (rid, id, event_rid, source, destination, route, order_key, coalesce_key, seq, state,
                            updated_at, attempts, round_base, due_at, superseded_by, head)
    SELECT rid, 'dlv_' || substr(id, 5), rid, source, destination, source || '->' || destination, order_key,
           coalesce_key, seq, state, updated_at, attempts, round_base, due_at, superseded_by, head
    FROM events;
    SELECT setval(pg_get_serial_sequence('deliveries', 'rid'), GREATEST((SELECT MAX(rid) FROM deliveries), 1));

    CREATE INDEX deliveries_event ON deliveries (event_rid);
    -- Listings by state (and events by their summary), by destination; by event, newest first.
    CREATE INDEX deliveries_state ON deliveries (state, event_rid, rid);
    CREATE INDEX deliveries_destination ON deliveries (destination, event_rid, rid);
    -- Listings by order key (deliveries', and events' through theirs), in two
    -- halves: those owed are in deliveries_queue; the finished ones here, taken
    -- in as they finish, so storing a delivery writes no index by key but its queue's.
    CREATE INDEX deliveries_done_key ON deliveries (order_key, event_rid, rid)
        WHERE order_key IS NOT NULL AND state IN ('delivered', 'dead', 'superseded');
    CREATE INDEX deliveries_due ON deliveries (destination, due_at, seq) WHERE head AND state IN ('pending', 'delivering');
    -- Finding the next head of a queue; the owed half of a listing by order key.
    CREATE INDEX deliveries_queue ON deliveries (order_key, destination, source, seq)
        WHERE state IN ('pending', 'delivering');
    CREATE INDEX deliveries_coalesce ON deliveries (destination, source, coalesce_key)
        WHERE state = 'pending' AND coalesce_key IS NOT NULL;
    -- The database itself refuses a second in-flight delivery of one queue,
    -- whichever instance tries: the last line of defence behind the claim query.
    CREATE UNIQUE INDEX deliveries_one_in_flight ON deliveries (destination, source, order_key)
        WHERE state = 'delivering';

    ALTER TABLE attempts ADD COLUMN delivery_rid BIGINT, ADD COLUMN response BYTEA;
    -- When the last copy of an event arrived, beside how many.
    ALTER TABLE event_duplicates ADD COLUMN last_at BIGINT;
    UPDATE attempts a SET delivery_rid = e.rid FROM events e WHERE e.id = a.event_id;
    DELETE FROM attempts WHERE delivery_rid IS NULL;
    ALTER TABLE attempts DROP CONSTRAINT attempts_pkey;
    ALTER TABLE attempts DROP COLUMN event_id;
    ALTER TABLE attempts ALTER COLUMN delivery_rid SET NOT NULL;
    ALTER TABLE attempts ADD PRIMARY KEY (delivery_rid, attempt);

    -- The indexes on the moving columns go with them.
    ALTER TABLE events DROP COLUMN seq, DROP COLUMN destination, DROP COLUMN state, DROP COLUMN updated_at,
        DROP COLUMN attempts, DROP COLUMN round_base, DROP COLUMN due_at, DROP COLUMN superseded_by,
        DROP COLUMN head;
    ALTER TABLE events ADD COLUMN event_type TEXT, ADD COLUMN routing TEXT, ADD COLUMN trace TEXT,
        ADD COLUMN unrouted SMALLINT NOT NULL DEFAULT 0;
    -- A migrated event's routing stays NULL: read as the one route it took (`RouteVerdict::before_routes`).
    -- Events are immutable now: no update leaves room to use, so pack them.
    ALTER TABLE events SET (fillfactor = 100);
    CREATE INDEX events_source ON events (source, rid);
    CREATE INDEX events_dedupe_key ON events (dedupe_key, rid) WHERE dedupe_key IS NOT NULL;
    CREATE INDEX events_received ON events (received_at);
    CREATE INDEX events_unrouted ON events (rid) WHERE unrouted = 1;
    "#,
];

const _: () = assert!(NAMES.len() == MIGRATIONS.len(), "a name for every migration");

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error(
        "the schema was made by a pre-release hookgate (table hookgate_schema) in a format this version does not \
         read; use a new schema or database (nothing in the old one is converted)"
    )]
    PreRelease,
    #[error("the schema was made by a newer hookgate (version {found}, this one knows {known}); upgrade hookgate")]
    Newer { found: usize, known: usize },
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
}

pub async fn migrate(client: &mut Client) -> Result<(), MigrateError> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).await?;
    let result = apply(client).await;
    client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]).await?;
    result
}

async fn apply(client: &mut Client) -> Result<(), MigrateError> {
    apply_up_to(client, MIGRATIONS.len()).await
}

/// The migrations up to `version` only: a schema as an older hookgate left it (tests).
pub async fn apply_up_to(client: &mut Client, version: usize) -> Result<(), MigrateError> {
    let legacy = client.query_one("SELECT to_regclass('hookgate_schema') IS NOT NULL", &[]).await?;
    if legacy.get::<_, bool>(0) {
        return Err(MigrateError::PreRelease);
    }
    client.batch_execute("CREATE TABLE IF NOT EXISTS hookgate_version (version INTEGER NOT NULL)").await?;
    let current =
        client.query_opt("SELECT version FROM hookgate_version", &[]).await?.map_or(0, |row| row.get::<_, i32>(0));
    let current = current.max(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(MigrateError::Newer { found: current, known: MIGRATIONS.len() });
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().take(version).skip(current) {
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.execute("DELETE FROM hookgate_version", &[]).await?;
        tx.execute("INSERT INTO hookgate_version (version) VALUES ($1)", &[&(n as i32 + 1)]).await?;
        tx.commit().await?;
        tracing::info!(version = n + 1, "schema migrated: {}", NAMES.get(n).copied().unwrap_or("(unnamed)"));
    }
    Ok(())
}

/// Where the schema the connection sees stands, read without changing it.
pub async fn inspect(client: &Client) -> Result<hookgate_store::SchemaVersion, tokio_postgres::Error> {
    let exists = client.query_one("SELECT to_regclass('hookgate_version') IS NOT NULL", &[]).await?;
    let at = if exists.get::<_, bool>(0) {
        client.query_opt("SELECT version FROM hookgate_version", &[]).await?.map_or(0, |row| row.get::<_, i32>(0))
    } else {
        0
    };
    Ok(hookgate_store::SchemaVersion { at: at.max(0) as usize, latest: MIGRATIONS.len() })
}

//! Versioned migrations, applied in order at open; `PRAGMA user_version`
//! records how far a database has come, and `PRAGMA application_id` marks the
//! file as hookgate's.

use rusqlite::Connection;

/// "hook" in ASCII: set on every database this version creates. A file with
/// migrations applied but without it was made by a pre-release hookgate whose
/// format (text keys and headers) this version does not read.
const APPLICATION_ID: i64 = 0x686f_6f6b;

/// What each migration does, for the log line that says it ran.
const NAMES: &[&str] = &["events, dedupe keys and attempts"];

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

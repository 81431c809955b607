//! The key file: finished deliveries listed by order key, in a database file
//! of their own (`<database>.keys`), kept by a thread of its own.
//!
//! Why apart: an index by order key over every finished delivery takes each
//! entry at a place its key decides, so a commit writes a page of it (4 KiB
//! of WAL) for nearly every entry, whatever the batch. In the store's file
//! that page was written on the one writer's time, and every ack waited for
//! it. Here the writer only numbers a keyed delivery when it first finishes
//! (`deliveries.finished_seq`, from a counter that never goes back); this
//! thread copies `(order key, event, delivery)` of those numbered past its
//! mark into the key file and moves the mark, in one transaction of the key
//! file, up to [`FILE_SLICE`] at a time.
//!
//! What a listing by order key reads (`read::DIALECT`): deliveries owed (the
//! queue index), finished ones numbered up to the mark (this file, joined
//! back to their rows), and finished ones numbered past it (the store's
//! `deliveries_finished`: what the last round has not copied yet). The two
//! files are read in two snapshots, the store's first. A finished delivery
//! is in exactly one of the last two arms whichever rounds commit between
//! them, because what makes the key file right never changes under it: an
//! entry is true of its delivery for as long as that row exists (a
//! delivery's key and event never change; a replay keeps its number), and
//! the mark and the entries it covers commit together. The one exception is
//! a delivery retention deletes, and the sweep takes out, between the two
//! snapshots: it may be left out (it is being deleted). So the key file
//! needs no sync of its own (`synchronous=NORMAL`): a power cut that takes
//! its last round takes that round's mark with it.
//!
//! Entries of deleted deliveries are left behind by retention; a listing
//! joins every entry to its row (row id, event and key alike), so such an
//! entry, or one whose row id was reused, matches nothing. Once retention
//! has deleted, the thread sweeps them out, a pass over the whole file a
//! chunk a round (twice as many entries as the round filed, at least
//! [`SWEEP_CHUNK`] and at most [`FILE_SLICE`]).
//!
//! The file is derived: made again at open when it is missing, of another
//! layout, unreadable (at open: its header, layout or mark), made for
//! another store (the store's `key_file_check` holds an id made by the
//! migration that created it; a backup from before that migration, restored
//! and migrated again, gets a new one), or ahead of the store (a store
//! restored from a backup: a mark above every number the store gave, or a
//! round that saw deletions the store has not made), and refilled from the
//! store; meanwhile listings read the store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, params};

use crate::space::Reserve;

/// How often the thread copies what has finished since its last round. A
/// second: the store's arm of a listing then holds at most a second of
/// finishes (read from one index), and each round takes enough entries to
/// share the key file's pages (every 200 ms cost the thread 7 µs an event
/// under load, every second 3 µs: docs/benchmarks.md, "The key file").
pub const FILE_EVERY: Duration = Duration::from_millis(1000);

/// Deliveries copied in one transaction of the key file, at most.
pub const FILE_SLICE: u64 = 16_384;

/// The key file connection's page cache, for each of its two files (KiB).
const KEY_CACHE_KIB: i64 = 512;

/// Entries the sweep looks at each round.
pub const SWEEP_CHUNK: i64 = 1_024;

/// When the key file is kept up, and how many a transaction takes.
#[derive(Debug, Clone, Copy)]
pub struct Filing {
    /// Between rounds; `None`: only when asked ([`crate::SqliteStore::file_keys`], for tests).
    pub every: Option<Duration>,
    /// Deliveries one transaction copies (at least 1).
    pub slice: u64,
}

impl Default for Filing {
    fn default() -> Self {
        Filing { every: Some(FILE_EVERY), slice: FILE_SLICE }
    }
}

/// The key file's layout; a file of another is made again.
const VERSION: i64 = 2;

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS filed (
        order_key    BLOB NOT NULL,
        event_rid    INTEGER NOT NULL,
        delivery_rid INTEGER NOT NULL,
        PRIMARY KEY (order_key, event_rid, delivery_rid)
    ) WITHOUT ROWID;
    -- filed_through: every finished delivery numbered up to it has its entry.
    -- seen_deletions: the store's count of retention's deletions in the
    -- latest round (a store whose count is lower is older than this file:
    -- restored from a backup). store_id: the store this file was made for.
    CREATE TABLE IF NOT EXISTS mark (
        id              INTEGER PRIMARY KEY CHECK (id = 0),
        filed_through   INTEGER NOT NULL,
        seen_deletions  INTEGER NOT NULL,
        store_id        INTEGER NOT NULL
    );
";

/// Each round notes the store's count of deletions it read.
const SEEN: &str = "seen_deletions = max(seen_deletions, (SELECT deletions FROM store.key_file_check WHERE id = 0))";

/// Where the key file of the database at `db` lives.
pub fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push(".keys");
    PathBuf::from(name)
}

/// `path` as SQL text for ATTACH: the store's paths are UTF-8 (SQLite's are).
pub fn sql_path(path: &Path) -> rusqlite::Result<&str> {
    path.to_str().ok_or_else(|| rusqlite::Error::InvalidPath(path.to_path_buf()))
}

/// The key file's connection: the file (made if missing) as `main`, the
/// store's database attached as `store`, read only by what this does.
pub struct KeyFile {
    conn: Mutex<Connection>,
    slice: u64,
    sweep: Mutex<Sweep>,
}

/// Where the sweep stands. A pass looks at every entry, a chunk a round;
/// one starts when retention has deleted since the last pass began.
#[derive(Debug, Default)]
struct Sweep {
    /// The last entry this pass looked at; `None` between passes.
    at: Option<(Vec<u8>, i64, i64)>,
    in_pass: bool,
    /// The store's deletion count when this pass began.
    began_at: i64,
    /// A count whose deletions a finished pass has swept out (0 at open: at
    /// the first round, a store that has ever deleted begins a pass).
    clean: i64,
}

/// What the store says at open, that the key file is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Store {
    /// The store's id, made by the migration that created `key_file_check`.
    pub id: i64,
    /// The highest number given that the store holds or deleted.
    pub numbered: i64,
    /// How many times retention deleted finished deliveries.
    pub deletions: i64,
}

impl Store {
    pub fn read(conn: &Connection) -> rusqlite::Result<Store> {
        let (id, deletions) =
            conn.query_row("SELECT store_id, deletions FROM key_file_check WHERE id = 0", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok(Store { id, numbered: crate::writer::numbered(conn)?, deletions })
    }
}

/// What open found in the key file.
enum Checked {
    Usable(Connection),
    /// To be made again, and why.
    Remake(String),
}

impl KeyFile {
    /// Open the key file of `db`, made again when it is missing, of another
    /// layout, unreadable, made for another store, or ahead of the store. A
    /// round that saw deletions the store has not made means the store went
    /// back (restored from a backup), and the key file may lack entries of
    /// deliveries the backup brought back: a round files only what exists,
    /// and the sweep takes out what does not. A mark above every number the
    /// store gave means the same, and is taken as conservatively.
    pub fn open(db: &Path, filing: Filing, store: Store) -> rusqlite::Result<Self> {
        let conn = match open_checked(db, store)? {
            Checked::Usable(conn) => conn,
            Checked::Remake(why) => {
                tracing::warn!(%why, "the key file is made again from the database");
                remove(db).map_err(|e| remake_failed(format!("cannot remove it: {e}")))?;
                match open_checked(db, store)? {
                    Checked::Usable(conn) => conn,
                    Checked::Remake(why) => return Err(remake_failed(why)),
                }
            }
        };
        conn.execute("ATTACH DATABASE ?1 AS store", [sql_path(db)?])?;
        conn.pragma_update(None, "cache_size", -KEY_CACHE_KIB)?;
        conn.pragma_update(Some("store"), "cache_size", -KEY_CACHE_KIB)?;
        Ok(KeyFile { conn: Mutex::new(conn), slice: filing.slice.max(1), sweep: Mutex::default() })
    }

    /// The mark: every finished delivery numbered up to it is filed.
    pub fn filed_through(&self) -> rusqlite::Result<i64> {
        self.lock().query_row("SELECT filed_through FROM mark WHERE id = 0", [], |r| r.get(0))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Copy every delivery finished past the mark, a slice a transaction; how many.
    pub fn file_all(&self) -> rusqlite::Result<u64> {
        let conn = self.lock();
        let mut total = 0;
        loop {
            let n = file_slice(&conn, self.slice)?;
            total += n;
            if n < self.slice {
                return Ok(total);
            }
        }
    }

    /// While retention has deleted since the last pass began, look at the
    /// next `at_least` entries (at least [`SWEEP_CHUNK`], at most
    /// [`FILE_SLICE`]) and delete those whose delivery is gone; how many.
    /// Looking at twice as many as were filed keeps the sweep ahead of what
    /// the key file takes in.
    pub fn sweep(&self, at_least: u64) -> rusqlite::Result<u64> {
        let conn = self.lock();
        let mut state = self.sweep.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let tx = conn.unchecked_transaction()?;
        let count: i64 = tx.query_row("SELECT deletions FROM store.key_file_check WHERE id = 0", [], |r| r.get(0))?;
        if !state.in_pass {
            if count <= state.clean {
                return Ok(0);
            }
            *state = Sweep { at: None, in_pass: true, began_at: count, clean: state.clean };
        }
        let limit = at_least.clamp(SWEEP_CHUNK as u64, FILE_SLICE) as i64;
        let (key, event, delivery) = state.at.clone().unwrap_or_default();
        let chunk: Vec<(Vec<u8>, i64, i64, bool)> = tx
            .prepare_cached(
                "SELECT f.order_key, f.event_rid, f.delivery_rid,
                        EXISTS (SELECT 1 FROM store.deliveries d WHERE d.rid = f.delivery_rid
                                AND d.event_rid = f.event_rid AND d.order_key = f.order_key)
                 FROM filed f WHERE (f.order_key, f.event_rid, f.delivery_rid) > (?1, ?2, ?3)
                 ORDER BY f.order_key, f.event_rid, f.delivery_rid LIMIT ?4",
            )?
            .query_map(params![key, event, delivery, limit], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let mut deleted = 0;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM filed WHERE order_key = ?1 AND event_rid = ?2 AND delivery_rid = ?3")?;
            for (key, event, delivery, _) in chunk.iter().filter(|entry| !entry.3) {
                deleted += delete.execute(params![key, event, delivery])? as u64;
            }
        }
        tx.execute(&format!("UPDATE mark SET {SEEN} WHERE id = 0"), [])?;
        tx.commit()?;
        if (chunk.len() as i64) < limit {
            *state = Sweep { at: None, in_pass: false, began_at: 0, clean: state.began_at };
        } else {
            state.at = chunk.last().map(|(key, event, delivery, _)| (key.clone(), *event, *delivery));
        }
        Ok(deleted)
    }
}

/// The key file, checked against the store.
fn open_checked(db: &Path, store: Store) -> rusqlite::Result<Checked> {
    let unreadable = |e: &rusqlite::Error| {
        matches!(e.sqlite_error_code(), Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt))
    };
    let conn = Connection::open(path_for(db))?;
    conn.busy_timeout(Duration::from_millis(crate::BUSY_TIMEOUT_MS))?;
    let layout = conn.pragma_update(None, "journal_mode", "WAL").and_then(|()| {
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
        Ok((version, tables))
    });
    let (version, tables) = match layout {
        Ok(found) => found,
        Err(e) if unreadable(&e) => return Ok(Checked::Remake(format!("unreadable: {e}"))),
        Err(e) => return Err(e),
    };
    if version != VERSION && tables > 0 {
        return Ok(Checked::Remake(format!("its layout is {version}, this hookgate's {VERSION}")));
    }
    // Derived data: a round lost to a power cut is lost with its mark (see the module's note).
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.execute_batch(SCHEMA)?;
    conn.pragma_update(None, "user_version", VERSION)?;
    conn.execute(
        "INSERT OR IGNORE INTO mark (id, filed_through, seen_deletions, store_id) VALUES (0, 0, 0, ?1)",
        [store.id],
    )?;
    let mark = conn.query_row("SELECT filed_through, seen_deletions, store_id FROM mark WHERE id = 0", [], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
    });
    let (filed_through, seen, id) = match mark {
        Ok(mark) => mark,
        Err(e) if unreadable(&e) => return Ok(Checked::Remake(format!("unreadable: {e}"))),
        Err(e) => return Err(e),
    };
    Ok(if id != store.id {
        Checked::Remake("it was made for another database, or before the database was migrated again".into())
    } else if filed_through > store.numbered {
        Checked::Remake(format!(
            "it holds deliveries numbered up to {filed_through}, the database up to {} (restored from a backup?)",
            store.numbered
        ))
    } else if seen > store.deletions {
        Checked::Remake(format!(
            "it has seen {seen} deletions by retention, the database {} (restored from a backup?)",
            store.deletions
        ))
    } else {
        Checked::Usable(conn)
    })
}

fn remake_failed(why: String) -> rusqlite::Error {
    rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN), Some(why))
}

/// Remove the key file, to be made again: its WAL and shared memory first,
/// so that a new file never replays an old WAL.
fn remove(db: &Path) -> std::io::Result<()> {
    let file = path_for(db);
    for suffix in ["-wal", "-shm", ""] {
        let mut name = file.as_os_str().to_owned();
        name.push(suffix);
        match std::fs::remove_file(&name) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
            _ => {}
        }
    }
    Ok(())
}

/// One transaction of the key file: the entries of up to `slice` deliveries
/// numbered past the mark, and the mark moved to the last of them. The
/// store's rows are read in one snapshot, and numbers are given in commit
/// order, so none below the new mark can appear later.
fn file_slice(conn: &Connection, slice: u64) -> rusqlite::Result<u64> {
    // Deferred: the transaction writes the key file only; the store is read.
    let tx = conn.unchecked_transaction()?;
    let from: i64 = tx.query_row("SELECT filed_through FROM mark WHERE id = 0", [], |r| r.get(0))?;
    let (through, n): (Option<i64>, u64) = tx
        .prepare_cached(concat!(
            "SELECT max(finished_seq), count(*) FROM (
                 SELECT finished_seq FROM store.deliveries INDEXED BY deliveries_finished
                 WHERE ",
            finished!(""),
            " AND finished_seq > ?1 ORDER BY finished_seq LIMIT ?2)"
        ))?
        .query_row(params![from, slice as i64], |r| Ok((r.get(0)?, r.get(1)?)))?;
    let Some(through) = through else {
        return Ok(0);
    };
    tx.prepare_cached(concat!(
        "INSERT OR IGNORE INTO filed (order_key, event_rid, delivery_rid)
         SELECT order_key, event_rid, rid FROM store.deliveries INDEXED BY deliveries_finished
         WHERE ",
        finished!(""),
        " AND finished_seq > ?1 AND finished_seq <= ?2"
    ))?
    .execute(params![from, through])?;
    tx.execute(&format!("UPDATE mark SET filed_through = ?1, {SEEN} WHERE id = 0"), [through])?;
    tx.commit()?;
    Ok(n)
}

/// The thread's rounds, while the store is open: file what finished, then
/// sweep a chunk. A failing round (a full disk) is logged once and tried
/// again next round; meanwhile listings read the unfiled from the store.
/// While the disk is short of its reserve, no round runs: the key file
/// would take room the deliveries are owed.
pub fn run(keys: Arc<KeyFile>, every: Duration, open: Weak<()>, reserve: Reserve) {
    let mut failing = false;
    while open.upgrade().is_some() {
        std::thread::sleep(every);
        if reserve.short().is_some() {
            continue;
        }
        match keys.file_all().and_then(|filed| keys.sweep(2 * filed)) {
            Ok(_) if failing => {
                tracing::info!("the key file is kept up again");
                failing = false;
            }
            Ok(_) => {}
            Err(error) if !failing => {
                tracing::warn!(%error, "cannot keep the key file up (listings by order key read the store meanwhile); trying again");
                failing = true;
            }
            Err(error) => tracing::debug!(%error, "the key file is still failing"),
        }
    }
}

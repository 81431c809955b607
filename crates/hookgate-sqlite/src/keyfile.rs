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
//! file, tens of thousands at a time.
//!
//! What a listing by order key reads (`read::DIALECT`): deliveries owed (the
//! queue index), finished ones numbered up to the mark (this file, joined
//! back to their rows), and finished ones numbered past it (the store's
//! `deliveries_finished`: what the last round has not copied yet). Each
//! finished delivery is in exactly one of the last two, whatever the two
//! files' snapshots, because what makes the key file right never changes
//! under it: an entry is true of its delivery for as long as that row
//! exists (a delivery's key and event never change; a replay keeps its
//! number), and the mark and the entries it covers commit together. So the
//! key file needs no sync of its own (`synchronous=NORMAL`): a power cut
//! that takes its last round takes that round's mark with it.
//!
//! Entries of deleted deliveries are left behind by retention; a listing
//! joins every entry to its row (row id, event and key alike), so such an
//! entry, or one whose row id was reused, matches nothing. The thread sweeps
//! them out a chunk at a time. The file is derived: deleted, it is made
//! again and refilled from the store, and meanwhile listings read the store.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rusqlite::{Connection, params};

use crate::space::Reserve;

/// How often the thread copies what has finished since its last round.
pub const FILE_EVERY: Duration = Duration::from_millis(200);

/// Deliveries copied in one transaction of the key file, at most.
pub const FILE_SLICE: u64 = 16_384;

/// The key file connection's page cache, for each of its two files (KiB).
const KEY_CACHE_KIB: i64 = 512;

/// Entries the sweep looks at each round.
const SWEEP_CHUNK: i64 = 1_024;

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

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS filed (
        order_key    BLOB NOT NULL,
        event_rid    INTEGER NOT NULL,
        delivery_rid INTEGER NOT NULL,
        PRIMARY KEY (order_key, event_rid, delivery_rid)
    ) WITHOUT ROWID;
    -- Every finished delivery numbered up to filed_through has its entry.
    CREATE TABLE IF NOT EXISTS mark (
        id             INTEGER PRIMARY KEY CHECK (id = 0),
        filed_through  INTEGER NOT NULL
    );
    INSERT OR IGNORE INTO mark (id, filed_through) VALUES (0, 0);
";

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
    /// Where the sweep goes on from: the last entry it looked at.
    swept: Mutex<Option<(Vec<u8>, i64, i64)>>,
}

impl KeyFile {
    /// `numbered`: the highest number the store holds. A mark above it
    /// means the store went back (restored from a backup): the key file may
    /// then lack entries of deliveries the backup brought back, so it starts
    /// over, empty, and refills from the store.
    pub fn open(db: &Path, filing: Filing, numbered: i64) -> rusqlite::Result<Self> {
        let conn = Connection::open(path_for(db))?;
        conn.busy_timeout(Duration::from_millis(crate::BUSY_TIMEOUT_MS))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // Derived data: a round lost to a power cut is lost with its mark (see the module's note).
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        let mark: i64 = conn.query_row("SELECT filed_through FROM mark WHERE id = 0", [], |r| r.get(0))?;
        if mark > numbered {
            tracing::warn!(mark, numbered, "the database is behind its key file (restored?): the key file starts over");
            conn.execute_batch("BEGIN; DELETE FROM filed; UPDATE mark SET filed_through = 0; COMMIT;")?;
        }
        conn.execute("ATTACH DATABASE ?1 AS store", [sql_path(db)?])?;
        conn.pragma_update(None, "cache_size", -KEY_CACHE_KIB)?;
        conn.pragma_update(Some("store"), "cache_size", -KEY_CACHE_KIB)?;
        Ok(KeyFile { conn: Mutex::new(conn), slice: filing.slice.max(1), swept: Mutex::new(None) })
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

    /// Look at the next chunk of entries and delete those whose delivery is
    /// gone; how many. Wraps around at the end.
    pub fn sweep(&self) -> rusqlite::Result<u64> {
        let conn = self.lock();
        let mut swept = self.swept.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (key, event, delivery) = swept.clone().unwrap_or_default();
        let tx = conn.unchecked_transaction()?;
        let chunk: Vec<(Vec<u8>, i64, i64, bool)> = tx
            .prepare_cached(
                "SELECT f.order_key, f.event_rid, f.delivery_rid,
                        EXISTS (SELECT 1 FROM store.deliveries d WHERE d.rid = f.delivery_rid
                                AND d.event_rid = f.event_rid AND d.order_key = f.order_key)
                 FROM filed f WHERE (f.order_key, f.event_rid, f.delivery_rid) > (?1, ?2, ?3)
                 ORDER BY f.order_key, f.event_rid, f.delivery_rid LIMIT ?4",
            )?
            .query_map(params![key, event, delivery, SWEEP_CHUNK], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut deleted = 0;
        {
            let mut delete =
                tx.prepare_cached("DELETE FROM filed WHERE order_key = ?1 AND event_rid = ?2 AND delivery_rid = ?3")?;
            for (key, event, delivery, _) in chunk.iter().filter(|entry| !entry.3) {
                deleted += delete.execute(params![key, event, delivery])? as u64;
            }
        }
        tx.commit()?;
        *swept = if (chunk.len() as i64) < SWEEP_CHUNK {
            None
        } else {
            chunk.last().map(|(key, event, delivery, _)| (key.clone(), *event, *delivery))
        };
        Ok(deleted)
    }
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
    tx.execute("UPDATE mark SET filed_through = ?1 WHERE id = 0", [through])?;
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
        match keys.file_all().and_then(|_| keys.sweep()) {
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

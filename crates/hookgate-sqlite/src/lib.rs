//! The embedded storage backend: one SQLite file in WAL mode with
//! `synchronous=FULL`, so a committed write is on disk before anyone is told
//! so. One writer thread group-commits every write (see [`writer`]); a small
//! pool of read-only connections serves the admin API and the dispatcher's
//! wake-up queries, which WAL lets run beside the writer.
//!
//! One process owns a database file: [`SqliteStore::open`] takes an exclusive
//! lock on `<file>.lock` and refuses to open a file another process holds.
//! That is what makes crash recovery simple and safe (every `delivering`
//! delivery at open belongs to a dead process). Many instances use PostgreSQL.

/// Finished deliveries with an order key: `deliveries_finished`'s own
/// condition, word for word (SQLite uses a partial index only for a query
/// that repeats its condition), each column after `$t` (`""`, or an alias
/// such as `"{t}."` where the query joins another table).
macro_rules! finished {
    ($t:literal) => {
        concat!($t, "finished_seq IS NOT NULL AND ", $t, "order_key IS NOT NULL")
    };
}

/// The key file's mark, as a listing reads it: every finished delivery
/// numbered up to it is in the key file (`crate::keyfile`).
macro_rules! mark {
    () => {
        "(SELECT filed_through FROM keys.mark WHERE id = 0)"
    };
}

mod keyfile;
mod read;
mod schema;
mod space;
mod write;
mod writer;

pub use keyfile::Filing;

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use hookgate_core::{DeliveryId, EventId, State};
use hookgate_store::{
    ADMISSION_WAIT, Attempt, Bucket, Claim, DeliveryFilter, DeliveryPage, EventDetail, Ingested, ListFilter,
    NewDelivery, NewEvent, Page, Result, RouteVerdict, StateCount, Store, StoreError, Verdict,
};
use rusqlite::{Connection, OpenFlags};
pub use schema::{MigrateError, inspect};
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio::sync::{mpsc, oneshot};

pub use space::DEFAULT_MIN_FREE;
use space::Reserve;
use writer::{Command, QUEUE_CAPACITY, Writer};

/// Read-only connections for the admin API, `/metrics` and readiness.
const READERS: usize = 3;

/// How long a reader waits on a lock (a checkpoint) before giving up.
const BUSY_TIMEOUT_MS: u64 = 5_000;

pub struct SqliteStore {
    /// The checkpoint thread runs while this lives.
    _alive: Arc<()>,
    writer: mpsc::Sender<Command>,
    /// Set by the writer while its batches fail to commit.
    failing: Arc<AtomicBool>,
    /// Set by the checkpointer while it cannot move the WAL into the database file.
    checkpoint_failing: Arc<AtomicBool>,
    readers: Arc<Readers>,
    /// The dispatchers' own read connection (`next_due`): never behind an
    /// admin listing or a count.
    dispatch: Arc<Mutex<Connection>>,
    /// Disk space kept for deliveries: readiness fails while it is short.
    reserve: Reserve,
    /// Finished deliveries by order key, kept up by a thread of its own.
    keys: Arc<keyfile::KeyFile>,
    /// Rate-limit buckets by destination. In memory: one process owns the
    /// file, so this process is every instance there is.
    buckets: Mutex<std::collections::HashMap<String, Bucket>>,
    /// Held for the life of the store: the process's claim on the file.
    _lock: File,
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// Ingest is refused while the database's filesystem has less than this
    /// free, so deliveries keep room to drain (`storage.min_free`); 0: never.
    pub min_free: u64,
    /// How often the key file is kept up, and how many a transaction takes
    /// (tests file by hand or in small slices, so that listings mix
    /// deliveries from the key file and from the store).
    pub filing: keyfile::Filing,
}

impl Default for Options {
    fn default() -> Self {
        Options { min_free: DEFAULT_MIN_FREE, filing: keyfile::Filing::default() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("{path} is in use by another hookgate process (lock file {lock})")]
    Locked { path: String, lock: String },
    #[error("cannot open {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("cannot open {path}: {source}")]
    Sqlite { path: String, source: rusqlite::Error },
    #[error("cannot use {path}: {source}")]
    Schema { path: String, source: MigrateError },
    #[error(
        "cannot make the key file {path}: {source} (it holds finished deliveries by order key, \
         made from the database: the directory must be writable, like the database's)"
    )]
    KeyFile { path: String, source: rusqlite::Error },
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path`, migrate it, recover
    /// deliveries cut off by a crash, and start the writer thread.
    pub fn open(path: impl AsRef<Path>, now_ms: i64) -> Result<Self, OpenError> {
        Self::open_with(path, now_ms, Options::default())
    }

    pub fn open_with(path: impl AsRef<Path>, now_ms: i64, options: Options) -> Result<Self, OpenError> {
        let path = path.as_ref().to_path_buf();
        let shown = path.display().to_string();
        let sqlite = |source| OpenError::Sqlite { path: shown.clone(), source };
        let lock_path = PathBuf::from(format!("{shown}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|source| OpenError::Io { path: lock_path.display().to_string(), source })?;
        if lock.try_lock().is_err() {
            return Err(OpenError::Locked { path: shown, lock: lock_path.display().to_string() });
        }

        let mut conn = Connection::open(&path).map_err(sqlite)?;
        configure_writer(&conn).map_err(sqlite)?;
        schema::migrate(&mut conn).map_err(|source| OpenError::Schema { path: shown.clone(), source })?;
        let recovered = write::recover(&mut conn, now_ms).map_err(sqlite)?;
        if recovered > 0 {
            tracing::warn!(recovered, "deliveries cut off by a stop are due again once their leases end");
        }
        // After the migration (the key file reads the store's new column), before the readers (which attach it).
        let keys_path = keyfile::path_for(&path);
        let store = keyfile::Store::read(&conn).map_err(sqlite)?;
        let keys = keyfile::KeyFile::open(&path, options.filing, store)
            .map_err(|source| OpenError::KeyFile { path: keys_path.display().to_string(), source })?;
        let filed_through = keys.filed_through().map_err(sqlite)?;
        let keys = Arc::new(keys);
        let readers = (0..READERS)
            .map(|_| open_reader(&path).and_then(|c| attach_keys(&c, &keys_path).map(|()| Mutex::new(c))))
            .collect::<rusqlite::Result<Vec<_>>>()
            .map_err(sqlite)?;
        let dispatch = Arc::new(Mutex::new(open_reader(&path).map_err(sqlite)?));

        let alive = Arc::new(());
        let checkpoint_failing = Arc::new(AtomicBool::new(false));
        let (checkpoint_path, weak, flag) = (path.clone(), Arc::downgrade(&alive), checkpoint_failing.clone());
        std::thread::Builder::new()
            .name("hg-sqlite-ckpt".into())
            .spawn(move || {
                if let Err(error) = checkpoint(&checkpoint_path, weak, flag) {
                    tracing::error!(%error, "the checkpoint thread stopped");
                }
            })
            .map_err(|source| OpenError::Io { path: shown.clone(), source })?;
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let failing = Arc::new(AtomicBool::new(false));
        let reserve = Reserve::new(&path, options.min_free);
        let writer = Writer::new(conn, failing.clone(), reserve.clone(), filed_through).map_err(sqlite)?;
        std::thread::Builder::new()
            .name("hg-sqlite-write".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| OpenError::Io { path: shown.clone(), source })?;
        if let Some(every) = options.filing.every {
            let (keys, weak, reserve) = (keys.clone(), Arc::downgrade(&alive), reserve.clone());
            std::thread::Builder::new()
                .name("hg-sqlite-keys".into())
                .spawn(move || keyfile::run(keys, every, weak, reserve))
                .map_err(|source| OpenError::Io { path: shown.clone(), source })?;
        }
        Ok(SqliteStore {
            _alive: alive,
            checkpoint_failing,
            writer: tx,
            failing,
            readers: Arc::new(Readers { conns: readers, next: AtomicUsize::new(0) }),
            dispatch,
            reserve,
            keys,
            buckets: Mutex::default(),
            _lock: lock,
        })
    }

    /// Copy into the key file every delivery finished since its last round,
    /// now; how many. The key file's thread does this every
    /// [`keyfile::FILE_EVERY`]; tests that open with `every: None` call it.
    pub async fn file_keys(&self) -> Result<u64> {
        let keys = self.keys.clone();
        tokio::task::spawn_blocking(move || keys.file_all().map_err(db_error))
            .await
            .map_err(|e| StoreError::Unavailable(format!("filing task failed: {e}")))?
    }

    /// Look at the key file's next chunk of entries and delete those whose
    /// delivery is gone, now; how many. The key file's thread does this each round.
    pub async fn sweep_keys(&self) -> Result<u64> {
        let keys = self.keys.clone();
        tokio::task::spawn_blocking(move || keys.sweep(0).map_err(db_error))
            .await
            .map_err(|e| StoreError::Unavailable(format!("sweep task failed: {e}")))?
    }

    async fn send<T>(&self, make: impl FnOnce(oneshot::Sender<Result<T>>) -> Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.writer.send(make(reply)).await.map_err(|_| writer_gone())?;
        answer.await.map_err(|_| writer_gone())?
    }

    /// Run a read on one of the read-only connections, off the async threads.
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Connection) -> Result<T> + Send + 'static) -> Result<T> {
        let readers = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let index = readers.next.fetch_add(1, Ordering::Relaxed) % readers.conns.len();
            let conn = readers.conns[index].lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

/// Read-only connections, taken round robin.
struct Readers {
    conns: Vec<Mutex<Connection>>,
    next: AtomicUsize,
}

fn writer_gone() -> StoreError {
    StoreError::Unavailable("the sqlite writer thread has stopped".into())
}

/// The writer's page cache, in KiB: the pages of the indexes an ingest
/// touches stay in memory instead of being read back from the OS's cache.
const WRITER_CACHE_KIB: i64 = 16 * 1024;
/// How often the checkpointer moves the WAL into the database file while
/// it keeps up, and while it does not.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(250);
const CHECKPOINT_BEHIND: std::time::Duration = std::time::Duration::from_millis(20);
/// WAL pages after which the writer finishes a checkpoint itself, so the WAL
/// starts over from its beginning (16 MiB at 4 KiB pages).
const WAL_RESTART_PAGES: i64 = 4096;
/// The WAL file is cut back to this size when it starts over.
const WAL_KEEP_BYTES: i64 = 64 * 1024 * 1024;

fn configure_writer(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    // FULL: the WAL is fsync'd at every commit, so a 2xx survives power loss, not only a crash.
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "OFF")?;
    conn.pragma_update(None, "cache_size", -WRITER_CACHE_KIB)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoints run on a thread of their own (`checkpoint`), not on the writer's
    // time, but under steady writes that thread never reaches the WAL's end: a WAL
    // only starts over from its beginning once a checkpoint has copied all of it.
    // Past WAL_RESTART_PAGES the writer finishes one itself after a commit (the
    // thread has copied most of the frames by then), so the WAL stays a few MiB of
    // file pages that are rewritten in place, instead of growing by gigabytes.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_RESTART_PAGES)?;
    conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

/// Copy the WAL into the database file, beside the writer (a PASSIVE
/// checkpoint never blocks it), so the WAL stays small and the writer's
/// thread spends its time on writes. Runs as long as the store is open.
///
/// A checkpoint that fails (the database file cannot grow: a full disk) is
/// noted in `failing`: readiness then fails, for the WAL can no longer be
/// reset and every write will soon fail too.
fn checkpoint(path: &Path, open: std::sync::Weak<()>, failing: Arc<AtomicBool>) -> rusqlite::Result<()> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    conn.pragma_update(None, "journal_size_limit", WAL_KEEP_BYTES)?;
    let mut pause = CHECKPOINT_EVERY;
    while open.upgrade().is_some() {
        std::thread::sleep(pause);
        // Columns: could not run at all (SQLITE_BUSY: not a failure), frames in the WAL, frames copied.
        let result = conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| Ok((row.get::<_, i64>(1)?, row.get::<_, i64>(2)?)));
        pause = match result {
            Ok((frames, copied)) if copied < frames => CHECKPOINT_BEHIND,
            _ => CHECKPOINT_EVERY,
        };
        let failed = result.is_err();
        if let Err(error) = result {
            tracing::debug!(%error, "checkpoint failed; trying again");
        }
        failing.store(failed, Ordering::Relaxed);
    }
    Ok(())
}

/// The key file, on a read-only connection to the store: listings by order key join it.
pub(crate) fn attach_keys(conn: &Connection, keys: &Path) -> rusqlite::Result<()> {
    conn.execute("ATTACH DATABASE ?1 AS keys", [keyfile::sql_path(keys)?]).map(drop)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI,
    )?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
    Ok(conn)
}

pub(crate) fn db_error(error: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ingest(&self, event: NewEvent) -> Result<Ingested> {
        let (reply, answer) = oneshot::channel();
        match self.writer.send_timeout(Command::Ingest(Box::new(event), reply), ADMISSION_WAIT).await {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(StoreError::Busy("the writer's queue is full".into())),
            Err(SendTimeoutError::Closed(_)) => return Err(writer_gone()),
        }
        answer.await.map_err(|_| writer_gone())?
    }

    async fn claim(&self, destination: &str, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>> {
        let destination = destination.to_owned();
        self.send(|reply| Command::Claim { destination, now_ms, limit, lease_ms, reply }).await
    }

    async fn finish(&self, delivery: &DeliveryId, attempt: Attempt, verdict: Verdict, now_ms: i64) -> Result<bool> {
        let delivery = delivery.clone();
        self.send(|reply| Command::Finish { delivery, attempt, verdict, now_ms, reply }).await
    }

    async fn replay(&self, id: &EventId, now_ms: i64) -> Result<u64> {
        let id = id.clone();
        self.send(|reply| Command::Replay { id, now_ms, reply }).await
    }

    async fn replay_delivery(&self, delivery: &DeliveryId, now_ms: i64) -> Result<bool> {
        let delivery = delivery.clone();
        self.send(|reply| Command::ReplayDelivery { delivery, now_ms, reply }).await
    }

    async fn reroute(
        &self,
        id: &EventId,
        routing: Vec<RouteVerdict>,
        deliveries: Vec<NewDelivery>,
        now_ms: i64,
    ) -> Result<Option<u64>> {
        let id = id.clone();
        self.send(|reply| Command::Reroute { id, routing, deliveries, now_ms, reply }).await
    }

    async fn purge_expired_dedupe(&self, now_ms: i64, limit: usize) -> Result<u64> {
        self.send(|reply| Command::Purge { now_ms, limit, reply }).await
    }

    async fn purge_finished(&self, state: State, before_ms: i64, limit: usize) -> Result<u64> {
        self.send(|reply| Command::PurgeFinished { state, before_ms, limit, reply }).await
    }

    async fn purge_unrouted(&self, before_ms: i64, limit: usize) -> Result<u64> {
        self.send(|reply| Command::PurgeUnrouted { before_ms, limit, reply }).await
    }

    async fn next_due(&self, destination: &str, now_ms: i64) -> Result<Option<i64>> {
        let destination = destination.to_owned();
        let conn = self.dispatch.clone();
        tokio::task::spawn_blocking(move || {
            let conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            read::next_due(&conn, &destination, now_ms)
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }

    async fn get(&self, id: &EventId) -> Result<Option<EventDetail>> {
        let id = id.clone();
        self.read(move |c| read::get(c, &id)).await
    }

    async fn get_delivery(&self, delivery: &DeliveryId) -> Result<Option<hookgate_store::DeliveryRecord>> {
        let delivery = delivery.clone();
        self.read(move |c| read::get_delivery(c, &delivery)).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Page> {
        let filter = filter.clone();
        self.read(move |c| read::list(c, &filter)).await
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<DeliveryPage> {
        let filter = filter.clone();
        self.read(move |c| read::list_deliveries(c, &filter)).await
    }

    async fn stats(&self) -> Result<Vec<StateCount>> {
        self.read(read::stats).await
    }

    async fn set_paused(&self, destination: &str, paused: bool) -> Result<()> {
        let destination = destination.to_owned();
        self.send(|reply| Command::SetPaused { destination, paused, reply }).await
    }

    async fn paused(&self) -> Result<Vec<String>> {
        self.read(read::paused).await
    }

    async fn take_tokens(&self, destination: &str, per_second: f64, want: u32, now_ms: i64) -> Result<u32> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.entry(destination.to_owned()).or_insert_with(|| Bucket::new(per_second, now_ms));
        Ok(bucket.take(per_second, want, now_ms))
    }

    async fn give_back_tokens(&self, destination: &str, per_second: f64, tokens: u32) -> Result<()> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(bucket) = buckets.get_mut(destination) {
            bucket.give_back(per_second, tokens);
        }
        Ok(())
    }

    /// Ready when reads work, writes do, and the disk has room for new
    /// events: after a batch failed to commit (a full disk, say), a tiny
    /// write answers whether they work again.
    async fn ping(&self) -> Result<()> {
        self.read(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(db_error)).await?;
        if self.writer.is_closed() {
            return Err(writer_gone());
        }
        if let Some(why) = self.reserve.short() {
            return Err(StoreError::Full(why));
        }
        if self.checkpoint_failing.load(Ordering::Relaxed) {
            return Err(StoreError::Unavailable("the database file cannot grow (checkpoints fail)".into()));
        }
        if self.failing.load(Ordering::Relaxed) {
            let now_ms = self.now_ms();
            self.send(|reply| Command::Probe { now_ms, reply }).await?;
        }
        Ok(())
    }
}

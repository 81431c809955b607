//! The PostgreSQL backend, for any number of hookgate instances on one database.
//!
//! What each guarantee relies on:
//! * **Dedupe**: `INSERT … ON CONFLICT … DO UPDATE … WHERE expired` on the
//!   `dedupe` primary key, under the key's advisory lock: concurrent copies
//!   on any instances see one winner.
//! * **Order**: a queue is (destination, source, order key); each delivery's
//!   position in it (`seq`) is drawn while the batch holds a transaction
//!   advisory lock on the queue, so per queue, `seq` order is commit order.
//!   Each queue's first active delivery carries `head`; the flag moves only
//!   under the queue's lock (ingest, an outcome that finishes a delivery, a
//!   replay, a reroute), and a claim looks at heads only (`FOR UPDATE SKIP
//!   LOCKED`), so it costs the same however deep the queues behind them. The
//!   partial unique index `deliveries_one_in_flight` makes a second in-flight
//!   delivery of one queue impossible whatever the queries do.
//! * **Events are written once**: the body lives in `events`, never updated;
//!   what moves is a small `deliveries` row.
//! * **Durability**: `synchronous_commit` as the server has it (on by
//!   default); an ingest is answered after its batch's `COMMIT` returns.
//! * **Group commit**: waiting ingests are batched into one transaction,
//!   their statements pipelined on one connection; several batches run at once.
//! * **Wake-ups**: `NOTIFY hookgate, '<destination>'` after a batch commits,
//!   coalesced (`notify.rs`); every instance `LISTEN`s on a connection of its own.
//!
//! (A long file, on purpose: it is the `Store` impl, each method a short
//! statement and its glue, kept together so the whole contract reads in one
//! place; the large pieces live in `ingest`, `outcome`, `read`, `clock`,
//! `notify`, `schema` and `tls`.)

mod clock;
mod ingest;
mod named;
mod notify;
mod outcome;
mod read;
mod schema;
mod tls;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use futures_util::StreamExt;
use hookgate_core::{DeliveryId, EventId, State};
use hookgate_store::{
    ADMISSION_WAIT, Attempt, Bucket, Claim, DeliveryFilter, DeliveryPage, EventDetail, Ingested, ListFilter,
    NewDelivery, NewEvent, Page, RemoteWake, Result, RouteVerdict, StateCount, Store, StoreError, Verdict, Wake, codec,
    parse_delivery_id, parse_id,
};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The channel every instance listens on; the payload is a destination name.
const CHANNEL: &str = "hookgate";
/// How long a request waits for a pooled connection before answering "unavailable".
const POOL_WAIT: Duration = Duration::from_secs(5);
/// Advisory lock key of a retention round ("hookgate" + 1): one instance at a time.
const RETENTION_LOCK: i64 = 0x686f_6f6b_6761_7466;
/// Connections for admin reads (listing, counts, readiness), beside `pool`.
const ADMIN_READERS: usize = 2;
/// How long connecting may take before the database counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause before the listener reconnects after losing its connection.
const LISTEN_RETRY: Duration = Duration::from_secs(1);

pub struct PostgresStore {
    /// Connections with `synchronous_commit = off`: claims, outcomes, the dispatcher's reads.
    pool: Pool,
    /// The admin API's and `/metrics`' reads, on connections of their own, so
    /// a slow listing or a count never makes a claim wait for a connection.
    reads: Pool,
    /// Connections with synchronous commit: ingest batches and replays.
    durable: Pool,
    ingest: ingest::Lanes,
    /// Attempt outcomes, recorded in batches (`outcome.rs`).
    outcomes: mpsc::Sender<outcome::Outcome>,
    notifier: notify::Notifier,
    watchers: Arc<Mutex<Vec<RemoteWake>>>,
    clock: DbClock,
}

use clock::DbClock;
pub use clock::{LocalClock, system_ms};

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("bad PostgreSQL URL: {0}")]
    Url(tokio_postgres::Error),
    #[error("PostgreSQL TLS: {0}")]
    Tls(String),
    #[error("cannot connect to PostgreSQL: {0}")]
    Connect(String),
    #[error("PostgreSQL schema: {0}")]
    Migrate(schema::MigrateError),
}

/// The database (or the pool in front of it) failed: the caller answers 503.
pub(crate) fn unavailable(error: impl std::error::Error + 'static) -> StoreError {
    StoreError::Unavailable(explain(&error))
}

/// Why a batch failed: its connection (the database is away: every event in
/// it gets the same answer), or one of its statements (the database refused
/// something: worth retrying event by event, so the rest are not refused with it).
#[derive(Debug, Clone)]
pub(crate) enum BatchError {
    Connection(String),
    Statement(String),
}

impl From<tokio_postgres::Error> for BatchError {
    fn from(error: tokio_postgres::Error) -> Self {
        match error.as_db_error() {
            // The server answered with an error about this statement (class 08 is about the connection).
            Some(db) if !db.code().code().starts_with("08") => {
                BatchError::Statement(format!("{} ({}): {}", db.severity(), db.code().code(), db.message()))
            }
            _ => BatchError::Connection(describe(&error)),
        }
    }
}

impl BatchError {
    pub(crate) fn into_store_error(self) -> StoreError {
        match self {
            BatchError::Connection(e) | BatchError::Statement(e) => StoreError::Unavailable(e),
        }
    }
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::Connection(e) => write!(f, "connection: {e}"),
            BatchError::Statement(e) => write!(f, "statement: {e}"),
        }
    }
}

/// A PostgreSQL error with its cause: tokio-postgres's own text is only "db error".
pub(crate) fn describe(error: &tokio_postgres::Error) -> String {
    explain(error)
}

/// Any error (tokio-postgres's, the pool's, TLS's) with its whole cause chain:
/// the server's own message (`FATAL (3D000): database "x" does not exist`),
/// the certificate that failed (`invalid peer certificate: UnknownIssuer`).
/// The wrappers' own texts ("db error", "Error occurred while creating a new
/// object") say nothing an operator can act on; what they wrap does.
pub(crate) fn explain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut link = Some(error);
    while let Some(error) = link {
        let db = error
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::as_db_error)
            .or_else(|| error.downcast_ref::<tokio_postgres::error::DbError>());
        if let Some(db) = db {
            let mut text = format!("{} ({}): {}", db.severity(), db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!(" (hint: {hint})"));
            }
            parts.push(text);
            break;
        }
        let text = error.to_string();
        // Some errors repeat their cause in their own text: say it once.
        if !text.is_empty() && !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        link = error.source();
    }
    parts.join(": ")
}

impl PostgresStore {
    /// Connect with at most `pool_size` connections (plus one for `LISTEN` and
    /// two for admin reads),
    /// apply migrations, and start the ingest batcher.
    ///
    /// Half the connections serve ingest, whose commits are synchronous (a 2xx
    /// means committed and flushed). The other half serve the dispatcher and
    /// reads with `synchronous_commit = off`, except claims, which commit
    /// durably: an outcome that a *database* crash loses only makes an event
    /// be delivered again once its lease ends, after the attempt it records
    /// (at least once, still in order, since PostgreSQL loses a suffix of its
    /// log, never a middle), and not waiting for a flush per outcome is what
    /// lets deliveries keep up with ingest; but a lost claim would let the
    /// event be claimed again while it is being delivered.
    pub async fn connect(url: &str, pool_size: usize) -> Result<Self, ConnectError> {
        Self::connect_with_clock(url, pool_size, system_ms).await
    }

    /// [`connect`](Self::connect), reading this machine's time from `local`
    /// (tests give a clock that runs ahead; the store corrects for it).
    pub async fn connect_with_clock(url: &str, pool_size: usize, local: LocalClock) -> Result<Self, ConnectError> {
        let (mut config, tls, mode) = configure_with_mode(url)?;
        config.application_name("hookgate");
        let half = (pool_size / 2).max(1);
        let given = config.get_options().unwrap_or_default().to_owned();
        let with = |options: &str| {
            let mut config = config.clone();
            config.options(format!("{given} {options}").trim());
            config
        };
        let indexed = INDEXED_PLANS;
        let durable = build_pool(with(indexed), &tls, half)?;
        let pool = build_pool(with(&format!("{indexed} -c synchronous_commit=off")), &tls, (pool_size - half).max(1))?;
        let reads = build_pool(with(&format!("{LISTING_PLANS} -c synchronous_commit=off")), &tls, ADMIN_READERS)?;

        let mut client = durable.get().await.map_err(|e| ConnectError::Connect(explain(&e)))?;
        if mode == tls::Mode::Prefer {
            warn_if_plaintext(&client, &config).await;
        }
        if let Ok(row) = client.query_one("SELECT current_database(), current_schema()", &[]).await
            && let (database, Some(schema)) = (row.get::<_, String>(0), row.get::<_, Option<String>>(1))
            && let Some(warning) = shared_database(&database, &schema)
        {
            tracing::warn!("{warning}");
        }
        schema::migrate(&mut client).await.map_err(ConnectError::Migrate)?;
        drop(client);

        let clock = DbClock::start(pool.clone(), local).await.map_err(ConnectError::Connect)?;
        if clock.offset_ms().abs() > 1_000 {
            tracing::warn!(
                offset_ms = clock.offset_ms(),
                "this machine's clock is off from the database's; using the database's"
            );
        }
        let notifier = notify::Notifier::start(pool.clone());
        // Half as many lanes as ingest connections: more lanes make smaller batches, and
        // per-statement work (a few statements per batch) then outweighs the parallelism
        // (measured: 2 lanes ingest 13,200 events/s on the bench machine, 8 lanes 7,000).
        let ingest = ingest::Lanes::start(durable.clone(), (half / 2).max(1), notifier.clone());
        let watchers: Arc<Mutex<Vec<RemoteWake>>> = Arc::default();
        tokio::spawn(listen(config, tls, watchers.clone()));
        let outcomes = outcome::start(pool.clone());
        Ok(PostgresStore { pool, reads, durable, ingest, outcomes, notifier, watchers, clock })
    }

    /// A connection for the dispatcher (asynchronous commit).
    async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.pool.get().await.map_err(unavailable)
    }

    /// A connection for the admin API's reads.
    async fn reader(&self) -> Result<deadpool_postgres::Object> {
        self.reads.get().await.map_err(unavailable)
    }
}

/// `url` as tokio-postgres takes it (libpq's `sslmode`/`sslrootcert` taken
/// out), and the TLS connector they ask for.
fn configure(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect), ConnectError> {
    configure_with_mode(url).map(|(config, connector, _)| (config, connector))
}

fn configure_with_mode(url: &str) -> Result<(tokio_postgres::Config, MakeRustlsConnect, tls::Mode), ConnectError> {
    let (url, tls) = tls::split(url).map_err(ConnectError::Tls)?;
    let mut config: tokio_postgres::Config = url.parse().map_err(ConnectError::Url)?;
    config.ssl_mode(tls.ssl_mode()).connect_timeout(CONNECT_TIMEOUT);
    Ok((config, tls.connector().map_err(ConnectError::Tls)?, tls.mode))
}

/// `host:port` of the server(s) a config names, for a log line.
fn server_name(config: &tokio_postgres::Config) -> String {
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => format!("{name}:{port}"),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    if hosts.is_empty() { format!("localhost:{port}") } else { hosts.join(",") }
}

/// `sslmode=prefer` (the default) takes TLS when the server offers it and
/// goes on in plain text when it does not, as libpq does; that is worth one
/// WARN, since nothing else would say the password and the events cross the
/// network unencrypted.
async fn warn_if_plaintext(client: &tokio_postgres::Client, config: &tokio_postgres::Config) {
    let encrypted = client.query_one("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", &[]).await;
    if let Ok(row) = encrypted
        && !row.get::<_, bool>(0)
    {
        tracing::warn!(
            server = %server_name(config),
            "connected to PostgreSQL without TLS: sslmode=prefer (the default) found no TLS on the server; \
             set sslmode=require or verify-full to refuse plain text, or sslmode=disable to say it is meant"
        );
    }
}

/// Whether `url` is one [`PostgresStore::connect`] can use (its TLS settings
/// included), without connecting: for `hookgate check`.
pub fn check_url(url: &str) -> Result<(), String> {
    configure(url).map(drop).map_err(|e| match e {
        ConnectError::Tls(problem) => problem,
        other => other.to_string(),
    })
}

/// What `hookgate check` says of a PostgreSQL URL: it connects (so a wrong
/// password, a missing database or a TLS problem shows before `serve`), and
/// says where hookgate's tables would be and what migrations would run.
pub async fn inspect(url: &str) -> Result<String, ConnectError> {
    let (config, _) = configure(url)?;
    let client = connect_one(url).await?;
    let row = client
        .query_one("SELECT current_database(), current_schema()", &[])
        .await
        .map_err(|e| ConnectError::Connect(describe(&e)))?;
    let (database, schema): (String, Option<String>) = (row.get(0), row.get(1));
    let version = schema::inspect(&client).await.map_err(|e| ConnectError::Connect(describe(&e)))?;
    let schema = schema.unwrap_or_else(|| "(none: search_path names no schema that exists)".into());
    let mut said = format!("PostgreSQL at {}, database {database}, schema {schema}: {version}", server_name(&config));
    if let Some(warning) = shared_database(&database, &schema) {
        said.push_str(&format!("\n  warning: {warning}"));
    }
    Ok(said)
}

/// A newcomer's URL often names the `postgres` database, which every tool
/// shares: hookgate's tables would land in its `public` schema.
fn shared_database(database: &str, schema: &str) -> Option<String> {
    (database == "postgres" && schema == "public").then(|| {
        "hookgate's tables would be in the shared database postgres (schema public): make a database for \
         hookgate (createdb hookgate) and name it in storage.url"
            .to_owned()
    })
}

/// Apply hookgate's migrations up to `version` only, to the schema `url`
/// names: a database as an older hookgate left it, for the tests of what
/// a newer one makes of it.
#[doc(hidden)]
pub async fn migrate_up_to(url: &str, version: usize) -> Result<(), ConnectError> {
    let mut client = connect_one(url).await?;
    schema::apply_up_to(&mut client, version).await.map_err(ConnectError::Migrate)
}

/// One connection with `url`'s TLS settings, outside any store (the bench
/// makes and drops its schema with it).
pub async fn connect_one(url: &str) -> Result<tokio_postgres::Client, ConnectError> {
    let (config, connector) = configure(url)?;
    let (client, connection) = config.connect(connector).await.map_err(|e| ConnectError::Connect(describe(&e)))?;
    tokio::spawn(connection);
    Ok(client)
}

fn build_pool(config: tokio_postgres::Config, tls: &MakeRustlsConnect, size: usize) -> Result<Pool, ConnectError> {
    let recycling = ManagerConfig { recycling_method: RecyclingMethod::Fast };
    let manager = Manager::from_config(config, tls.clone(), recycling);
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(POOL_WAIT))
        .create_timeout(Some(CONNECT_TIMEOUT))
        .build()
        .map_err(|e| ConnectError::Connect(explain(&e)))
}

/// Keep a `LISTEN` connection open for the life of the process, reconnecting
/// after failures. After a reconnect every watcher is woken for every
/// destination ([`Wake::All`]), since notifications sent meanwhile were lost.
async fn listen(config: tokio_postgres::Config, tls: MakeRustlsConnect, watchers: Arc<Mutex<Vec<RemoteWake>>>) {
    let wake = |which: Wake<'_>| {
        let watchers = watchers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for watcher in watchers {
            watcher(which);
        }
    };
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                let statement = format!("LISTEN {CHANNEL}");
                let ready = {
                    // The connection must be polled for LISTEN to complete.
                    let mut listening = std::pin::pin!(client.batch_execute(&statement));
                    loop {
                        tokio::select! {
                            done = &mut listening => break done.is_ok(),
                            message = messages.next() => if message.is_none() { break false },
                        }
                    }
                };
                if ready {
                    wake(Wake::All);
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(tokio_postgres::AsyncMessage::Notification(n)) => wake(Wake::Destination(n.payload())),
                            Ok(_) => {}
                            Err(error) => {
                                tracing::warn!(%error, "LISTEN connection lost");
                                break;
                            }
                        }
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "LISTEN connection failed"),
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// After a pipelined transaction failed part way: make sure the connection
/// is out of it before it goes back to the pool. (Its COMMIT, sent with the
/// rest, normally ended it already; then this is a harmless warning.)
pub(crate) async fn end_transaction(client: &tokio_postgres::Client) {
    if let Err(error) = client.batch_execute("ROLLBACK").await {
        tracing::debug!(error = %describe(&error), "rollback after a failed batch");
    }
}

/// Make the first active delivery of each queue given (`$1` destinations,
/// `$2` sources, `$3` order keys) its head, if it is not already; `$4` is,
/// per queue, a position no active delivery comes before (the position of
/// the head that was to leave, or 0). Run under those queues' locks, after
/// whatever changed their active deliveries.
///
/// The bound is inclusive: when the head did not leave after all (a late
/// outcome whose claim had expired: the delivery was claimed again), it is
/// still the first active one and already the head, and nothing moves.
/// Starting after it would have made the next one a second head, claimed
/// beside it or delivered before its retry. The bound matters too: a
/// queue's index entries begin with those of the deliveries it made, dead
/// until vacuum comes by, and a probe from the start of the queue would
/// step over all of them every time.
pub(crate) const PROMOTE: &str = "UPDATE deliveries e SET head = true
     FROM unnest($1::text[], $2::text[], $3::bytea[], $4::bigint[]) AS k(destination, source, order_key, after)
     CROSS JOIN LATERAL (
        SELECT f.rid FROM deliveries f
        WHERE f.destination = k.destination AND f.source = k.source AND f.order_key = k.order_key
          AND f.seq >= k.after AND f.state IN ('pending', 'delivering')
        ORDER BY f.seq LIMIT 1
     ) first
     WHERE e.rid = first.rid AND NOT e.head";

/// Plans that walk indexes: no sequential scan, no hash or merge join. The
/// settings both [`INDEXED_PLANS`] and [`LISTING_PLANS`] start from.
macro_rules! index_walks {
    () => {
        "-c enable_seqscan=off -c enable_hashjoin=off -c enable_mergejoin=off"
    };
}

/// Session settings of the write paths' connections. Their statements each
/// touch a few rows per event through an index, whatever the tables' size:
/// nested loops over index lookups, always. A plan cached while a table was
/// small (a seq scan and a hash join over `dedupe` looked cheap at a thousand
/// rows) would otherwise scan the whole table on every batch once it holds
/// millions.
pub const INDEXED_PLANS: &str = concat!(index_walks!(), " -c plan_cache_mode=force_generic_plan");

/// Session settings of the admin API's read connections. A listing is a
/// page (`LIMIT`) read off the index that serves its filter, stopping once
/// the page is full, whatever the table's size. Left to its statistics, the
/// planner would hash-join a key's deliveries with a sequential scan of
/// every event (a listing by order key on a table of 50,000 events, in
/// `read::tests`), which costs what the table costs, not what the page does.
/// The counts (`stats`) read every delivery and turn these back on.
pub const LISTING_PLANS: &str = index_walks!();

/// Claim up to `$3` due heads of destination `$1`'s queues at `$2`, leasing
/// them until `$4`. The walk is over the heads index only (`deliveries_due`):
/// however many deliveries wait behind a head in flight, a claim never looks
/// at them. Rows another claimer holds are skipped, never waited for. Each
/// is joined to its event for what is sent.
pub const CLAIM: &str = "WITH picked AS (
        SELECT d.rid FROM deliveries d
        WHERE d.destination = $1 AND d.head AND d.state IN ('pending', 'delivering') AND d.due_at <= $2
          AND NOT EXISTS (SELECT 1 FROM paused_destinations p WHERE p.name = $1)
        ORDER BY d.due_at, d.seq
        LIMIT $3
        FOR UPDATE OF d SKIP LOCKED
     )
     UPDATE deliveries d
        SET state = 'delivering', attempts = d.attempts + 1, due_at = $4, updated_at = $2
       FROM picked, events e WHERE d.rid = picked.rid AND e.rid = d.event_rid
     RETURNING d.id, e.id, d.source, d.route, d.order_key, e.received_at, e.headers, e.body, d.attempts,
               d.round_base, d.seq, d.rid, e.trace";

/// A claimed row (`CLAIM`'s columns) as the claim it becomes.
fn read_claim(row: &tokio_postgres::Row, destination: &str) -> Result<Claim> {
    let attempts: i32 = row.get(8);
    let round_base: i32 = row.get(9);
    let round_attempt = attempts.checked_sub(round_base).and_then(|n| u32::try_from(n).ok());
    let (Ok(attempt), Some(round_attempt)) = (u32::try_from(attempts), round_attempt) else {
        return Err(StoreError::Corrupt(format!("attempts {attempts}, round_base {round_base}")));
    };
    Ok(Claim {
        delivery: parse_delivery_id(row.get(0))?,
        id: parse_id(row.get(1))?,
        source: row.get(2),
        destination: destination.to_owned(),
        route: row.get(3),
        order_key: row.get::<_, Option<Vec<u8>>>(4).map(Into::into),
        received_at_ms: row.get(5),
        headers: codec::decode_headers(row.get(6))?,
        body: row.get::<_, Vec<u8>>(7).into(),
        attempt,
        round_attempt,
        trace: row.get(12),
    })
}

/// The 64-bit advisory lock key of a queue (`kind` "o", `scope` its
/// destination and source, `key` its order key), a dedupe key ("d", of a
/// source) or a coalesce key ("c", of a destination and source). Collisions
/// only make two unrelated keys wait for each other.
pub fn lock_key(kind: &str, scope: &[&str], key: &[u8]) -> i64 {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new().chain_update(kind.as_bytes()).chain_update([0]);
    for part in scope {
        digest = digest.chain_update(part.as_bytes()).chain_update([0]);
    }
    let digest = digest.chain_update(key).finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Whether this transaction has retention's turn: one instance at a time
/// does retention (the others skip the round, not fail).
async fn retention_turn(tx: &deadpool_postgres::Transaction<'_>) -> Result<bool> {
    let row = tx.query_one("SELECT pg_try_advisory_xact_lock($1)", &[&RETENTION_LOCK]).await.map_err(unavailable)?;
    Ok(row.get(0))
}

/// Delete those of `events` (row ids) left with no delivery, and their
/// duplicate counts. Each is locked first, then looked at in a statement of
/// its own (a fresh snapshot): a reroute that added a delivery to one
/// (holding its row) has then committed, and its delivery is seen.
async fn delete_bare_events(tx: &deadpool_postgres::Transaction<'_>, events: &[i64]) -> Result<u64> {
    if events.is_empty() {
        return Ok(0);
    }
    tx.execute("SELECT 1 FROM events WHERE rid = ANY($1) ORDER BY rid FOR UPDATE", &[&events])
        .await
        .map_err(unavailable)?;
    let deleted = tx
        .execute(
            "WITH gone AS (
                DELETE FROM events e WHERE e.rid = ANY($1)
                  AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_rid = e.rid)
                RETURNING e.id
             ), counts_gone AS (
                DELETE FROM event_duplicates WHERE event_id IN (SELECT id FROM gone)
             )
             SELECT 1 FROM gone",
            &[&events],
        )
        .await
        .map_err(unavailable)?;
    Ok(deleted)
}

impl PostgresStore {
    /// A finished delivery at the back of its queue again, due now, its
    /// attempts counted afresh; false for an active one. Like an ingest, its
    /// new queue position is drawn under the queue's lock.
    async fn replay_row(&self, rid: i64, now_ms: i64) -> Result<bool> {
        let mut client = self.durable.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        let Some(row) = tx
            .query_opt("SELECT destination, source, order_key FROM deliveries WHERE rid = $1", &[&rid])
            .await
            .map_err(unavailable)?
        else {
            return Ok(false);
        };
        let (destination, source, order_key): (String, String, Option<Vec<u8>>) = (row.get(0), row.get(1), row.get(2));
        if let Some(order_key) = &order_key {
            tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_key("o", &[&destination, &source], order_key)])
                .await
                .map_err(unavailable)?;
        }
        // Last in its queue (a head only if the queue is otherwise empty).
        let changed = tx
            .execute(
                "UPDATE deliveries SET state = 'pending', seq = nextval('deliveries_seq') * 1048576,
                        round_base = attempts, due_at = $1, superseded_by = NULL, updated_at = $1,
                        head = order_key IS NULL
                 WHERE rid = $2 AND state IN ('delivered', 'dead', 'superseded')",
                &[&now_ms, &rid],
            )
            .await
            .map_err(unavailable)?;
        if let (1, Some(order_key)) = (changed, &order_key) {
            tx.execute(
                PROMOTE,
                &[&vec![destination.as_str()], &vec![source.as_str()], &vec![order_key.as_slice()], &vec![0i64]],
            )
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        if changed == 1 {
            self.notifier.work_for(&destination);
        }
        Ok(changed == 1)
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ingest(&self, event: NewEvent) -> Result<Ingested> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let lane = self.ingest.lane_for(&event);
        match lane.send_timeout(ingest::Pending { event, reply }, ADMISSION_WAIT).await {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(StoreError::Busy("the ingest queue is full".into())),
            Err(SendTimeoutError::Closed(_)) => {
                return Err(StoreError::Unavailable("the ingest batcher has stopped".into()));
            }
        }
        answer.await.map_err(|_| StoreError::Unavailable("the ingest batcher has stopped".into()))?
    }

    async fn claim(&self, destination: &str, now_ms: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(CLAIM).await.map_err(unavailable)?;
        // A claim is committed durably, on a connection whose other commits are
        // not: a claim a database crash took back would let the event be claimed
        // again while its first delivery is still in the app's hands, two
        // deliveries of one key at once (the fault suite saw it after a restart
        // with `-m immediate`). One round trip, as ingest's.
        let lease_end = now_ms.saturating_add(lease_ms);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
            [&destination, &now_ms, &(limit as i64), &lease_end];
        let claimed = futures_util::try_join!(
            client.batch_execute("BEGIN; SET LOCAL synchronous_commit TO on"),
            client.query(&statement, &params),
            client.batch_execute("COMMIT"),
        );
        let rows = match claimed {
            Ok((_, rows, _)) => rows,
            Err(error) => {
                end_transaction(&client).await;
                return Err(unavailable(error));
            }
        };
        let mut claims = Vec::with_capacity(rows.len());
        let mut ordered: Vec<_> = rows.iter().map(|r| (r.get::<_, i64>(10), r)).collect();
        ordered.sort_by_key(|(seq, _)| *seq);
        let mut unread = Vec::new();
        for (_, row) in ordered {
            match read_claim(row, destination) {
                Ok(claim) => claims.push(claim),
                Err(error) => {
                    let rid: i64 = row.get(11);
                    hookgate_store::unreadable_row(rid, &error);
                    unread.push(rid);
                }
            }
        }
        if !unread.is_empty() {
            // Leased, so their queues wait; but no attempt is made, so none is counted.
            // The claims above are committed and leased whatever happens here: failing
            // the call would strand them in `delivering` for a whole lease and spend an
            // attempt of each (their next claim would be their second). If the give-back
            // fails, the unreadable rows keep one attempt too many, and say so.
            let given_back =
                client.execute("UPDATE deliveries SET attempts = attempts - 1 WHERE rid = ANY($1)", &[&unread]).await;
            if let Err(error) = given_back {
                tracing::error!(
                    rids = ?unread,
                    error = %describe(&error),
                    "could not give back the attempt counted for unreadable rows; they keep one too many"
                );
            }
        }
        Ok(claims)
    }

    async fn finish(&self, delivery: &DeliveryId, attempt: Attempt, verdict: Verdict, now_ms: i64) -> Result<bool> {
        let (state, due_at) = verdict.next_state();
        let (reply, answer) = tokio::sync::oneshot::channel();
        let outcome =
            outcome::Outcome { delivery: delivery.clone(), attempt, state: state.as_str(), due_at, now_ms, reply };
        self.outcomes
            .send(outcome)
            .await
            .map_err(|_| StoreError::Unavailable("the outcome batcher has stopped".into()))?;
        answer.await.map_err(|_| StoreError::Unavailable("the outcome batcher has stopped".into()))?
    }

    async fn replay(&self, id: &EventId, now_ms: i64) -> Result<u64> {
        let client = self.reader().await?;
        let rids: Vec<i64> = client
            .query(
                "SELECT d.rid FROM deliveries d JOIN events e ON e.rid = d.event_rid WHERE e.id = $1 ORDER BY d.rid",
                &[&id.as_str()],
            )
            .await
            .map_err(unavailable)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        drop(client);
        let mut replayed = 0;
        for rid in rids {
            replayed += u64::from(self.replay_row(rid, now_ms).await?);
        }
        Ok(replayed)
    }

    async fn replay_delivery(&self, delivery: &DeliveryId, now_ms: i64) -> Result<bool> {
        let rid: Option<i64> = self
            .reader()
            .await?
            .query_opt("SELECT rid FROM deliveries WHERE id = $1", &[&delivery.as_str()])
            .await
            .map_err(unavailable)?
            .map(|row| row.get(0));
        match rid {
            Some(rid) => self.replay_row(rid, now_ms).await,
            None => Ok(false),
        }
    }

    async fn reroute(
        &self,
        id: &EventId,
        routing: Vec<RouteVerdict>,
        deliveries: Vec<NewDelivery>,
        now_ms: i64,
    ) -> Result<Option<u64>> {
        let mut client = self.durable.get().await.map_err(unavailable)?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // The event's row locked first: retention deletes an event only after
        // locking it and seeing it has no delivery left (`purge_finished`).
        let Some(row) = tx
            .query_opt("SELECT rid, source FROM events WHERE id = $1 FOR UPDATE", &[&id.as_str()])
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let (event_rid, source): (i64, String) = (row.get(0), row.get(1));
        let has: Vec<String> = tx
            .query("SELECT destination FROM deliveries WHERE event_rid = $1", &[&event_rid])
            .await
            .map_err(unavailable)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let added: Vec<&NewDelivery> = deliveries.iter().filter(|d| !has.contains(&d.destination)).collect();
        let mut locks: Vec<i64> = added
            .iter()
            .filter_map(|d| d.order_key.as_ref().map(|k| lock_key("o", &[&d.destination, &source], k.as_bytes())))
            .collect();
        locks.sort_unstable();
        locks.dedup();
        tx.execute("SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k", &[&locks])
            .await
            .map_err(unavailable)?;
        for delivery in &added {
            // Last in its queue, no coalescing (an old event must not supersede a newer one's delivery).
            let order_key = delivery.order_key.as_ref().map(|k| k.as_bytes());
            tx.execute(
                "INSERT INTO deliveries (id, event_rid, source, destination, route, order_key, coalesce_key, seq,
                                         state, updated_at, due_at, head)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, nextval('deliveries_seq') * 1048576, 'pending', $8, $8,
                         $6::bytea IS NULL)",
                &[
                    &delivery.id.as_str(),
                    &event_rid,
                    &source,
                    &delivery.destination,
                    &delivery.route,
                    &order_key,
                    &delivery.coalesce_key.as_ref().map(|k| k.as_bytes()),
                    &now_ms,
                ],
            )
            .await
            .map_err(unavailable)?;
            if let Some(order_key) = order_key {
                tx.execute(
                    PROMOTE,
                    &[&vec![delivery.destination.as_str()], &vec![source.as_str()], &vec![order_key], &vec![0i64]],
                )
                .await
                .map_err(unavailable)?;
            }
        }
        tx.execute(
            "UPDATE events SET routing = $1, unrouted = CASE WHEN $2 THEN unrouted ELSE 0 END WHERE rid = $3",
            &[&codec::encode_routing(&routing), &added.is_empty(), &event_rid],
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        for delivery in &added {
            self.notifier.work_for(&delivery.destination);
        }
        Ok(Some(added.len() as u64))
    }

    async fn purge_expired_dedupe(&self, now_ms: i64, limit: usize) -> Result<u64> {
        let client = self.client().await?;
        // Rows an ingest holds (taking an expired key over) are left for the next round, not waited for.
        client
            .execute(
                "DELETE FROM dedupe WHERE ctid IN (
                    SELECT ctid FROM dedupe WHERE expires_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&now_ms, &(limit as i64)],
            )
            .await
            .map_err(unavailable)
    }

    async fn purge_finished(&self, state: State, before_ms: i64, limit: usize) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        if !retention_turn(&tx).await? {
            return Ok(0);
        }
        // SKIP LOCKED leaves alone any row a replay or a read holds.
        let gone: Vec<i64> = tx
            .query(
                "WITH gone AS (
                    DELETE FROM deliveries WHERE rid IN (
                        SELECT rid FROM deliveries WHERE state = $1 AND updated_at < $2
                        ORDER BY event_rid, rid LIMIT $3 FOR UPDATE SKIP LOCKED)
                    RETURNING rid, event_rid
                 ), attempts_gone AS (
                    DELETE FROM attempts WHERE delivery_rid IN (SELECT rid FROM gone)
                 )
                 SELECT event_rid FROM gone",
                &[&state.as_str(), &before_ms, &(limit as i64)],
            )
            .await
            .map_err(unavailable)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        delete_bare_events(&tx, &gone).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(gone.len() as u64)
    }

    async fn purge_unrouted(&self, before_ms: i64, limit: usize) -> Result<u64> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        if !retention_turn(&tx).await? {
            return Ok(0);
        }
        let candidates: Vec<i64> = tx
            .query(
                "SELECT rid FROM events WHERE unrouted = 1 AND received_at < $1 ORDER BY rid LIMIT $2",
                &[&before_ms, &(limit as i64)],
            )
            .await
            .map_err(unavailable)?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let purged = delete_bare_events(&tx, &candidates).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(purged)
    }

    async fn next_due(&self, destination: &str, now_ms: i64) -> Result<Option<i64>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT MIN(due_at) FROM deliveries
                 WHERE destination = $1 AND head AND state IN ('pending', 'delivering') AND due_at > $2
                   AND NOT EXISTS (SELECT 1 FROM paused_destinations p WHERE p.name = $1)",
            )
            .await
            .map_err(unavailable)?;
        let row = client.query_one(&statement, &[&destination, &now_ms]).await.map_err(unavailable)?;
        Ok(row.get(0))
    }

    async fn get(&self, id: &EventId) -> Result<Option<EventDetail>> {
        read::get(&*self.reader().await?, id).await
    }

    async fn get_delivery(&self, delivery: &DeliveryId) -> Result<Option<hookgate_store::DeliveryRecord>> {
        read::get_delivery(&*self.reader().await?, delivery).await
    }

    async fn list(&self, filter: &ListFilter) -> Result<Page> {
        read::list(&*self.reader().await?, filter).await
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> Result<DeliveryPage> {
        read::list_deliveries(&*self.reader().await?, filter).await
    }

    async fn stats(&self) -> Result<Vec<StateCount>> {
        let mut client = self.reader().await?;
        // Counts read every delivery: a whole-table plan is the right one here (`LISTING_PLANS`).
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.batch_execute(
            "SET LOCAL enable_seqscan = on; SET LOCAL enable_hashjoin = on; SET LOCAL enable_mergejoin = on",
        )
        .await
        .map_err(unavailable)?;
        let counts = read::stats(&tx).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(counts)
    }

    async fn set_paused(&self, destination: &str, paused: bool) -> Result<()> {
        let client = self.durable.get().await.map_err(unavailable)?;
        let sql = if paused {
            "INSERT INTO paused_destinations (name) VALUES ($1) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM paused_destinations WHERE name = $1"
        };
        client.execute(sql, &[&destination]).await.map_err(unavailable)?;
        if !paused {
            // Every instance's dispatcher for it has a backlog waiting.
            self.notifier.work_for(destination);
        }
        Ok(())
    }

    /// The bucket's row is locked for the statement: instances taking tokens
    /// at once take them one after the other, from one bucket. The same
    /// arithmetic as [`hookgate_store::Bucket::take`], in SQL.
    async fn take_tokens(&self, destination: &str, per_second: f64, want: u32, now_ms: i64) -> Result<u32> {
        let client = self.client().await?;
        let capacity = Bucket::capacity(per_second);
        let (take, create) = futures_util::try_join!(
            client.prepare_cached(
                "UPDATE rate_buckets b
                    SET tokens = t.have - t.taken, refilled_at = GREATEST(b.refilled_at, $2)
                   FROM (
                     SELECT have, LEAST($5::float8, floor(have)) AS taken FROM (
                       SELECT LEAST($3::float8, tokens + GREATEST(0, $2 - refilled_at) * $4::float8 / 1000.0) AS have
                       FROM rate_buckets WHERE destination = $1 FOR UPDATE
                     ) refilled
                   ) t
                  WHERE b.destination = $1
                  RETURNING t.taken",
            ),
            client.prepare_cached(
                "INSERT INTO rate_buckets (destination, tokens, refilled_at) VALUES ($1, $2, $3)
                 ON CONFLICT (destination) DO NOTHING",
            ),
        )
        .map_err(unavailable)?;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 5] =
            [&destination, &now_ms, &capacity, &per_second, &(want as f64)];
        if let Some(row) = client.query_opt(&take, &params).await.map_err(unavailable)? {
            return Ok(row.get::<_, f64>(0) as u32);
        }
        // The first take for this destination: a full bucket, then take from it.
        client.execute(&create, &[&destination, &capacity, &now_ms]).await.map_err(unavailable)?;
        let row = client.query_one(&take, &params).await.map_err(unavailable)?;
        Ok(row.get::<_, f64>(0) as u32)
    }

    async fn give_back_tokens(&self, destination: &str, per_second: f64, tokens: u32) -> Result<()> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "UPDATE rate_buckets SET tokens = LEAST($2::float8, tokens + $3::float8) WHERE destination = $1",
            )
            .await
            .map_err(unavailable)?;
        client
            .execute(&statement, &[&destination, &Bucket::capacity(per_second), &(tokens as f64)])
            .await
            .map(drop)
            .map_err(unavailable)
    }

    async fn paused(&self) -> Result<Vec<String>> {
        let rows = self
            .reader()
            .await?
            .query("SELECT name FROM paused_destinations ORDER BY name", &[])
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn ping(&self) -> Result<()> {
        self.reader().await?.execute("SELECT 1", &[]).await.map_err(unavailable)?;
        Ok(())
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    fn watch_remote(&self, wake: RemoteWake) {
        self.watchers.lock().unwrap_or_else(|p| p.into_inner()).push(wake);
    }
}

/// For this crate's own tests.
#[cfg(test)]
pub(crate) mod test_support {
    use crate::PostgresStore;

    /// A store in a schema of its own, or `None` (skipped) without a server.
    pub(crate) async fn fresh() -> Option<PostgresStore> {
        let Ok(url) = std::env::var("HOOKGATE_TEST_POSTGRES_URL") else {
            hookgate_store::conformance::skip("HOOKGATE_TEST_POSTGRES_URL is not set");
            return None;
        };
        let schema = format!("hg_test_{}", uuid::Uuid::now_v7().simple());
        let client = crate::connect_one(&url).await.expect("connect");
        client.batch_execute(&format!("CREATE SCHEMA {schema}")).await.expect("create schema");
        let separator = if url.contains('?') { '&' } else { '?' };
        let url = format!("{url}{separator}options=-c%20search_path%3D{schema}");
        Some(PostgresStore::connect(&url, 8).await.expect("connect store"))
    }
}

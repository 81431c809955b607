//! The one thread that writes. SQLite takes one writer at a time anyway; owning
//! the connection in one thread turns that into group commit for free: the
//! thread takes every command waiting in its queue (up to [`MAX_BATCH`]),
//! applies them in one transaction, commits once (one fsync), then answers
//! them all. Under load, one fsync serves hundreds of requests; when idle, a
//! lone request is committed at once, with no timer adding latency.
//!
//! The common path runs the batch without savepoints (a savepoint per command
//! costs a sub-journal copy of every page it touches). If any command fails,
//! the batch is rolled back and run again with each command in a savepoint of
//! its own, so a failing command is rolled back alone and the rest commit. If
//! SQLite itself rolls the transaction back (a full disk, an I/O error), the
//! batch fails as one: no caller is told "stored" for a row that is not, or
//! "failed" for a row that is.
//!
//! The writer numbers each delivery with an order key when it first
//! finishes (`hg_finished`, a counter that never goes back); the key file's
//! thread lists them by key from those numbers ([`crate::keyfile`]), off the
//! writer's time.
//!
//! Before a batch that ingests, the writer looks at the disk: with less than
//! the reserve left ([`crate::space`]), its ingests are refused and the rest
//! of the batch (claims, outcomes: the drain) runs in that room.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use hookgate_core::{DeliveryId, EventId, State};
use hookgate_store::{Attempt, Claim, Ingested, NewDelivery, NewEvent, Result, RouteVerdict, StoreError, Verdict};
use rusqlite::functions::FunctionFlags;
use rusqlite::types::ValueRef;
use rusqlite::{Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::db_error;
use crate::space::Reserve;
use crate::write::{
    claim, finish, ingest, purge_dedupe, purge_finished, purge_unrouted, replay, replay_delivery, reroute, set_paused,
};

/// Commands per transaction, at most: bounds the latency one commit adds to
/// the first request of a batch, and the memory a batch holds.
pub const MAX_BATCH: usize = 1_024;

/// Commands waiting for the writer, at most: four full batches. Beyond, an
/// ingest waits `ADMISSION_WAIT` and is then refused (busy); the dispatcher's
/// commands wait (backpressure instead of unbounded memory).
pub const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

const ROLLED_BACK: &str = "sqlite rolled the batch back (disk full or I/O error)";

pub type Reply<T> = oneshot::Sender<Result<T>>;

pub enum Command {
    Ingest(Box<NewEvent>, Reply<Ingested>),
    Claim {
        destination: String,
        now_ms: i64,
        limit: usize,
        lease_ms: i64,
        reply: Reply<Vec<Claim>>,
    },
    Finish {
        delivery: DeliveryId,
        attempt: Attempt,
        verdict: Verdict,
        now_ms: i64,
        reply: Reply<bool>,
    },
    Replay {
        id: EventId,
        now_ms: i64,
        reply: Reply<u64>,
    },
    ReplayDelivery {
        delivery: DeliveryId,
        now_ms: i64,
        reply: Reply<bool>,
    },
    Reroute {
        id: EventId,
        routing: Vec<RouteVerdict>,
        deliveries: Vec<NewDelivery>,
        now_ms: i64,
        reply: Reply<Option<u64>>,
    },
    Purge {
        now_ms: i64,
        limit: usize,
        reply: Reply<u64>,
    },
    PurgeFinished {
        state: State,
        before_ms: i64,
        limit: usize,
        reply: Reply<u64>,
    },
    PurgeUnrouted {
        before_ms: i64,
        limit: usize,
        reply: Reply<u64>,
    },
    SetPaused {
        destination: String,
        paused: bool,
        reply: Reply<()>,
    },
    /// A tiny write, to learn whether writes work again after a failure.
    Probe {
        now_ms: i64,
        reply: Reply<()>,
    },
    /// Tests only: run SQL inside the batch (to end the transaction under the writer's feet).
    #[cfg(test)]
    Sql(&'static str, Reply<()>),
}

/// What one command came to, kept until the batch's fate is known.
enum Done {
    Ingested(Result<Ingested>),
    Claims(Result<Vec<Claim>>),
    Moved(Result<bool>),
    Count(Result<u64>),
    Added(Result<Option<u64>>),
    Unit(Result<()>),
}

impl Done {
    fn failed(&self) -> bool {
        match self {
            Done::Ingested(r) => r.is_err(),
            Done::Claims(r) => r.is_err(),
            Done::Moved(r) => r.is_err(),
            Done::Count(r) => r.is_err(),
            Done::Added(r) => r.is_err(),
            Done::Unit(r) => r.is_err(),
        }
    }
}

impl Command {
    /// Run against `c` (the transaction, or a savepoint in it). Queue
    /// positions are drawn from `seq`; they only grow (gaps are harmless).
    fn run(&self, c: &Connection, seq: &mut i64) -> Done {
        match self {
            Command::Ingest(event, _) => Done::Ingested(ingest(c, event, seq)),
            Command::Claim { destination, now_ms, limit, lease_ms, .. } => {
                Done::Claims(claim(c, destination, *now_ms, *limit, *lease_ms))
            }
            Command::Finish { delivery, attempt, verdict, now_ms, .. } => {
                Done::Moved(finish(c, delivery, attempt, *verdict, *now_ms))
            }
            Command::Replay { id, now_ms, .. } => Done::Count(replay(c, id, seq, *now_ms)),
            Command::ReplayDelivery { delivery, now_ms, .. } => Done::Moved(replay_delivery(c, delivery, seq, *now_ms)),
            Command::Reroute { id, routing, deliveries, now_ms, .. } => {
                Done::Added(reroute(c, id, routing, deliveries, seq, *now_ms))
            }
            Command::Purge { now_ms, limit, .. } => Done::Count(purge_dedupe(c, *now_ms, *limit)),
            Command::PurgeFinished { state, before_ms, limit, .. } => {
                Done::Count(purge_finished(c, *state, *before_ms, *limit))
            }
            Command::PurgeUnrouted { before_ms, limit, .. } => Done::Count(purge_unrouted(c, *before_ms, *limit)),
            Command::SetPaused { destination, paused, .. } => Done::Unit(set_paused(c, destination, *paused)),
            Command::Probe { now_ms, .. } => Done::Unit(
                c.execute("INSERT OR REPLACE INTO health (id, at) VALUES (1, ?1)", [now_ms])
                    .map(drop)
                    .map_err(db_error),
            ),
            #[cfg(test)]
            Command::Sql(sql, _) => Done::Unit(c.execute_batch(sql).map_err(db_error)),
        }
    }

    /// Answer with what the command came to: the batch committed.
    fn answer(self, done: Done) {
        fn send<T>(reply: Reply<T>, result: Result<T>) {
            // The caller may have gone away (request cancelled): nothing to do then.
            let _ = reply.send(result);
        }
        match (self, done) {
            (Command::Ingest(_, reply), Done::Ingested(r)) => send(reply, r),
            (Command::Claim { reply, .. }, Done::Claims(r)) => send(reply, r),
            (Command::Finish { reply, .. } | Command::ReplayDelivery { reply, .. }, Done::Moved(r)) => send(reply, r),
            (
                Command::Replay { reply, .. }
                | Command::Purge { reply, .. }
                | Command::PurgeFinished { reply, .. }
                | Command::PurgeUnrouted { reply, .. },
                Done::Count(r),
            ) => send(reply, r),
            (Command::Reroute { reply, .. }, Done::Added(r)) => send(reply, r),
            (Command::SetPaused { reply, .. } | Command::Probe { reply, .. }, Done::Unit(r)) => send(reply, r),
            #[cfg(test)]
            (Command::Sql(_, reply), Done::Unit(r)) => send(reply, r),
            (command, _) => command.fail("internal: a command's result did not match it"),
        }
    }

    /// Answer with an error: the batch did not commit.
    fn fail(self, error: &str) {
        self.refuse(StoreError::Unavailable(error.to_owned()));
    }

    /// Answer with `error`, without having run.
    fn refuse(self, error: StoreError) {
        fn send<T>(reply: Reply<T>, error: StoreError) {
            let _ = reply.send(Err(error));
        }
        match self {
            Command::Ingest(_, reply) => send(reply, error),
            Command::Claim { reply, .. } => send(reply, error),
            Command::Finish { reply, .. } | Command::ReplayDelivery { reply, .. } => send(reply, error),
            Command::Replay { reply, .. }
            | Command::Purge { reply, .. }
            | Command::PurgeFinished { reply, .. }
            | Command::PurgeUnrouted { reply, .. } => send(reply, error),
            Command::Reroute { reply, .. } => send(reply, error),
            Command::SetPaused { reply, .. } | Command::Probe { reply, .. } => send(reply, error),
            #[cfg(test)]
            Command::Sql(_, reply) => send(reply, error),
        }
    }
}

/// The highest number given to a finished delivery that the store holds or
/// retention deleted (0: none).
pub fn numbered(conn: &Connection) -> rusqlite::Result<i64> {
    let max: Option<i64> =
        conn.query_row(concat!("SELECT MAX(finished_seq) FROM deliveries WHERE ", finished!("")), [], |r| r.get(0))?;
    let deleted: i64 = conn.query_row("SELECT numbered FROM key_file_check WHERE id = 0", [], |r| r.get(0))?;
    Ok(max.unwrap_or(0).max(deleted))
}

/// Why a batch did not commit as a whole.
enum Whole {
    /// A command failed: worth running each alone.
    Refused,
    /// The transaction itself failed (begin, commit, or SQLite rolled it back).
    Failed(String),
}

pub struct Writer {
    conn: Connection,
    /// Whether the last batch failed to commit (a full disk, an I/O error):
    /// readiness then probes with a write instead of trusting a read.
    failing: Arc<AtomicBool>,
    /// The last queue position drawn; positions only grow, gaps are harmless.
    last_seq: i64,
    reserve: Reserve,
    /// Why ingest is refused for want of disk, while it is: told when it begins and ends.
    short: Option<String>,
    /// Events refused for want of disk: since the shortage began, and since the last summary.
    refused: (u64, u64, std::time::Instant),
}

/// While ingest is refused for want of disk, a summary line at most this often.
const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Writer {
    /// `filed_through`: the key file's mark. Finished deliveries are
    /// numbered past it and past every number the store holds, so a number
    /// is never given twice, nor below the mark (a store restored from a
    /// backup older than its key file would otherwise number deliveries the
    /// key file claims to hold).
    pub fn new(
        conn: Connection,
        failing: Arc<AtomicBool>,
        reserve: Reserve,
        filed_through: i64,
    ) -> rusqlite::Result<Self> {
        let last: Option<i64> = conn.query_row("SELECT MAX(seq) FROM deliveries", [], |r| r.get(0))?;
        let next = Arc::new(AtomicI64::new(numbered(&conn)?.max(filed_through) + 1));
        conn.create_scalar_function("hg_finished", 1, FunctionFlags::SQLITE_UTF8, move |ctx| {
            // NULL for a delivery without an order key: no listing by key holds it.
            Ok(match ctx.get_raw(0) {
                ValueRef::Null => None,
                _ => Some(next.fetch_add(1, Ordering::Relaxed)),
            })
        })?;
        let refused = (0, 0, std::time::Instant::now());
        Ok(Writer { conn, failing, last_seq: last.unwrap_or(0), reserve, short: None, refused })
    }

    pub fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        while let Some(first) = queue.blocking_recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match queue.try_recv() {
                    Ok(next) => batch.push(next),
                    Err(_) => break,
                }
            }
            self.commit_batch(&mut batch);
        }
    }

    fn commit_batch(&mut self, batch: &mut Vec<Command>) {
        let mut commands: Vec<Command> = std::mem::take(batch);
        if commands.iter().any(|c| matches!(c, Command::Ingest(..))) {
            self.check_space();
            if let Some(why) = &self.short {
                let (refused, rest): (Vec<_>, Vec<_>) =
                    commands.into_iter().partition(|c| matches!(c, Command::Ingest(..)));
                let n = refused.len() as u64;
                self.refused.0 += n;
                self.refused.1 += n;
                if self.refused.2.elapsed() >= SUMMARY_EVERY {
                    tracing::warn!(refused = self.refused.1, detail = %why, "still refusing new events for want of disk");
                    self.refused.1 = 0;
                    self.refused.2 = std::time::Instant::now();
                }
                refused.into_iter().for_each(|command| command.refuse(StoreError::Full(why.clone())));
                commands = rest;
                if commands.is_empty() {
                    return;
                }
            }
        }
        let outcome = match self.whole(&commands) {
            Err(Whole::Refused) => self.isolated(&commands),
            other => other.map_err(|e| match e {
                Whole::Failed(error) => error,
                Whole::Refused => unreachable!("handled above"),
            }),
        };
        self.failing.store(outcome.is_err(), Ordering::Relaxed);
        match outcome {
            Ok(dones) => commands.into_iter().zip(dones).for_each(|(command, done)| command.answer(done)),
            Err(error) => {
                tracing::debug!(%error, "sqlite batch failed");
                commands.into_iter().for_each(|command| command.fail(&error));
            }
        }
    }

    /// Whether the disk has the reserve left; a change is logged once.
    fn check_space(&mut self) {
        let short = self.reserve.short();
        match (&self.short, &short) {
            (None, Some(why)) => {
                tracing::warn!(detail = %why, "refusing new events until disk space is freed; deliveries go on");
                self.refused = (0, 0, std::time::Instant::now());
            }
            (Some(_), None) => tracing::info!(refused = self.refused.0, "disk space is back: accepting new events"),
            _ => {}
        }
        self.short = short;
    }

    /// The batch in one transaction, no savepoints: the common path.
    fn whole(&mut self, commands: &[Command]) -> std::result::Result<Vec<Done>, Whole> {
        let mut seq = self.last_seq;
        let tx = self.conn.transaction().map_err(|e| Whole::Failed(e.to_string()))?;
        let mut dones = Vec::with_capacity(commands.len());
        for command in commands {
            let done = command.run(&tx, &mut seq);
            if tx.is_autocommit() {
                return Err(Whole::Failed(ROLLED_BACK.into()));
            }
            if done.failed() {
                return Err(Whole::Refused); // dropping `tx` rolls it back
            }
            dones.push(done);
        }
        tx.commit().map_err(|e| Whole::Failed(format!("commit failed: {e}")))?;
        self.last_seq = seq;
        Ok(dones)
    }

    /// The batch again, each command in a savepoint of its own: one that
    /// fails is rolled back alone. SQLite rolling the whole transaction back
    /// under us fails the batch as one, with nothing run after it.
    fn isolated(&mut self, commands: &[Command]) -> std::result::Result<Vec<Done>, String> {
        let mut seq = self.last_seq;
        let mut tx = self.conn.transaction().map_err(|e| e.to_string())?;
        let mut dones = Vec::with_capacity(commands.len());
        for command in commands {
            dones.push(in_savepoint(&mut tx, command, &mut seq));
            if tx.is_autocommit() {
                return Err(ROLLED_BACK.into());
            }
        }
        tx.commit().map_err(|e| format!("commit failed: {e}"))?;
        self.last_seq = seq;
        Ok(dones)
    }
}

fn in_savepoint(tx: &mut Transaction<'_>, command: &Command, seq: &mut i64) -> Done {
    let error = |e: rusqlite::Error| {
        let e = db_error(e);
        match command {
            Command::Ingest(..) => Done::Ingested(Err(e)),
            Command::Claim { .. } => Done::Claims(Err(e)),
            Command::Finish { .. } | Command::ReplayDelivery { .. } => Done::Moved(Err(e)),
            Command::Replay { .. }
            | Command::Purge { .. }
            | Command::PurgeFinished { .. }
            | Command::PurgeUnrouted { .. } => Done::Count(Err(e)),
            Command::Reroute { .. } => Done::Added(Err(e)),
            _ => Done::Unit(Err(e)),
        }
    };
    let savepoint = match tx.savepoint() {
        Ok(savepoint) => savepoint,
        Err(e) => return error(e),
    };
    let done = command.run(&savepoint, seq);
    if done.failed() {
        return done; // dropping the savepoint rolls it back
    }
    match savepoint.commit() {
        Ok(()) => done,
        Err(e) => error(e),
    }
}

#[cfg(test)]
mod tests {
    use hookgate_store::conformance::{DEST, T0, event, ok_attempt, to};

    use super::*;

    /// A writer on a fresh in-memory database, with no disk reserve.
    fn in_memory(filed_through: i64) -> Writer {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        let reserve = Reserve::new(std::path::Path::new("."), 0);
        Writer::new(conn, Arc::default(), reserve, filed_through).unwrap()
    }

    /// An event for DEST whose delivery queues under order key `key`.
    fn keyed(key: &str) -> NewEvent {
        let mut new = to(DEST, event("src", T0));
        new.order_key = Some(key.into());
        new.deliveries[0].order_key = new.order_key.clone();
        new
    }

    /// What SQLite does on some disk-full or I/O errors: the whole transaction
    /// is rolled back mid-batch. Nothing of the batch may then be stored, and
    /// every caller must hear so.
    #[test]
    fn a_batch_rolled_back_under_the_writer_fails_as_one() {
        let mut writer = in_memory(0);
        let (before, after) = (event("src", T0), event("src", T0));
        let (reply_before, mut answer_before) = oneshot::channel();
        let (reply_sql, mut answer_sql) = oneshot::channel();
        let (reply_after, mut answer_after) = oneshot::channel();
        let mut batch = vec![
            Command::Ingest(Box::new(before.clone()), reply_before),
            Command::Sql("ROLLBACK", reply_sql),
            Command::Ingest(Box::new(after.clone()), reply_after),
        ];
        writer.commit_batch(&mut batch);
        assert!(answer_before.try_recv().unwrap().is_err(), "rolled back: not stored, and told so");
        assert!(answer_sql.try_recv().unwrap().is_err());
        assert!(answer_after.try_recv().unwrap().is_err(), "not run on its own after the rollback");
        let stored: i64 = writer.conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, 0, "nothing of the batch is stored");
        let mut next = vec![Command::Ingest(Box::new(after), oneshot::channel().0)];
        writer.commit_batch(&mut next);
        let stored: i64 = writer.conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0)).unwrap();
        assert_eq!(stored, 1, "the next batch commits");
    }

    /// Each delivery with an order key is numbered once, when it first
    /// finishes (delivered, dead or superseded), in the order they finish,
    /// above the key file's mark; a retry leaves it unnumbered, a replay keeps
    /// its number, a delivery without a key gets none (no listing by key holds it).
    #[test]
    fn finished_deliveries_are_numbered_once_in_the_order_they_finish() {
        let mut writer = in_memory(100);
        let run = |writer: &mut Writer, command: Command| writer.commit_batch(&mut vec![command]);
        let mut keyless = to(DEST, event("src", T0));
        keyless.deliveries[0].order_key = None;
        let mut coalesced = keyed("d");
        coalesced.coalesce_key = Some("c".into());
        coalesced.deliveries[0].coalesce_key = coalesced.coalesce_key.clone();
        let mut newer = keyed("e");
        newer.coalesce_key = Some("c".into());
        newer.deliveries[0].coalesce_key = newer.coalesce_key.clone();
        for new in [keyed("a"), keyed("b"), keyed("c"), keyless, coalesced] {
            run(&mut writer, Command::Ingest(Box::new(new), oneshot::channel().0));
        }
        let (reply, mut claimed) = oneshot::channel();
        run(&mut writer, Command::Claim { destination: DEST.into(), now_ms: T0, limit: 4, lease_ms: 60_000, reply });
        let claims = claimed.try_recv().unwrap().unwrap();
        assert_eq!(claims.len(), 4, "a, b, c and the keyless one");
        let finish = |writer: &mut Writer, n: usize, verdict: Verdict| {
            let (reply, mut moved) = oneshot::channel();
            let (delivery, attempt) = (claims[n].delivery.clone(), ok_attempt(1, T0));
            run(writer, Command::Finish { delivery, attempt, verdict, now_ms: T0, reply });
            assert!(moved.try_recv().unwrap().unwrap());
        };
        let numbers = |writer: &Writer| -> Vec<(Option<String>, Option<i64>)> {
            let mut s = writer
                .conn
                .prepare("SELECT CAST(order_key AS TEXT), finished_seq FROM deliveries ORDER BY rid")
                .unwrap();
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().collect::<rusqlite::Result<_>>().unwrap()
        };
        finish(&mut writer, 1, Verdict::Delivered);
        finish(&mut writer, 0, Verdict::Retry { at_ms: T0 + 1_000 });
        finish(&mut writer, 2, Verdict::Dead);
        finish(&mut writer, 3, Verdict::Delivered);
        run(&mut writer, Command::Ingest(Box::new(newer), oneshot::channel().0));
        let key = |k: &str| Some(k.to_owned());
        let expected = vec![
            (key("a"), None),
            (key("b"), Some(101)),
            (key("c"), Some(102)),
            (None, None),
            (key("d"), Some(103)),
            (key("e"), None),
        ];
        assert_eq!(numbers(&writer), expected, "b, c, then d superseded by e; a retried; the keyless none");
        let (reply, mut replayed) = oneshot::channel();
        run(&mut writer, Command::ReplayDelivery { delivery: claims[1].delivery.clone(), now_ms: T0, reply });
        assert!(replayed.try_recv().unwrap().unwrap());
        let (reply, mut claimed) = oneshot::channel();
        run(
            &mut writer,
            Command::Claim { destination: DEST.into(), now_ms: T0 + 1, limit: 10, lease_ms: 60_000, reply },
        );
        let again = claimed.try_recv().unwrap().unwrap();
        let b = again.iter().find(|c| c.delivery == claims[1].delivery).expect("b is claimed again");
        let (reply, mut moved) = oneshot::channel();
        let attempt = ok_attempt(b.attempt, T0);
        run(
            &mut writer,
            Command::Finish { delivery: b.delivery.clone(), attempt, verdict: Verdict::Delivered, now_ms: T0, reply },
        );
        assert!(moved.try_recv().unwrap().unwrap());
        assert_eq!(numbers(&writer), expected, "a replayed delivery keeps its number");
    }

    /// A new writer numbers past the store's highest number, the highest
    /// retention deleted, and the key file's mark, whichever is highest.
    #[test]
    fn numbering_starts_past_the_store_and_the_mark() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        let number =
            |conn: &Connection| -> i64 { conn.query_row("SELECT hg_finished('k')", [], |r| r.get(0)).unwrap() };
        let reserve = Reserve::new(std::path::Path::new("."), 0);
        let writer = Writer::new(conn, Arc::default(), reserve.clone(), 7).unwrap();
        assert_eq!(number(&writer.conn), 8, "past the mark");
        writer.conn.execute_batch(
            "INSERT INTO events (id, source, received_at, headers, body) VALUES ('evt_x', 's', 0, x'', x'');
             INSERT INTO deliveries (id, event_rid, source, destination, route, order_key, seq, state, updated_at, owed, finished_seq)
             VALUES ('dlv_x', 1, 's', 'd', 'r', x'6b', 1, 'delivered', 0, 0, 50);",
        ).unwrap();
        let writer = Writer::new(writer.conn, Arc::default(), reserve.clone(), 7).unwrap();
        assert_eq!(number(&writer.conn), 51, "past the store's highest");
        // Retention deleted one numbered 70: its number is not given again.
        writer.conn.execute_batch("UPDATE key_file_check SET deletions = 1, numbered = 70").unwrap();
        let writer = Writer::new(writer.conn, Arc::default(), reserve, 7).unwrap();
        assert_eq!(number(&writer.conn), 71, "past the highest retention deleted");
        assert_eq!(
            writer.conn.query_row("SELECT hg_finished(NULL)", [], |r| r.get::<_, Option<i64>>(0)).unwrap(),
            None
        );
    }
}

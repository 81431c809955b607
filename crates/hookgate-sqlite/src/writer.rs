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
//! The writer files finished deliveries by key in transactions of their own
//! ([`crate::write::file_finished`]), a slice ([`FILE_SLICE`]) at a time: the
//! listing index by order key is written many entries a page instead of a
//! page an entry. It files a slice whenever its queue is empty and a slice
//! has finished (so an idle writer files them all but the last few), and
//! after a batch while [`FILE_AT`] wait (a writer that is never idle), as
//! many slices as the batch finished plus one: a filing holds up the
//! commands that arrive during it for a slice or a few, not for thousands.
//!
//! Before a batch that ingests, the writer looks at the disk: with less than
//! the reserve left ([`crate::space`]), its ingests are refused and the rest
//! of the batch (claims, outcomes: the drain) runs in that room.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use hookgate_core::{DeliveryId, EventId, State};
use hookgate_store::{Attempt, Claim, Ingested, NewDelivery, NewEvent, Result, RouteVerdict, StoreError, Verdict};
use rusqlite::{Connection, Transaction};
use tokio::sync::{mpsc, oneshot};

use crate::db_error;
use crate::space::Reserve;
use crate::write::{
    claim, file_finished, finish, ingest, purge_dedupe, purge_finished, purge_unrouted, replay, replay_delivery,
    reroute, set_paused,
};

/// Commands per transaction, at most: bounds the latency one commit adds to
/// the first request of a batch, and the memory a batch holds.
pub const MAX_BATCH: usize = 1_024;

/// Commands waiting for the writer, at most: four full batches. Beyond, an
/// ingest waits `ADMISSION_WAIT` and is then refused (busy); the dispatcher's
/// commands wait (backpressure instead of unbounded memory).
pub const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

/// Unfiled finished deliveries that start a filing even while commands keep
/// coming. The smaller, the fewer a listing by order key reads from the
/// unfiled arm.
pub const FILE_AT: u64 = 4_096;

/// Finished deliveries filed in one transaction; an idle writer files one
/// as soon as it has this many. The bigger, the more entries each page of
/// the filed index takes at once (less WAL); the smaller, the less the
/// commands that arrive during a filing wait. 4,096 at once doubled the ack
/// p99 at half load; 256 gave most of it back for 27% more WAL an event
/// (docs/benchmarks.md, "Filing in slices").
pub const FILE_SLICE: u64 = 256;

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
    /// At least as many as the finished deliveries not filed yet (it counts
    /// every delivery that may have finished; a slice that finds fewer than
    /// it asked for resets it to the truth, 0).
    unfiled: u64,
    /// After a failed filing, the count that starts the next (FILE_AT more):
    /// a full disk would fail each try, and the drain must not pay for them.
    retry_at: u64,
    /// When to file and how much: [`FILE_AT`] and [`FILE_SLICE`] but in tests.
    filing: Filing,
}

/// When the writer files finished deliveries, and how many at a time.
#[derive(Debug, Clone, Copy)]
pub struct Filing {
    /// Unfiled deliveries that start a filing after a batch (at least 1).
    pub at: u64,
    /// Deliveries a filing transaction takes, and that start one when the writer is idle (at least 1).
    pub slice: u64,
}

impl Default for Filing {
    fn default() -> Self {
        Filing { at: FILE_AT, slice: FILE_SLICE }
    }
}

/// While ingest is refused for want of disk, a summary line at most this often.
const SUMMARY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

impl Writer {
    pub fn new(conn: Connection, failing: Arc<AtomicBool>, reserve: Reserve, filing: Filing) -> rusqlite::Result<Self> {
        let last: Option<i64> = conn.query_row("SELECT MAX(seq) FROM deliveries", [], |r| r.get(0))?;
        let refused = (0, 0, std::time::Instant::now());
        let unfiled = crate::write::unfiled(&conn)?;
        let last_seq = last.unwrap_or(0);
        let filing = Filing { at: filing.at.max(1), slice: filing.slice.max(1) };
        Ok(Writer { conn, failing, last_seq, reserve, short: None, refused, unfiled, retry_at: 0, filing })
    }

    pub fn run(mut self, mut queue: mpsc::Receiver<Command>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = match queue.try_recv() {
                Ok(first) => first,
                // Nothing waiting: a good time to file a slice.
                Err(mpsc::error::TryRecvError::Empty) if self.may_file(self.filing.slice) => {
                    self.file_slice();
                    continue;
                }
                Err(mpsc::error::TryRecvError::Empty) => match queue.blocking_recv() {
                    Some(first) => first,
                    None => return,
                },
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            };
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
            Ok(dones) => {
                let finished: u64 = commands.iter().zip(&dones).map(|(command, done)| finished_by(command, done)).sum();
                self.unfiled += finished;
                commands.into_iter().zip(dones).for_each(|(command, done)| command.answer(done));
                // Commands kept coming: while FILE_AT wait, file anyway, as many
                // slices as this batch finished and one more, so the unfiled arm
                // of a listing stays small and no batch waits for a backlog.
                let mut slices = finished.div_ceil(self.filing.slice) + 1;
                while slices > 0 && self.may_file(self.filing.at) && self.file_slice() {
                    slices -= 1;
                }
            }
            Err(error) => {
                tracing::debug!(%error, "sqlite batch failed");
                commands.into_iter().for_each(|command| command.fail(&error));
            }
        }
    }

    /// Whether `threshold` unfiled deliveries wait, and no failed filing says to wait for more.
    fn may_file(&self, threshold: u64) -> bool {
        self.unfiled >= threshold.max(self.retry_at)
    }

    /// File one slice of finished deliveries by key, oldest first, in a
    /// transaction of its own; whether it committed. One that fails is left
    /// for the next filing, once FILE_AT more have finished. Meanwhile an
    /// unfiled delivery is still listed, from the unfiled arm.
    fn file_slice(&mut self) -> bool {
        let slice = self.filing.slice;
        let filed = self.conn.transaction().map_err(db_error).and_then(|tx| {
            let n = file_finished(&tx, slice as usize)?;
            tx.commit().map_err(db_error)?;
            Ok(n)
        });
        match filed {
            Ok(n) => {
                self.unfiled = if n < slice { 0 } else { self.unfiled.saturating_sub(n) };
                self.retry_at = 0;
                true
            }
            Err(error) => {
                tracing::warn!(%error, "filing finished deliveries by key failed; trying again later");
                self.retry_at = self.unfiled.saturating_add(self.filing.at);
                false
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

/// How many deliveries a committed command may have finished: an outcome
/// one (none for a retry), an ingest those it superseded.
fn finished_by(command: &Command, done: &Done) -> u64 {
    match (command, done) {
        // A retry leaves the delivery owed: nothing to file.
        (Command::Finish { verdict, .. }, Done::Moved(Ok(true))) => u64::from(verdict.next_state().0 != State::Pending),
        (Command::Ingest(..), Done::Ingested(Ok(Ingested::Accepted { superseded, .. }))) => *superseded,
        _ => 0,
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
    fn in_memory(filing: Filing) -> Writer {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        let reserve = Reserve::new(std::path::Path::new("."), 0);
        Writer::new(conn, Arc::default(), reserve, filing).unwrap()
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
        let mut writer = in_memory(Filing::default());
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

    /// Finished deliveries are filed after the batch in which FILE_AT (here
    /// 2, slices of 2) wait; a filing that fails (a trigger stands in for a
    /// full disk) costs the batch nothing, is not tried again until FILE_AT
    /// more have finished, and the next filing takes what it left.
    #[test]
    fn a_failed_filing_is_left_for_the_next() {
        let mut writer = in_memory(Filing { at: 2, slice: 2 });
        let run = |writer: &mut Writer, command: Command| writer.commit_batch(&mut vec![command]);
        for key in ["a", "b", "c", "d", "e", "f"] {
            run(&mut writer, Command::Ingest(Box::new(keyed(key)), oneshot::channel().0));
        }
        let (reply, mut claimed) = oneshot::channel();
        let claim = Command::Claim { destination: DEST.into(), now_ms: T0, limit: 10, lease_ms: 60_000, reply };
        run(&mut writer, claim);
        let claims = claimed.try_recv().unwrap().unwrap();
        assert_eq!(claims.len(), 6);
        let filed = |writer: &Writer| -> i64 {
            writer.conn.query_row("SELECT COUNT(*) FROM deliveries WHERE filed = 1", [], |r| r.get(0)).unwrap()
        };
        let finish = |writer: &mut Writer, n: usize| {
            let (reply, mut moved) = oneshot::channel();
            let delivery = claims[n].delivery.clone();
            let attempt = ok_attempt(1, T0);
            run(writer, Command::Finish { delivery, attempt, verdict: Verdict::Delivered, now_ms: T0, reply });
            assert!(moved.try_recv().unwrap().unwrap(), "the outcome commits whatever the filing does");
        };
        finish(&mut writer, 0);
        assert_eq!((filed(&writer), writer.unfiled), (0, 1), "fewer than FILE_AT wait");
        finish(&mut writer, 1);
        assert_eq!((filed(&writer), writer.unfiled), (2, 0), "filed after the batch");
        writer
            .conn
            .execute_batch(
                "CREATE TRIGGER no_room BEFORE UPDATE OF filed ON deliveries BEGIN SELECT RAISE(ABORT, 'full'); END",
            )
            .unwrap();
        finish(&mut writer, 2);
        finish(&mut writer, 3);
        assert_eq!((filed(&writer), writer.unfiled, writer.retry_at), (2, 2, 4), "failed: still counted");
        writer.conn.execute_batch("DROP TRIGGER no_room").unwrap();
        finish(&mut writer, 4);
        assert_eq!((filed(&writer), writer.unfiled), (2, 3), "not tried again before FILE_AT more finish");
        finish(&mut writer, 5);
        assert_eq!((filed(&writer), writer.unfiled), (6, 0), "the next filing takes what the failed one left");
    }

    /// A retried delivery is still owed: its outcome does not count towards
    /// a filing (counted, it would start filings with nothing to file).
    #[test]
    fn a_retry_is_not_counted_for_filing() {
        let mut writer = in_memory(Filing::default());
        writer.commit_batch(&mut vec![Command::Ingest(Box::new(keyed("k")), oneshot::channel().0)]);
        let (reply, mut claimed) = oneshot::channel();
        let claim = Command::Claim { destination: DEST.into(), now_ms: T0, limit: 10, lease_ms: 60_000, reply };
        writer.commit_batch(&mut vec![claim]);
        let delivery = claimed.try_recv().unwrap().unwrap().remove(0).delivery;
        let (reply, mut moved) = oneshot::channel();
        let verdict = Verdict::Retry { at_ms: T0 + 1_000 };
        let attempt = ok_attempt(1, T0);
        writer.commit_batch(&mut vec![Command::Finish { delivery, attempt, verdict, now_ms: T0, reply }]);
        assert!(moved.try_recv().unwrap().unwrap(), "the retry is recorded");
        assert_eq!(writer.unfiled, 0);
    }

    /// A writer with nothing to do files what has finished, a slice at a
    /// time, before FILE_AT have: here 8 with FILE_AT 64, in slices of 4 (a
    /// reader sees 8, 4 or 0 unfiled, never a part of a slice). At rest none
    /// is left; without idle filing all 8 would be.
    #[test]
    fn an_idle_writer_files_a_slice_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("idle.db");
        let mut conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        let reserve = Reserve::new(dir.path(), 0);
        let writer = Writer::new(conn, Arc::default(), reserve, Filing { at: 64, slice: 4 }).unwrap();
        let (queue, commands) = mpsc::channel(QUEUE_CAPACITY);
        let thread = std::thread::spawn(move || writer.run(commands));
        let ask = |command: Command| queue.blocking_send(command).map_err(drop).unwrap();
        for n in 0..8 {
            ask(Command::Ingest(Box::new(keyed(&format!("k{n}"))), oneshot::channel().0));
        }
        let (reply, claimed) = oneshot::channel();
        ask(Command::Claim { destination: DEST.into(), now_ms: T0, limit: 10, lease_ms: 60_000, reply });
        let claims = claimed.blocking_recv().unwrap().unwrap();
        assert_eq!(claims.len(), 8);
        for claim in claims {
            let (reply, moved) = oneshot::channel();
            let (delivery, attempt) = (claim.delivery, ok_attempt(1, T0));
            ask(Command::Finish { delivery, attempt, verdict: Verdict::Delivered, now_ms: T0, reply });
            assert!(moved.blocking_recv().unwrap().unwrap());
        }
        let reader = Connection::open(&path).unwrap();
        let unfiled = || -> i64 {
            reader.query_row("SELECT COUNT(*) FROM deliveries WHERE filed = 0", [], |r| r.get(0)).unwrap()
        };
        // Until none is left, or the count stops moving for 5 s.
        let (mut last, mut since) = (unfiled(), std::time::Instant::now());
        while last > 0 && since.elapsed() < std::time::Duration::from_secs(5) {
            std::thread::sleep(std::time::Duration::from_millis(5));
            let now = unfiled();
            assert!([8, 4, 0].contains(&now), "{now} unfiled: filed a slice at a time");
            if now != last {
                (last, since) = (now, std::time::Instant::now());
            }
        }
        assert_eq!(last, 0, "an idle writer files slices before FILE_AT");
        drop(queue);
        thread.join().unwrap();
    }
}

//! The one thread that writes. SQLite takes one writer at a time anyway; owning
//! the connection in one thread turns that into group commit for free: the
//! thread takes every command waiting in its queue (up to [`MAX_BATCH`]),
//! applies each in its own savepoint, commits once (one fsync), then answers
//! them all. Under load, one fsync serves hundreds of requests; when idle, a
//! lone request is committed at once, with no timer adding latency.

use hookgate_core::{EventId, State};
use hookgate_store::{Attempt, Claim, Ingested, NewEvent, Result, StoreError, Verdict};
use rusqlite::{Connection, Transaction};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{mpsc, oneshot};

use crate::db_error;
use crate::write::{claim, finish, ingest, purge_dedupe, purge_finished, replay, set_paused};

/// Commands per transaction, at most: bounds the latency one commit adds to
/// the first request of a batch, and the memory a batch holds.
pub const MAX_BATCH: usize = 1_024;

/// Commands waiting for the writer, at most: four full batches. Beyond, an
/// ingest waits `ADMISSION_WAIT` and is then refused (busy); the dispatcher's
/// commands wait (backpressure instead of unbounded memory).
pub const QUEUE_CAPACITY: usize = 4 * MAX_BATCH;

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
        id: EventId,
        attempt: Attempt,
        verdict: Verdict,
        now_ms: i64,
        reply: Reply<bool>,
    },
    Replay {
        id: EventId,
        now_ms: i64,
        reply: Reply<bool>,
    },
    Purge {
        now_ms: i64,
        reply: Reply<u64>,
    },
    PurgeFinished {
        state: State,
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

/// A reply that waits for the commit: sent with the command's own result if
/// the transaction commits, with the commit's error if it does not.
type Deferred = Box<dyn FnOnce(Option<&str>) + Send>;

fn defer<T: Send + 'static>(reply: Reply<T>, result: Result<T>) -> Deferred {
    Box::new(move |commit_error| {
        let answer = match commit_error {
            None => result,
            Some(error) => Err(StoreError::Unavailable(format!("commit failed: {error}"))),
        };
        // The caller may have gone away (request cancelled): nothing to do then.
        let _ = reply.send(answer);
    })
}

pub struct Writer {
    conn: Connection,
    /// Whether the last batch failed to commit (a full disk, an I/O error):
    /// readiness then probes with a write instead of trusting a read.
    failing: Arc<AtomicBool>,
    /// The next queue position; positions only grow, gaps are harmless.
    next_seq: i64,
}

impl Writer {
    pub fn new(conn: Connection, failing: Arc<AtomicBool>) -> rusqlite::Result<Self> {
        let last: Option<i64> = conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))?;
        Ok(Writer { conn, failing, next_seq: last.unwrap_or(0) + 1 })
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
        let mut seq = self.next_seq;
        let mut tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(error) => {
                let error = error.to_string();
                for command in batch.drain(..) {
                    answer_now(command, &error);
                }
                return;
            }
        };
        let mut replies: Vec<Deferred> = Vec::with_capacity(batch.len());
        let mut commands = batch.drain(..);
        for command in commands.by_ref() {
            replies.push(apply(&mut tx, &mut seq, command));
            // On some errors (a full disk, an I/O error) SQLite rolls the whole
            // transaction back by itself. Every command applied so far is then
            // gone, and any run after would commit on its own: stop, and fail
            // the batch as one, so no caller is told "stored" for a row that is
            // not, or "failed" for a row that is.
            if tx.is_autocommit() {
                const ROLLED_BACK: &str = "sqlite rolled the batch back (disk full or I/O error)";
                tracing::debug!("{ROLLED_BACK}");
                for reply in replies {
                    reply(Some(ROLLED_BACK));
                }
                for command in commands {
                    answer_now(command, ROLLED_BACK);
                }
                self.failing.store(true, Ordering::Relaxed);
                return; // positions drawn in this batch were never used: next_seq stays
            }
        }
        drop(commands);
        let outcome = tx.commit().map_err(|e| e.to_string());
        if outcome.is_ok() {
            self.next_seq = seq;
        } else {
            tracing::debug!(error = ?outcome, "sqlite commit failed");
        }
        self.failing.store(outcome.is_err(), Ordering::Relaxed);
        for reply in replies {
            reply(outcome.as_ref().err().map(String::as_str));
        }
    }
}

fn answer_now(command: Command, error: &str) {
    fn fail<T>(reply: Reply<T>, error: &str) {
        let _ = reply.send(Err(StoreError::Unavailable(error.to_owned())));
    }
    match command {
        Command::Ingest(_, reply) => fail(reply, error),
        Command::Claim { reply, .. } => fail(reply, error),
        Command::Finish { reply, .. } | Command::Replay { reply, .. } => fail(reply, error),
        Command::Purge { reply, .. } | Command::PurgeFinished { reply, .. } => fail(reply, error),
        Command::Probe { reply, .. } | Command::SetPaused { reply, .. } => fail(reply, error),
        #[cfg(test)]
        Command::Sql(_, reply) => fail(reply, error),
    }
}

/// Run one command in its own savepoint, so a failing command is rolled back
/// alone and the rest of the batch still commits.
fn apply(tx: &mut Transaction<'_>, seq: &mut i64, command: Command) -> Deferred {
    fn in_savepoint<T>(tx: &mut Transaction<'_>, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let savepoint = tx.savepoint().map_err(db_error)?;
        let result = f(&savepoint)?;
        savepoint.commit().map_err(db_error)?;
        Ok(result)
    }
    match command {
        Command::Ingest(event, reply) => {
            let result = in_savepoint(tx, |c| ingest(c, &event, *seq));
            if matches!(result, Ok(Ingested::Accepted { .. })) {
                *seq += 1;
            }
            defer(reply, result)
        }
        Command::Claim { destination, now_ms, limit, lease_ms, reply } => {
            defer(reply, in_savepoint(tx, |c| claim(c, &destination, now_ms, limit, lease_ms)))
        }
        Command::Finish { id, attempt, verdict, now_ms, reply } => {
            defer(reply, in_savepoint(tx, |c| finish(c, &id, &attempt, verdict, now_ms)))
        }
        Command::Replay { id, now_ms, reply } => {
            let result = in_savepoint(tx, |c| replay(c, &id, *seq, now_ms));
            if matches!(result, Ok(true)) {
                *seq += 1;
            }
            defer(reply, result)
        }
        Command::Purge { now_ms, reply } => defer(reply, in_savepoint(tx, |c| purge_dedupe(c, now_ms))),
        Command::SetPaused { destination, paused, reply } => {
            defer(reply, in_savepoint(tx, |c| set_paused(c, &destination, paused)))
        }
        Command::Probe { now_ms, reply } => defer(
            reply,
            in_savepoint(tx, |c| {
                c.execute("INSERT OR REPLACE INTO health (id, at) VALUES (1, ?1)", [now_ms]).map(drop).map_err(db_error)
            }),
        ),
        Command::PurgeFinished { state, before_ms, limit, reply } => {
            defer(reply, in_savepoint(tx, |c| purge_finished(c, state, before_ms, limit)))
        }
        #[cfg(test)]
        Command::Sql(sql, reply) => defer(reply, tx.execute_batch(sql).map_err(crate::db_error)),
    }
}

#[cfg(test)]
mod tests {
    use hookgate_store::conformance::{T0, event};

    use super::*;

    /// What SQLite does on some disk-full or I/O errors: the whole transaction
    /// is rolled back mid-batch. Nothing of the batch may then be stored, and
    /// every caller must hear so.
    #[test]
    fn a_batch_rolled_back_under_the_writer_fails_as_one() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut conn).unwrap();
        let mut writer = Writer::new(conn, Arc::default()).unwrap();
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
}

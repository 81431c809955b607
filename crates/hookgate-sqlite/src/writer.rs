//! The one thread that writes. SQLite takes one writer at a time anyway; owning
//! the connection in one thread turns that into group commit for free: the
//! thread takes every command waiting in its queue (up to [`MAX_BATCH`]),
//! applies each in its own savepoint, commits once (one fsync), then answers
//! them all. Under load, one fsync serves hundreds of requests; when idle, a
//! lone request is committed at once, with no timer adding latency.

use hookgate_core::{EventId, State};
use hookgate_store::{Attempt, Claim, Ingested, NewEvent, Result, StoreError, Verdict};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};

use crate::{db_error, decode_headers, encode_headers};

/// Commands per transaction, at most: bounds the latency one commit adds to
/// the first request of a batch, and the memory a batch holds.
pub const MAX_BATCH: usize = 1_024;

/// Commands waiting for the writer, at most; senders wait beyond that
/// (backpressure instead of unbounded memory).
pub const QUEUE_CAPACITY: usize = 16_384;

pub type Reply<T> = oneshot::Sender<Result<T>>;

pub enum Command {
    Ingest(Box<NewEvent>, Reply<Ingested>),
    Claim { destination: String, now_ms: i64, limit: usize, lease_ms: i64, reply: Reply<Vec<Claim>> },
    Finish { id: EventId, attempt: Attempt, verdict: Verdict, now_ms: i64, reply: Reply<bool> },
    Replay { id: EventId, now_ms: i64, reply: Reply<bool> },
    Purge { now_ms: i64, reply: Reply<u64> },
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
    /// The next queue position; positions only grow, gaps are harmless.
    next_seq: i64,
}

impl Writer {
    pub fn new(conn: Connection) -> rusqlite::Result<Self> {
        let last: Option<i64> = conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))?;
        Ok(Writer { conn, next_seq: last.unwrap_or(0) + 1 })
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
        let tx = match self.conn.transaction() {
            Ok(tx) => tx,
            Err(error) => {
                let error = error.to_string();
                for command in batch.drain(..) {
                    answer_now(command, &error);
                }
                return;
            }
        };
        let mut tx = tx;
        let replies: Vec<Deferred> = batch.drain(..).map(|command| apply(&mut tx, &mut seq, command)).collect();
        let outcome = tx.commit().map_err(|e| e.to_string());
        if outcome.is_ok() {
            self.next_seq = seq;
        } else {
            tracing::error!(error = ?outcome, "sqlite commit failed");
        }
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
        Command::Purge { reply, .. } => fail(reply, error),
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
        Command::Purge { now_ms, reply } => defer(
            reply,
            in_savepoint(tx, |c| {
                c.execute("DELETE FROM dedupe WHERE expires_at <= ?1", [now_ms]).map(|n| n as u64).map_err(db_error)
            }),
        ),
    }
}

fn ingest(c: &Connection, event: &NewEvent, seq: i64) -> Result<Ingested> {
    let now = event.received_at_ms;
    if let Some(key) = &event.dedupe_key {
        // One statement decides: a new key inserts, an expired key is taken
        // over, a live key leaves the row alone and returns nothing.
        let won: Option<String> = c
            .prepare_cached(
                "INSERT INTO dedupe (source, key, event_id, expires_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (source, key) DO UPDATE
                    SET event_id = excluded.event_id, expires_at = excluded.expires_at
                    WHERE dedupe.expires_at <= ?5
                 RETURNING event_id",
            )
            .and_then(|mut s| {
                s.query_row(
                    params![event.source, key, event.id.as_str(), now.saturating_add(event.dedupe_window_ms), now],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(db_error)?;
        if won.is_none() {
            let original: String = c
                .prepare_cached("SELECT event_id FROM dedupe WHERE source = ?1 AND key = ?2")
                .and_then(|mut s| s.query_row(params![event.source, key], |r| r.get(0)))
                .map_err(db_error)?;
            c.prepare_cached("UPDATE events SET duplicates = duplicates + 1 WHERE id = ?1")
                .and_then(|mut s| s.execute([&original]))
                .map_err(db_error)?;
            return Ok(Ingested::Duplicate { original: parse_id(original)? });
        }
    }
    let mut superseded = 0;
    if let Some(key) = &event.coalesce_key {
        let orphaned: Vec<Option<String>> = c
            .prepare_cached(
                "UPDATE events SET state = 'superseded', superseded_by = ?1, updated_at = ?2, due_at = NULL, head = 0
                 WHERE source = ?3 AND coalesce_key = ?4 AND state = 'pending'
                 RETURNING order_key",
            )
            .and_then(|mut s| {
                s.query_map(params![event.id.as_str(), now, event.source, key], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_error)?;
        superseded = orphaned.len() as u64;
        // A superseded head hands its queue on, whatever the new event's order key.
        let mut keys: Vec<String> = orphaned.into_iter().flatten().collect();
        keys.sort();
        keys.dedup();
        for order_key in keys.iter().filter(|k| Some(*k) != event.order_key.as_ref()) {
            promote(c, &event.source, order_key)?;
        }
    }
    let warnings =
        (!event.warnings.is_empty()).then(|| serde_json::to_string(&event.warnings).expect("strings serialize"));
    c.prepare_cached(
        "INSERT INTO events (id, seq, source, destination, state, received_at, updated_at, headers, body,
                             dedupe_key, order_key, coalesce_key, warnings, due_at, head)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?5, ?12)",
    )
    .and_then(|mut s| {
        s.execute(params![
            event.id.as_str(),
            seq,
            event.source,
            event.destination,
            now,
            encode_headers(&event.headers),
            event.body,
            event.dedupe_key,
            event.order_key,
            event.coalesce_key,
            warnings,
            event.order_key.is_none(),
        ])
    })
    .map_err(db_error)?;
    if let Some(order_key) = &event.order_key {
        // The new event, or the one after a superseded head, may now lead its queue.
        promote(c, &event.source, order_key)?;
    }
    Ok(Ingested::Accepted { id: event.id.clone(), superseded })
}

/// Make the first active event of an order key's queue its head (if it is
/// not already). Called wherever the queue's active set changes.
fn promote(c: &Connection, source: &str, order_key: &str) -> Result<()> {
    c.prepare_cached(
        "UPDATE events SET head = 1
         WHERE rid = (SELECT rid FROM events
                      WHERE source = ?1 AND order_key = ?2 AND state IN ('pending', 'delivering')
                      ORDER BY seq LIMIT 1)
           AND head = 0",
    )
    .and_then(|mut s| s.execute(params![source, order_key]))
    .map_err(db_error)?;
    Ok(())
}

fn claim(c: &Connection, destination: &str, now: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>> {
    // Only heads are claimable: a `delivering` head with a live lease, or a
    // `pending` head waiting for its retry, is not due, so nothing behind it moves.
    let mut select = c
        .prepare_cached(
            "SELECT rid, id, source, order_key, received_at, headers, body, attempts, round_base
             FROM events
             WHERE destination = ?1 AND head = 1 AND state IN ('pending', 'delivering') AND due_at <= ?2
             ORDER BY due_at, seq
             LIMIT ?3",
        )
        .map_err(db_error)?;
    let rows = select
        .query_map(params![destination, now, limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, i64>(4)?,
                r.get::<_, String>(5)?,
                r.get::<_, Vec<u8>>(6)?,
                r.get::<_, u32>(7)?,
                r.get::<_, u32>(8)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_error)?;
    let mut update = c
        .prepare_cached(
            "UPDATE events SET state = 'delivering', attempts = attempts + 1, due_at = ?1, updated_at = ?2
             WHERE rid = ?3",
        )
        .map_err(db_error)?;
    let mut claims = Vec::with_capacity(rows.len());
    for (rid, id, source, order_key, received_at_ms, headers, body, attempts, round_base) in rows {
        update.execute(params![now.saturating_add(lease_ms), now, rid]).map_err(db_error)?;
        claims.push(Claim {
            id: parse_id(id)?,
            source,
            destination: destination.to_owned(),
            order_key,
            received_at_ms,
            headers: decode_headers(&headers)?,
            body,
            attempt: attempts + 1,
            round_attempt: attempts + 1 - round_base,
        });
    }
    Ok(claims)
}

fn finish(c: &Connection, id: &EventId, attempt: &Attempt, verdict: Verdict, now: i64) -> Result<bool> {
    // The attempt happened whether or not the claim is still ours: record it.
    c.prepare_cached(
        "INSERT OR IGNORE INTO attempts (event_id, attempt, started_at, duration_ms, status, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .and_then(|mut s| {
        s.execute(params![
            id.as_str(),
            attempt.attempt,
            attempt.started_at_ms,
            attempt.duration_ms,
            attempt.status,
            attempt.error
        ])
    })
    .map_err(db_error)?;
    let (state, due_at) = match verdict {
        Verdict::Delivered => (State::Delivered, None),
        Verdict::Retry { at_ms } => (State::Pending, Some(at_ms)),
        Verdict::Dead => (State::Dead, None),
    };
    // A retried event stays its queue's head; a finished one hands the head on.
    let moved: Option<(String, Option<String>)> = c
        .prepare_cached(
            "UPDATE events SET state = ?1, due_at = ?2, updated_at = ?3, head = (?1 = 'pending')
             WHERE id = ?4 AND state = 'delivering' AND attempts = ?5
             RETURNING source, order_key",
        )
        .and_then(|mut s| {
            s.query_row(params![state.as_str(), due_at, now, id.as_str(), attempt.attempt], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(db_error)?;
    match &moved {
        Some((source, Some(order_key))) if state != State::Pending => promote(c, source, order_key)?,
        _ => {}
    }
    Ok(moved.is_some())
}

fn replay(c: &Connection, id: &EventId, seq: i64, now: i64) -> Result<bool> {
    let moved: Option<(String, Option<String>)> = c
        .prepare_cached(
            "UPDATE events SET state = 'pending', seq = ?1, round_base = attempts, due_at = ?2,
                               superseded_by = NULL, updated_at = ?2, head = (order_key IS NULL)
             WHERE id = ?3 AND state IN ('delivered', 'dead', 'superseded')
             RETURNING source, order_key",
        )
        .and_then(|mut s| s.query_row(params![seq, now, id.as_str()], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(db_error)?;
    if let Some((source, Some(order_key))) = &moved {
        promote(c, source, order_key)?;
    }
    Ok(moved.is_some())
}

/// At open, before any dispatcher runs: this process holds the database's
/// lock, so every `delivering` event belonged to a process that stopped. Each
/// is due again when its lease ends, not at once: the app may still be working
/// on the cut-off attempt until its timeout, and the order key must never see
/// two deliveries at once. The cut-off attempt is recorded as such.
pub fn recover(conn: &mut Connection, now: i64) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO attempts (event_id, attempt, started_at, duration_ms, status, error)
         SELECT id, attempts, updated_at, ?1 - updated_at, NULL, 'interrupted: hookgate stopped during the attempt'
         FROM events WHERE state = 'delivering'",
        [now],
    )?;
    // due_at holds the lease's end while delivering: it stays the time the event is due.
    let recovered =
        tx.execute("UPDATE events SET state = 'pending', updated_at = ?1 WHERE state = 'delivering'", [now])?;
    tx.commit()?;
    Ok(recovered)
}

pub fn parse_id(text: String) -> Result<EventId> {
    text.parse().map_err(|e| StoreError::Corrupt(format!("{e}")))
}

//! The SQL of each write command, run by the writer thread inside the
//! batch's transaction (each in a savepoint of its own).

use hookgate_core::{EventId, State};
use hookgate_store::{Attempt, Claim, Ingested, NewEvent, Result, StoreError, Verdict, codec, parse_id};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db_error;

pub fn ingest(c: &Connection, event: &NewEvent, seq: i64) -> Result<Ingested> {
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
                    params![
                        event.source,
                        key.as_bytes(),
                        event.id.as_str(),
                        now.saturating_add(event.dedupe_window_ms),
                        now
                    ],
                    |r| r.get(0),
                )
                .optional()
            })
            .map_err(db_error)?;
        if won.is_none() {
            let original: String = c
                .prepare_cached("SELECT event_id FROM dedupe WHERE source = ?1 AND key = ?2")
                .and_then(|mut s| s.query_row(params![event.source, key.as_bytes()], |r| r.get(0)))
                .map_err(db_error)?;
            c.prepare_cached("UPDATE events SET duplicates = duplicates + 1 WHERE id = ?1")
                .and_then(|mut s| s.execute([&original]))
                .map_err(db_error)?;
            return Ok(Ingested::Duplicate { original: parse_id(&original)? });
        }
    }
    let mut superseded = 0;
    if let Some(key) = &event.coalesce_key {
        let orphaned: Vec<Option<Vec<u8>>> = c
            .prepare_cached(
                "UPDATE events SET state = 'superseded', superseded_by = ?1, updated_at = ?2, due_at = NULL, head = 0
                 WHERE source = ?3 AND coalesce_key = ?4 AND state = 'pending'
                 RETURNING order_key",
            )
            .and_then(|mut s| {
                s.query_map(params![event.id.as_str(), now, event.source, key.as_bytes()], |r| r.get(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(db_error)?;
        superseded = orphaned.len() as u64;
        // A superseded head hands its queue on, whatever the new event's order key.
        let mut keys: Vec<Vec<u8>> = orphaned.into_iter().flatten().collect();
        keys.sort();
        keys.dedup();
        let own = event.order_key.as_ref().map(|k| k.as_bytes());
        for order_key in keys.iter().filter(|k| Some(k.as_slice()) != own) {
            promote(c, &event.source, order_key)?;
        }
    }
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
            codec::encode_headers(&event.headers),
            &event.body[..],
            event.dedupe_key.as_ref().map(|k| k.as_bytes()),
            event.order_key.as_ref().map(|k| k.as_bytes()),
            event.coalesce_key.as_ref().map(|k| k.as_bytes()),
            codec::encode_warnings(&event.warnings),
            event.order_key.is_none(),
        ])
    })
    .map_err(db_error)?;
    if let Some(order_key) = &event.order_key {
        // The new event, or the one after a superseded head, may now lead its queue.
        promote(c, &event.source, order_key.as_bytes())?;
    }
    Ok(Ingested::Accepted { id: event.id.clone(), superseded })
}

/// Make the first active event of an order key's queue its head (if it is
/// not already). Called wherever the queue's active set changes.
fn promote(c: &Connection, source: &str, order_key: &[u8]) -> Result<()> {
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

pub fn set_paused(c: &Connection, destination: &str, paused: bool) -> Result<()> {
    let sql = if paused {
        "INSERT OR IGNORE INTO paused (destination) VALUES (?1)"
    } else {
        "DELETE FROM paused WHERE destination = ?1"
    };
    c.prepare_cached(sql).and_then(|mut s| s.execute([destination])).map(drop).map_err(db_error)
}

pub fn is_paused(c: &Connection, destination: &str) -> Result<bool> {
    c.prepare_cached("SELECT EXISTS (SELECT 1 FROM paused WHERE destination = ?1)")
        .and_then(|mut s| s.query_row([destination], |r| r.get(0)))
        .map_err(db_error)
}

/// Due heads of a destination's queues, soonest first (`?1` destination, `?2`
/// now, `?3` limit): a walk of the heads index, never of the events behind them.
const CLAIMABLE: &str = "SELECT rid, id, source, order_key, received_at, headers, body, attempts, round_base
     FROM events
     WHERE destination = ?1 AND head = 1 AND state IN ('pending', 'delivering') AND due_at <= ?2
     ORDER BY due_at, seq
     LIMIT ?3";

pub fn claim(c: &Connection, destination: &str, now: i64, limit: usize, lease_ms: i64) -> Result<Vec<Claim>> {
    if is_paused(c, destination)? {
        return Ok(Vec::new());
    }
    // Only heads are claimable: a `delivering` head with a live lease, or a
    // `pending` head waiting for its retry, is not due, so nothing behind it moves.
    let mut select = c.prepare_cached(CLAIMABLE).map_err(db_error)?;
    // Each row read on its own: a value of the wrong type (the tables are not
    // STRICT: a hand edit can store text where bytes belong) fails that row,
    // not the claim of every other.
    let rows = select
        .query_map(params![destination, now, limit as i64], |r| Ok((r.get::<_, i64>(0)?, read_claim(r, destination))))
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_error)?;
    // An unreadable row is leased like the others (its queue waits behind it)
    // but not counted as an attempt: none is made.
    let mut update = c
        .prepare_cached(
            "UPDATE events SET state = 'delivering', attempts = attempts + ?4, due_at = ?1, updated_at = ?2
             WHERE rid = ?3",
        )
        .map_err(db_error)?;
    let mut claims = Vec::with_capacity(rows.len());
    for (rid, read) in rows {
        let attempted = i64::from(read.is_ok());
        update.execute(params![now.saturating_add(lease_ms), now, rid, attempted]).map_err(db_error)?;
        match read {
            Ok(claim) => claims.push(claim),
            Err(error) => hookgate_store::unreadable_row(rid, &error),
        }
    }
    Ok(claims)
}

/// A claimable row as the claim it becomes (its attempt counted).
fn read_claim(r: &rusqlite::Row, destination: &str) -> Result<Claim> {
    let corrupt = |e: rusqlite::Error| StoreError::Corrupt(e.to_string());
    let attempts = r.get::<_, u32>(7).map_err(corrupt)?;
    let round_base = r.get::<_, u32>(8).map_err(corrupt)?;
    let attempt = attempts.checked_add(1).ok_or_else(|| StoreError::Corrupt(format!("attempts {attempts}")))?;
    Ok(Claim {
        id: parse_id(&r.get::<_, String>(1).map_err(corrupt)?)?,
        source: r.get(2).map_err(corrupt)?,
        destination: destination.to_owned(),
        order_key: r.get::<_, Option<Vec<u8>>>(3).map_err(corrupt)?.map(Into::into),
        received_at_ms: r.get(4).map_err(corrupt)?,
        headers: codec::decode_headers(&r.get::<_, Vec<u8>>(5).map_err(corrupt)?)?,
        body: r.get::<_, Vec<u8>>(6).map_err(corrupt)?.into(),
        attempt,
        round_attempt: attempt
            .checked_sub(round_base)
            .ok_or_else(|| StoreError::Corrupt(format!("round_base {round_base} above attempts {attempts}")))?,
    })
}

pub fn finish(c: &Connection, id: &EventId, attempt: &Attempt, verdict: Verdict, now: i64) -> Result<bool> {
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
    let (state, due_at) = verdict.next_state();
    // A retried event stays its queue's head; a finished one hands the head on.
    let moved: Option<(String, Option<Vec<u8>>)> = c
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

pub fn replay(c: &Connection, id: &EventId, seq: i64, now: i64) -> Result<bool> {
    let moved: Option<(String, Option<Vec<u8>>)> = c
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

/// Up to `limit` expired dedupe keys (by the expiry index): a short write.
pub fn purge_dedupe(c: &Connection, now: i64, limit: usize) -> Result<u64> {
    c.prepare_cached(
        "DELETE FROM dedupe WHERE (source, key) IN (
            SELECT source, key FROM dedupe WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    )
    .and_then(|mut s| s.execute(params![now, limit as i64]))
    .map(|n| n as u64)
    .map_err(db_error)
}

/// Retention: one small batch of finished events, oldest first, and their attempts.
pub fn purge_finished(c: &Connection, state: State, before: i64, limit: usize) -> Result<u64> {
    debug_assert!(!state.is_active(), "only finished events are purged");
    let ids: Vec<String> = c
        .prepare_cached(
            "DELETE FROM events WHERE rid IN (
                 SELECT rid FROM events WHERE state = ?1 AND updated_at < ?2 ORDER BY updated_at LIMIT ?3)
             RETURNING id",
        )
        .and_then(|mut s| {
            s.query_map(params![state.as_str(), before, limit as i64], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<String>>>()
        })
        .map_err(db_error)?;
    let mut attempts = c.prepare_cached("DELETE FROM attempts WHERE event_id = ?1").map_err(db_error)?;
    for id in &ids {
        attempts.execute([id]).map_err(db_error)?;
    }
    Ok(ids.len() as u64)
}

#[cfg(test)]
mod tests {
    use hookgate_store::conformance::{DEST, T0, event};
    use rusqlite::StatementStatus;

    use super::*;

    /// SQLite's own count of the steps a claim's scan took.
    fn claim_steps(c: &Connection) -> i32 {
        let mut scan = c.prepare(CLAIMABLE).unwrap();
        let found = scan.query_map(params![DEST, T0, 10], |_| Ok(())).unwrap().count();
        assert_eq!(found, 0, "nothing is due: the only head is in flight");
        scan.get_status(StatementStatus::VmStep)
    }

    /// Ten thousand events blocked behind a head in flight cost a claim
    /// nothing: it walks heads only (the deep-backlog case of few order keys).
    #[test]
    fn a_claim_costs_the_same_however_deep_the_blocked_backlog() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut c).unwrap();
        let mut seq = 0;
        let mut add = |c: &Connection| {
            seq += 1;
            let mut new = event("src", T0);
            new.order_key = Some("tenant-1".into());
            assert!(matches!(ingest(c, &new, seq), Ok(Ingested::Accepted { .. })));
        };
        add(&c);
        assert_eq!(claim(&c, DEST, T0, 10, 60_000).unwrap().len(), 1);
        let shallow = claim_steps(&c);
        for _ in 0..10_000 {
            add(&c);
        }
        let deep = claim_steps(&c);
        assert!(deep <= shallow, "a claim took {deep} steps with 10,000 blocked events, {shallow} with none");
        eprintln!("claim scan: {shallow} VM steps with no blocked events, {deep} with 10,000");
    }

    /// Rows hookgate cannot read (a bad id, text where bytes belong, bad
    /// headers) are held with their order keys' queues, their attempts not
    /// counted; they do not fail the claim of everything else.
    #[test]
    fn an_unreadable_row_holds_its_queue_and_no_other() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut c).unwrap();
        let keyed = |key: &str| NewEvent { order_key: Some(key.into()), ..event("src", T0) };
        let mut good = None;
        for (seq, key) in ["bad-id", "bad-type", "good", "bad-id", "bad-headers"].into_iter().enumerate() {
            let Ok(Ingested::Accepted { id, .. }) = ingest(&c, &keyed(key), seq as i64 + 1) else { panic!() };
            if key == "good" {
                good = Some(id);
            }
        }
        c.execute_batch(
            "UPDATE events SET id = 'evt_edited_by_hand' WHERE seq = 1;
             UPDATE events SET body = 'text where bytes belong' WHERE seq = 2;
             UPDATE events SET headers = x'ff' WHERE seq = 5;",
        )
        .unwrap();
        let claimed = claim(&c, DEST, T0, 10, 60_000).unwrap();
        assert_eq!(claimed.iter().map(|claim| &claim.id).collect::<Vec<_>>(), [good.as_ref().unwrap()]);
        let held: Vec<(i64, String, i64)> = c
            .prepare("SELECT seq, state, attempts FROM events WHERE seq != 3 ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected = [(1, "delivering"), (2, "delivering"), (4, "pending"), (5, "delivering")]
            .map(|(seq, state)| (seq, state.to_owned(), 0));
        assert_eq!(held, expected, "the unreadable rows are leased, not attempted; the event behind one waits");
        assert!(claim(&c, DEST, T0 + 1, 10, 60_000).unwrap().is_empty(), "nothing else is due");
        let filter = hookgate_store::ListFilter { limit: 10, ..Default::default() };
        let listed = crate::read::list(&c, &filter).unwrap();
        assert_eq!(listed.events.len(), 4, "a list leaves out the row it cannot read (the bad id) and shows the rest");
    }
}

//! The SQL of each write command, run by the writer thread inside the
//! batch's transaction (each in a savepoint of its own).
//!
//! Queue positions are drawn from `seq`, which only grows (gaps are harmless).

use hookgate_core::{DeliveryId, EventId, State};
use hookgate_store::{
    Attempt, Claim, Ingested, NewDelivery, NewEvent, Result, RouteVerdict, StoreError, Verdict, codec,
    parse_delivery_id, parse_id,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::db_error;

pub fn ingest(c: &Connection, event: &NewEvent, seq: &mut i64) -> Result<Ingested> {
    let now = event.received_at_ms;
    if let Some(key) = &event.dedupe_key
        && let Some(original) = live_owner(c, &event.source, key.as_bytes(), now)?
    {
        return Ok(Ingested::Duplicate { original });
    }
    c.prepare_cached(
        "INSERT INTO events (id, source, received_at, headers, body, dedupe_key, order_key, coalesce_key,
                                 event_type, warnings, routing, trace, unrouted, dedupe_expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
    )
    .and_then(|mut s| {
        s.execute(params![
            event.id.as_str(),
            event.source,
            now,
            codec::encode_headers(&event.headers),
            &event.body[..],
            event.dedupe_key.as_ref().map(|k| k.as_bytes()),
            event.order_key.as_ref().map(|k| k.as_bytes()),
            event.coalesce_key.as_ref().map(|k| k.as_bytes()),
            event.event_type,
            codec::encode_warnings(&event.warnings),
            codec::encode_routing(&event.routing),
            event.trace,
            event.deliveries.is_empty(),
            event.dedupe_key.as_ref().map(|_| now.saturating_add(event.dedupe_window_ms)),
        ])
    })
    .map_err(db_error)?;
    // The row just inserted (no RETURNING: it costs SQLite a temporary table a statement).
    let event_rid = c.last_insert_rowid();
    let mut superseded = 0;
    for delivery in &event.deliveries {
        let mut own_queue_moved = false;
        if let Some(key) = &delivery.coalesce_key {
            let (count, own) = coalesce(c, &event.id, &event.source, delivery, key.as_bytes(), now)?;
            superseded += count;
            own_queue_moved = own;
        }
        add_delivery(c, event_rid, &event.source, delivery, seq, now)?;
        if own_queue_moved && let Some(order_key) = &delivery.order_key {
            // A superseded head of its own queue: the first still owed leads now (it may be the new one).
            promote(c, &delivery.destination, &event.source, order_key.as_bytes())?;
        }
    }
    Ok(Ingested::Accepted { id: event.id.clone(), superseded })
}

/// The event that owns a (source, dedupe key) at `now`, if one does: the
/// latest stored event of the key while its window lasts (its duplicate
/// count goes up), or, once retention deleted it, the key's tombstone.
/// One statement of SQLite's single writer decides, so there is no race to
/// lose: every copy after the first finds it.
fn live_owner(c: &Connection, source: &str, key: &[u8], now: i64) -> Result<Option<EventId>> {
    let latest: Option<(i64, String, Option<i64>)> = c
        .prepare_cached(
            "SELECT rid, id, dedupe_expires_at FROM events WHERE dedupe_key = ?1 AND source = ?2
             ORDER BY rid DESC LIMIT 1",
        )
        .and_then(|mut s| s.query_row(params![key, source], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(db_error)?;
    if let Some((rid, id, Some(expires_at))) = latest
        && expires_at > now
    {
        c.prepare_cached(
            "UPDATE events SET duplicates = duplicates + 1, last_copy_at = MAX(COALESCE(last_copy_at, ?2), ?2)
             WHERE rid = ?1",
        )
        .and_then(|mut s| s.execute([rid, now]))
        .map_err(db_error)?;
        return parse_id(&id).map(Some);
    }
    let tombstone: Option<String> = c
        .prepare_cached("SELECT event_id FROM dedupe WHERE source = ?1 AND key = ?2 AND expires_at > ?3")
        .and_then(|mut s| s.query_row(params![source, key, now], |r| r.get(0)).optional())
        .map_err(db_error)?;
    tombstone.as_deref().map(parse_id).transpose()
}

/// Before events are deleted: the dedupe keys of those still within their
/// window are kept apart (a tombstone), so a late copy is still a duplicate.
/// `before` is retention's bound; a key already expired by then is not kept.
fn keep_live_keys(c: &Connection, event_rid: i64, before: i64) -> Result<()> {
    c.prepare_cached(
        "INSERT INTO dedupe (source, key, event_id, expires_at)
         SELECT source, dedupe_key, id, dedupe_expires_at FROM events
         WHERE rid = ?1 AND dedupe_key IS NOT NULL AND dedupe_expires_at > ?2
         ON CONFLICT (source, key) DO UPDATE SET event_id = excluded.event_id, expires_at = excluded.expires_at
            WHERE excluded.expires_at > dedupe.expires_at",
    )
    .and_then(|mut s| s.execute(params![event_rid, before]))
    .map(drop)
    .map_err(db_error)
}

/// Supersede the pending deliveries of `delivery`'s destination, source and
/// coalesce key; a superseded head of another queue hands it on. How many,
/// and whether any was in `delivery`'s own queue (whose head the caller
/// settles once the new delivery is in).
fn coalesce(
    c: &Connection,
    by: &EventId,
    source: &str,
    delivery: &NewDelivery,
    key: &[u8],
    now: i64,
) -> Result<(u64, bool)> {
    let orphaned: Vec<Option<Vec<u8>>> = c
        .prepare_cached(
            "UPDATE deliveries SET state = 'superseded', owed = 0, superseded_by = ?1, updated_at = ?2, due_at = NULL,
                                   head = 0, finished_seq = coalesce(finished_seq, hg_finished(order_key))
             WHERE destination = ?3 AND source = ?4 AND coalesce_key = ?5 AND state = 'pending'
             RETURNING order_key",
        )
        .and_then(|mut s| {
            s.query_map(params![by.as_str(), now, delivery.destination, source, key], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    let superseded = orphaned.len() as u64;
    let mut keys: Vec<Vec<u8>> = orphaned.into_iter().flatten().collect();
    keys.sort();
    keys.dedup();
    let own = delivery.order_key.as_ref().map(|k| k.as_bytes());
    for order_key in keys.iter().filter(|k| Some(k.as_slice()) != own) {
        promote(c, &delivery.destination, source, order_key)?;
    }
    Ok((superseded, keys.iter().any(|k| Some(k.as_slice()) == own)))
}

/// A new delivery at the end of its queue, due at `now`: its queue's head if
/// nothing else in it is owed (decided in the insert itself, so a head is
/// written once, not inserted and then promoted).
fn add_delivery(
    c: &Connection,
    event_rid: i64,
    source: &str,
    delivery: &NewDelivery,
    seq: &mut i64,
    now: i64,
) -> Result<()> {
    *seq += 1;
    c.prepare_cached(
        "INSERT INTO deliveries (id, event_rid, source, destination, route, order_key, coalesce_key, seq, state,
                                 updated_at, due_at, head)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', ?9, ?9,
                 ?6 IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries q WHERE q.order_key = ?6 AND q.destination = ?4
                                           AND q.source = ?3 AND q.owed = 1))",
    )
    .and_then(|mut s| {
        s.execute(params![
            delivery.id.as_str(),
            event_rid,
            source,
            delivery.destination,
            delivery.route,
            delivery.order_key.as_ref().map(|k| k.as_bytes()),
            delivery.coalesce_key.as_ref().map(|k| k.as_bytes()),
            *seq,
            now,
        ])
    })
    .map_err(db_error)?;
    Ok(())
}

/// Make the first active delivery of a queue its head (if it is not
/// already). Called wherever the queue's active set changes.
fn promote(c: &Connection, destination: &str, source: &str, order_key: &[u8]) -> Result<()> {
    c.prepare_cached(
        "UPDATE deliveries SET head = 1
         WHERE rid = (SELECT rid FROM deliveries
                      WHERE destination = ?1 AND source = ?2 AND order_key = ?3 AND owed = 1
                      ORDER BY seq LIMIT 1)
           AND head = 0",
    )
    .and_then(|mut s| s.execute(params![destination, source, order_key]))
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
/// now, `?3` limit): a walk of the heads index, never of the deliveries
/// behind them; each joined to its event for what is sent. The limit is
/// `?3 + 0`, not `?3`: SQLite plans with the value of a bare `LIMIT ?`, so
/// binding one would compile the statement again at every claim.
const CLAIMABLE: &str = "SELECT d.rid, d.id, e.id, d.source, d.route, d.order_key, e.received_at, e.headers, e.body,
            d.attempts, d.round_base, e.trace
     FROM deliveries d JOIN events e ON e.rid = d.event_rid
     WHERE d.destination = ?1 AND d.head = 1 AND d.owed = 1 AND d.due_at <= ?2
     ORDER BY d.due_at, d.seq
     LIMIT ?3 + 0";

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
            "UPDATE deliveries SET state = 'delivering', attempts = attempts + ?4, due_at = ?1, updated_at = ?2
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
    let attempts = r.get::<_, u32>(9).map_err(corrupt)?;
    let round_base = r.get::<_, u32>(10).map_err(corrupt)?;
    let attempt = attempts.checked_add(1).ok_or_else(|| StoreError::Corrupt(format!("attempts {attempts}")))?;
    Ok(Claim {
        delivery: parse_delivery_id(&r.get::<_, String>(1).map_err(corrupt)?)?,
        id: parse_id(&r.get::<_, String>(2).map_err(corrupt)?)?,
        source: r.get(3).map_err(corrupt)?,
        destination: destination.to_owned(),
        route: r.get(4).map_err(corrupt)?,
        order_key: r.get::<_, Option<Vec<u8>>>(5).map_err(corrupt)?.map(Into::into),
        received_at_ms: r.get(6).map_err(corrupt)?,
        headers: codec::decode_headers(&r.get::<_, Vec<u8>>(7).map_err(corrupt)?)?,
        body: r.get::<_, Vec<u8>>(8).map_err(corrupt)?.into(),
        attempt,
        round_attempt: attempt
            .checked_sub(round_base)
            .ok_or_else(|| StoreError::Corrupt(format!("round_base {round_base} above attempts {attempts}")))?,
        trace: r.get(11).map_err(corrupt)?,
    })
}

/// A delivery's queue: destination, source, order key.
type Queue = (String, String, Option<Vec<u8>>);

pub fn finish(c: &Connection, delivery: &DeliveryId, attempt: &Attempt, verdict: Verdict, now: i64) -> Result<bool> {
    // One look-up by id; the rest by row id.
    let found: Option<(i64, String, i64, Queue)> = c
        .prepare_cached("SELECT rid, state, attempts, destination, source, order_key FROM deliveries WHERE id = ?1")
        .and_then(|mut s| {
            s.query_row([delivery.as_str()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, (r.get(3)?, r.get(4)?, r.get(5)?)))
            })
            .optional()
        })
        .map_err(db_error)?;
    // A delivery retention deleted: its attempt is not recorded at all.
    let Some((rid, current, attempts, (destination, source, order_key))) = found else { return Ok(false) };
    // The attempt happened whether or not the claim is still ours: record it.
    c.prepare_cached(
        "INSERT OR IGNORE INTO attempts (delivery_rid, attempt, started_at, duration_ms, status, error, response)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            rid,
            attempt.attempt,
            attempt.started_at_ms,
            attempt.duration_ms,
            attempt.status,
            attempt.error,
            attempt.response.as_deref(),
        ])
    })
    .map_err(db_error)?;
    // Only the claim that holds the delivery moves it: in flight, at this attempt.
    if current != State::Delivering.as_str() || attempts != i64::from(attempt.attempt) {
        return Ok(false);
    }
    let (state, due_at) = verdict.next_state();
    // A retried delivery stays its queue's head; a finished one hands the head on.
    c.prepare_cached(
        "UPDATE deliveries SET state = ?1, owed = (?1 = 'pending'), due_at = ?2, updated_at = ?3, head = (?1 = 'pending'),
                               finished_seq = CASE WHEN ?1 = 'pending' THEN finished_seq
                                                   ELSE coalesce(finished_seq, hg_finished(order_key)) END
         WHERE rid = ?4",
    )
    .and_then(|mut s| s.execute(params![state.as_str(), due_at, now, rid]))
    .map_err(db_error)?;
    if let Some(order_key) = order_key
        && state != State::Pending
    {
        promote(c, &destination, &source, &order_key)?;
    }
    Ok(true)
}

/// A finished delivery at the back of its queue again (a new `seq`), due
/// now, its attempts counted afresh for `max_attempts`; false for an active one.
fn replay_row(c: &Connection, rid: i64, seq: &mut i64, now: i64) -> Result<bool> {
    *seq += 1;
    let moved: Option<(String, String, Option<Vec<u8>>)> = c
        .prepare_cached(
            "UPDATE deliveries SET state = 'pending', owed = 1, seq = ?1, round_base = attempts, due_at = ?2,
                                   superseded_by = NULL, updated_at = ?2, head = (order_key IS NULL)
             WHERE rid = ?3 AND state IN ('delivered', 'dead', 'superseded')
             RETURNING destination, source, order_key",
        )
        .and_then(|mut s| s.query_row(params![*seq, now, rid], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(db_error)?;
    if let Some((destination, source, Some(order_key))) = &moved {
        promote(c, destination, source, order_key)?;
    }
    Ok(moved.is_some())
}

/// The row ids of an event's deliveries, in the order they were made.
fn deliveries_of(c: &Connection, event_rid: i64) -> Result<Vec<i64>> {
    c.prepare_cached("SELECT rid FROM deliveries WHERE event_rid = ?1 ORDER BY rid")
        .and_then(|mut s| s.query_map([event_rid], |r| r.get(0))?.collect::<rusqlite::Result<Vec<i64>>>())
        .map_err(db_error)
}

fn event_rid(c: &Connection, id: &EventId) -> Result<Option<i64>> {
    c.prepare_cached("SELECT rid FROM events WHERE id = ?1")
        .and_then(|mut s| s.query_row([id.as_str()], |r| r.get(0)).optional())
        .map_err(db_error)
}

pub fn replay(c: &Connection, id: &EventId, seq: &mut i64, now: i64) -> Result<u64> {
    let Some(event_rid) = event_rid(c, id)? else { return Ok(0) };
    let mut replayed = 0;
    for rid in deliveries_of(c, event_rid)? {
        replayed += u64::from(replay_row(c, rid, seq, now)?);
    }
    Ok(replayed)
}

pub fn replay_delivery(c: &Connection, delivery: &DeliveryId, seq: &mut i64, now: i64) -> Result<bool> {
    let rid: Option<i64> = c
        .prepare_cached("SELECT rid FROM deliveries WHERE id = ?1")
        .and_then(|mut s| s.query_row([delivery.as_str()], |r| r.get(0)).optional())
        .map_err(db_error)?;
    match rid {
        Some(rid) => replay_row(c, rid, seq, now),
        None => Ok(false),
    }
}

/// New verdicts, and the deliveries to destinations the event has none for,
/// at the end of their queues. No coalescing: an old event must not
/// supersede a newer one's delivery.
pub fn reroute(
    c: &Connection,
    id: &EventId,
    routing: &[RouteVerdict],
    deliveries: &[NewDelivery],
    seq: &mut i64,
    now: i64,
) -> Result<Option<u64>> {
    let Some(event_rid) = event_rid(c, id)? else { return Ok(None) };
    let (source, has): (String, Vec<String>) = {
        let source: String = c
            .prepare_cached("SELECT source FROM events WHERE rid = ?1")
            .and_then(|mut s| s.query_row([event_rid], |r| r.get(0)))
            .map_err(db_error)?;
        let has = c
            .prepare_cached("SELECT destination FROM deliveries WHERE event_rid = ?1")
            .and_then(|mut s| s.query_map([event_rid], |r| r.get(0))?.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(db_error)?;
        (source, has)
    };
    let mut added = 0;
    for delivery in deliveries.iter().filter(|d| !has.contains(&d.destination)) {
        add_delivery(c, event_rid, &source, delivery, seq, now)?;
        added += 1;
    }
    c.prepare_cached("UPDATE events SET routing = ?1, unrouted = unrouted AND ?2 WHERE rid = ?3")
        .and_then(|mut s| s.execute(params![codec::encode_routing(routing), added == 0, event_rid]))
        .map_err(db_error)?;
    Ok(Some(added))
}

/// At open, before any dispatcher runs: this process holds the database's
/// lock, so every `delivering` delivery belonged to a process that stopped.
/// Each is due again when its lease ends, not at once: the app may still be
/// working on the cut-off attempt until its timeout, and the queue must never
/// see two deliveries at once. The cut-off attempt is recorded as such.
pub fn recover(conn: &mut Connection, now: i64) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT OR IGNORE INTO attempts (delivery_rid, attempt, started_at, duration_ms, status, error)
         SELECT rid, attempts, updated_at, ?1 - updated_at, NULL, 'interrupted: hookgate stopped during the attempt'
         FROM deliveries WHERE state = 'delivering'",
        [now],
    )?;
    // due_at holds the lease's end while delivering: it stays the time the delivery is due.
    let recovered =
        tx.execute("UPDATE deliveries SET state = 'pending', updated_at = ?1 WHERE state = 'delivering'", [now])?;
    tx.commit()?;
    Ok(recovered)
}

/// Up to `limit` expired dedupe keys kept for deleted events (by the expiry
/// index): a short write. A stored event's key needs no purge: it goes with
/// the event, and stops deduping when its window ends whether or not anything
/// is deleted.
pub fn purge_dedupe(c: &Connection, now: i64, limit: usize) -> Result<u64> {
    c.prepare_cached(
        "DELETE FROM dedupe WHERE (source, key) IN (
            SELECT source, key FROM dedupe WHERE expires_at <= ?1 ORDER BY expires_at LIMIT ?2)",
    )
    .and_then(|mut s| s.execute(params![now, limit as i64]))
    .map(|n| n as u64)
    .map_err(db_error)
}

/// Retention: one small batch of finished deliveries, oldest event first,
/// with their attempts, and each event left with none.
pub fn purge_finished(c: &Connection, state: State, before: i64, limit: usize) -> Result<u64> {
    debug_assert!(!state.is_active(), "only finished deliveries are purged");
    let gone: Vec<(i64, i64, Option<i64>)> = c
        .prepare_cached(
            "DELETE FROM deliveries WHERE rid IN (
                 SELECT rid FROM deliveries WHERE state = ?1 AND updated_at < ?2 ORDER BY event_rid, rid LIMIT ?3)
             RETURNING rid, event_rid, finished_seq",
        )
        .and_then(|mut s| {
            s.query_map(params![state.as_str(), before, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(db_error)?;
    let mut attempts = c.prepare_cached("DELETE FROM attempts WHERE delivery_rid = ?1").map_err(db_error)?;
    for (rid, event_rid, _) in &gone {
        attempts.execute([rid]).map_err(db_error)?;
        delete_bare_event(c, *event_rid, before)?;
    }
    if !gone.is_empty() {
        // For the key file's check at open (`crate::keyfile`): numbers never
        // go back, and a deletion it has swept is one the store has made.
        let numbered = gone.iter().filter_map(|(_, _, n)| *n).max().unwrap_or(0);
        c.prepare_cached(
            "UPDATE key_file_check SET deletions = deletions + 1, numbered = max(numbered, ?1) WHERE id = 0",
        )
        .and_then(|mut s| s.execute([numbered]))
        .map_err(db_error)?;
    }
    Ok(gone.len() as u64)
}

/// Delete an event left with no delivery, its live dedupe key kept apart.
fn delete_bare_event(c: &Connection, event_rid: i64, before: i64) -> Result<bool> {
    let bare: bool = c
        .prepare_cached("SELECT NOT EXISTS (SELECT 1 FROM deliveries WHERE event_rid = ?1)")
        .and_then(|mut s| s.query_row([event_rid], |r| r.get(0)))
        .map_err(db_error)?;
    if !bare {
        return Ok(false);
    }
    keep_live_keys(c, event_rid, before)?;
    c.prepare_cached("DELETE FROM events WHERE rid = ?1")
        .and_then(|mut s| s.execute([event_rid]))
        .map(|n| n > 0)
        .map_err(db_error)
}

/// Retention of unrouted events: one small batch, oldest first.
pub fn purge_unrouted(c: &Connection, before: i64, limit: usize) -> Result<u64> {
    let old: Vec<i64> = c
        .prepare_cached("SELECT rid FROM events WHERE unrouted = 1 AND received_at < ?1 ORDER BY rid LIMIT ?2")
        .and_then(|mut s| s.query_map(params![before, limit as i64], |r| r.get(0))?.collect())
        .map_err(db_error)?;
    let mut purged = 0;
    for rid in old {
        purged += u64::from(delete_bare_event(c, rid, before)?);
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use hookgate_store::conformance::{DEST, T0, event, to};
    use rusqlite::StatementStatus;

    use super::*;

    /// SQLite's own count of the steps a claim's scan took.
    fn claim_steps(c: &Connection) -> i32 {
        let mut scan = c.prepare(CLAIMABLE).unwrap();
        let found = scan.query_map(params![DEST, T0, 10], |_| Ok(())).unwrap().count();
        assert_eq!(found, 0, "nothing is due: the only head is in flight");
        scan.get_status(StatementStatus::VmStep)
    }

    /// Ten thousand deliveries blocked behind a head in flight cost a claim
    /// nothing: it walks heads only (the deep-backlog case of few order
    /// keys); nor do ten thousand due deliveries to another destination.
    #[test]
    fn a_claim_costs_the_same_however_deep_the_blocked_backlog() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut c).unwrap();
        let mut seq = 0;
        let mut add = |c: &Connection, destination: &str| {
            let mut new = to(destination, event("src", T0));
            new.order_key = Some("tenant-1".into());
            new.deliveries[0].order_key = new.order_key.clone();
            assert!(matches!(ingest(c, &new, &mut seq), Ok(Ingested::Accepted { .. })));
        };
        add(&c, DEST);
        assert_eq!(claim(&c, DEST, T0, 10, 60_000).unwrap().len(), 1);
        let shallow = claim_steps(&c);
        for _ in 0..10_000 {
            add(&c, DEST);
            add(&c, "another");
        }
        let deep = claim_steps(&c);
        assert!(deep <= shallow, "a claim took {deep} steps with 10,000 blocked deliveries, {shallow} with none");
        eprintln!("claim scan: {shallow} VM steps with no blocked deliveries, {deep} with 10,000");
    }

    /// The claim's statement is compiled once, however many claims and
    /// limits: a bare `LIMIT ?` made SQLite compile it again at each one.
    #[test]
    fn a_claim_is_not_compiled_again_at_each_call() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut c).unwrap();
        let mut seq = 0;
        for _ in 0..6 {
            ingest(&c, &to(DEST, event("src", T0)), &mut seq).unwrap();
        }
        for limit in 1..=3 {
            assert_eq!(claim(&c, DEST, T0, limit, 60_000).unwrap().len(), limit);
        }
        let compiled_again = c.prepare_cached(CLAIMABLE).unwrap().get_status(StatementStatus::RePrepare);
        assert_eq!(compiled_again, 0, "the claim's statement was compiled again {compiled_again} times");
    }

    /// Rows hookgate cannot read (a bad id, text where bytes belong, bad
    /// headers) are held with their queues, their attempts not counted; they
    /// do not fail the claim of everything else.
    #[test]
    fn an_unreadable_row_holds_its_queue_and_no_other() {
        let mut c = Connection::open_in_memory().unwrap();
        crate::schema::migrate(&mut c).unwrap();
        let keyed = |key: &str| {
            let mut new = to(DEST, NewEvent { order_key: Some(key.into()), ..event("src", T0) });
            new.deliveries[0].order_key = new.order_key.clone();
            new
        };
        let mut good = None;
        let mut seq = 0;
        for key in ["bad-id", "bad-type", "good", "bad-id", "bad-headers"] {
            let Ok(Ingested::Accepted { id, .. }) = ingest(&c, &keyed(key), &mut seq) else { panic!() };
            if key == "good" {
                good = Some(id);
            }
        }
        c.execute_batch(
            "UPDATE deliveries SET id = 'dlv_edited_by_hand' WHERE seq = 1;
             UPDATE events SET body = 'text where bytes belong' WHERE rid = 2;
             UPDATE events SET headers = x'ff' WHERE rid = 5;",
        )
        .unwrap();
        let claimed = claim(&c, DEST, T0, 10, 60_000).unwrap();
        assert_eq!(claimed.iter().map(|claim| &claim.id).collect::<Vec<_>>(), [good.as_ref().unwrap()]);
        let held: Vec<(i64, String, i64)> = c
            .prepare("SELECT seq, state, attempts FROM deliveries WHERE seq != 3 ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let expected = [(1, "delivering"), (2, "delivering"), (4, "pending"), (5, "delivering")]
            .map(|(seq, state)| (seq, state.to_owned(), 0));
        assert_eq!(held, expected, "the unreadable rows are leased, not attempted; the delivery behind one waits");
        assert!(claim(&c, DEST, T0 + 1, 10, 60_000).unwrap().is_empty(), "nothing else is due");
        c.execute("UPDATE events SET id = 'evt_edited_by_hand' WHERE rid = 1", []).unwrap();
        let filter = hookgate_store::ListFilter { limit: 10, ..Default::default() };
        let listed = crate::read::list(&c, &filter).unwrap();
        assert_eq!(listed.events.len(), 4, "a list leaves out the row it cannot read (the bad id) and shows the rest");
    }
}

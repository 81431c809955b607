//! What a database made before routes must be once migrated, on any backend:
//! each backend's test writes the same six events the way its old schema
//! did, opens the store, and hands them here.
//!
//! The six, all from source `stripe`, bodies `{"seq":N}`: (1) delivered to
//! `app` after one attempt, (2) dead after three, (3)-(5) the queue of
//! `cus_1` at `app`, its head (3) in flight under a lease ending at
//! `T0 + 30_000`, (6) pending at `crm`, which is paused. Dedupe key `dN`.

use super::*;

/// Every event is there with one delivery in its old state (`expected`:
/// state and attempts on record), its route named as a default route would
/// be; the pause holds; the queue is delivered in order once its head's
/// lease ends, one at a time; a copy of an old event is a duplicate.
pub async fn before_routes_lost_nothing(store: &dyn Store, ids: &[EventId; 6], expected: [(State, usize); 6]) {
    for (n, (id, (state, attempts))) in ids.iter().zip(expected).enumerate() {
        let detail = store.get(id).await.unwrap().expect("every event is still there");
        // What was received is as it was: body, headers, time, keys.
        let seq = n as i64 + 1;
        assert_eq!(&detail.body[..], format!("{{\"seq\":{seq}}}").as_bytes(), "{id}: its body");
        assert_eq!(detail.headers, event("stripe", T0).headers, "{id}: its headers");
        let record = &detail.record;
        assert_eq!((record.source.as_str(), record.received_at_ms), ("stripe", T0 + seq), "{id}");
        assert_eq!(record.dedupe_key, Some(Key::from(format!("d{seq}").as_str())), "{id}: its dedupe key");
        let order_key = (3..=5).contains(&seq).then(|| Key::from("cus_1"));
        assert_eq!(record.order_key, order_key, "{id}: its order key");
        assert_eq!(detail.deliveries.len(), 1, "{id}: one delivery");
        let delivery = &detail.deliveries[0];
        assert_eq!((delivery.record.state, delivery.attempts.len()), (state, attempts), "{id}");
        assert_eq!(detail.record.state, hookgate_core::EventState::from(state));
        assert_eq!(delivery.record.route, format!("stripe->{}", delivery.record.destination));
        assert!(detail.routing[0].matched && detail.routing[0].reason.contains("before routes"), "{id}");
        assert_eq!(delivery.record.id.as_str()[4..], id.as_str()[4..], "the delivery's id is the event's");
    }
    assert_eq!(store.paused().await.unwrap(), ["crm"], "the pause holds");
    assert!(store.claim("crm", T0 + 100, 10, 30_000).await.unwrap().is_empty());

    // The queue: nothing until the head's lease ends, then 3, 4, 5 one at a time.
    assert!(store.claim("app", T0 + 29_999, 10, 30_000).await.unwrap().is_empty(), "the lease still holds");
    let mut now = T0 + 30_000;
    for (n, expect) in ids[2..5].iter().enumerate() {
        let claims = store.claim("app", now, 10, 30_000).await.unwrap();
        assert_eq!(claims.iter().map(|c| &c.id).collect::<Vec<_>>(), [expect], "step {n}");
        assert_eq!(&claims[0].body[..], format!("{{\"seq\":{}}}", n + 3).as_bytes());
        let attempt = ok_attempt(claims[0].attempt, now);
        assert!(store.finish(&claims[0].delivery, attempt, Verdict::Delivered, now).await.unwrap());
        now += 1;
    }
    // The paused destination, resumed, gets what waited for it.
    store.set_paused("crm", false).await.unwrap();
    assert_eq!(store.claim("crm", now, 10, 30_000).await.unwrap()[0].id, ids[5]);

    // A copy of an old event is still a duplicate.
    let before = store.get(&ids[0]).await.unwrap().unwrap().record.duplicates;
    let mut copy = event("stripe", now);
    copy.dedupe_key = Some("d1".into());
    assert_eq!(store.ingest(copy).await.unwrap(), Ingested::Duplicate { original: ids[0].clone() });
    assert_eq!(store.get(&ids[0]).await.unwrap().unwrap().record.duplicates, before + 1);

    // A new event is stored beside them, with its delivery, listed as the newest and claimed.
    let new = accept(store, event("stripe", now)).await;
    assert_eq!(store.get(&new).await.unwrap().unwrap().deliveries.len(), 1);
    let page = store.list(&ListFilter { limit: 1, ..Default::default() }).await.unwrap();
    assert_eq!(page.events[0].id, new, "listed after the migrated events");
    let claims = store.claim(DEST, now, 10, 30_000).await.unwrap();
    assert_eq!(claims.iter().map(|c| &c.id).collect::<Vec<_>>(), [&new]);
}

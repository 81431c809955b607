use hookgate_core::EventState;

use crate::DeliveryFilter;

use super::*;

pub async fn list_pages_newest_first_with_filters(store: Arc<dyn Store>) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(accept(&*store, keyed(if n % 2 == 0 { "even" } else { "odd" }, T0 + n)).await);
    }
    accept(&*store, event("other", T0)).await;
    let first = store.list(&ListFilter { source: Some("src".into()), limit: 2, ..Default::default() }).await.unwrap();
    assert_eq!(first.events.iter().map(|e| e.id.clone()).collect::<Vec<_>>(), vec![ids[4].clone(), ids[3].clone()]);
    let cursor = first.next_cursor.expect("more pages");
    let second = store
        .list(&ListFilter { source: Some("src".into()), limit: 10, cursor: Some(cursor), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(second.events.len(), 3);
    assert!(second.next_cursor.is_none());
    let odd = store.list(&ListFilter { order_key: Some(key("odd")), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(odd.events.len(), 2);
    let window = ListFilter { since_ms: Some(T0 + 1), until_ms: Some(T0 + 3), limit: 10, ..Default::default() };
    let listed: Vec<_> = store.list(&window).await.unwrap().events.into_iter().map(|e| e.id).collect();
    assert_eq!(listed, vec![ids[2].clone(), ids[1].clone()], "received in [since, until)");
    let deduped = accept(&*store, NewEvent { dedupe_key: Some(key("evt_42")), ..event("src", T0) }).await;
    let by_key = ListFilter { dedupe_key: Some(key("evt_42")), limit: 10, ..Default::default() };
    let listed: Vec<_> = store.list(&by_key).await.unwrap().events.into_iter().map(|e| e.id).collect();
    assert_eq!(listed, vec![deduped]);
    store.claim(DEST, T0 + 10, 100, LEASE).await.unwrap();
    let delivering =
        store.list(&ListFilter { state: Some(EventState::Delivering), limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(delivering.events.len(), 4, "one per order key, and the two keyless ones");
}

/// A time window is listed in time order, newest first, whatever order the
/// events were stored in (a request received earlier can be stored later),
/// and its pages, events' and deliveries', go on from their cursors without
/// a gap or a repeat; a cursor from a page in row order goes on from its
/// event's time.
pub async fn a_window_is_listed_in_time_order_across_pages(store: Arc<dyn Store>) {
    // Stored in this order, received at these times: rows and times disagree.
    let times = [T0 + 5, T0 + 1, T0 + 4, T0 + 4, T0 + 9, T0 + 2];
    let mut ids = Vec::new();
    for at in times {
        ids.push(accept(&*store, to("billing", to(DEST, event("src", at)))).await);
    }
    // Newest first by time; the two at T0 + 4 by row, the later stored first.
    let expected = [&ids[4], &ids[0], &ids[3], &ids[2], &ids[5], &ids[1]];
    // Pages of 3: the two events received at T0 + 4 fall on either side of the first page's end.
    let window = ListFilter { since_ms: Some(T0), until_ms: Some(T0 + 100), limit: 3, ..Default::default() };
    let mut listed = Vec::new();
    let mut filter = window.clone();
    loop {
        let page = store.list(&filter).await.unwrap();
        listed.extend(page.events.into_iter().map(|e| e.id));
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(listed.iter().collect::<Vec<_>>(), expected, "events by time, across pages");

    // Deliveries: by their event's time, then event, then delivery; pages of 3 split events.
    let mut filter = DeliveryFilter { since_ms: Some(T0 + 1), limit: 3, ..Default::default() };
    let mut deliveries = Vec::new();
    loop {
        let page = store.list_deliveries(&filter).await.unwrap();
        deliveries.extend(page.deliveries.into_iter().map(|d| (d.event, d.destination)));
        match page.next_cursor {
            Some(cursor) => filter.cursor = Some(cursor),
            None => break,
        }
    }
    let events: Vec<&EventId> = deliveries.iter().step_by(2).map(|(event, _)| event).collect();
    assert_eq!(events, expected, "deliveries by their events' time, across pages");
    assert_eq!(deliveries.len(), 12, "each event's two deliveries, once each: {deliveries:?}");
    for pair in deliveries.chunks(2) {
        assert_eq!((&pair[0].0, pair[0].1.as_str(), pair[1].1.as_str()), (&pair[1].0, "billing", DEST));
    }

    // `until` alone; and a cursor from a page in row order (the event stored
    // fourth, received at T0 + 4) goes on after that event's time and row:
    // the other event of that time, stored before it, first.
    let until = ListFilter { until_ms: Some(T0 + 5), limit: 10, ..Default::default() };
    let listed: Vec<EventId> = store.list(&until).await.unwrap().events.into_iter().map(|e| e.id).collect();
    assert_eq!(listed.iter().collect::<Vec<_>>(), expected[2..], "received before T0 + 5");
    let by_row = store.list(&ListFilter { limit: 3, ..Default::default() }).await.unwrap();
    assert_eq!(by_row.events.iter().map(|e| &e.id).collect::<Vec<_>>(), [&ids[5], &ids[4], &ids[3]]);
    let from_row = ListFilter { cursor: by_row.next_cursor, limit: 10, ..window.clone() };
    let listed: Vec<EventId> = store.list(&from_row).await.unwrap().events.into_iter().map(|e| e.id).collect();
    assert_eq!(listed.iter().collect::<Vec<_>>(), [&ids[2], &ids[5], &ids[1]], "after (T0 + 4, its row)");
    // With another filter beside the window (a source), the page is in row order.
    let with_source = ListFilter { source: Some("src".into()), limit: 10, ..window };
    let listed: Vec<EventId> = store.list(&with_source).await.unwrap().events.into_iter().map(|e| e.id).collect();
    assert_eq!(listed, ids.iter().rev().cloned().collect::<Vec<_>>(), "row order");
}

pub async fn stats_count_by_source_and_state(store: Arc<dyn Store>) {
    accept(&*store, keyed("K", T0)).await;
    accept(&*store, keyed("K", T0)).await;
    accept(&*store, event("other", T0)).await;
    store.claim(DEST, T0, 100, LEASE).await.unwrap();
    let mut stats = store.stats().await.unwrap();
    stats.sort_by(|a, b| (&a.source, a.state.as_str()).cmp(&(&b.source, b.state.as_str())));
    let got: Vec<_> = stats.iter().map(|s| (s.source.as_str(), s.destination.as_str(), s.state, s.count)).collect();
    use EventState::*;
    assert_eq!(got, vec![("other", DEST, Delivering, 1), ("src", DEST, Delivering, 1), ("src", DEST, Pending, 1)]);
    // An event no route matched: counted as unrouted, under no destination.
    let unrouted = NewEvent {
        routing: vec![RouteVerdict {
            route: "src->app".into(),
            destination: DEST.into(),
            matched: false,
            reason: "json.x: missing".into(),
        }],
        ..event("src", T0)
    };
    store.ingest(unrouted).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert!(
        stats.contains(&crate::StateCount {
            source: "src".into(),
            destination: String::new(),
            state: Unrouted,
            count: 1,
            oldest_received_ms: Some(T0),
        }),
        "{stats:?}"
    );
}

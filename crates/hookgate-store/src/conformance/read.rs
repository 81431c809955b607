use hookgate_core::EventState;

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

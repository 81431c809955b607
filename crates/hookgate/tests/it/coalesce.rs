//! Thin "object X changed" bursts (Acuity): coalesced while pending, never a
//! lost update, never two deliveries of one object at once.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn thin_bursts_coalesce_without_losing_the_last_update() {
    const OBJECTS: usize = 8;
    const BURSTS: usize = 3;
    const PER_BURST: usize = 4;
    let receiver = receiver(Arc::new(|_, body| {
        // The app's work takes 150-300 ms, as fetching the object from the sender would.
        let jitter = body.iter().map(|b| *b as u64).sum::<u64>() % 150;
        (200, Duration::from_millis(150 + jitter))
    }))
    .await;
    let app = Arc::new(spawn_app(&receiver).await);
    let mut senders = Vec::new();
    for object in 0..OBJECTS {
        let app = app.clone();
        senders.push(tokio::spawn(async move {
            let mut last = String::new();
            for burst in 0..BURSTS {
                for n in 0..PER_BURST {
                    let body = format!("action=appointment.changed&id={object}&calendarID=1&seq={burst}-{n}");
                    let (status, answer) = app.post("acuity", &acuity_headers(body.as_bytes()), body).await;
                    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
                    last = answer["id"].as_str().unwrap().to_owned();
                }
                // The next burst arrives while this one is being delivered.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (object.to_string(), last)
        }));
    }
    let mut last_event = HashMap::new();
    for sender in senders {
        let (object, id) = sender.await.unwrap();
        last_event.insert(object, id);
    }
    let stats = wait_drained(&app.http, &app.url(""), Duration::from_secs(30)).await;

    let delivered = receiver.delivered();
    let sent = OBJECTS * BURSTS * PER_BURST;
    assert!(delivered.len() < sent, "coalescing saved work: {} deliveries for {sent} sends", delivered.len());
    assert!(receiver.overlaps().is_empty(), "no object was processed twice at once: {:?}", receiver.overlaps());
    // No lost update: the last event of each object is never superseded, so it
    // is itself delivered (after it was stored), and after every earlier one.
    for (object, last) in &last_event {
        let of_object: Vec<_> = delivered.iter().filter(|r| r.order_key() == object).collect();
        let latest = of_object.last().map(|r| r.webhook_id());
        assert_eq!(latest, Some(last.as_str()), "object {object}: its last event was not delivered last");
    }
    let superseded = stats.count("acuity", State::Superseded) as usize;
    let stored_delivered = stats.count("acuity", State::Delivered) as usize;
    assert_eq!(superseded + stored_delivered, sent, "every send is delivered or superseded: {stats:?}");
    assert_eq!(stored_delivered, delivered.len());
}

//! Routes: one source to three destinations — one filtered on a JSON number
//! (and fast), one slow, one always failing — each delivered exactly what it
//! matches, in order per object, the fast one never waiting for the other
//! two; on SQLite, and on three PostgreSQL instances. An event says why a
//! route did not take it, and can be routed again.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::*;

/// Events, sent one after another: (dedupe id, object, type, amount).
fn events() -> Vec<(String, String, &'static str, u64)> {
    (0..30)
        .map(|n| {
            let kind = if n % 3 == 0 { "invoice.paid" } else { "order.updated" };
            (format!("e{n}"), format!("obj-{}", n % 4), kind, if n % 2 == 0 { 150 } else { 50 })
        })
        .collect()
}

struct Apps {
    fast: Receiver,
    slow: Receiver,
    failing: Receiver,
}

async fn apps() -> Apps {
    Apps {
        fast: receiver(always_ok()).await,
        // Each request a second: with one at a time per instance, it lags far behind.
        slow: receiver(Arc::new(|_, _| (200, Duration::from_secs(1)))).await,
        failing: receiver(Arc::new(|_, _| (500, Duration::ZERO))).await,
    }
}

fn config(dir: &Path, apps: &Apps, storage: &str) -> std::path::PathBuf {
    let text = format!(
        r#"
[storage]
url = "{storage}"

[admin]
token = "{ADMIN_TOKEN}"

[[destinations]]
name = "fast"
url = "{fast}"
concurrency = 4
signing_secret = "{SIGNING_SECRET}"

[[destinations]]
name = "slow"
url = "{slow}"
timeout = "10s"
concurrency = 1
signing_secret = "{SIGNING_SECRET}"

[[destinations]]
name = "failing"
url = "{failing}"
signing_secret = "{SIGNING_SECRET}"
retry = {{ max_attempts = 2, initial = "100ms", max = "200ms" }}

[[sources]]
name = "shop"
verify = {{ scheme = "none" }}
dedupe_key = "{{json.id}}"
order_key = "{{json.object}}"
event_type = "{{json.type}}"

[[routes]]
source = "shop"
destination = "fast"
[routes.filter]
"json.amount" = {{ gte = 100 }}

[[routes]]
source = "shop"
destination = "slow"

[[routes]]
name = "orders-to-failing"
source = "shop"
destination = "failing"
events = ["order.*"]
"#,
        fast = apps.fast.url(),
        slow = apps.slow.url(),
        failing = apps.failing.url(),
    );
    let path = dir.join("hookgate.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Send every event (through the gateways in turn) and check every promise.
async fn fan_out(gateways: &[Gateway], apps: &Apps) {
    // Idle connections dropped before the gateway's header_timeout (10 s)
    // closes them: the slow destination keeps this test waiting that long
    // between requests, and a request on a connection the server is closing
    // at that instant fails (hyper's IncompleteMessage; seen once in CI).
    let http = reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(5)).build().unwrap();
    let mut ids: HashMap<String, String> = HashMap::new(); // dedupe id -> hookgate id
    for (n, (id, object, kind, amount)) in events().iter().enumerate() {
        let base = &gateways[n % gateways.len()].base;
        let body = json!({ "id": id, "object": object, "type": kind, "amount": amount }).to_string();
        let (status, answer) = post_with(&http, &format!("{base}/in/shop"), &[], body.into_bytes()).await;
        assert_eq!(status, 200, "{answer}");
        ids.insert(id.clone(), answer["id"].as_str().unwrap().to_owned());
    }
    let expected = |takes: &dyn Fn(&str, u64) -> bool| -> HashMap<String, Vec<String>> {
        let mut by_object: HashMap<String, Vec<String>> = HashMap::new();
        for (id, object, kind, amount) in events() {
            if takes(kind, amount) {
                by_object.entry(object).or_default().push(ids[&id].clone());
            }
        }
        by_object
    };
    let to_fast = expected(&|_, amount| amount >= 100);
    let to_slow = expected(&|_, _| true);
    let to_failing = expected(&|kind, _| kind.starts_with("order."));
    let count = |m: &HashMap<String, Vec<String>>| m.values().map(Vec::len).sum::<usize>();

    // The fast destination has everything it matches while the slow one has
    // done little: it never waits for the slow queue or the failing one.
    apps.fast.wait_for(Duration::from_secs(20), "the fast destination's events", |r| r.len() >= count(&to_fast)).await;
    let slow_so_far = apps.slow.received().len();
    assert!(
        slow_so_far < count(&to_slow) / 2,
        "the fast destination finished while the slow one had done {slow_so_far} of {}: did it wait?",
        count(&to_slow)
    );
    apps.fast.assert_first_deliveries_in_order(&to_fast);
    assert_eq!(apps.fast.received().len(), count(&to_fast), "exactly what it matches, each once");

    // The slow one gets all of them, in order per object, one at a time per object.
    apps.slow.wait_for(Duration::from_secs(60), "the slow destination's events", |r| r.len() >= count(&to_slow)).await;
    apps.slow.assert_first_deliveries_in_order(&to_slow);
    assert!(apps.slow.overlaps().is_empty(), "two of one object at once: {:?}", apps.slow.overlaps());

    // The failing one was tried with what it matches only, twice each, in order; then dead.
    apps.failing
        .wait_for(Duration::from_secs(30), "the failing destination's attempts", |r| r.len() >= 2 * count(&to_failing))
        .await;
    apps.failing.assert_first_deliveries_in_order(&to_failing);
    let invoice = &ids["e0"];
    assert!(!apps.failing.received().iter().any(|r| r.webhook_id() == invoice), "an invoice went to the order route");

    // Every request names its delivery and route; webhook-id stays the event's.
    for r in apps.fast.received() {
        assert!(r.header("hookgate-delivery-id").starts_with("dlv_"), "{:?}", r.headers);
        assert_eq!(r.header("hookgate-route"), "shop->fast");
        assert!(r.signature_ok, "signed for the fast destination");
    }

    // An event the fast route did not take says why; its deliveries say where it went.
    let base = &gateways[0].base;
    let small = admin_get(&http, base, &format!("/api/events/{}", ids["e1"])).await;
    let verdicts = small["routing"].as_array().unwrap();
    assert_eq!(verdicts.len(), 3, "{small:#}");
    assert_eq!(verdicts[0]["route"], "shop->fast");
    assert_eq!(verdicts[0]["matched"], false);
    assert_eq!(verdicts[0]["reason"], "json.amount: 50 is not >= 100");
    assert_eq!(verdicts[2]["route"], "orders-to-failing");
    assert_eq!(verdicts[2]["matched"], true);
    let destinations: Vec<&str> =
        small["deliveries"].as_array().unwrap().iter().map(|d| d["destination"].as_str().unwrap()).collect();
    assert_eq!(destinations, ["slow", "failing"]);
    assert_eq!(small["event_type"], "order.updated");
    let invoice_view = admin_get(&http, base, &format!("/api/events/{invoice}")).await;
    assert_eq!(
        invoice_view["routing"][2]["reason"], r#"event_type: "invoice.paid" matches none of ["order.*"]"#,
        "{invoice_view:#}"
    );

    // Once the failing one's are dead: the event's state summarises its deliveries,
    // the dead letters are the failing destination's, and a listing by destination finds them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let dead = admin_get(&http, base, "/api/deliveries?destination=failing&state=dead&limit=500").await;
        if dead["deliveries"].as_array().unwrap().len() == count(&to_failing) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the failing destination's deliveries never died: {dead:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let small = admin_get(&http, base, &format!("/api/events/{}", ids["e1"])).await;
    assert_eq!(small["state"], "dead", "delivered to slow, dead at failing: dead, in a word");
    let dead_events = admin_get(&http, base, "/api/events?state=dead&destination=failing&limit=500").await;
    assert_eq!(dead_events["events"].as_array().unwrap().len(), count(&to_failing));
    let stats: Stats = serde_json::from_value(admin_get(&http, base, "/api/stats").await).unwrap();
    assert_eq!(stats.destinations["failing"][&State::Dead] as usize, count(&to_failing));
    assert_eq!(stats.destinations["fast"][&State::Delivered] as usize, count(&to_fast));

    // Replaying the failing destination's dead letters touches no other destination.
    let (fast_before, slow_before) = (apps.fast.received().len(), apps.slow.received().len());
    let replayed: Value = http
        .post(format!("{base}/api/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "destination": "failing" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    if replayed["replayed"] != count(&to_failing) {
        let all = admin_get(&http, base, "/api/deliveries?destination=failing&limit=500").await;
        panic!("replayed {replayed}: {all:#}");
    }
    apps.failing.wait_for(Duration::from_secs(30), "the replays", |r| r.len() >= 3 * count(&to_failing)).await;
    assert_eq!((apps.fast.received().len(), apps.slow.received().len()), (fast_before, slow_before));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_source_fans_out_to_three_destinations_on_sqlite() {
    let apps = apps().await;
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("sqlite://{}", dir.path().join("hookgate.db").display());
    let config = config(dir.path(), &apps, &storage);
    let gateway = Gateway::start(&config).healthy(&reqwest::Client::new()).await;
    fan_out(std::slice::from_ref(&gateway), &apps).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_source_fans_out_to_three_destinations_on_three_postgres_instances() {
    let Some(url) = postgres_schema_url().await else { return };
    let apps = apps().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &apps, &url);
    let http = reqwest::Client::new();
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(Gateway::start(&config).healthy(&http).await);
    }
    fan_out(&gateways, &apps).await;
}

/// An event no route took is stored with each route's reason, counted, and
/// delivered once a route that matches it is added and it is rerouted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unrouted_event_is_kept_counted_and_rerouted() {
    let app = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("sqlite://{}", dir.path().join("hookgate.db").display());
    let base_config = |filter: &str| {
        format!(
            r#"
[storage]
url = "{storage}"
[admin]
token = "{ADMIN_TOKEN}"
[[destinations]]
name = "app"
url = "{}"
signing_secret = "{SIGNING_SECRET}"
[[sources]]
name = "shop"
verify = {{ scheme = "none" }}
[[routes]]
source = "shop"
destination = "app"
[routes.filter]
{filter}
"#,
            app.url()
        )
    };
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, base_config(r#""json.currency" = ["usd", "eur"]"#)).unwrap();
    let http = reqwest::Client::new();
    let gateway = Gateway::start(&path).healthy(&http).await;
    let (status, answer) =
        post_with(&http, &format!("{}/in/shop", gateway.base), &[], br#"{"currency":"gbp"}"#.to_vec()).await;
    assert_eq!(status, 200, "stored all the same: {answer}");
    let id = answer["id"].as_str().unwrap().to_owned();
    let event = admin_get(&http, &gateway.base, &format!("/api/events/{id}")).await;
    assert_eq!(event["state"], "unrouted");
    assert_eq!(event["routing"][0]["reason"], r#"json.currency: "gbp" is not one of ["usd","eur"]"#);
    let unrouted = admin_get(&http, &gateway.base, "/api/events?state=unrouted").await;
    assert_eq!(unrouted["events"][0]["id"], id.as_str());
    let metrics = http.get(format!("{}/metrics", gateway.base)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains(r#"hookgate_events_unrouted_total{source="shop"} 1"#), "{metrics}");

    // The route is widened; the event is rerouted, and delivered.
    gateway.terminate();
    std::fs::write(&path, base_config(r#""json.currency" = ["usd", "eur", "gbp"]"#)).unwrap();
    let gateway = Gateway::start(&path).healthy(&http).await;
    let reroute = || async {
        let answer = http.post(format!("{}/api/events/{id}/reroute", gateway.base)).bearer_auth(ADMIN_TOKEN).send();
        answer.await.unwrap().json::<Value>().await.unwrap()
    };
    let rerouted = reroute().await;
    assert_eq!(rerouted["added"], 1, "{rerouted:#}");
    app.wait_for(Duration::from_secs(10), "the rerouted event", |r| r.iter().any(|r| r.webhook_id() == id)).await;
    // Rerouting again adds nothing: it has its delivery.
    assert_eq!(reroute().await["added"], 0);
}

//! The console in a real browser: headless Chromium driven over WebDriver
//! (`chromedriver`, from Debian's `chromium-driver`; `.ci/run` installs
//! both). Sign in, see an event just posted, open it, replay it, pause and
//! resume the destination, see a dead event and replay it. Without a browser
//! the test says "skipped" and passes.
//!
//! `HOOKGATE_SCREENSHOTS=DIR` also saves the main views as PNGs in DIR (how
//! `docs/console-*.png` were made).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

use crate::support::*;

/// `chromedriver` on a port of its own, killed and reaped when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<String> {
    let out = Command::new("sh").arg("-c").arg(format!("command -v {name}")).output().ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!path.is_empty()).then_some(path)
}

async fn browser() -> Option<(Driver, Client)> {
    let (Some(chromium), Some(chromedriver)) = (which("chromium"), which("chromedriver")) else {
        hookgate_store::conformance::skip("no chromium and chromedriver here (apt install chromium chromium-driver)");
        return None;
    };
    let port = free_port();
    let child =
        Command::new(chromedriver).arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null()).spawn();
    let driver = Driver { child: child.ok()?, port };
    let capabilities: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,900"],
        },
    }))
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{}", driver.port))
            .await
        {
            Ok(client) => return Some((driver, client)),
            Err(error) if Instant::now() > deadline => panic!("chromedriver did not start a browser: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Wait until the element `css` exists and `attribute` is `value`.
async fn until_attr(c: &Client, css: &str, attribute: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(element) = c.find(Locator::Css(css)).await
            && element.attr(attribute).await.ok().flatten().as_deref() == Some(value)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{css} never had {attribute}={value:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until the element `css` shows text containing `wanted`.
async fn until_text(c: &Client, css: &str, wanted: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Ok(element) = c.find(Locator::Css(css)).await
            && let Ok(text) = element.text().await
            && text.contains(wanted)
        {
            return text;
        }
        assert!(Instant::now() < deadline, "{css} never said {wanted:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(c: &Client, css: &str) {
    c.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css(css)).await.unwrap().click().await.unwrap();
}

async fn screenshot(c: &Client, name: &str) {
    if let Ok(dir) = std::env::var("HOOKGATE_SCREENSHOTS") {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let png = c.screenshot().await.unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("console-{name}.png")), png).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_console_in_a_real_browser() {
    let Some((_driver, c)) = browser().await else { return };
    // The app refuses "doomed" events (400) until it is told to heal.
    let healed = Arc::new(AtomicBool::new(false));
    let heal = healed.clone();
    let receiver = receiver_answering(Arc::new(move |_, body| {
        let doomed = String::from_utf8_lossy(body).contains("doomed") && !heal.load(Ordering::SeqCst);
        let (status, answer) = if doomed { (400, "refused: doomed") } else { (200, "thanks, recorded") };
        Answer { status, work: Duration::ZERO, retry_after: None, body: answer.as_bytes().to_vec() }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    // Bodies up to 1 MiB here: the console must render a sender's largest in bounded time.
    // A second destination takes only plain's events with a total of 100 or more.
    let text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")
        .replace("max_body = \"64KiB\"", "max_body = \"1MiB\"")
        + &format!(
            r#"
[[destinations]]
name = "audit"
url = "{}"

[[routes]]
source = "plain"
destination = "audit"
[routes.filter]
"json.total" = {{ gte = 100 }}

# A source whose one route is filtered: what it does not take is stored unrouted.
[[sources]]
name = "picky"
[[routes]]
source = "picky"
destination = "audit"
[routes.filter]
"json.total" = {{ gte = 100 }}
"#,
            receiver.url()
        );
    let app = spawn_with(dir, &text).await;
    let mut doomed = Vec::new();
    for n in 1..=2 {
        let body = format!(r#"{{"id":"doomed-{n}","object":"order-7","note":"doomed"}}"#);
        doomed.push(app.post("plain", &[], body).await.1["id"].as_str().unwrap().to_owned());
    }

    // Signing in: a wrong token is refused, the right one opens the overview.
    c.goto(&app.url("/console")).await.unwrap();
    let token = c.wait().for_element(Locator::Css("[data-testid=token]")).await.unwrap();
    token.send_keys("not-the-token").await.unwrap();
    click(&c, "[data-testid=sign-in]").await;
    until_text(&c, "[data-testid=error]", "refused").await;
    let token = c.find(Locator::Css("[data-testid=token]")).await.unwrap();
    token.clear().await.unwrap();
    token.send_keys(ADMIN_TOKEN).await.unwrap();
    click(&c, "[data-testid=sign-in]").await;
    c.wait().for_element(Locator::Css("[data-testid=nav-events]")).await.unwrap();
    assert!(!c.current_url().await.unwrap().as_str().contains(ADMIN_TOKEN), "the token is never in the URL");

    // An event just posted is in the list; open it; it was delivered; replay it.
    let (_, shown) = app.post("plain", &[], r#"{"id":"shown-1","object":"order-8","total":42}"#).await;
    let shown = shown["id"].as_str().unwrap().to_owned();
    let shown_id = shown.clone();
    // A copy the sender sent again: answered with the original's id, stored nowhere, told on the event's page.
    let (_, copy) = app.post("plain", &[], r#"{"id":"shown-1","object":"order-8","total":42}"#).await;
    assert_eq!((copy["id"].as_str(), copy["status"].as_str()), (Some(shown.as_str()), Some("duplicate")));
    receiver.wait_for(Duration::from_secs(5), "the delivery", |r| r.iter().any(|r| r.webhook_id() == shown)).await;
    screenshot(&c, "overview").await;
    click(&c, "[data-testid=nav-events]").await;
    // The list shows the sender's own id (the dedupe key) beside hookgate's.
    until_text(&c, &format!("[data-testid=event-row][data-id='{shown}'] [data-testid=dedupe-key]"), "shown-1").await;
    click(&c, &format!("[data-testid=event-row][data-id='{shown}']")).await;
    until_attr(&c, "[data-testid=event-detail]", "data-state", "delivered").await;
    until_text(&c, "[data-testid=body]", "42").await;
    // Each route's verdict, the failing condition named; each delivery with its attempts.
    until_attr(&c, "[data-testid=route-verdict][data-route='plain->app']", "data-matched", "true").await;
    until_text(
        &c,
        "[data-testid=route-verdict][data-route='plain->audit'] [data-testid=route-reason]",
        "json.total: 42 is not >= 100",
    )
    .await;
    until_attr(&c, "[data-testid=delivery][data-destination=app]", "data-state", "delivered").await;
    c.wait()
        .for_element(Locator::Css("[data-testid=delivery][data-destination=app] [data-testid=attempt]"))
        .await
        .unwrap();
    // The whole story: how it was verified, its trace, each delivery's outcome, what the app answered.
    until_text(&c, "[data-testid=verified-by]", "none").await;
    until_text(&c, "[data-testid=duplicates]", "1 later copy dropped, the last").await;
    let trace = until_text(&c, "[data-testid=trace-id]", "").await;
    assert_eq!(trace.len(), 32, "a W3C trace id: {trace:?}");
    until_text(
        &c,
        "[data-testid=delivery][data-destination=app] [data-testid=delivery-outcome]",
        "delivered on attempt 1",
    )
    .await;
    let answer =
        c.execute("return document.querySelector('[data-testid=attempt-response]').textContent", vec![]).await.unwrap();
    assert_eq!(answer, serde_json::json!("thanks, recorded"), "the app's answer, kept");
    let deliveries = c.execute("return document.querySelectorAll('[data-testid=delivery]').length", vec![]).await;
    assert_eq!(deliveries.unwrap(), serde_json::json!(1), "no delivery to the route that did not match");
    screenshot(&c, "event").await;
    click(&c, "[data-testid=event-detail] [data-testid=replay]").await;
    until_text(&c, "[data-testid=replay-result]", "Replayed").await;
    receiver
        .wait_for(Duration::from_secs(5), "the replay", |r| r.iter().filter(|r| r.webhook_id() == shown).count() == 2)
        .await;

    // An event no route took: listed as unrouted, with "no route"; its page says why;
    // rerouting it by today's routes adds nothing, and says so.
    let (_, picky) = app.post("picky", &[], r#"{"id":"picky-1","total":5}"#.to_owned()).await;
    let picky = picky["id"].as_str().unwrap().to_owned();
    c.goto(&app.url("/console#/events?state=unrouted")).await.unwrap();
    until_text(&c, &format!("[data-testid=event-row][data-id='{picky}']"), "no route").await;
    let rows = c.execute("return document.querySelectorAll('[data-testid=event-row]').length", vec![]).await;
    assert_eq!(rows.unwrap(), serde_json::json!(1), "only the unrouted event is listed");
    click(&c, &format!("[data-testid=event-row][data-id='{picky}']")).await;
    until_attr(&c, "[data-testid=event-detail]", "data-state", "unrouted").await;
    until_text(
        &c,
        "[data-testid=route-verdict][data-route='picky->audit'] [data-testid=route-reason]",
        "json.total: 5 is not >= 100",
    )
    .await;
    click(&c, "[data-testid=event-detail] [data-testid=reroute]").await;
    until_text(&c, "[data-testid=replay-result]", "Rerouted: 0 deliveries added.").await;

    // A body any `none` source could store, 400 KB nested a thousand deep and wide: it
    // renders within the wait (indenting it all took 54 s), as sent and cut, with the
    // rest a click away.
    let deep = format!(
        r#"{{"id":"deep-1","object":"order-9","deep":{}{}{}}}"#,
        "[".repeat(1_000),
        vec!["1"; 200_000].join(","),
        "]".repeat(1_000),
    );
    let (status, answer) = app.post("plain", &[], deep.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let deep_id = answer["id"].as_str().unwrap().to_owned();
    c.goto(&app.url(&format!("/console#/event/{deep_id}"))).await.unwrap();
    let shown = until_text(&c, "[data-testid=body]", "deep-1").await;
    assert!(shown.len() <= 100_000, "cut until asked: {} characters shown", shown.len());
    until_text(&c, "[data-testid=body-cut]", "Showing the first 100,000 of").await;
    click(&c, "[data-testid=body-show-all]").await;
    let length = c.execute("return document.querySelector('[data-testid=body]').textContent.length", vec![]).await;
    assert_eq!(length.unwrap(), serde_json::json!(deep.len()), "show all: the body as sent");
    // A small body is still indented.
    c.goto(&app.url(&format!("/console#/event/{shown_id}"))).await.unwrap();
    let indented = until_text(&c, "[data-testid=body]", "42").await;
    assert!(indented.contains("\n  \"total\": 42"), "{indented}");

    // Pause and resume the destination.
    click(&c, "[data-testid=nav-destinations]").await;
    until_attr(&c, "[data-testid=destination-row][data-name=app]", "data-paused", "false").await;
    until_attr(&c, "[data-testid=destination-row][data-name=app]", "data-circuit", "closed").await;
    click(&c, "[data-testid=destination-row][data-name=app] [data-testid=pause]").await;
    until_attr(&c, "[data-testid=destination-row][data-name=app]", "data-paused", "true").await;
    let listed: hookgate::api::Destinations = serde_json::from_value(app.admin("/api/destinations").await).unwrap();
    assert!(listed.destinations[0].paused, "paused through the console");
    screenshot(&c, "destinations").await;
    // While it is paused, an event waits: the destination's own page lists it in its queue.
    let (_, waiting) = app.post("plain", &[], r#"{"id":"waiting-1","object":"order-10"}"#.to_owned()).await;
    let waiting = waiting["id"].as_str().unwrap().to_owned();
    c.goto(&app.url("/console#/destination/app")).await.unwrap();
    until_attr(&c, "[data-testid=tab-queue]", "aria-current", "page").await;
    c.wait()
        .at_most(Duration::from_secs(15))
        .for_element(Locator::Css(&format!(
            "[data-testid=destination-detail] [data-testid=queue-row][data-id='{waiting}']"
        )))
        .await
        .unwrap();
    c.goto(&app.url("/console#/destination/audit")).await.unwrap();
    until_text(&c, "[data-testid=destination-detail]", "Nothing waiting.").await;
    click(&c, "[data-testid=nav-destinations]").await;
    click(&c, "[data-testid=destination-row][data-name=app] [data-testid=resume]").await;
    until_attr(&c, "[data-testid=destination-row][data-name=app]", "data-paused", "false").await;
    receiver
        .wait_for(Duration::from_secs(5), "the event that waited", |r| r.iter().any(|r| r.webhook_id() == waiting))
        .await;

    // The doomed events are dead by now (4 attempts each, 100-400 ms apart): replay
    // all shown, healed; each key's events come back in their original order.
    let deadline = Instant::now() + Duration::from_secs(20);
    while app.admin("/api/events?state=dead").await["events"].as_array().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the doomed events never died");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The destination's own page lists its dead letters (and its queue).
    c.goto(&app.url("/console#/destination/app?tab=dead")).await.unwrap();
    for id in &doomed {
        c.wait()
            .for_element(Locator::Css(&format!(
                "[data-testid=destination-detail] [data-testid=dead-row][data-id='{id}']"
            )))
            .await
            .unwrap();
    }
    // Each dead letter says why it died.
    until_text(&c, &format!("[data-testid=dead-row][data-id='{}'] [data-testid=dead-why]", doomed[0]), "HTTP 400")
        .await;
    screenshot(&c, "destination").await;
    c.goto(&app.url("/console#/destination/audit?tab=dead")).await.unwrap();
    until_text(&c, "[data-testid=destination-detail]", "No dead letters here.").await;
    click(&c, "[data-testid=nav-dead]").await;
    for id in &doomed {
        c.wait().for_element(Locator::Css(&format!("[data-testid=dead-row][data-id='{id}']"))).await.unwrap();
    }
    screenshot(&c, "dead").await;
    healed.store(true, Ordering::SeqCst);
    click(&c, "[data-testid=replay-all]").await;
    until_text(&c, "[data-testid=replay-result]", "Replayed 2 deliveries").await;
    let delivered_doomed = |r: &[Received]| {
        let mut ok: Vec<&Received> =
            r.iter().filter(|r| r.delivered() && doomed.iter().any(|d| d == r.webhook_id())).collect();
        ok.sort_by_key(|r| r.started);
        ok.iter().map(|r| r.webhook_id().to_owned()).collect::<Vec<_>>()
    };
    receiver.wait_for(Duration::from_secs(5), "the dead events, delivered", |r| delivered_doomed(r).len() == 2).await;
    assert_eq!(delivered_doomed(&receiver.received()), doomed, "replayed in their original order");

    // The page never failed: no script error was thrown.
    let errors = c.execute("return window.__hookgateErrors || []", vec![]).await.unwrap();
    assert_eq!(errors, serde_json::json!([]), "script errors in the console");

    // A phone-sized window: the same page, laid out for it.
    c.set_window_size(390, 844).await.unwrap();
    click(&c, "[data-testid=nav-events]").await;
    c.wait().for_element(Locator::Css("[data-testid=event-row]")).await.unwrap();
    screenshot(&c, "phone").await;
    c.close().await.unwrap();
    app.stop().await;
}

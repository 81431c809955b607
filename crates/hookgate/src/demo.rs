//! `hookgate demo`: the seed scenario, zero set-up. A real hookgate on
//! embedded storage in a temp directory, a built-in app that takes 400–1200 ms
//! per event and watches for overlapping work per object, and a simulated
//! sender firing duplicates microseconds apart, thin `changed` bursts and
//! ordered updates at the same time. It prints what happened and exits 0
//! only if every guarantee held.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hookgate_core::State;
use serde_json::{Value, json};

use crate::Server;
use crate::api::Stats;
use crate::clock::now_ms;
use crate::config::{Config, Env};
use crate::receiver::{Answer, Receiver};

const STRIPE_SECRET: &str = "whsec_demo_stripe";
const ACUITY_KEY: &str = "demo-acuity-api-key";
const SIGNING_SECRET: &str = "whsec_ZGVtby1zaWduaW5nLXNlY3JldC0xMjM0NTY3OA==";
const ADMIN_TOKEN: &str = "demo-admin-token";

const STRIPE_EVENTS: usize = 6;
const COPIES: usize = 3;
const APPOINTMENTS: usize = 6;
const BURSTS: usize = 3;
const PER_BURST: usize = 4;
const ORDERED: usize = 4;
/// The demo gives up if the queue has not drained by then.
const DRAIN_LIMIT: Duration = Duration::from_secs(90);

pub async fn run() -> anyhow::Result<bool> {
    let dir = tempfile::tempdir().context("creating a temp directory")?;
    // The seed app fetches the object from the sender: 400-1200 ms per event.
    let app = Receiver::start(
        Arc::new(|_, _| Answer::from((200, Duration::from_millis(rand::random_range(400..=1200))))),
        None,
    )
    .await?;
    let config = Config::from_toml(&config_text(&app.url(), &dir.path().join("hookgate.db")), &Env::default())
        .map_err(|p| anyhow::anyhow!("demo config: {p}"))?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let server = Server::start(listener, config).await?;
    let base = format!("http://{}", server.addr());

    println!("hookgate demo: embedded storage in {}", dir.path().display());
    println!("  gateway {base}   app {} (takes 400-1200 ms per event)", app.url());
    println!(
        "  sending at once: {STRIPE_EVENTS} Stripe events x {COPIES} copies microseconds apart; \
         {APPOINTMENTS} Acuity appointments x {BURSTS} bursts of {PER_BURST} thin \"changed\" events; \
         {ORDERED} ordered updates to one object (Standard Webhooks)"
    );
    let started = Instant::now();
    let (duplicates, bursts, ordered) = tokio::join!(send_duplicates(&base), send_bursts(&base), send_ordered(&base),);
    let (duplicate_answers, bursts, ordered) = (duplicates?, bursts?, ordered?);
    println!("  all {} requests acknowledged in {:?}; waiting for deliveries...", total_sent(), started.elapsed());

    let stats = wait_until_drained(&base).await?;
    let report = Report::new(&stats, &app, &duplicate_answers, &bursts, &ordered);
    server.stop().await?;
    report.print();
    Ok(report.all_held())
}

fn total_sent() -> usize {
    STRIPE_EVENTS * COPIES + APPOINTMENTS * BURSTS * PER_BURST + ORDERED
}

fn config_text(app_url: &str, db: &std::path::Path) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
[storage]
url = "sqlite://{db}"
[admin]
token = "{ADMIN_TOKEN}"

[[destinations]]
name = "app"
url = "{app_url}"
timeout = "10s"
concurrency = 32
signing_secret = "{SIGNING_SECRET}"
retry = {{ max_attempts = 5, initial = "200ms", max = "2s" }}

[[sources]]
name = "stripe"
destination = "app"
preset = "stripe"
verify = {{ secret = "{STRIPE_SECRET}" }}
order_key = "{{json.data.object.id}}"

[[sources]]
name = "acuity"
destination = "app"
preset = "acuity"
verify = {{ secret = "{ACUITY_KEY}" }}

[[sources]]
name = "orders"
destination = "app"
preset = "standard-webhooks"
verify = {{ secret = "{SIGNING_SECRET}" }}
order_key = "{{json.order}}"
"#,
        db = db.display()
    )
}

// ---- the simulated sender ----

async fn send(client: &reqwest::Client, url: &str, headers: &[(&str, String)], body: String) -> anyhow::Result<Value> {
    let mut request = client.post(url).body(body);
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await?;
    if !response.status().is_success() {
        bail!("{url} answered {}", response.status());
    }
    Ok(response.json().await?)
}

fn unix_now() -> i64 {
    now_ms() / 1_000
}

/// Each Stripe event sent as several copies at once, each copy on its own
/// connection, released together.
async fn send_duplicates(base: &str) -> anyhow::Result<Vec<Value>> {
    let url = format!("{base}/in/stripe");
    let mut copies = Vec::new();
    for n in 0..STRIPE_EVENTS {
        let body = json!({"id": format!("evt_demo_{n}"), "type": "customer.updated",
                          "data": {"object": {"id": format!("cus_{n}")}}})
        .to_string();
        let signature = hookgate_verify::stripe_sign(STRIPE_SECRET, unix_now(), body.as_bytes());
        for _ in 0..COPIES {
            let client = reqwest::Client::new();
            client.get(format!("{base}/healthz")).send().await?; // connect first
            copies.push((client, body.clone(), signature.clone()));
        }
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(copies.len()));
    let tasks: Vec<_> = copies
        .into_iter()
        .map(|(client, body, signature)| {
            let (url, barrier) = (url.clone(), barrier.clone());
            tokio::spawn(async move {
                let headers = [("content-type", "application/json".to_owned()), ("stripe-signature", signature)];
                barrier.wait().await;
                send(&client, &url, &headers, body).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await??);
    }
    Ok(answers)
}

/// Thin Acuity bursts: the id of each appointment's last event.
async fn send_bursts(base: &str) -> anyhow::Result<HashMap<String, String>> {
    let url = format!("{base}/in/acuity");
    let tasks: Vec<_> = (0..APPOINTMENTS)
        .map(|appointment| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                let mut last = String::new();
                for burst in 0..BURSTS {
                    for _ in 0..PER_BURST {
                        let body =
                            format!("action=appointment.changed&id={appointment}&calendarID=1&appointmentTypeID=2");
                        let headers = [
                            ("content-type", "application/x-www-form-urlencoded".to_owned()),
                            ("x-acuity-signature", hookgate_verify::acuity_sign(ACUITY_KEY, body.as_bytes())),
                        ];
                        let answer = send(&client, &url, &headers, body).await?;
                        last = answer["id"].as_str().unwrap_or_default().to_owned();
                    }
                    if burst + 1 < BURSTS {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                }
                anyhow::Ok((appointment.to_string(), last))
            })
        })
        .collect();
    let mut last_events = HashMap::new();
    for task in tasks {
        let (appointment, id) = task.await??;
        last_events.insert(appointment, id);
    }
    Ok(last_events)
}

/// Updates to one order, each sent after the previous ack: their ids in order.
async fn send_ordered(base: &str) -> anyhow::Result<Vec<String>> {
    let url = format!("{base}/in/orders");
    let client = reqwest::Client::new();
    let key = hookgate_verify::standard_webhooks::secret_key(SIGNING_SECRET)?;
    let mut ids = Vec::new();
    for n in 0..ORDERED {
        let body = json!({"type": "order.updated", "order": "ord_1", "version": n}).to_string();
        let (msg_id, ts) = (format!("msg_demo_{n}"), unix_now());
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("webhook-id", msg_id.clone()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", hookgate_verify::standard_webhooks::sign(&key, &msg_id, ts, body.as_bytes())),
        ];
        let answer = send(&client, &url, &headers, body).await?;
        ids.push(answer["id"].as_str().unwrap_or_default().to_owned());
    }
    Ok(ids)
}

async fn wait_until_drained(base: &str) -> anyhow::Result<Stats> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + DRAIN_LIMIT;
    loop {
        let stats: Stats =
            client.get(format!("{base}/api/stats")).bearer_auth(ADMIN_TOKEN).send().await?.json().await?;
        let busy = stats.active();
        if busy == 0 {
            return Ok(stats);
        }
        if Instant::now() > deadline {
            bail!("{busy} events still queued after {DRAIN_LIMIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- the summary ----

struct Row {
    name: &'static str,
    sent: usize,
    stored: u64,
    duplicates: usize,
    superseded: u64,
    delivered: u64,
}

struct Check {
    held: bool,
    text: String,
}

struct Report {
    rows: Vec<Row>,
    checks: Vec<Check>,
    max_concurrent: usize,
}

impl Report {
    fn new(
        stats: &Stats,
        app: &Receiver,
        duplicate_answers: &[Value],
        last_events: &HashMap<String, String>,
        ordered: &[String],
    ) -> Report {
        let count = |source: &str, state: State| stats.count(source, state);
        let stored = |source: &str| State::ALL.iter().map(|s| count(source, *s)).sum();
        let duplicates = duplicate_answers.iter().filter(|a| a["status"] == "duplicate").count();
        let rows = vec![
            Row {
                name: "stripe: duplicate copies",
                sent: STRIPE_EVENTS * COPIES,
                stored: stored("stripe"),
                duplicates,
                superseded: 0,
                delivered: count("stripe", State::Delivered),
            },
            Row {
                name: "acuity: thin bursts",
                sent: APPOINTMENTS * BURSTS * PER_BURST,
                stored: stored("acuity"),
                duplicates: 0,
                superseded: count("acuity", State::Superseded),
                delivered: count("acuity", State::Delivered),
            },
            Row {
                name: "orders: ordered updates",
                sent: ORDERED,
                stored: stored("orders"),
                duplicates: 0,
                superseded: 0,
                delivered: count("orders", State::Delivered),
            },
        ];

        let mut checks = Vec::new();
        let ids_per_event: HashMap<&str, HashSet<&str>> = duplicate_answers.iter().fold(HashMap::new(), |mut m, a| {
            m.entry(a["id"].as_str().unwrap_or("")).or_default().insert(a["status"].as_str().unwrap_or(""));
            m
        });
        checks.push(Check {
            held: rows[0].stored == STRIPE_EVENTS as u64
                && duplicates == STRIPE_EVENTS * (COPIES - 1)
                && ids_per_event.len() == STRIPE_EVENTS,
            text: format!(
                "dedupe: {} copies stored as {} events; every copy answered with its original's id",
                rows[0].sent, rows[0].stored
            ),
        });
        let max_concurrent = app.max_in_flight_per_key();
        checks.push(Check {
            held: max_concurrent == 1,
            text: format!("order: max concurrent deliveries per object = {max_concurrent}"),
        });
        checks.push(Check {
            held: app.first_deliveries("ord_1") == ordered,
            text: format!("order: {ORDERED} updates to one object delivered in the order sent"),
        });
        // The last event of an appointment is never superseded: it must itself
        // have been delivered, and after every earlier delivery of that appointment.
        let received = app.received();
        let lost: Vec<&String> = last_events
            .iter()
            .filter(|(appointment, last)| {
                let latest = received.iter().filter(|r| r.order_key() == *appointment).max_by_key(|r| r.started);
                latest.map(|r| r.webhook_id()) != Some(last.as_str())
            })
            .map(|(appointment, _)| appointment)
            .collect();
        checks.push(Check {
            held: lost.is_empty(),
            text: format!(
                "coalesce: every appointment's last update was delivered, after all others (lost updates: {})",
                lost.len()
            ),
        });
        let mut processed: HashMap<&str, usize> = HashMap::new();
        for r in &received {
            *processed.entry(r.webhook_id()).or_default() += 1;
        }
        let twice = processed.values().filter(|n| **n > 1).count();
        let total_delivered: u64 = rows.iter().map(|r| r.delivered).sum();
        let app_processed = received.len();
        checks.push(Check {
            held: twice == 0 && app_processed as u64 == total_delivered,
            text: format!("delivery: the app processed {app_processed} events, none twice"),
        });
        Report { rows, checks, max_concurrent }
    }

    fn print(&self) {
        println!();
        println!(
            "  {:<26} {:>5} {:>7} {:>10} {:>11} {:>10}",
            "", "sent", "stored", "duplicate", "superseded", "delivered"
        );
        for r in &self.rows {
            println!(
                "  {:<26} {:>5} {:>7} {:>10} {:>11} {:>10}",
                r.name, r.sent, r.stored, r.duplicates, r.superseded, r.delivered
            );
        }
        let sum = |f: fn(&Row) -> u64| self.rows.iter().map(f).sum::<u64>();
        println!(
            "  {:<26} {:>5} {:>7} {:>10} {:>11} {:>10}",
            "total",
            sum(|r| r.sent as u64),
            sum(|r| r.stored),
            sum(|r| r.duplicates as u64),
            sum(|r| r.superseded),
            sum(|r| r.delivered)
        );
        println!("  max concurrent per object: {}", self.max_concurrent);
        println!();
        for check in &self.checks {
            println!("  {}  {}", if check.held { "PASS" } else { "FAIL" }, check.text);
        }
        println!();
        if self.all_held() {
            println!("every guarantee held: no object was ever processed twice at once.");
        } else {
            println!("a guarantee did NOT hold: see FAIL above.");
        }
    }

    fn all_held(&self) -> bool {
        self.checks.iter().all(|c| c.held)
    }
}

//! The binary from outside: `check`, exit codes, and the admin client commands.

use std::process::Command;
use std::time::Duration;

use crate::support::*;

fn hookgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hookgate"))
}

#[test]
fn check_names_every_bad_key_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.toml");
    let text = config_text("http://127.0.0.1:9/hooks", &dir.path().join("x.db"), "")
        .replace("{json.object}", "{jsn.id}")
        .replace(r#"timeout = "5s""#, r#"timeout = "soon""#);
    std::fs::write(&path, text).unwrap();
    let out = hookgate().arg("check").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert_eq!(lines[0], r#"destinations[0].timeout: "soon" is not a duration like 500ms, 30s, 5m, 1h or 7d"#);
    assert_eq!(lines[1], r#"sources[2].order_key: unknown field "jsn.id""#);
}

#[test]
fn check_accepts_a_good_config_and_env_overrides() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, config_text("http://127.0.0.1:9/hooks", &dir.path().join("x.db"), "")).unwrap();
    let out = hookgate().arg("check").env("HOOKGATE_CONFIG", &path).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    // How long the test config's schedule (4 attempts, 100 ms doubling to 400 ms) lasts.
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(
            "destination app: retries for 350 ms at the least (4 attempts, 100 ms doubling to 400 ms; at most 700 ms)"
        ),
        "{said}"
    );
    let bad = hookgate()
        .arg("check")
        .env("HOOKGATE_CONFIG", &path)
        .env("HOOKGATE_SERVER__LISTEN", "nowhere")
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("server.listen"));
    let missing = hookgate().args(["check", "--config", "/nonexistent/hookgate.toml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert_eq!(hookgate().arg("frobnicate").output().unwrap().status.code(), Some(2), "bad usage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_and_replay_commands_use_the_admin_api() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let (_, answer) = app.post("plain", &[], r#"{"id":"cli-1","object":"o"}"#).await;
    let id = answer["id"].as_str().unwrap().to_owned();
    receiver.wait_for(Duration::from_secs(5), "delivery", |r| r.len() == 1).await;
    let url = app.url("");
    let run = |args: Vec<String>| {
        let url = url.clone();
        tokio::task::spawn_blocking(move || {
            hookgate().args(args).env("HOOKGATE_URL", url).env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN).output().unwrap()
        })
    };
    let list = run(vec!["events".into(), "list".into()]).await.unwrap();
    assert!(list.status.success());
    let listing = String::from_utf8(list.stdout).unwrap();
    assert!(listing.contains(&id) && listing.contains("delivered"), "{listing}");
    let show = run(vec!["events".into(), "show".into(), id.clone(), "--json".into()]).await.unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 1);
    // For a person: local times with their age, each attempt, the body as sent.
    let show = run(vec!["events".into(), "show".into(), id.clone()]).await.unwrap();
    let shown = String::from_utf8(show.stdout).unwrap();
    assert!(shown.starts_with(&format!("{id}\n")), "{shown}");
    assert!(shown.contains("  state         delivered\n"), "{shown}");
    assert!(shown.contains("  sender's id   cli-1 (dedupe key)"), "{shown}");
    let received = shown.lines().find(|l| l.trim_start().starts_with("received")).unwrap();
    // "2026-12-06 02:11:49 +00:00 (0s ago)", not milliseconds since the epoch.
    let shape: String = received.trim_start_matches(|c: char| !c.is_ascii_digit()).chars().take(26).collect();
    let digits_at = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 21, 22, 24, 25];
    assert!(
        shape.len() == 26 && digits_at.iter().all(|&i| shape.as_bytes()[i].is_ascii_digit()),
        "a local time: {received}"
    );
    assert!(received.ends_with(" ago)"), "and its age: {received}");
    assert!(shown.contains("routes (1)\n  plain->app -> app  matched\n"), "{shown}");
    assert!(
        shown.contains(" to app (plain->app): delivered\n  delivered on attempt 1 (HTTP 200)\n  #1")
            && shown.contains("  200  "),
        "each delivery's outcome, then its attempts: {shown}"
    );
    assert!(shown.contains("  verified by   none\n"), "{shown}");
    assert!(shown.contains("body (27 bytes)\n  {\"id\":\"cli-1\",\"object\":\"o\"}"), "{shown}");
    // Durations for --since, as the tables print ages.
    let recent = run(vec!["events".into(), "list".into(), "--since".into(), "1h".into()]).await.unwrap();
    assert!(String::from_utf8(recent.stdout).unwrap().contains(&id), "received within the hour");
    let future =
        run(vec!["events".into(), "list".into(), "--until".into(), "1h".into(), "--json".into()]).await.unwrap();
    let page: hookgate::api::EventPage = serde_json::from_slice(&future.stdout).unwrap();
    assert!(page.events.is_empty(), "nothing received before an hour ago");
    let bad = run(vec!["events".into(), "list".into(), "--since".into(), "1 fortnight".into()]).await.unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", String::from_utf8_lossy(&bad.stderr));
    let replay = run(vec!["replay".into(), id.clone()]).await.unwrap();
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    receiver.wait_for(Duration::from_secs(5), "the replay", |r| r.len() == 2).await;
    let again = &receiver.received()[1];
    assert_eq!(again.webhook_id(), id, "a replay keeps the webhook-id");
    // Deliveries: listed by destination; one replayed by its own id (to its destination only).
    let listed = run(vec!["deliveries".into(), "list".into(), "--destination".into(), "app".into(), "--json".into()])
        .await
        .unwrap();
    let page: hookgate::api::DeliveryPage = serde_json::from_slice(&listed.stdout).unwrap();
    let delivery = page.deliveries.iter().find(|d| d.event == id).expect("the event's delivery to app").id.clone();
    receiver.wait_for(Duration::from_secs(5), "the replay's outcome", |r| r.len() == 2).await;
    let table = run(vec!["deliveries".into(), "list".into()]).await.unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(table.starts_with("ID  ") && table.contains(&delivery), "{table}");
    let mut replayed = run(vec!["replay".into(), delivery.clone()]).await.unwrap();
    for _ in 0..50 {
        // The event's replay may still be in flight: a delivery is replayed once finished.
        if replayed.status.success() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        replayed = run(vec!["replay".into(), delivery.clone()]).await.unwrap();
    }
    let said = String::from_utf8(replayed.stdout).unwrap();
    assert!(said.starts_with(&format!("{delivery} (of {id}): pending")), "{said}");
    receiver.wait_for(Duration::from_secs(5), "the delivery's replay", |r| r.len() == 3).await;
    assert_eq!(receiver.received()[2].header("hookgate-delivery-id"), delivery);
    // Rerouting an event that has its delivery adds none.
    let rerouted = run(vec!["reroute".into(), id.clone()]).await.unwrap();
    let said = String::from_utf8(rerouted.stdout).unwrap();
    assert!(said.starts_with(&format!("{id}: 0 deliveries added\n  plain->app -> app  matched")), "{said}");
    // A window listed a page at a time: the next page is the same command with the cursor it prints.
    let (_, second) = app.post("plain", &[], r#"{"id":"cli-2","object":"p"}"#).await;
    let window = |cursor: Option<String>| {
        let mut args: Vec<String> = ["events", "list", "--since", "1h", "--limit", "1"].map(String::from).into();
        args.extend(cursor.into_iter().flat_map(|c| ["--cursor".to_owned(), c]));
        run(args)
    };
    let first = String::from_utf8(window(None).await.unwrap().stdout).unwrap();
    assert!(first.contains(second["id"].as_str().unwrap()), "newest first: {first}");
    let more = first.lines().find_map(|l| l.strip_prefix("more: the same command, filters and all, with --cursor "));
    let next = String::from_utf8(window(more.map(str::to_owned)).await.unwrap().stdout).unwrap();
    assert!(next.contains(&id) && !next.contains("more:"), "the second page, the last: {next}");
    let unauthorized = tokio::task::spawn_blocking({
        let url = app.url("");
        move || hookgate().args(["events", "list", "--token", "wrong", "--url", &url]).output().unwrap()
    })
    .await
    .unwrap();
    assert_eq!(unauthorized.status.code(), Some(1));
    let said = String::from_utf8_lossy(&unauthorized.stderr);
    assert!(said.contains("401") && said.contains("the token from --token was refused"), "{said}");
    let dir = tempfile::tempdir().unwrap();
    let missing = tokio::task::spawn_blocking({
        let (url, dir) = (app.url(""), dir.path().to_owned());
        move || {
            hookgate()
                .args(["events", "list", "--url", &url])
                .current_dir(dir)
                .env_remove("HOOKGATE_ADMIN_TOKEN")
                .env_remove("HOOKGATE_CONFIG")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains("no admin token was given: set HOOKGATE_ADMIN_TOKEN"), "names the variable: {said}");
    app.stop().await;
}

/// The CLI finds the server and its token in the server's own config (as
/// `serve` does: --config, $HOOKGATE_CONFIG, ./hookgate.toml), and reads a
/// systemd environment file as a token file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_the_servers_config_and_env_files() {
    let receiver = receiver(always_ok()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = dir.path().join("hookgate.toml");
    let text = config_text(&receiver.url(), &dir.path().join("hookgate.db"), "")
        .replace("listen = \"127.0.0.1:0\"", &format!("listen = \"0.0.0.0:{port}\""))
        .replace(&format!("token = \"{ADMIN_TOKEN}\""), "token = \"env:ADMIN_FOR_TEST\"");
    std::fs::write(&config, &text).unwrap();
    let http = reqwest::Client::new();
    let gateway = std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("ADMIN_FOR_TEST", ADMIN_TOKEN)
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let gateway = KillOnDrop(gateway);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while http.get(format!("http://127.0.0.1:{port}/healthz")).send().await.is_err() {
        assert!(std::time::Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let run = |args: &'static [&'static str], cwd: std::path::PathBuf, envs: Vec<(&'static str, String)>| {
        tokio::task::spawn_blocking(move || {
            let mut command = hookgate();
            command.args(args).current_dir(cwd).env_remove("HOOKGATE_URL").env_remove("HOOKGATE_ADMIN_TOKEN");
            command.env_remove("HOOKGATE_CONFIG").envs(envs);
            command.output().unwrap()
        })
    };
    // ./hookgate.toml, as serve would read it: 0.0.0.0 is reached on loopback, env: resolved.
    let here = run(&["destinations", "list"], dir.path().to_owned(), vec![("ADMIN_FOR_TEST", ADMIN_TOKEN.into())]);
    let here = here.await.unwrap();
    assert!(here.status.success(), "{}", String::from_utf8_lossy(&here.stderr));
    assert!(String::from_utf8_lossy(&here.stdout).contains("running"));
    // --config from elsewhere; a token the config cannot resolve says why.
    let elsewhere = tempfile::tempdir().unwrap();
    let named = run(
        &["destinations", "list"],
        elsewhere.path().to_owned(),
        vec![("HOOKGATE_CONFIG", config.display().to_string())],
    );
    let named = named.await.unwrap();
    let said = String::from_utf8_lossy(&named.stderr);
    assert!(said.contains("admin.token: environment variable ADMIN_FOR_TEST is not set"), "{said}");
    // The systemd unit's environment file as a token file.
    let env_file = dir.path().join("env");
    std::fs::write(&env_file, format!("# hookgate\nHOOKGATE_LOG=info\nHOOKGATE_ADMIN_TOKEN=\"{ADMIN_TOKEN}\"\n"))
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let with_file = tokio::task::spawn_blocking(move || {
        hookgate()
            .args(["destinations", "list", "--url", &url, "--token-file"])
            .arg(&env_file)
            .env_remove("HOOKGATE_ADMIN_TOKEN")
            .env_remove("HOOKGATE_CONFIG")
            .output()
            .unwrap()
    });
    let with_file = with_file.await.unwrap();
    assert!(with_file.status.success(), "{}", String::from_utf8_lossy(&with_file.stderr));
    drop(gateway);
}

/// A child process killed and reaped when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The README's first command: the demo runs the seed scenario and exits 0
/// only if every guarantee held.
#[test]
fn the_demo_shows_every_guarantee_holding() {
    let out = hookgate().arg("demo").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("PASS").count(), 5, "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert!(stdout.contains("max concurrent per object: 1"), "{stdout}");
}

#[test]
fn an_empty_admin_token_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.toml");
    let text = config_text("http://127.0.0.1:9/hooks", &dir.path().join("x.db"), "")
        .replace(&format!("token = \"{ADMIN_TOKEN}\""), "token = \"\"");
    std::fs::write(&path, text).unwrap();
    let out = hookgate().arg("check").arg("--config").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(String::from_utf8_lossy(&out.stderr).trim(), "admin.token: must not be empty");
}

/// A storage URL's password never reaches the terminal, whatever fails.
#[test]
fn a_storage_password_is_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, config_text("http://127.0.0.1:9/hooks", &dir.path().join("x.db"), "")).unwrap();
    let port = free_port(); // nothing listens there
    let out = hookgate()
        .args(["serve", "--config"])
        .arg(&path)
        .env("HOOKGATE_STORAGE__URL", format!("postgres://hookgate:hunter2-s3cret@127.0.0.1:{port}/db"))
        .env("HOOKGATE_SERVER__LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "cannot connect: a runtime failure");
    let printed = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(printed.contains("PostgreSQL"), "{printed}");
    assert!(!printed.contains("hunter2-s3cret"), "the password was printed: {printed}");
}

/// `hookgate bench` end to end, tiny: every phase runs and is reported.
#[test]
fn bench_runs_every_phase() {
    let out = hookgate()
        .args(["bench", "--duration", "1s", "--connections", "2", "--objects", "4", "--duplicates", "0.2", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["bare HTTP (ceiling)", "ingest alone (paused)", "ingest while delivering", "at half the sustained rate"]
    );
    for phase in phases {
        assert!(phase["events_per_s"].as_f64().unwrap() > 0.0, "{phase}");
        assert_eq!(phase["failed"], 0, "{phase}");
    }
    assert!(phases[2]["delivered_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["drain_per_s"].as_f64().unwrap() > 0.0 && report["peak_rss_mib"].as_f64().unwrap() > 0.0);
}

/// `hookgate bench --routes 3`: each event fans out to three destinations;
/// deliveries are three per event, the sustained rate is in events.
#[test]
fn bench_fans_out_with_routes() {
    let out = hookgate()
        .args(["bench", "--duration", "1s", "--connections", "2", "--objects", "4", "--routes", "3", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["routes"], 3);
    let while_delivering = &report["phases"][2];
    let (events, deliveries) =
        (while_delivering["events_per_s"].as_f64().unwrap(), while_delivering["delivered_per_s"].as_f64().unwrap());
    assert!(deliveries > events, "three deliveries an event: {while_delivering}");
    let sustained = report["sustained_per_s"].as_f64().unwrap();
    assert!(sustained > 0.0 && sustained <= deliveries / 3.0 + 1e-6, "sustained counts events: {report}");
    let refused = hookgate().args(["bench", "--routes", "0"]).output().unwrap();
    assert_ne!(refused.status.code(), Some(0));
}

/// A bench stopped by SIGTERM (not by Ctrl-C, which reaches its whole process
/// group) stops the hookgate processes it started too: none is left serving.
#[test]
fn a_stopped_bench_leaves_no_process_behind() {
    bench_stopped_while_serving(&[]);
}

/// On PostgreSQL, a stopped bench drops the schema it made, and keeps one it
/// was given.
#[test]
fn a_stopped_bench_drops_its_own_schema_and_keeps_a_given_one() {
    let Ok(url) = std::env::var("HOOKGATE_TEST_POSTGRES_URL") else {
        hookgate_store::conformance::skip("HOOKGATE_TEST_POSTGRES_URL is not set");
        return;
    };
    let psql = |sql: &str| {
        let out = Command::new("psql").args([url.as_str(), "-Atc", sql]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    };
    let exists = |schema: &str| psql(&format!("SELECT count(*) FROM pg_namespace WHERE nspname = '{schema}'")) == "1";

    let pid = bench_stopped_while_serving(&["--storage", &url]);
    assert!(!exists(&format!("hookgate_bench_{pid}")), "the bench's own schema was left behind");

    let given = format!("hg_given_{}", std::process::id());
    psql(&format!("DROP SCHEMA IF EXISTS {given} CASCADE; CREATE SCHEMA {given}"));
    let separator = if url.contains('?') { '&' } else { '?' };
    bench_stopped_while_serving(&["--storage", &format!("{url}{separator}options=-c%20search_path%3D{given}")]);
    assert!(exists(&given), "a schema given to the bench was dropped");
    psql(&format!("DROP SCHEMA {given} CASCADE"));
}

/// Start a bench, SIGTERM it once it has a `hookgate serve` running, and check
/// that it says so and that every process it started is gone. Its pid.
fn bench_stopped_while_serving(extra: &[&str]) -> String {
    // Its output to a file, not a pipe: a process left behind would hold a pipe
    // open, and reading it to the end would wait for ever instead of failing.
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut bench = hookgate()
        .args(["bench", "--duration", "2s", "--connections", "2"])
        .args(extra)
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let bench_pid = bench.id().to_string();
    let started = std::time::Instant::now();
    let started_by_bench: Vec<String> = loop {
        let listed = Command::new("pgrep").args(["-P", &bench_pid]).output().unwrap();
        let pids: Vec<String> = String::from_utf8_lossy(&listed.stdout).split_whitespace().map(str::to_owned).collect();
        let serving = pids.iter().any(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|line| line.windows(6).any(|w| w == b"serve\0"))
        });
        if serving {
            break pids;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "the bench started no hookgate serve");
        std::thread::sleep(Duration::from_millis(50));
    };
    Command::new("kill").args(["-TERM", &bench_pid]).status().unwrap();
    let status = bench.wait().unwrap();
    let printed = std::fs::read_to_string(log.path()).unwrap();
    assert_eq!(status.code(), Some(1), "{printed}");
    assert!(printed.contains("interrupted"), "{printed}");
    for pid in started_by_bench {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "process {pid} outlived the bench");
    }
    bench_pid
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destinations_commands_list_pause_and_resume() {
    let receiver = receiver(always_ok()).await;
    let app = spawn_app(&receiver).await;
    let url = app.url("");
    let run = |args: &[&str]| {
        let (url, args): (String, Vec<String>) = (url.clone(), args.iter().map(|a| a.to_string()).collect());
        tokio::task::spawn_blocking(move || {
            hookgate().args(args).env("HOOKGATE_URL", url).env("HOOKGATE_ADMIN_TOKEN", ADMIN_TOKEN).output().unwrap()
        })
    };
    let paused = run(&["destinations", "pause", "app"]).await.unwrap();
    assert!(paused.status.success(), "{}", String::from_utf8_lossy(&paused.stderr));
    assert_eq!(String::from_utf8_lossy(&paused.stdout).trim(), "app: paused");
    app.post("plain", &[], r#"{"id":"held","object":"o"}"#).await;
    let table = String::from_utf8(run(&["destinations", "list"]).await.unwrap().stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME") && lines[0].contains("CIRCUIT"), "{table}");
    assert!(lines[1].starts_with("app") && lines[1].contains("paused") && lines[1].contains("closed"), "{table}");
    let json = run(&["destinations", "list", "--json"]).await.unwrap();
    let listed: hookgate::api::Destinations = serde_json::from_slice(&json.stdout).unwrap();
    assert!(listed.destinations[0].paused);
    assert_eq!(receiver.received().len(), 0, "nothing delivered while paused");
    assert!(run(&["destinations", "resume", "app"]).await.unwrap().status.success());
    receiver.wait_for(Duration::from_secs(5), "the held event", |r| r.len() == 1).await;
    let missing = run(&["destinations", "pause", "nope"]).await.unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("404"), "{}", String::from_utf8_lossy(&missing.stderr));
    let dead = run(&["events", "list", "--state", "dead", "--json"]).await.unwrap();
    let page: hookgate::api::EventPage = serde_json::from_slice(&dead.stdout).unwrap();
    assert!(page.events.is_empty());
    let replay = run(&["replay", "--state", "dead", "--since", "2026-01-01T00:00:00Z", "--json"]).await.unwrap();
    let answer: hookgate::api::BulkReplayed = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(answer.replayed, 0);
    app.stop().await;
}

#[test]
fn init_prints_a_config_that_check_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let out = hookgate().arg("init").output().unwrap();
    assert!(out.status.success());
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(told.contains("destination app: retries for 26 h 41 m at the least"), "beside the file: {told}");
    let path = dir.path().join("hookgate.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = hookgate()
        .args(["check", "--config"])
        .arg(&path)
        .env("HOOKGATE_ADMIN_TOKEN", "0123456789abcdef0123456789abcdef")
        .env("STRIPE_WEBHOOK_SECRET", "whsec_0123456789abcdef0123456789abcdef")
        .output()
        .unwrap();
    assert_eq!(check.status.code(), Some(0), "{}", String::from_utf8_lossy(&check.stderr));
    let unset = hookgate().args(["check", "--config"]).arg(&path).env_remove("HOOKGATE_ADMIN_TOKEN").output().unwrap();
    assert_eq!(unset.status.code(), Some(2), "the token it names must be set");
}

/// `check` connects to PostgreSQL: it says where the tables would be and
/// what migrations would run, and a missing database is named by the
/// server's own message (it said "db error"), before `serve` would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_connects_and_says_what_migrations_would_run() {
    let Some(url) = postgres_schema_url().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookgate.toml");
    let receiver = receiver(always_ok()).await;
    std::fs::write(&path, config_text(&receiver.url(), &dir.path().join("x.db"), "")).unwrap();
    let check = |url: String| {
        let path = path.clone();
        let out = hookgate().args(["check", "--config"]).arg(&path).env("HOOKGATE_STORAGE__URL", url).output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, said, _) = check(url.clone());
    assert_eq!(code, Some(0), "{said}");
    assert!(
        said.contains("database postgres, schema hg_it_") && said.contains("no hookgate tables yet: migrations 1-"),
        "{said}"
    );

    // serve migrates, and says so; then check finds the schema up to date.
    let config = dir.path().join("pg.toml");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("sqlite://{}", dir.path().join("x.db").display()), &url);
    std::fs::write(&config, text).unwrap();
    let log = dir.path().join("serve.log");
    let gateway = Gateway::start_logging(&config, &log);
    let gateway = gateway.healthy(&reqwest::Client::new()).await;
    gateway.terminate();
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("schema migrated") && logged.contains("version=1"), "{logged}");
    let (code, said, _) = check(url.clone());
    assert_eq!(code, Some(0));
    assert!(said.contains("up to date"), "{said}");

    // The same server, another database: the path's last segment replaced (the options after `?` kept).
    let (base, options) = url.split_once('?').unwrap_or((&url, ""));
    let (server, _) = base.rsplit_once('/').unwrap();
    let missing = format!("{server}/hookgate_no_such_database?{options}");
    let (code, said, problem) = check(missing);
    assert_eq!(code, Some(2), "{said}");
    assert!(problem.starts_with("storage.url: cannot connect to PostgreSQL: FATAL (3D000): database \"hookgate_no_such_database\" does not exist"), "{problem}");
    let closed = format!("postgres://hookgate:hunter2-s3cret@127.0.0.1:{}/db", free_port());
    let (code, said, problem) = check(closed);
    assert_eq!(code, Some(2));
    assert!(problem.contains("cannot connect") && !format!("{said}{problem}").contains("hunter2-s3cret"), "{problem}");
    let offline = hookgate().args(["check", "--offline", "--config"]).arg(&path).output().unwrap();
    assert_eq!(offline.status.code(), Some(0), "the file alone");
}

//! `hookgate`: parse the command line, run one command, exit 0 (ok),
//! 2 (bad usage or config) or 1 (runtime failure), with one clear line on stderr.

use std::process::ExitCode;

use clap::Parser;
use hookgate::cli::{Cli, Command};
use hookgate::config::{Config, Env};
use hookgate::{Server, cli, demo};

/// mimalloc rather than the system allocator: a gateway allocates and frees
/// a request's worth of small objects thousands of times a second, and
/// glibc's malloc kept handing that memory back to the kernel and faulting it
/// in again (`hookgate bench`: see docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE_OR_CONFIG: u8 = 2;
const RUNTIME: u8 = 1;

fn main() -> ExitCode {
    let cli = Cli::parse(); // exits 2 on bad usage, as clap does
    cli::init_local_time(); // before the runtime's threads: reading the offset later is refused
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return fail(RUNTIME, &format!("cannot start the async runtime: {e}")),
    };
    runtime.block_on(run(cli.command))
}

async fn run(command: Command) -> ExitCode {
    match command {
        Command::Check(arg) => {
            let path = &arg.config.config;
            let config = match Config::load(path, &Env::from_process()) {
                Ok(config) => config,
                Err(problems) => {
                    eprintln!("{problems}");
                    return ExitCode::from(USAGE_OR_CONFIG);
                }
            };
            println!(
                "{}: the file is valid ({} sources, {} destinations)",
                path.display(),
                config.sources.len(),
                config.destinations.len()
            );
            for destination in &config.destinations {
                println!("  destination {}: {}", destination.name, destination.retry_schedule());
            }
            if arg.offline {
                println!("ok (storage not checked: --offline)");
                return ExitCode::SUCCESS;
            }
            match hookgate::app::inspect_storage(&config.storage).await {
                Ok(said) => {
                    println!("  storage: {said}");
                    println!("ok");
                    ExitCode::SUCCESS
                }
                Err(problem) => {
                    eprintln!("storage.url: {problem} (hookgate check --offline checks the file alone)");
                    ExitCode::from(USAGE_OR_CONFIG)
                }
            }
        }
        Command::Serve(arg) => {
            let config = match Config::load(&arg.config, &Env::from_process()) {
                Ok(config) => config,
                Err(problems) => {
                    eprintln!("{problems}");
                    return ExitCode::from(USAGE_OR_CONFIG);
                }
            };
            hookgate::logs::init(&config.log.level, config.log.json);
            let listener = match tokio::net::TcpListener::bind(config.listen).await {
                Ok(listener) => listener,
                Err(e) => {
                    return fail(RUNTIME, &format!("cannot listen on {}: {e}", config.listen));
                }
            };
            let server = match Server::start(listener, config).await {
                Ok(server) => server,
                Err(e) => return fail(RUNTIME, &e.to_string()),
            };
            match server.run_until(stop_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(RUNTIME, &e.to_string()),
            }
        }
        Command::Demo => {
            hookgate::logs::init("warn", false);
            match demo::run().await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::from(RUNTIME),
                Err(e) => fail(RUNTIME, &format!("demo failed: {e:#}")),
            }
        }
        Command::Bench(args) => {
            hookgate::logs::init("warn", false);
            let json = args.json;
            match hookgate::bench::run(args, stop_signal()).await {
                Ok(report) if json => {
                    println!("{}", serde_json::to_string_pretty(&report).expect("a report serializes"));
                    ExitCode::SUCCESS
                }
                Ok(report) => {
                    println!("\n{}", report.table());
                    ExitCode::SUCCESS
                }
                Err(e) => fail(RUNTIME, &format!("bench failed: {e:#}")),
            }
        }
        Command::BenchCeiling { listen } => match hookgate::bench::ceiling::run(listen).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(RUNTIME, &format!("cannot serve on {listen}: {e}")),
        },
        Command::Events { command } => done(cli::events(command).await),
        Command::Replay { id, filter, api } => done(cli::replay(id, filter, api).await),
        Command::Reroute { id, api } => done(cli::reroute(id, api).await),
        Command::Deliveries { command } => done(cli::deliveries(command).await),
        Command::Destinations { command } => done(cli::destinations(command).await),
        Command::Send(args) => done(cli::send(args).await),
        Command::Init => {
            print!("{}", hookgate::config::STARTING_CONFIG);
            // Beside the file (on stderr, so `init > hookgate.toml` keeps it out): what the defaults mean.
            if let Ok(config) = Config::from_toml(hookgate::config::STARTING_CONFIG, &Env::from_pairs(init_secrets())) {
                for destination in &config.destinations {
                    eprintln!("hookgate init: destination {}: {}", destination.name, destination.retry_schedule());
                }
            }
            ExitCode::SUCCESS
        }
    }
}

/// Stand-ins for the secrets the starting config names, to read it back.
fn init_secrets() -> [(&'static str, &'static str); 2] {
    [("HOOKGATE_ADMIN_TOKEN", "stand-in-admin-token"), ("STRIPE_WEBHOOK_SECRET", "whsec_stand_in_secret")]
}

fn done(result: Result<(), cli::ClientError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ cli::ClientError::Usage(_)) => fail(USAGE_OR_CONFIG, &e.to_string()),
        Err(e) => fail(RUNTIME, &e.to_string()),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("hookgate: {message}");
    ExitCode::from(code)
}

/// SIGTERM or Ctrl-C. On Unix the handlers are installed when this is
/// called, not when the future is first polled: from here on a signal is
/// never the default one (an exit that skips clean-up).
fn stop_signal() -> impl Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).ok();
        let interrupt = signal(SignalKind::interrupt()).ok();
        async move {
            let wait = |signal: Option<tokio::signal::unix::Signal>| async move {
                match signal {
                    Some(mut signal) => {
                        signal.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = wait(term) => {}
                () = wait(interrupt) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

//! Assembly: open the store, start a dispatcher per destination and the
//! housekeeping task, serve HTTP, and stop in order (stop accepting, let
//! attempts in flight finish or cut them off, close the store). This module
//! uses `http`, `dispatch` and `wake`; none of them knows it.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use hookgate_postgres::PostgresStore;
use hookgate_sqlite::SqliteStore;
use hookgate_store::Store;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::clock::{Clock, StoreClock, now_ms};
use crate::config::{Config, Storage};
use crate::deliver::Client;
use crate::dispatch::Dispatcher;
use crate::faults::FaultLog;
use crate::housekeeping;
use crate::http::{self, BodyLimits, DestinationInfo, HttpState};
use crate::loud::LoudLog;
use crate::serve::serve;
use crate::stats::StatsCache;
use crate::steering::Live;
use crate::telemetry::Telemetry;
use crate::wake::Waker;

/// Beyond the grace, how long a stop still waits for background work (a
/// dispatcher recording its last outcomes) before exiting without it.
const WORKER_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Open(#[from] hookgate_sqlite::OpenError),
    #[error(transparent)]
    Postgres(#[from] hookgate_postgres::ConnectError),
    #[error("cannot build the delivery client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("server failed: {0}")]
    Io(#[from] std::io::Error),
}

pub async fn open_store(storage: &Storage) -> Result<Arc<dyn Store>, ServeError> {
    match storage {
        Storage::Sqlite { path, min_free } => {
            let options = hookgate_sqlite::Options { min_free: *min_free, ..Default::default() };
            Ok(Arc::new(SqliteStore::open_with(path, now_ms(), options)?))
        }
        Storage::Postgres { url, pool } => Ok(Arc::new(PostgresStore::connect(url.expose(), *pool).await?)),
    }
}

/// What `hookgate check` says of the storage, having looked at it without
/// changing it: where the tables are and what migrations `serve` would run;
/// or why it cannot be reached (the server's own message).
pub async fn inspect_storage(storage: &Storage) -> Result<String, String> {
    match storage {
        Storage::Sqlite { path, .. } => {
            let version = hookgate_sqlite::inspect(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let exists = if path.exists() { "" } else { " (to be created)" };
            Ok(format!("SQLite {}{exists}: {version}", path.display()))
        }
        Storage::Postgres { url, .. } => {
            // A stalled server must not hang `check`.
            let inspect = hookgate_postgres::inspect(url.expose());
            match tokio::time::timeout(std::time::Duration::from_secs(10), inspect).await {
                Ok(said) => said.map_err(|e| e.to_string().replace(url.expose(), "the URL")),
                Err(_) => Err("PostgreSQL did not answer within 10 s".into()),
            }
        }
    }
}

/// A running hookgate: what `serve` runs until a signal, and what tests start on port 0.
pub struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl Server {
    /// Open the configured store and start serving on `listener`.
    pub async fn start(listener: TcpListener, config: Config) -> Result<Server, ServeError> {
        let store = open_store(&config.storage).await?;
        Self::start_with_store(listener, config, store).await
    }

    pub async fn start_with_store(
        listener: TcpListener,
        config: Config,
        store: Arc<dyn Store>,
    ) -> Result<Server, ServeError> {
        let addr = listener.local_addr()?;
        // One clock for the whole server: the store's (see `clock`).
        let clock: Arc<dyn Clock> = Arc::new(StoreClock(store.clone()));
        let client = Client::new(clock.clone(), config.keep_response)?;
        let telemetry = match &config.telemetry {
            Some(settings) => {
                tracing::info!(endpoint = %crate::telemetry::redacted(&settings.traces_url), sample_ratio = settings.sample_ratio, "exporting traces (OTLP/HTTP)");
                Telemetry::start(settings.clone())
            }
            None => Telemetry::off(),
        };
        crate::metrics::handle();
        crate::metrics::start_upkeep();
        crate::metrics::start_at_zero(
            config.sources.iter().map(|s| s.name.as_str()),
            config.destinations.iter().map(|d| d.name.as_str()),
        );
        let (shutdown, stopping) = watch::channel(false);

        let waker = Waker::new(config.destinations.iter().map(|d| d.name.as_str()));
        let faults = Arc::new(FaultLog::new("ingest"));
        let live: HashMap<String, Arc<Live>> = config
            .destinations
            .iter()
            .map(|d| (d.name.clone(), Arc::new(Live::new(&d.name, d.circuit_breaker))))
            .collect();
        let mut workers = Vec::new();
        for destination in &config.destinations {
            let wake = waker.notified_by(&destination.name).expect("a waker per destination");
            let mut dispatcher =
                Dispatcher::new(store.clone(), clock.clone(), Arc::new(destination.clone()), client.clone(), wake);
            dispatcher.shutdown_grace = config.limits.shutdown_grace;
            dispatcher.telemetry = telemetry.clone();
            dispatcher.live = live.get(&destination.name).expect("live state per destination").clone();
            workers.push(tokio::spawn(dispatcher.run(stopping.clone())));
        }
        workers.push(tokio::spawn(housekeeping::run(store.clone(), clock.clone(), config.retention, stopping.clone())));

        say_paused(store.as_ref(), &config).await;
        // Work stored by other instances (PostgreSQL) wakes our dispatchers too.
        let remote = waker.clone();
        store.watch_remote(Arc::new(move |which| remote.wake(which)));
        let state = Arc::new(HttpState {
            sources: config.sources.iter().map(|s| (s.name.clone(), Arc::new(s.clone()))).collect(),
            destinations: config
                .destinations
                .iter()
                .map(|d| DestinationInfo {
                    name: d.name.clone(),
                    url: shown_url(&d.url),
                    rate_limit: d.rate_limit,
                    live: live[&d.name].clone(),
                })
                .collect(),
            admin_token: config.admin_token.clone(),
            body: BodyLimits {
                max_bytes: config.max_body_bytes,
                timeout: config.limits.body_timeout,
                budget: Arc::new(Semaphore::new(config.limits.max_inflight_bytes)),
            },
            store,
            clock,
            waker,
            stats: StatsCache::default(),
            faults,
            readiness: Arc::new(FaultLog::new("readiness")),
            refusals: LoudLog::default(),
            telemetry: telemetry.clone(),
        });
        let router = http::router(state);
        let limits = config.limits;
        let task = tokio::spawn(async move {
            // The HTTP side and the dispatchers drain side by side, each within the grace;
            // a worker stuck on a stalled store is not waited for past it.
            serve(listener, router, limits, stopping).await;
            let workers = async {
                for worker in workers {
                    let _ = worker.await;
                }
            };
            if tokio::time::timeout(limits.shutdown_grace + WORKER_MARGIN, workers).await.is_err() {
                tracing::warn!("background work did not stop within the grace; exiting anyway");
            }
            Ok(())
        });
        tracing::info!(%addr, "hookgate is serving");
        Ok(Server { addr, shutdown, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stop accepting, let deliveries in flight finish (up to the grace period), and wait.
    pub async fn stop(self) -> Result<(), ServeError> {
        let _ = self.shutdown.send(true);
        self.task.await.unwrap_or_else(|e| Err(ServeError::Io(std::io::Error::other(e))))
    }

    /// Serve until `signal` resolves, then stop gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), ServeError> {
        signal.await;
        tracing::info!("shutting down: finishing deliveries in flight");
        let stopped = self.stop().await;
        if stopped.is_ok() {
            tracing::info!("stopped");
        }
        stopped
    }
}

/// A destination paused before this start (by anyone, on any instance) gets
/// nothing until it is resumed: say so at start, where an operator looks
/// first when "nothing arrives".
async fn say_paused(store: &dyn Store, config: &Config) {
    match store.paused().await {
        Ok(paused) => {
            for name in paused.iter().filter(|name| config.destinations.iter().any(|d| &d.name == *name)) {
                tracing::warn!(
                    destination = %name,
                    "destination is paused: events are stored but nothing is delivered to it until it is resumed \
                     (hookgate destinations resume {name})"
                );
            }
        }
        Err(error) => tracing::debug!(%error, "cannot read which destinations are paused"),
    }
}

/// A destination URL as the admin API shows it: without its password.
fn shown_url(url: &reqwest::Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

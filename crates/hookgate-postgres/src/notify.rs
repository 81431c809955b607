//! Telling other instances that a destination has work.
//!
//! `NOTIFY` takes a cluster-wide lock from its transaction's commit until the
//! commit is flushed, so notifying inside every ingest batch would serialize
//! all batches of all instances. Instead, notifications are sent after the
//! work is committed, on a connection of their own, and coalesced: the first
//! goes out at once, then at most one per destination every [`INTERVAL`].
//! A lost notification costs a dispatcher at most its poll interval.

use std::collections::BTreeSet;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::sync::mpsc;

use crate::CHANNEL;

/// Least time between two rounds of notifications.
const INTERVAL: Duration = Duration::from_millis(20);
/// Destinations waiting to be announced, at most; beyond that a hint is dropped.
const QUEUE_CAPACITY: usize = 1_024;

#[derive(Clone)]
pub struct Notifier(mpsc::Sender<String>);

impl Notifier {
    pub fn start(pool: Pool) -> Notifier {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(run(pool, rx));
        Notifier(tx)
    }

    /// Announce committed work for `destination`. Never waits.
    pub fn work_for(&self, destination: &str) {
        let _ = self.0.try_send(destination.to_owned());
    }
}

async fn run(pool: Pool, mut queue: mpsc::Receiver<String>) {
    while let Some(first) = queue.recv().await {
        let mut destinations = BTreeSet::from([first]);
        while let Ok(next) = queue.try_recv() {
            destinations.insert(next);
        }
        match pool.get().await {
            Ok(client) => {
                for destination in &destinations {
                    if let Err(error) = client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, destination]).await {
                        tracing::debug!(%error, "NOTIFY failed");
                    }
                }
            }
            Err(error) => tracing::debug!(%error, "no connection for NOTIFY"),
        }
        tokio::time::sleep(INTERVAL).await;
    }
}

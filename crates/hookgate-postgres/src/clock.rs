//! The database's clock, as every instance reads it. Leases, due times and
//! dedupe windows are compared across instances, so they must not depend on
//! one machine's clock: an instance whose clock runs 10 s ahead would see
//! live leases as ended and deliver an event that another instance is still
//! delivering. Each instance measures its offset to the database's clock (at
//! connect, then every [`REFRESH`]) and adds it to its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use deadpool_postgres::Pool;

/// How often the offset is measured again (clocks drift; NTP steps them).
const REFRESH: Duration = Duration::from_secs(30);
/// A measurement whose round trip took longer than this is too vague to use.
const MAX_ROUND_TRIP_MS: i64 = 1_000;

/// Milliseconds since the Unix epoch by this machine's clock.
pub type LocalClock = fn() -> i64;

#[derive(Clone)]
pub struct DbClock {
    local: LocalClock,
    offset_ms: Arc<AtomicI64>,
}

impl DbClock {
    /// Measure the offset now (an error if the database does not answer), and keep it fresh.
    pub async fn start(pool: Pool, local: LocalClock) -> Result<DbClock, String> {
        let clock = DbClock { local, offset_ms: Arc::default() };
        let client = pool.get().await.map_err(|e| crate::explain(&e))?;
        let mut measured = false;
        for _ in 0..3 {
            if let Some(offset) = measure(&client, local).await.map_err(|e| crate::describe(&e))? {
                clock.offset_ms.store(offset, Ordering::Relaxed);
                measured = true;
                break;
            }
        }
        if !measured {
            tracing::warn!("the database answered too slowly to measure its clock; using this machine's until it does");
        }
        drop(client);
        let refreshing = clock.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH).await;
                let Ok(client) = pool.get().await else { continue };
                match measure(&client, refreshing.local).await {
                    Ok(Some(offset)) => refreshing.offset_ms.store(offset, Ordering::Relaxed),
                    Ok(None) => {}
                    Err(error) => tracing::debug!(%error, "measuring the database clock failed"),
                }
            }
        });
        Ok(clock)
    }

    pub fn now_ms(&self) -> i64 {
        (self.local)() + self.offset_ms.load(Ordering::Relaxed)
    }

    /// How far the database's clock is ahead of this machine's.
    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

/// The database's time minus ours, taken at the middle of the round trip;
/// `None` when the round trip was too slow to say.
async fn measure(client: &tokio_postgres::Client, local: LocalClock) -> Result<Option<i64>, tokio_postgres::Error> {
    let before = local();
    let row = client.query_one("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint", &[]).await?;
    let after = local();
    let database: i64 = row.get(0);
    Ok((after - before <= MAX_ROUND_TRIP_MS).then(|| database - (before + after) / 2))
}

/// This machine's clock.
pub fn system_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

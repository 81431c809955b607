//! Waking dispatchers: the one place that knows which dispatcher waits on
//! which [`Notify`]. Ingest, replay, finished attempts and other instances
//! (PostgreSQL `NOTIFY`) all wake through a [`Waker`].

use std::collections::BTreeMap;
use std::sync::Arc;

pub use hookgate_store::Wake;
use tokio::sync::Notify;

#[derive(Clone, Default)]
pub struct Waker {
    /// Ordered: `Wake::All` wakes them in one order, run after run (the simulation replays by seed).
    dispatchers: Arc<BTreeMap<String, Arc<Notify>>>,
}

impl Waker {
    /// One dispatcher per destination name.
    pub fn new<'a>(destinations: impl IntoIterator<Item = &'a str>) -> Waker {
        let dispatchers = destinations.into_iter().map(|name| (name.to_owned(), Arc::new(Notify::new()))).collect();
        Waker { dispatchers: Arc::new(dispatchers) }
    }

    /// What the dispatcher of `destination` waits on.
    pub fn notified_by(&self, destination: &str) -> Option<Arc<Notify>> {
        self.dispatchers.get(destination).cloned()
    }

    pub fn wake(&self, which: Wake<'_>) {
        match which {
            Wake::All => self.dispatchers.values().for_each(|n| n.notify_one()),
            Wake::Destination(name) => {
                if let Some(notify) = self.dispatchers.get(name) {
                    notify.notify_one();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_destination_named_like_a_wildcard_is_just_a_name() {
        let waker = Waker::new(["*", "app"]);
        let (star, app) = (waker.notified_by("*").unwrap(), waker.notified_by("app").unwrap());
        waker.wake(Wake::Destination("*"));
        let woken = |n: &Arc<Notify>| {
            let n = n.clone();
            async move { tokio::time::timeout(std::time::Duration::from_millis(20), n.notified()).await.is_ok() }
        };
        assert!(woken(&star).await);
        assert!(!woken(&app).await, "waking \"*\" wakes that destination only");
        waker.wake(Wake::All);
        assert!(woken(&star).await && woken(&app).await);
    }
}

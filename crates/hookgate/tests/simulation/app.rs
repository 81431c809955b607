//! The simulated destination: hookgate's `Deliver` seam, answering as a
//! seeded app would — 2xx, 5xx, 429 with a `Retry-After`, a hang past the
//! timeout, a refused connection — and recording what it had in its hands
//! and when. Its work runs in a task of its own, as a real app's does: a
//! request hookgate gave up on (a timeout, a crash) is still worked on.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookgate::config::Destination;
use hookgate::deliver::{Deliver, Outcome};
use hookgate_store::Claim;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

/// How the app behaves: per attempt, the chance of each answer (drawn per seed).
#[derive(Debug, Clone, Copy, Default)]
pub struct Behaviour {
    pub fail: f64,
    pub too_many: f64,
    pub hang: f64,
    pub refuse: f64,
    /// Work per request, at most (ms).
    pub work_ms: u64,
}

/// One request as the app saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub webhook_id: String,
    pub attempt: u32,
    /// The sender's key (the body).
    pub key: String,
    pub order_key: String,
    pub started: Instant,
    /// Answered, or given up on by hookgate at the timeout, whichever came first.
    pub finished: Instant,
    pub status: u16,
}

#[derive(Clone)]
pub struct App {
    behaviour: Arc<Mutex<Behaviour>>,
    rng: Arc<Mutex<StdRng>>,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

enum Fate {
    Answer { status: u16, work: Duration, retry_after_ms: Option<u64> },
    Hang { work: Duration },
    Refuse,
}

impl App {
    pub fn new(behaviour: Behaviour, seed: u64) -> App {
        App {
            behaviour: Arc::new(Mutex::new(behaviour)),
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            seen: Arc::default(),
        }
    }

    /// From now on every request is answered 2xx, quickly.
    pub fn heal(&self) {
        *self.behaviour.lock().unwrap() = Behaviour { work_ms: 20, ..Behaviour::default() };
    }

    fn draw(&self, timeout: Duration) -> Fate {
        let b = *self.behaviour.lock().unwrap();
        let mut rng = self.rng.lock().unwrap();
        let work = Duration::from_millis(rng.random_range(0..=b.work_ms.max(1)));
        let roll: f64 = rng.random();
        if roll < b.refuse {
            Fate::Refuse
        } else if roll < b.refuse + b.hang {
            // Past the timeout, and on after it.
            Fate::Hang { work: timeout + Duration::from_millis(rng.random_range(1..=2 * timeout.as_millis() as u64)) }
        } else if roll < b.refuse + b.hang + b.too_many {
            Fate::Answer { status: 429, work, retry_after_ms: Some(rng.random_range(0..=3) * 1_000) }
        } else if roll < b.refuse + b.hang + b.too_many + b.fail {
            Fate::Answer { status: 500, work, retry_after_ms: None }
        } else {
            Fate::Answer { status: 200, work, retry_after_ms: None }
        }
    }
}

impl Deliver for App {
    fn attempt(
        &self,
        destination: &Destination,
        claim: &Claim,
        _: &hookgate::telemetry::TraceContext,
    ) -> impl std::future::Future<Output = Outcome> + Send {
        let timeout = destination.timeout;
        let fate = self.draw(timeout);
        let seen = self.seen.clone();
        let (webhook_id, attempt) = (claim.id.to_string(), claim.attempt);
        let key = String::from_utf8_lossy(&claim.body).into_owned();
        let order_key = claim.order_key.as_ref().map(|k| k.to_text_lossy()).unwrap_or_default();
        async move {
            let started = Instant::now();
            let (status, work, retry_after_ms) = match fate {
                Fate::Refuse => {
                    return Outcome {
                        status: None,
                        error: Some("connection failed: refused".into()),
                        retry_after_ms: None,
                        duration: Duration::ZERO,
                        response: None,
                    };
                }
                Fate::Hang { work } => (200, work, None),
                Fate::Answer { status, work, retry_after_ms } => (status, work, retry_after_ms),
            };
            // The app's own task: it goes on whatever hookgate does.
            let answered = tokio::spawn(async move {
                tokio::time::sleep(work).await;
                let finished = (started + work).min(started + timeout);
                seen.lock().unwrap().push(Seen { webhook_id, attempt, key, order_key, started, finished, status });
                status
            });
            match tokio::time::timeout(timeout, answered).await {
                Ok(Ok(status)) => Outcome {
                    status: Some(status),
                    error: (status >= 300).then(|| format!("HTTP {status}")),
                    retry_after_ms,
                    duration: started.elapsed(),
                    response: None,
                },
                _ => Outcome {
                    status: None,
                    error: Some("timeout".into()),
                    retry_after_ms: None,
                    duration: started.elapsed(),
                    response: None,
                },
            }
        }
    }
}

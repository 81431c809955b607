//! What a dispatcher knows about its destination that the store does not:
//! the circuit breaker, and the last minute of attempts (how many delivered,
//! how many failed, how long they took). Shared with the admin API through
//! [`Live`], one per destination.
//!
//! Both are this instance's own view. A breaker per instance is what a
//! breaker is for: each instance stops hammering an app it sees failing, and
//! probes it on its own; nothing has to be written per attempt to share it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

// tokio's: a paused test runtime (the simulation) moves it; the breaker runs on virtual time there.
use tokio::time::Instant;

use serde::{Deserialize, Serialize};

use crate::config::CircuitBreaker;

/// The breaker's state, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Attempts go out.
    Closed,
    /// Too many failures in a row: nothing goes out until the cooldown ends.
    Open,
    /// The cooldown ended: one attempt (the probe) is out, nothing else.
    HalfOpen,
}

impl Circuit {
    /// As the admin API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
enum BreakerState {
    Closed { failures_in_row: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A circuit breaker: after `failures` failed attempts in a row it opens for
/// `cooldown`, then lets one probe through; the probe's success closes it,
/// its failure opens it again. Without a configured breaker it stays closed.
#[derive(Debug)]
pub struct Breaker {
    /// The destination's name, for the log.
    destination: String,
    config: Option<CircuitBreaker>,
    state: Mutex<BreakerState>,
}

impl Breaker {
    pub fn new(destination: &str, config: Option<CircuitBreaker>) -> Breaker {
        let state = Mutex::new(BreakerState::Closed { failures_in_row: 0 });
        Breaker { destination: destination.to_owned(), config, state }
    }

    /// How many attempts may start now, of `wanted`; when none, how long
    /// until that may change by itself (the cooldown's end), if it will.
    pub fn admit(&self, wanted: usize, now: Instant) -> (usize, Option<Duration>) {
        let mut state = self.lock();
        match *state {
            BreakerState::Closed { .. } => (wanted, None),
            BreakerState::Open { until } if now < until => (0, Some(until - now)),
            BreakerState::Open { .. } | BreakerState::HalfOpen { probing: false } => {
                if wanted == 0 {
                    return (0, None);
                }
                *state = BreakerState::HalfOpen { probing: true };
                (1, None)
            }
            BreakerState::HalfOpen { probing: true } => (0, None),
        }
    }

    /// The probe was not sent after all (nothing was due): another may go.
    pub fn unused_probe(&self) {
        let mut state = self.lock();
        if let BreakerState::HalfOpen { probing: true } = *state {
            *state = BreakerState::HalfOpen { probing: false };
        }
    }

    /// An attempt ended: `failed` when the app failed it (no answer, a 5xx, a 429).
    pub fn record(&self, failed: bool, now: Instant) {
        let Some(config) = self.config else { return };
        let mut state = self.lock();
        let next = match (&*state, failed) {
            (_, false) => BreakerState::Closed { failures_in_row: 0 },
            (BreakerState::Closed { failures_in_row }, true) if failures_in_row + 1 < config.failures => {
                BreakerState::Closed { failures_in_row: failures_in_row + 1 }
            }
            // The Nth failure in a row, a failed probe: open (again). A failure of an
            // attempt that was already out when the breaker opened extends nothing.
            (BreakerState::Open { until }, true) => BreakerState::Open { until: *until },
            (_, true) => BreakerState::Open { until: now + config.cooldown },
        };
        if matches!(next, BreakerState::Open { .. }) && !matches!(*state, BreakerState::Open { .. }) {
            tracing::warn!(destination = %self.destination, cooldown = ?config.cooldown, "circuit breaker open: attempts stop until the cooldown ends");
        }
        if matches!(next, BreakerState::Closed { .. }) && matches!(*state, BreakerState::HalfOpen { .. }) {
            tracing::info!(destination = %self.destination, "circuit breaker closed: the probe succeeded");
        }
        *state = next;
    }

    pub fn circuit(&self, now: Instant) -> Circuit {
        match *self.lock() {
            BreakerState::Closed { .. } => Circuit::Closed,
            BreakerState::Open { until } if now < until => Circuit::Open,
            BreakerState::Open { .. } | BreakerState::HalfOpen { .. } => Circuit::HalfOpen,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Attempts of the last minute, in one-second slots: counts and a latency
/// histogram per slot, so memory stays the same at any rate.
#[derive(Debug, Default)]
pub struct Recent {
    slots: Mutex<VecDeque<Slot>>,
}

const WINDOW_SECS: u64 = 60;
/// Latency buckets: bucket `i` holds durations up to `2^(i/4)` ms (about 19% apart).
const BUCKETS: usize = 96;

#[derive(Debug)]
struct Slot {
    second: u64,
    delivered: u64,
    failed: u64,
    latency: [u32; BUCKETS],
}

/// What the last minute came to.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LastMinute {
    pub delivered: u64,
    pub failed: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn bucket_of(ms: f64) -> usize {
    if ms <= 1.0 {
        return 0;
    }
    ((ms.log2() * 4.0).ceil() as usize).min(BUCKETS - 1)
}

fn upper_ms(bucket: usize) -> f64 {
    2f64.powf(bucket as f64 / 4.0)
}

impl Recent {
    /// `second`: seconds on a monotonic clock (the caller's), to place the attempt.
    pub fn record(&self, second: u64, delivered: bool, duration: Duration) {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if slots.back().is_none_or(|s| s.second != second) {
            slots.push_back(Slot { second, delivered: 0, failed: 0, latency: [0; BUCKETS] });
        }
        while slots.front().is_some_and(|s| s.second + WINDOW_SECS <= second) {
            slots.pop_front();
        }
        let slot = slots.back_mut().expect("pushed above");
        if delivered {
            slot.delivered += 1;
        } else {
            slot.failed += 1;
        }
        slot.latency[bucket_of(duration.as_secs_f64() * 1_000.0)] += 1;
    }

    pub fn last_minute(&self, now_second: u64) -> LastMinute {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut merged = [0u64; BUCKETS];
        let mut out = LastMinute::default();
        for slot in slots.iter().filter(|s| s.second + WINDOW_SECS > now_second) {
            out.delivered += slot.delivered;
            out.failed += slot.failed;
            merged.iter_mut().zip(slot.latency).for_each(|(m, n)| *m += u64::from(n));
        }
        let total: u64 = merged.iter().sum();
        let quantile = |q: f64| {
            let rank = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            merged.iter().position(|n| {
                seen += n;
                seen >= rank
            })
        };
        if total > 0 {
            out.p50_ms = quantile(0.50).map(upper_ms);
            out.p99_ms = quantile(0.99).map(upper_ms);
        }
        out
    }
}

/// One destination's live state, shared by its dispatcher and the admin API.
#[derive(Debug)]
pub struct Live {
    pub breaker: Breaker,
    pub recent: Recent,
    started: Instant,
}

impl Live {
    pub fn new(destination: &str, breaker: Option<CircuitBreaker>) -> Live {
        Live { breaker: Breaker::new(destination, breaker), recent: Recent::default(), started: Instant::now() }
    }

    /// Seconds since this instance started: the clock `recent` is kept on.
    pub fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_secs()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> Breaker {
        Breaker::new("app", Some(CircuitBreaker { failures: 3, cooldown: Duration::from_secs(10) }))
    }

    #[test]
    fn opens_after_failures_in_a_row_then_probes_once_then_closes() {
        let (b, t0) = (breaker(), Instant::now());
        b.record(true, t0);
        b.record(true, t0);
        b.record(false, t0); // a success in between starts the count again
        b.record(true, t0);
        b.record(true, t0);
        assert_eq!(b.admit(8, t0), (8, None));
        b.record(true, t0);
        assert_eq!(b.circuit(t0), Circuit::Open);
        assert_eq!(b.admit(8, t0 + Duration::from_secs(4)), (0, Some(Duration::from_secs(6))));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.circuit(later), Circuit::HalfOpen);
        assert_eq!(b.admit(8, later), (1, None), "one probe");
        assert_eq!(b.admit(8, later), (0, None), "and nothing beside it");
        b.record(false, later);
        assert_eq!((b.circuit(later), b.admit(8, later)), (Circuit::Closed, (8, None)));
    }

    #[test]
    fn a_failed_probe_opens_it_again_and_an_unused_one_is_given_back() {
        let (b, t0) = (breaker(), Instant::now());
        (0..3).for_each(|_| b.record(true, t0));
        let later = t0 + Duration::from_secs(10);
        assert_eq!(b.admit(8, later), (1, None));
        b.unused_probe();
        assert_eq!(b.admit(8, later), (1, None), "nothing was due: the probe is still to come");
        b.record(true, later);
        assert_eq!(b.circuit(later), Circuit::Open);
        assert_eq!(b.admit(8, later + Duration::from_secs(1)).0, 0);
    }

    #[test]
    fn without_a_breaker_nothing_stops() {
        let (b, t0) = (Breaker::new("app", None), Instant::now());
        (0..1_000).for_each(|_| b.record(true, t0));
        assert_eq!((b.circuit(t0), b.admit(4, t0)), (Circuit::Closed, (4, None)));
    }

    #[test]
    fn the_last_minute_counts_and_ranks_latency() {
        let recent = Recent::default();
        for n in 0..100u64 {
            recent.record(5, n != 0, Duration::from_millis(if n < 98 { 10 } else { 900 }));
        }
        let minute = recent.last_minute(5);
        assert_eq!((minute.delivered, minute.failed), (99, 1));
        let (p50, p99) = (minute.p50_ms.unwrap(), minute.p99_ms.unwrap());
        assert!((10.0..12.0).contains(&p50), "p50 {p50}");
        assert!((900.0..1_100.0).contains(&p99), "p99 {p99}");
        assert_eq!(recent.last_minute(64).delivered, 99, "still within the minute");
        assert_eq!(recent.last_minute(65), LastMinute::default(), "a minute later it is gone");
        recent.record(70, true, Duration::from_millis(1));
        assert_eq!(recent.last_minute(70).delivered, 1, "old slots dropped, new ones kept");
    }
}

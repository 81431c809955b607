//! One dispatcher per destination: claims its due deliveries (the store
//! guarantees one in flight per queue, FIFO), runs up to `concurrency`
//! attempts at once, and records each outcome. It sleeps until it is woken
//! (a delivery was stored or replayed, an attempt ended) or until the store says something
//! falls due, and never longer than [`POLL_MS`], so a wake-up lost to another
//! instance or a clock jump costs at most that.
//!
//! Everything it reads from outside comes through a seam, so the simulation
//! (`tests/simulation`) runs this very code on virtual time: the time from
//! its [`Clock`], the jitter from its [`Jitter`], attempts through [`Deliver`],
//! the store through [`Store`]; timers are tokio's; every `select!` is
//! `biased` (tokio would otherwise pick a ready branch at random), so one
//! seed gives one history.

use std::sync::Arc;
use std::time::Duration;

use hookgate_store::{Attempt, Claim, Store, Verdict};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::config::Destination;
use crate::deliver::{Deliver, Outcome};
use crate::faults::FaultLog;
use crate::loud::LoudLog;
use crate::metrics;
use crate::steering::Live;
use crate::telemetry::{self, Span, SpanKind, Telemetry, TraceContext, Value};

/// Longest sleep between looks at the store.
pub const POLL_MS: u64 = 1_000;
/// Claims taken in one statement, at most.
const CLAIM_BATCH: usize = 256;
/// A claim's lease beyond the destination's timeout: time to record the
/// outcome. Short, because after a crash the event waits for the lease to end
/// (the cut-off attempt may still be running in the app until its timeout).
pub const LEASE_MARGIN_MS: i64 = 5_000;
/// How far an instance's clock may be from the store's (PostgreSQL: the
/// database's, which each instance measures its offset to every 30 s) for
/// the leases to hold: half of [`LEASE_MARGIN_MS`] covers twice it (the
/// claimer's error and the judge's). Beyond it, an instance warns.
pub const MAX_CLOCK_ERROR_MS: i64 = 1_000;
/// Pause after a storage error before the dispatcher tries again.
const STORE_RETRY: Duration = Duration::from_millis(500);

/// A uniform random number in `[0, 1)` for each retry's jitter: `rand`'s in
/// production, a seeded one in the simulation.
pub type Jitter = Arc<dyn Fn() -> f64 + Send + Sync>;

/// `rand`'s jitter.
pub fn random_jitter() -> Jitter {
    Arc::new(rand::random::<f64>)
}

#[derive(Clone)]
pub struct Dispatcher<D> {
    pub store: Arc<dyn Store>,
    /// Stored times (claims, outcomes, due times) on the store's clock.
    pub clock: Arc<dyn Clock>,
    pub jitter: Jitter,
    /// A lease beyond the destination's timeout ([`LEASE_MARGIN_MS`]).
    pub lease_margin_ms: i64,
    pub destination: Arc<Destination>,
    pub client: D,
    pub wake: Arc<Notify>,
    /// At shutdown, how long attempts in flight may still take before they
    /// are cut off (a cut-off event is delivered again once its lease ends).
    pub shutdown_grace: Duration,
    /// Storage failures, logged once per fault rather than once per retry.
    pub faults: Arc<FaultLog>,
    /// The circuit breaker and the last minute of attempts, shared with the admin API.
    pub live: Arc<Live>,
    /// Failed attempts and dead events, told at WARN a line every few seconds.
    pub failures: Arc<LoudLog>,
    /// Each attempt's span, in its event's trace.
    pub telemetry: Telemetry,
}

impl<D: Deliver> Dispatcher<D> {
    /// A dispatcher for `destination` with the production defaults: `rand`'s
    /// jitter, [`LEASE_MARGIN_MS`], a 30 s grace, its own breaker; the fields
    /// are public for the assembly (`app`) and the simulation to change.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        destination: Arc<Destination>,
        client: D,
        wake: Arc<Notify>,
    ) -> Self {
        Dispatcher {
            faults: Arc::new(FaultLog::new(format!("delivery to {}", destination.name))),
            live: Arc::new(Live::new(&destination.name, destination.circuit_breaker)),
            store,
            clock,
            jitter: random_jitter(),
            lease_margin_ms: LEASE_MARGIN_MS,
            destination,
            client,
            wake,
            shutdown_grace: Duration::from_secs(30),
            failures: Arc::default(),
            telemetry: Telemetry::off(),
        }
    }

    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let slots = Arc::new(Semaphore::new(self.destination.concurrency));
        let lease_ms = self.destination.timeout.as_millis() as i64 + self.lease_margin_ms;
        let mut in_flight = JoinSet::new();
        while !*shutdown.borrow() {
            // A finished attempt's task keeps its memory (the size of the whole
            // delivery future) until joined: join every finished one, each turn.
            while in_flight.try_join_next().is_some() {}
            let free = slots.available_permits().min(CLAIM_BATCH);
            let (wanted, held) = match self.allowed(free).await {
                Ok(allowed) => allowed,
                Err(error) => {
                    self.faults.failed(&format!("rate limit of {}: {error}", self.destination.name));
                    (0, Some(STORE_RETRY))
                }
            };
            if let Some(held) = held {
                // The breaker is open, or the rate limit is spent: wait it out (or
                // for an attempt to end, or the stop), without looking at the store.
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => {}
                    Some(_) = in_flight.join_next() => {}
                    _ = tokio::time::sleep(held) => {}
                }
                continue;
            }
            let mut claimed = 0;
            if wanted > 0 {
                // A stalled store must not hold up a stop: the claim races the shutdown.
                let asked = tokio::time::Instant::now();
                let claim = self.store.claim(&self.destination.name, self.clock.now_ms(), wanted, lease_ms);
                let claimed_now = tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    claimed = claim => claimed,
                };
                if claimed_now.as_ref().map_or(true, Vec::is_empty) {
                    self.live.breaker.unused_probe();
                }
                // Tokens taken for slots that found nothing due go back: a rate limit is what
                // starts, and an idle instance must not spend what another could use.
                let unused = wanted - claimed_now.as_ref().map_or(0, Vec::len);
                if let Some(rate) = self.destination.rate_limit
                    && unused > 0
                    && let Err(error) =
                        self.store.give_back_tokens(&self.destination.name, rate.per_second, unused as u32).await
                {
                    tracing::debug!(%error, "could not give rate-limit tokens back");
                }
                match claimed_now {
                    Ok(claims) => {
                        self.faults.ok();
                        claimed = claims.len();
                        let late = self.too_late(asked.elapsed());
                        for claim in claims {
                            let slot = slots.clone().try_acquire_owned().expect("claimed no more than the free slots");
                            match late {
                                None => in_flight.spawn(self.clone().deliver(claim, slot)),
                                Some(took) => in_flight.spawn(self.clone().give_up(claim, took, slot)),
                            };
                        }
                    }
                    Err(error) => {
                        self.faults.failed(&format!("claiming for {}: {error}", self.destination.name));
                        tokio::select! {
                            biased;
                            _ = shutdown.changed() => {}
                            _ = tokio::time::sleep(STORE_RETRY) => {}
                        }
                        continue;
                    }
                }
            }
            if claimed > 0 && claimed == wanted {
                continue; // there may be more ready right now
            }
            // With attempts in flight, their ends wake us; ask the store when
            // the next thing falls due only when a claim with free slots found nothing.
            let idle = wanted > 0 && claimed == 0;
            let wait = if idle {
                tokio::select! {
                    biased;
                    _ = shutdown.changed() => break,
                    wait = self.until_next_due() => wait,
                }
            } else {
                Duration::from_millis(POLL_MS)
            };
            tokio::select! {
                biased;
                _ = shutdown.changed() => {}
                Some(_) = in_flight.join_next() => {}
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
        let drain = async { while in_flight.join_next().await.is_some() {} };
        if tokio::time::timeout(self.shutdown_grace, drain).await.is_err() {
            tracing::warn!(destination = %self.destination.name, "cutting off attempts still in flight at shutdown");
            in_flight.abort_all();
        }
    }

    /// How many of `free` slots may be filled now, and when none may, how
    /// long until that changes by itself: the breaker (a probe only when
    /// half open, nothing while open), then the rate limit's tokens.
    async fn allowed(&self, free: usize) -> hookgate_store::Result<(usize, Option<Duration>)> {
        if free == 0 {
            return Ok((0, None));
        }
        let (admitted, reopens) = self.live.breaker.admit(free, tokio::time::Instant::now());
        if admitted == 0 {
            // Open: until the cooldown ends. Half open with the probe out: until it ends.
            return Ok((0, Some(reopens.unwrap_or(Duration::from_millis(POLL_MS)))));
        }
        let Some(rate) = self.destination.rate_limit else { return Ok((admitted, None)) };
        let tokens =
            self.store.take_tokens(&self.destination.name, rate.per_second, admitted as u32, self.clock.now_ms()).await;
        match tokens {
            Ok(0) => {
                self.live.breaker.unused_probe();
                // The next token, at the earliest.
                let next = Duration::from_secs_f64(1.0 / rate.per_second).max(Duration::from_millis(1));
                Ok((0, Some(next.min(Duration::from_millis(POLL_MS)))))
            }
            Ok(tokens) => Ok((tokens as usize, None)),
            Err(error) => {
                self.live.breaker.unused_probe();
                Err(error)
            }
        }
    }

    /// Whether a claim that took `took` to come back may still be delivered.
    /// Its lease was counted from the moment it was asked for (on this
    /// instance's clock); an attempt started now may run for the whole
    /// timeout. Half the lease's margin is what time in transit may take:
    /// the other half covers the clocks of the instances that judge the lease
    /// (each within [`MAX_CLOCK_ERROR_MS`] of the store's). A claim answered
    /// later than that — a store that stalled before or after applying it —
    /// may already be someone else's by the time its attempt ends: two
    /// deliveries of one order key at once (the simulation found it).
    /// Measured on the monotonic clock, which no jump moves.
    fn too_late(&self, took: Duration) -> Option<Duration> {
        let budget = Duration::from_millis((self.lease_margin_ms / 2).max(0) as u64);
        (took > budget).then_some(took)
    }

    /// A claim that came back too late to deliver within its lease: given
    /// back at once, if it is still ours (a fenced outcome otherwise), so the
    /// event is due again now rather than when the lease ends. The attempt
    /// the claim counted stays counted, with its reason on record.
    async fn give_up(self, claim: Claim, took: Duration, _slot: OwnedSemaphorePermit) {
        // No attempt is made: if this was the breaker's probe, another may go (else the
        // breaker would wait for this one's result for ever; the simulation found it, seed 2964).
        self.live.breaker.unused_probe();
        let now = self.clock.now_ms();
        if let Some(unsaid) = self.failures.admit(&format!("{} late", self.destination.name)) {
            tracing::warn!(
                event_id = %claim.id, source = %claim.source, delivery_id = %claim.delivery, destination = %self.destination.name,
                trace_id = event_trace(&claim).trace_hex(),
                "a claim came back {} after it was asked, too late to deliver within its lease: given back{}",
                hookgate_core::human_duration(took.as_millis() as u64), crate::loud::and_more(unsaid)
            );
        }
        let attempt = Attempt {
            attempt: claim.attempt,
            started_at_ms: now,
            duration_ms: 0,
            status: None,
            error: Some(format!(
                "not attempted: the store answered the claim {} late, too late to deliver within the lease",
                hookgate_core::human_duration(took.as_millis() as u64)
            )),
            response: None,
        };
        self.record(&claim, attempt, Verdict::Retry { at_ms: now }).await;
    }

    async fn until_next_due(&self) -> Duration {
        let now = self.clock.now_ms();
        let due = self.store.next_due(&self.destination.name, now).await.ok().flatten();
        let ms = due.map_or(POLL_MS, |at| (at - now).clamp(0, POLL_MS as i64) as u64);
        Duration::from_millis(ms)
    }

    async fn deliver(self, claim: Claim, _slot: OwnedSemaphorePermit) {
        let started_at_ms = self.clock.now_ms();
        // A child of the event's ingest span (an event stored before traces were kept gets one of its own).
        let event_span = event_trace(&claim);
        let trace = event_span.child(rand::random::<[u8; 8]>());
        let outcome = self.client.attempt(&self.destination, &claim, &trace).await;
        let ended = tokio::time::Instant::now();
        self.live.breaker.record(app_failed(&outcome), ended);
        self.live.recent.record(self.live.second(ended), outcome.delivered(), outcome.duration);
        let name = self.destination.name.clone();
        ::metrics::histogram!(metrics::DELIVERY_SECONDS, "destination" => name.clone())
            .record(outcome.duration.as_secs_f64());
        let verdict = decide(&self.destination, &claim, &outcome, self.clock.now_ms(), (self.jitter)());
        let counter = match verdict {
            Verdict::Delivered => metrics::DELIVERED,
            Verdict::Retry { .. } => metrics::RETRIED,
            Verdict::Dead => metrics::DEAD,
        };
        ::metrics::counter!(counter, "destination" => name.clone()).increment(1);
        self.tell(&claim, &outcome, verdict, &trace);
        if self.telemetry.records(&trace) {
            self.telemetry.record(attempt_span(
                &self.destination.name,
                &claim,
                &outcome,
                verdict,
                started_at_ms,
                trace,
                &event_span,
            ));
        }
        let attempt = Attempt {
            attempt: claim.attempt,
            started_at_ms,
            duration_ms: outcome.duration.as_millis() as i64,
            status: outcome.status,
            error: outcome.error,
            response: outcome.response,
        };
        self.record(&claim, attempt, verdict).await;
    }

    /// The outcome must reach the store, or the event stays `delivering`
    /// until its lease ends and is delivered again: keep trying.
    async fn record(&self, claim: &Claim, attempt: Attempt, verdict: Verdict) {
        let mut pause = Duration::from_millis(50);
        loop {
            match self.store.finish(&claim.delivery, attempt.clone(), verdict, self.clock.now_ms()).await {
                Ok(true) => break,
                Ok(false) => {
                    tracing::warn!(
                        event_id = %claim.id, source = %claim.source, destination = %claim.destination, delivery_id = %claim.delivery,
                        trace_id = event_trace(claim).trace_hex(),
                        "lease lost before the outcome was recorded; it will be delivered again"
                    );
                    break;
                }
                Err(error) => {
                    self.faults.failed(&format!("recording an attempt of {}: {error}", claim.delivery));
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
        self.wake.notify_one();
    }
}

impl<D> Dispatcher<D> {
    /// A failed attempt or a dead event, at WARN, a line every few seconds
    /// for each (the next says how many went unsaid): an app that fails is
    /// seen in the log, an app that fails a thousand times a second does not
    /// fill it.
    fn tell(&self, claim: &Claim, outcome: &Outcome, verdict: Verdict, trace: &TraceContext) {
        let name = &self.destination.name;
        // One line per attempt: the app's answer may hold line breaks (a text log must not show them as lines).
        let error = outcome.error.as_deref().unwrap_or("no answer").replace(['\n', '\r'], " ");
        let trace_id = trace.trace_hex();
        match verdict {
            Verdict::Delivered => {
                tracing::debug!(
                    event_id = %claim.id, source = %claim.source, destination = %name, trace_id,
                    delivery_id = %claim.delivery, attempt = claim.attempt, status = outcome.status,
                    "delivered"
                );
            }
            Verdict::Retry { at_ms } => {
                if let Some(unsaid) = self.failures.admit(&format!("{name} retry")) {
                    let retry_in = hookgate_core::human_duration((at_ms - self.clock.now_ms()).max(0) as u64);
                    tracing::warn!(
                        event_id = %claim.id, source = %claim.source, destination = %name, trace_id,
                        delivery_id = %claim.delivery, attempt = claim.attempt,
                        "attempt failed, retrying in {retry_in}: {error}{}", crate::loud::and_more(unsaid)
                    );
                }
            }
            Verdict::Dead => {
                if let Some(unsaid) = self.failures.admit(&format!("{name} dead")) {
                    tracing::warn!(
                        event_id = %claim.id, source = %claim.source, destination = %name, trace_id,
                        delivery_id = %claim.delivery, attempts = claim.round_attempt,
                        "delivery is dead, its attempts spent (replay it once the app is fixed: hookgate replay {}): {error}{}",
                        claim.delivery, crate::loud::and_more(unsaid)
                    );
                }
            }
        }
    }
}

/// The event's ingest span as stored with it (an event stored before traces
/// were kept gets one made from its id, the same on every instance).
fn event_trace(claim: &Claim) -> TraceContext {
    telemetry::context::of_event(claim.trace.as_deref(), claim.id.as_str())
}

/// An attempt as a span: a client span in its event's trace, a child of the
/// event's ingest span, timed as the attempt was.
fn attempt_span(
    destination: &str,
    claim: &Claim,
    outcome: &Outcome,
    verdict: Verdict,
    started_at_ms: i64,
    context: TraceContext,
    event_span: &TraceContext,
) -> Span {
    let start = telemetry::unix_nano(started_at_ms);
    let mut attributes = vec![
        ("hookgate.destination", Value::from(destination)),
        ("hookgate.source", Value::from(claim.source.as_str())),
        ("hookgate.event_id", Value::from(claim.id.as_str())),
        ("hookgate.delivery_id", Value::from(claim.delivery.as_str())),
        ("hookgate.route", Value::from(claim.route.as_str())),
        ("hookgate.attempt", Value::Int(i64::from(claim.attempt))),
        (
            "hookgate.outcome",
            Value::from(match verdict {
                Verdict::Delivered => "delivered",
                Verdict::Retry { .. } => "retry",
                Verdict::Dead => "dead",
            }),
        ),
        ("http.request.method", Value::from("POST")),
    ];
    if let Some(status) = outcome.status {
        attributes.push(("http.response.status_code", Value::Int(i64::from(status))));
    }
    Span {
        context,
        parent: Some(event_span.span_id),
        name: format!("deliver {destination}"),
        kind: SpanKind::Client,
        start_unix_nano: start,
        end_unix_nano: start.saturating_add(outcome.duration.as_nanos() as u64),
        attributes,
        error: (!outcome.delivered()).then(|| outcome.error.clone().unwrap_or_else(|| "no answer".into())),
    }
}

/// Whether an attempt counts against the app for the circuit breaker: no
/// answer (refused, reset, timed out), a 5xx, or a 429. Another 4xx is the
/// app answering about one event: it is up.
fn app_failed(outcome: &Outcome) -> bool {
    match outcome.status {
        None => true,
        Some(status) => status >= 500 || status == 429,
    }
}

/// After one attempt: delivered, retried later, or dead.
pub fn decide(destination: &Destination, claim: &Claim, outcome: &Outcome, now_ms: i64, jitter: f64) -> Verdict {
    if outcome.delivered() {
        return Verdict::Delivered;
    }
    match destination.retry.next_delay_ms(claim.round_attempt, outcome.retry_after_ms, jitter) {
        Some(delay) => Verdict::Retry { at_ms: now_ms.saturating_add(delay.min(i64::MAX as u64) as i64) },
        None => Verdict::Dead,
    }
}

#[cfg(test)]
mod tests;

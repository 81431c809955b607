/// When to try a failed delivery again, and when to give up.
///
/// Exponential backoff with "equal jitter": the delay after the n-th failed
/// attempt is `min(max, initial * 2^(n-1))`, of which half is fixed and half
/// random. The fixed half keeps retries from hammering a struggling app; the
/// random half keeps a thousand events that failed together from retrying
/// together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included. After the last one fails the event is dead.
    pub max_attempts: u32,
    pub initial_ms: u64,
    pub max_ms: u64,
}

impl RetryPolicy {
    /// The delay before the next attempt after attempt number `failed_attempt`
    /// (1-based) failed, or `None` when that was the last one allowed.
    ///
    /// `jitter` is a uniform random number in `[0, 1)`, passed in so the rule
    /// stays a pure function. `retry_after_ms` is the destination's own
    /// `Retry-After`: honoured, but never beyond `max_ms`.
    pub fn next_delay_ms(&self, failed_attempt: u32, retry_after_ms: Option<u64>, jitter: f64) -> Option<u64> {
        if failed_attempt >= self.max_attempts {
            return None;
        }
        if let Some(asked) = retry_after_ms {
            return Some(asked.min(self.max_ms));
        }
        let doublings = failed_attempt.saturating_sub(1).min(62);
        let exponential = self.initial_ms.saturating_mul(1u64 << doublings).min(self.max_ms);
        let half = exponential / 2;
        let random = (half as f64 * jitter.clamp(0.0, 1.0)) as u64;
        Some(exponential - half + random)
    }

    /// How long the schedule keeps trying, from the first failure to the
    /// last attempt, with no `Retry-After`: `(shortest, longest)` over every
    /// jitter, in milliseconds. What `check` and `init` print, so "10
    /// attempts" is read as the minutes it is, not the hours it sounds like.
    pub fn span_ms(&self) -> (u64, u64) {
        (1..self.max_attempts).fold((0u64, 0u64), |(shortest, longest), failed| {
            let low = self.next_delay_ms(failed, None, 0.0).unwrap_or(0);
            let high = self.next_delay_ms(failed, None, 1.0).unwrap_or(0);
            (shortest.saturating_add(low), longest.saturating_add(high))
        })
    }
}

/// A length of time as a person reads it: "26 h 41 m", "4 m 15 s", "850 ms".
pub fn human_duration(ms: u64) -> String {
    let seconds = ms / 1_000;
    let (d, h, m, s) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60, seconds % 60);
    match seconds {
        0 => format!("{ms} ms"),
        1..60 => format!("{s} s"),
        60..3_600 if s == 0 => format!("{m} m"),
        60..3_600 => format!("{m} m {s} s"),
        3_600..259_200 if m == 0 => format!("{} h", seconds / 3_600),
        3_600..259_200 => format!("{} h {m} m", seconds / 3_600),
        _ if h == 0 => format!("{d} d"),
        _ => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy { max_attempts: 5, initial_ms: 1_000, max_ms: 6_000 };

    #[test]
    fn doubles_within_jitter_bounds_and_caps() {
        let bounds: Vec<_> = (1..5)
            .map(|n| (POLICY.next_delay_ms(n, None, 0.0).unwrap(), POLICY.next_delay_ms(n, None, 0.999_999).unwrap()))
            .collect();
        assert_eq!(bounds, vec![(500, 999), (1_000, 1_999), (2_000, 3_999), (3_000, 5_999)]);
    }

    #[test]
    fn gives_up_after_max_attempts() {
        assert!(POLICY.next_delay_ms(4, None, 0.5).is_some());
        assert_eq!(POLICY.next_delay_ms(5, None, 0.5), None);
        assert_eq!(POLICY.next_delay_ms(5, Some(10), 0.5), None);
    }

    #[test]
    fn honours_retry_after_up_to_max() {
        assert_eq!(POLICY.next_delay_ms(1, Some(2_500), 0.9), Some(2_500));
        assert_eq!(POLICY.next_delay_ms(1, Some(60_000), 0.9), Some(6_000));
    }

    #[test]
    fn the_span_is_the_sum_of_every_delay() {
        // Delays after failures 1..4: 500-999, 1000-1999, 2000-3999, 3000-5999 (capped at 6 s).
        assert_eq!(POLICY.span_ms(), (6_500, 13_000));
        assert_eq!(RetryPolicy { max_attempts: 1, ..POLICY }.span_ms(), (0, 0), "one attempt: no retries");
        // The old default: ten attempts from 1 s, capped at 1 h, end after minutes.
        let old = RetryPolicy { max_attempts: 10, initial_ms: 1_000, max_ms: 3_600_000 };
        assert_eq!(old.span_ms(), (255_500, 511_000));
    }

    #[test]
    fn durations_read_as_a_person_would() {
        assert_eq!(human_duration(850), "850 ms");
        assert_eq!(human_duration(45_000), "45 s");
        assert_eq!(human_duration(255_500), "4 m 15 s");
        assert_eq!(human_duration(300_000), "5 m");
        assert_eq!(human_duration(96_075_000), "26 h 41 m");
        assert_eq!(human_duration(6 * 3_600_000), "6 h");
        assert_eq!(human_duration(192_150_000), "53 h 22 m");
        assert_eq!(human_duration(3 * 86_400_000 + 7_200_000), "3 d 2 h");
        assert_eq!(human_duration(7 * 86_400_000), "7 d");
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy { max_attempts: u32::MAX, initial_ms: u64::MAX / 2, max_ms: u64::MAX };
        assert!(policy.next_delay_ms(200, None, 0.5).is_some());
    }
}

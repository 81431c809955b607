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
    fn huge_attempt_numbers_do_not_overflow() {
        let policy = RetryPolicy { max_attempts: u32::MAX, initial_ms: u64::MAX / 2, max_ms: u64::MAX };
        assert!(policy.next_delay_ms(200, None, 0.5).is_some());
    }
}

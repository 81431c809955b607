//! Loud where it matters, never flooding: what an operator must see (a
//! sender refused for a wrong secret, an app failing its deliveries) is a
//! WARN, at most one line per key (a source, a destination) every
//! [`LoudLog::every`], the next line saying how many were left unsaid. A
//! wrong secret at a thousand requests a second is one line every few
//! seconds, not a thousand; one bad request an hour is every one of them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Lines per key at most once this often, by default.
pub const EVERY: Duration = Duration::from_secs(5);

pub struct LoudLog {
    every: Duration,
    last: Mutex<HashMap<String, Window>>,
}

struct Window {
    said_at: Instant,
    unsaid: u64,
}

impl Default for LoudLog {
    fn default() -> Self {
        LoudLog::new(EVERY)
    }
}

impl LoudLog {
    pub fn new(every: Duration) -> LoudLog {
        LoudLog { every, last: Mutex::default() }
    }

    /// Whether a line about `key` may be written now: `Some(n)`, with `n`
    /// the lines about it left unsaid since the last one, or `None` (this
    /// one is counted instead).
    pub fn admit(&self, key: &str) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        match last.get_mut(key) {
            Some(window) if now.duration_since(window.said_at) < self.every => {
                window.unsaid += 1;
                None
            }
            Some(window) => {
                let unsaid = std::mem::take(&mut window.unsaid);
                window.said_at = now;
                Some(unsaid)
            }
            None => {
                last.insert(key.to_owned(), Window { said_at: now, unsaid: 0 });
                Some(0)
            }
        }
    }
}

/// What a line says of the lines left unsaid before it: nothing when there
/// were none, else " (and 12 more like it since the last line)".
pub fn and_more(unsaid: u64) -> String {
    match unsaid {
        0 => String::new(),
        n => format!(" (and {n} more like it since the last line)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_key_per_window_and_the_rest_counted() {
        let log = LoudLog::new(Duration::from_secs(5));
        assert_eq!(log.admit("stripe"), Some(0));
        assert_eq!(log.admit("github"), Some(0), "keys are apart");
        for _ in 0..99 {
            assert_eq!(log.admit("stripe"), None);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(log.admit("stripe"), Some(99), "the next line counts what went unsaid");
        assert_eq!(log.admit("stripe"), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(log.admit("stripe"), Some(1));
    }
}

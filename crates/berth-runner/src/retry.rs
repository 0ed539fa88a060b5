//! How requests to services off this machine (the model APIs, GitHub) are retried: a few
//! times, with growing waits, and as long as the service asks when it says how long.

use std::time::Duration;

/// How overloaded, rate-limited and failed requests are retried.
#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    /// Requests in all, the first included.
    pub attempts: u32,
    /// Wait before the first retry; doubled each time, with jitter, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 6,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// How long to wait before retry number `retry` (1 for the first); a `retry-after` from
    /// the server wins, up to `max_delay`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exponential = self
            .base_delay
            .saturating_mul(1 << retry.saturating_sub(1).min(16));
        let jitter = rand::random_range(0.75..=1.25);
        let backoff = exponential.mul_f64(jitter).min(self.max_delay);
        retry_after.map_or(backoff, |asked| asked.min(self.max_delay))
    }

    /// Whether an HTTP status is worth another try.
    pub fn is_retryable(status: u16) -> bool {
        matches!(status, 408 | 409 | 429 | 500..=599)
    }
}

/// Reads `retry-after` (seconds; GitHub and Anthropic both send whole seconds).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|secs| secs.is_finite() && *secs >= 0.0)
        .map(Duration::from_secs_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_wins_over_the_backoff_but_not_past_the_cap() {
        let policy = RetryPolicy {
            attempts: 5,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
        };
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(3))),
            Duration::from_secs(3)
        );
        assert_eq!(
            policy.delay(1, Some(Duration::from_secs(300))),
            Duration::from_secs(10)
        );
        let first = policy.delay(1, None);
        assert!(first >= Duration::from_millis(75) && first <= Duration::from_millis(125));
    }
}

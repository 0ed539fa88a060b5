//! Exponential backoff with jitter for retrying infrastructure failures, so that many tasks
//! failing together do not all come back at the same moment.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(2),
            max: Duration::from_secs(300),
        }
    }
}

impl Backoff {
    /// The wait before the retry that follows attempt `attempt` (1-based): `base · 2^(attempt-1)`,
    /// capped at `max`, then scaled by a random factor between 0.5 and 1.5.
    pub fn delay_ms(&self, attempt: i64) -> i64 {
        let exponent = attempt.clamp(1, 30) as u32 - 1;
        let nominal = self.base.as_millis().saturating_mul(1u128 << exponent);
        let capped = nominal.min(self.max.as_millis()) as f64;
        (capped * rand::rng().random_range(0.5..1.5)) as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_stays_under_the_cap() {
        let backoff = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        for _ in 0..100 {
            let first = backoff.delay_ms(1);
            assert!((50..150).contains(&first), "{first}");
            let third = backoff.delay_ms(3);
            assert!((200..600).contains(&third), "{third}");
            let late = backoff.delay_ms(20);
            assert!((500..1500).contains(&late), "{late}");
        }
    }
}

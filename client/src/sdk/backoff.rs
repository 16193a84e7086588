//! Exponential reconnect backoff with jitter.

use rand::Rng;
use std::time::Duration;

#[derive(Clone, Debug)]
pub(crate) struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The next delay: uniformly in [cap/2, cap] where cap doubles per attempt up to max.
    pub fn next_delay(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.attempt.min(20)).unwrap_or(u32::MAX);
        let cap = self.base.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        jitter(cap / 2, cap)
    }

    pub fn max_delay(&self) -> Duration {
        jitter(self.max / 2, self.max)
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniformly random duration in [lo, hi].
pub(crate) fn jitter(lo: Duration, hi: Duration) -> Duration {
    if hi <= lo {
        return lo;
    }
    let span = (hi - lo).as_micros().min(u64::MAX as u128) as u64;
    lo + Duration::from_micros(rand::thread_rng().gen_range(0..=span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_to_the_cap_and_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..40 {
            let d = b.next_delay();
            assert!(d <= Duration::from_secs(2));
        }
        assert!(b.next_delay() >= Duration::from_secs(1));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}

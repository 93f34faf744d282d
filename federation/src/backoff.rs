//! Retry delays for federation delivery: exponential backoff with "full jitter".
//!
//! The ceiling for retry `attempt` (0 for the first retry) is `min(cap, base × 2^attempt)`; the
//! delay is drawn uniformly from `[0, ceiling]`. Full jitter rather than a fixed schedule so that
//! many senders that lost the same peer at the same moment do not all come back at the same
//! moment either. The schedule is a pure function of the attempt and a random source the caller
//! passes in, so the sender stays testable with a seeded generator.
//!
//! Nothing here can fail, so this module has no error type.

use std::time::Duration;

use rand::Rng;

/// An exponential backoff schedule with full jitter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first retry's delay.
    pub base: Duration,
    /// The largest delay ever returned, however many attempts have failed.
    pub cap: Duration,
}

impl Backoff {
    /// A schedule starting at `base` and doubling up to `cap`.
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self { base, cap }
    }

    /// The largest delay retry `attempt` can get: `min(cap, base × 2^attempt)`, without overflow
    /// however large `attempt` grows.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt).unwrap_or(0);
        match factor {
            0 => self.cap,
            factor => self
                .base
                .checked_mul(factor)
                .map_or(self.cap, |d| d.min(self.cap)),
        }
    }

    /// The delay before retry `attempt`: uniform in `[0, ceiling(attempt)]`, at nanosecond
    /// resolution.
    pub fn delay<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        // Ceilings beyond u64 nanoseconds (585 years) are clamped; no real cap gets there.
        let ceiling = u64::try_from(self.ceiling(attempt).as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rng.random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const SCHEDULE: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(3600));

    #[test]
    fn ceilings_double_then_cap() {
        let expected_ms = [500, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000];
        for (attempt, ms) in expected_ms.into_iter().enumerate() {
            let attempt = u32::try_from(attempt).unwrap();
            assert_eq!(SCHEDULE.ceiling(attempt), Duration::from_millis(ms));
        }
        // 500 ms × 2^13 = 4096 s > 3600 s.
        assert_eq!(SCHEDULE.ceiling(12), Duration::from_millis(2_048_000));
        assert_eq!(SCHEDULE.ceiling(13), Duration::from_secs(3600));
        for huge in [31, 32, 64, 1_000, u32::MAX] {
            assert_eq!(SCHEDULE.ceiling(huge), Duration::from_secs(3600), "{huge}");
        }
        let extreme = Backoff::new(Duration::MAX, Duration::MAX);
        assert_eq!(extreme.ceiling(5), Duration::MAX);
    }

    #[test]
    fn delays_stay_within_bounds_and_spread_out() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 0..40 {
            let ceiling = SCHEDULE.ceiling(attempt);
            let delays: Vec<Duration> = (0..200)
                .map(|_| SCHEDULE.delay(attempt, &mut rng))
                .collect();
            assert!(delays.iter().all(|d| *d <= ceiling), "attempt {attempt}");
            // Full jitter: draws land in both the lower and the upper half of [0, ceiling].
            assert!(delays.iter().any(|d| *d < ceiling / 2), "attempt {attempt}");
            assert!(delays.iter().any(|d| *d > ceiling / 2), "attempt {attempt}");
        }
        let extreme = Backoff::new(Duration::MAX, Duration::MAX);
        let _ = extreme.delay(3, &mut rng);
    }

    #[test]
    fn same_seed_same_schedule() {
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (0..10)
                .map(|a| SCHEDULE.delay(a, &mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
    }

    #[test]
    fn zero_base_never_waits() {
        let none = Backoff::new(Duration::ZERO, Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(none.delay(10, &mut rng), Duration::ZERO);
    }
}

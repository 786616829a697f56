//! Corrected exponential backoff with symmetric jitter.
//!
//! For retry `k` (`k = 0` is the first retry), with base `b`, cap `m` and
//! jitter fraction `j`:
//!
//! ```text
//! d     = min(b · 2^k, m)                  (any overflow gives m)
//! delay = clamp(d + d · j · (2u − 1), 0, m)  with u uniform in [0, 1)
//! ```
//!
//! This is the official Python SDK's `_calculate_retry_delay`. The old
//! Elixir SDK applied the jitter one-sided and with 100 %; this module is
//! the fix. With the defaults (500 ms, 10 s, 0.25) the nominal schedule is
//! 0.5, 1, 2, 4, 8, 10, 10 … s.
//!
//! ```
//! use tinkex_core::backoff::Backoff;
//! let b = Backoff::new(500, 10_000, 0.25);
//! assert_eq!(b.nominal_ms(0), 500);
//! assert_eq!(b.nominal_ms(5), 10_000);
//! assert_eq!(b.nominal_ms(u64::MAX), 10_000);
//! assert_eq!(b.delay_ms(2, 0.5), 2_000); // u = 0.5 is no jitter
//! assert_eq!(b.delay_ms(2, 0.0), 1_500); // u = 0 is the low end, −25 %
//! ```

use rand::Rng;

/// Backoff parameters, in milliseconds. Construct with [`Backoff::new`];
/// validation of user input happens in [`crate::config`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry.
    pub base_ms: u64,
    /// Upper bound of every delay, jitter included.
    pub max_ms: u64,
    /// Jitter fraction in `[0, 1]`; `0.25` means ±25 %.
    pub jitter: f64,
}

impl Backoff {
    /// A backoff with these parameters.
    pub fn new(base_ms: u64, max_ms: u64, jitter: f64) -> Backoff {
        Backoff {
            base_ms,
            max_ms,
            jitter,
        }
    }

    /// The un-jittered delay `min(base · 2^k, max)`, saturating: no
    /// attempt number overflows or panics.
    pub fn nominal_ms(&self, attempt: u64) -> u64 {
        let factor = u32::try_from(attempt)
            .ok()
            .and_then(|k| 1u64.checked_shl(k))
            .filter(|_| attempt < 64);
        match factor.and_then(|f| self.base_ms.checked_mul(f)) {
            Some(d) => d.min(self.max_ms),
            None => self.max_ms,
        }
    }

    /// The jittered delay for retry `attempt` with the uniform draw `u` in
    /// `[0, 1)` (values outside are clamped into it), rounded to whole
    /// milliseconds and clamped to `[0, max]`.
    pub fn delay_ms(&self, attempt: u64, u: f64) -> u64 {
        let u = if u.is_nan() { 0.5 } else { u.clamp(0.0, 1.0) };
        let d = self.nominal_ms(attempt) as f64;
        let jittered = d + d * self.jitter * (2.0 * u - 1.0);
        let max = self.max_ms as f64;
        // The float cap can round above a large integer cap; clamp again.
        (jittered.clamp(0.0, max).round() as u64).min(self.max_ms)
    }

    /// The jittered delay with a draw from `rng`.
    pub fn sample_ms<R: Rng + ?Sized>(&self, attempt: u64, rng: &mut R) -> u64 {
        self.delay_ms(attempt, rng.random::<f64>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn defaults() -> Backoff {
        Backoff::new(500, 10_000, 0.25)
    }

    #[test]
    fn default_schedule() {
        let b = defaults();
        let nominal: Vec<u64> = (0..7).map(|k| b.nominal_ms(k)).collect();
        assert_eq!(nominal, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
        // Range of the 5th retry: [6, 10] s, upper end clamped to the cap.
        assert_eq!(b.delay_ms(4, 0.0), 6000);
        assert_eq!(b.delay_ms(4, 0.999_999), 10_000);
    }

    #[test]
    fn extremes_do_not_panic() {
        let b = Backoff::new(u64::MAX, u64::MAX, 1.0);
        for k in [0, 1, 63, 64, 65, u32::MAX as u64, u64::MAX] {
            assert!(b.delay_ms(k, 0.99) > 0);
        }
        let b = Backoff::new(u64::MAX / 3, u64::MAX / 2, 1.0);
        assert_eq!(b.delay_ms(u64::MAX, 0.999), u64::MAX / 2);
        let b = Backoff::new(1, 10, 0.0);
        assert_eq!(b.nominal_ms(63), 10);
        assert_eq!(b.nominal_ms(64), 10);
        assert_eq!(b.nominal_ms(u64::MAX), 10);
        assert_eq!(Backoff::new(0, 0, 0.25).delay_ms(3, 0.7), 0);
    }

    #[test]
    fn nan_and_out_of_range_draws_are_clamped() {
        let b = defaults();
        assert_eq!(b.delay_ms(0, f64::NAN), 500);
        assert_eq!(b.delay_ms(0, -3.0), 375);
        assert_eq!(b.delay_ms(0, 7.0), 625);
    }

    /// Over 200k draws the jitter of an uncapped delay is uniform on ±25 %:
    /// mean 0, standard deviation 0.25/√3, and each tenth of the range
    /// holds a tenth of the draws.
    #[test]
    fn jitter_is_uniform() {
        let b = Backoff::new(100_000, u64::MAX, 0.25);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let n = 200_000;
        let mut sum = 0.0;
        let mut sum_sq = 0.0;
        let mut bins = [0usize; 10];
        for _ in 0..n {
            let rel = b.sample_ms(0, &mut rng) as f64 / 100_000.0 - 1.0;
            assert!((-0.25..=0.25).contains(&rel), "{rel}");
            sum += rel;
            sum_sq += rel * rel;
            let bin = (((rel + 0.25) / 0.05) as usize).min(9);
            bins[bin] += 1;
        }
        let mean = sum / n as f64;
        let sd = (sum_sq / n as f64 - mean * mean).sqrt();
        assert!(mean.abs() < 0.002, "mean {mean}");
        assert!((sd - 0.25 / 3f64.sqrt()).abs() < 0.002, "sd {sd}");
        for c in bins {
            let share = c as f64 / n as f64;
            assert!((share - 0.1).abs() < 0.005, "bins {bins:?}");
        }
    }

    proptest! {
        #[test]
        fn always_within_zero_and_max(base in 0u64..=u64::MAX, max in 0u64..=u64::MAX,
                                      jitter in 0.0f64..=1.0, k in 0u64..=u64::MAX, u in 0.0f64..1.0) {
            let b = Backoff::new(base, max, jitter);
            prop_assert!(b.delay_ms(k, u) <= max);
        }

        #[test]
        fn within_jitter_band(base in 1u64..1_000_000, max in 1u64..100_000_000,
                              jitter in 0.0f64..=1.0, k in 0u64..80, u in 0.0f64..1.0) {
            let b = Backoff::new(base, max, jitter);
            let d = b.nominal_ms(k) as f64;
            let lo = (d * (1.0 - jitter)).max(0.0);
            let hi = (d * (1.0 + jitter)).min(max as f64);
            let got = b.delay_ms(k, u) as f64;
            prop_assert!(got >= lo.floor() && got <= hi.ceil(), "{got} not in [{lo}, {hi}]");
        }

        #[test]
        fn zero_jitter_is_exact(base in 0u64..1_000_000_000, max in 0u64..1_000_000_000,
                                k in 0u64..=u64::MAX, u in 0.0f64..1.0) {
            let b = Backoff::new(base, max, 0.0);
            prop_assert_eq!(b.delay_ms(k, u), b.nominal_ms(k));
        }
    }
}

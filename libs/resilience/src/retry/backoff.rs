//! How long to wait before a retry.
//!
//! Curves (`kind`), for retry `n` (1 = the first retry):
//!
//! - `none`: retry at once (profile b: the naive retries that cause storms);
//! - `fixed`: `base`;
//! - `exponential`: `base × 2^(n-1)`, capped at `max`.
//!
//! Jitter:
//!
//! - `none`: the curve as is. Every client that failed at the same moment retries at the
//!   same moment — the waves jitter exists to break up;
//! - `full`: uniform in `[0, curve(n)]` (AWS "Full Jitter": the least total work and the
//!   flattest arrival rate);
//! - `decorrelated`: `min(max, uniform[base, prev × 3])` with `prev` starting at `base` (AWS
//!   "Decorrelated Jitter"). It has its own growth, so it replaces the curve of `fixed` and
//!   `exponential` alike (with `none` there is no wait at all).
//!
//! The random source is a small seedable RNG behind a mutex, shared by every request of a
//! layer: [`Backoff::seeded`] makes the draws reproducible (tests check ranges over many
//! draws; a seeded experiment run replays the same delays for the same sequence of retries).

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use super::{BackoffConfig, BackoffKind, Jitter};

/// The delay policy of one layer: curve, cap, jitter and the RNG for it.
#[derive(Clone)]
pub struct Backoff {
    kind: BackoffKind,
    base: Duration,
    max: Duration,
    jitter: Jitter,
    rng: Arc<Mutex<SmallRng>>,
}

impl Backoff {
    /// A backoff whose jitter is seeded from the OS.
    pub fn new(config: &BackoffConfig) -> Self {
        Self::with_rng(config, rand::make_rng())
    }

    /// A backoff whose jitter draws are reproducible.
    pub fn seeded(config: &BackoffConfig, seed: u64) -> Self {
        Self::with_rng(config, SmallRng::seed_from_u64(seed))
    }

    fn with_rng(config: &BackoffConfig, rng: SmallRng) -> Self {
        Self {
            kind: config.kind,
            base: Duration::from_millis(config.base_ms),
            max: Duration::from_millis(config.max_ms.max(config.base_ms)),
            jitter: config.jitter,
            rng: Arc::new(Mutex::new(rng)),
        }
    }

    /// The delay before retry number `retry` (1 = the first retry). `prev` is the delay
    /// before the previous retry of the same call (`None` for the first), which decorrelated
    /// jitter grows from.
    pub fn delay(&self, retry: u32, prev: Option<Duration>) -> Duration {
        let curve = match self.kind {
            BackoffKind::None => return Duration::ZERO,
            BackoffKind::Fixed => self.base,
            BackoffKind::Exponential if self.base.is_zero() => Duration::ZERO,
            BackoffKind::Exponential => 2u32
                .checked_pow(retry.saturating_sub(1))
                .and_then(|factor| self.base.checked_mul(factor))
                // Past u32 doublings (or Duration's range) the curve is far above any cap.
                .map_or(self.max, |d| d.min(self.max)),
        };
        match self.jitter {
            Jitter::None => curve,
            Jitter::Full => self.uniform(Duration::ZERO, curve),
            Jitter::Decorrelated => {
                let prev = prev.unwrap_or(self.base).max(self.base);
                let high = prev.saturating_mul(3).min(self.max).max(self.base);
                self.uniform(self.base, high)
            }
        }
    }

    /// Uniform in `[low, high]`, at nanosecond resolution.
    fn uniform(&self, low: Duration, high: Duration) -> Duration {
        let (low, high) = (nanos(low), nanos(high));
        if high <= low {
            return Duration::from_nanos(low);
        }
        let mut rng = self
            .rng
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        Duration::from_nanos(rng.random_range(low..=high))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backoff")
            .field("kind", &self.kind)
            .field("base", &self.base)
            .field("max", &self.max)
            .field("jitter", &self.jitter)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn backoff(kind: BackoffKind, jitter: Jitter, base_ms: u64, max_ms: u64) -> Backoff {
        Backoff::seeded(
            &BackoffConfig {
                kind,
                base_ms,
                max_ms,
                jitter,
            },
            42,
        )
    }

    #[test]
    fn none_never_waits() {
        let b = backoff(BackoffKind::None, Jitter::Full, 100, 2000);
        for n in 1..5 {
            assert_eq!(b.delay(n, None), Duration::ZERO);
        }
    }

    #[test]
    fn fixed_waits_base() {
        let b = backoff(BackoffKind::Fixed, Jitter::None, 100, 2000);
        for n in 1..5 {
            assert_eq!(b.delay(n, None), 100 * MS);
        }
    }

    #[test]
    fn exponential_doubles_up_to_max() {
        let b = backoff(BackoffKind::Exponential, Jitter::None, 100, 1000);
        let delays: Vec<_> = (1..=6).map(|n| b.delay(n, None)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1000, 1000].map(|ms| ms * MS).to_vec()
        );
        assert_eq!(b.delay(u32::MAX, None), 1000 * MS, "no overflow");
        assert_eq!(b.delay(40, None), 1000 * MS);
        let huge = backoff(
            BackoffKind::Exponential,
            Jitter::None,
            u64::MAX / 4,
            u64::MAX,
        );
        assert!(huge.delay(8, None) >= Duration::from_millis(u64::MAX / 4));
    }

    #[test]
    fn full_jitter_spreads_over_zero_to_the_curve() {
        let b = backoff(BackoffKind::Exponential, Jitter::Full, 100, 1000);
        for n in 1..=5 {
            let cap = (100 * MS * 2u32.pow(n - 1)).min(1000 * MS);
            let draws: Vec<_> = (0..2000).map(|_| b.delay(n, None)).collect();
            assert!(draws.iter().all(|d| *d <= cap), "retry {n}: above {cap:?}");
            // Spread: some draws in the lowest and in the highest tenth of the range.
            assert!(draws.iter().any(|d| *d < cap / 10), "retry {n}: none low");
            assert!(
                draws.iter().any(|d| *d > cap * 9 / 10),
                "retry {n}: none high"
            );
            let mean = draws.iter().sum::<Duration>() / draws.len() as u32;
            assert!(
                mean > cap * 4 / 10 && mean < cap * 6 / 10,
                "retry {n}: mean {mean:?}"
            );
        }
        let fixed = backoff(BackoffKind::Fixed, Jitter::Full, 100, 100);
        assert!((0..1000).all(|_| fixed.delay(3, None) <= 100 * MS));
    }

    #[test]
    fn decorrelated_jitter_stays_between_base_and_three_times_prev_capped() {
        let b = backoff(BackoffKind::Exponential, Jitter::Decorrelated, 100, 1000);
        let mut prev = None;
        let mut seen_growth = false;
        for n in 1..=2000 {
            let d = b.delay(n % 10 + 1, prev);
            let high = (prev.unwrap_or(100 * MS) * 3).min(1000 * MS);
            assert!(d >= 100 * MS && d <= high, "{d:?} not in [100ms, {high:?}]");
            seen_growth |= d > 300 * MS;
            prev = if n % 10 == 0 { None } else { Some(d) };
        }
        assert!(seen_growth, "decorrelated delays grow beyond 3 × base");
        // The first draw is in [base, 3 × base].
        let firsts: Vec<_> = (0..1000).map(|_| b.delay(1, None)).collect();
        assert!(firsts.iter().all(|d| *d >= 100 * MS && *d <= 300 * MS));
        assert!(firsts.iter().any(|d| *d < 120 * MS) && firsts.iter().any(|d| *d > 280 * MS));
    }

    #[test]
    fn same_seed_same_delays() {
        let draws = |seed| {
            let b = Backoff::seeded(
                &BackoffConfig {
                    kind: BackoffKind::Exponential,
                    jitter: Jitter::Full,
                    ..BackoffConfig::default()
                },
                seed,
            );
            (1..20)
                .map(|n| b.delay(n % 5 + 1, None))
                .collect::<Vec<_>>()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }
}

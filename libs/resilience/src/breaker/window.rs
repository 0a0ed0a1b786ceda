//! The rolling window: `buckets` buckets of `window / buckets` each, in a ring, updated
//! with atomics so that concurrent calls record their outcomes without a lock.
//!
//! Time is counted in bucket *epochs* (`now / bucket_width`); a bucket remembers the epoch
//! its counts belong to. The window is the current epoch and the `buckets - 1` before it; a
//! bucket whose epoch is older is stale and counts for nothing, and the first call of a new
//! epoch that lands on it resets it. That reset is the only moment writers wait for each
//! other: the resetting writer marks the bucket [`LOCKED`], zeroes it and publishes the new
//! epoch, a few instructions during which another writer of the same bucket spins.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A bucket that no call has written since creation or the last reset.
const EMPTY: u64 = u64::MAX - 1;
/// A bucket being reset by one writer.
const LOCKED: u64 = u64::MAX;

/// What the window holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Totals {
    pub calls: u64,
    pub failures: u64,
    pub slow: u64,
}

/// On a cache line of its own, so that writers of the current bucket do not slow readers
/// of the others.
#[derive(Debug)]
#[repr(align(64))]
struct Bucket {
    epoch: AtomicU64,
    calls: AtomicU32,
    failures: AtomicU32,
    slow: AtomicU32,
}

impl Bucket {
    fn empty() -> Self {
        Bucket {
            epoch: AtomicU64::new(EMPTY),
            calls: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            slow: AtomicU32::new(0),
        }
    }

    fn add(&self, failed: bool, slow: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        if slow {
            self.slow.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
pub(super) struct Window {
    buckets: Box<[Bucket]>,
    /// Width of one bucket in nanoseconds (>= 1).
    bucket_nanos: u64,
}

impl Window {
    pub fn new(window_ms: u64, buckets: u32) -> Self {
        let buckets = buckets.max(1);
        let window_nanos = window_ms.saturating_mul(1_000_000);
        Window {
            buckets: (0..buckets).map(|_| Bucket::empty()).collect(),
            bucket_nanos: (window_nanos / u64::from(buckets)).max(1),
        }
    }

    fn len(&self) -> u64 {
        self.buckets.len() as u64
    }

    fn bucket(&self, epoch: u64) -> &Bucket {
        &self.buckets[(epoch % self.len()) as usize]
    }

    /// Whether a bucket of `epoch` is inside the window at `now_epoch`.
    fn in_window(&self, epoch: u64, now_epoch: u64) -> bool {
        epoch <= now_epoch && now_epoch - epoch < self.len()
    }

    /// Records one call that ended at `now_nanos`.
    pub fn record(&self, now_nanos: u64, failed: bool, slow: bool) {
        let now = now_nanos / self.bucket_nanos;
        let bucket = self.bucket(now);
        loop {
            let epoch = bucket.epoch.load(Ordering::Acquire);
            if epoch == now {
                bucket.add(failed, slow);
                return;
            }
            if epoch == LOCKED {
                // Another writer is resetting this bucket for a new epoch: a few stores.
                std::hint::spin_loop();
                continue;
            }
            if epoch != EMPTY && epoch > now {
                // The slot already holds a later epoch (this call's clock reading is a whole
                // window older than another's): the call is outside the window already.
                return;
            }
            // Stale (or empty): claim it, zero it, publish the new epoch with our call in it.
            if bucket
                .epoch
                .compare_exchange(epoch, LOCKED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                bucket.calls.store(1, Ordering::Relaxed);
                bucket.failures.store(u32::from(failed), Ordering::Relaxed);
                bucket.slow.store(u32::from(slow), Ordering::Relaxed);
                bucket.epoch.store(now, Ordering::Release);
                return;
            }
        }
    }

    /// The calls, failures and slow calls in the window at `now_nanos`.
    pub fn totals(&self, now_nanos: u64) -> Totals {
        let now = now_nanos / self.bucket_nanos;
        let mut totals = Totals::default();
        for bucket in self.buckets.iter() {
            let epoch = bucket.epoch.load(Ordering::Acquire);
            if !self.in_window(epoch, now) {
                continue;
            }
            let calls = bucket.calls.load(Ordering::Relaxed);
            let failures = bucket.failures.load(Ordering::Relaxed);
            let slow = bucket.slow.load(Ordering::Relaxed);
            // Reset under our feet: its counts now belong to a newer epoch, read it as empty
            // (the rest of the window is still exact).
            if bucket.epoch.load(Ordering::Acquire) != epoch {
                continue;
            }
            totals.calls += u64::from(calls);
            totals.failures += u64::from(failures);
            totals.slow += u64::from(slow);
        }
        totals
    }

    /// Empties the window (the breaker closed: its history no longer says anything).
    pub fn reset(&self) {
        for bucket in self.buckets.iter() {
            // A writer resetting the bucket concurrently publishes a bucket holding just its
            // own call, which belongs to the new window anyway.
            bucket.epoch.store(EMPTY, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn counts_within_the_window_and_ages_out_old_buckets() {
        // 1 s in 4 buckets of 250 ms.
        let w = Window::new(1000, 4);
        w.record(0, true, false);
        w.record(100 * MS, false, true);
        w.record(300 * MS, true, true);
        let t = w.totals(300 * MS);
        assert_eq!((t.calls, t.failures, t.slow), (3, 2, 2));
        // At 999 ms the window still spans buckets 0..=3.
        assert_eq!(w.totals(999 * MS).calls, 3);
        // At 1000 ms bucket 0 (0..250 ms) left the window.
        let t = w.totals(1000 * MS);
        assert_eq!((t.calls, t.failures, t.slow), (1, 1, 1));
        // A call at 1000 ms reuses bucket 0's slot and does not inherit its counts.
        w.record(1000 * MS, false, false);
        let t = w.totals(1000 * MS);
        assert_eq!((t.calls, t.failures, t.slow), (2, 1, 1));
        // Long after, nothing is left.
        assert_eq!(w.totals(10_000 * MS), Totals::default());
    }

    #[test]
    fn a_stale_writer_does_not_pollute_a_newer_bucket() {
        let w = Window::new(1000, 4);
        w.record(1000 * MS, false, false);
        // A clock reading a whole window older maps to the same slot: dropped.
        w.record(0, true, true);
        let t = w.totals(1000 * MS);
        assert_eq!((t.calls, t.failures, t.slow), (1, 0, 0));
    }

    #[test]
    fn reset_empties_it() {
        let w = Window::new(1000, 4);
        w.record(0, true, false);
        w.reset();
        assert_eq!(w.totals(0), Totals::default());
        w.record(0, false, false);
        assert_eq!(w.totals(0).calls, 1);
    }

    #[test]
    fn concurrent_writers_lose_nothing() {
        let w = std::sync::Arc::new(Window::new(1000, 4));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        // Two buckets; the first writes of each race to claim it.
                        w.record((i % 2) * 250 * MS, (i + t) % 2 == 0, i % 5 == 0);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let t = w.totals(250 * MS);
        assert_eq!((t.calls, t.failures, t.slow), (80_000, 40_000, 16_000));
    }
}

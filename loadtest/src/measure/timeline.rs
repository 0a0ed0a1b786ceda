//! The per-second timeline of a trial, and what is read from it before the fault: the
//! baseline success rate.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::ratio;

/// One one-second window of the load generator's timeline: logical requests whose
/// *intended* send time fell in `[second, second + 1)` (seconds since the measured phase
/// began, the clock fault times use) and how many of them succeeded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub second: u32,
    pub issued: u64,
    pub succeeded: u64,
    /// p95 latency of this window as the load generator reports it (its
    /// `load::report::SecondStats` carries the same four fields); `None` without answers.
    pub p95_ms: Option<f64>,
}

impl Window {
    /// `succeeded / issued`, `None` for a window with nothing issued.
    pub fn success_rate(&self) -> Option<f64> {
        ratio(self.succeeded as f64, self.issued as f64)
    }
}

/// Consecutive windows that must all meet the threshold.
pub const RECOVERY_WINDOWS: u32 = 5;
/// Share of the pre-fault baseline success rate a window must reach.
pub const RECOVERY_FRACTION: f64 = 0.95;

/// Success rate over the pre-fault seconds: the windows that end at or before
/// `fault_start_s`, pooled (`Σ succeeded / Σ issued`). `None` when nothing was issued.
pub fn baseline_rate(timeline: &[Window], fault_start_s: f64) -> Option<f64> {
    let (issued, succeeded) = timeline
        .iter()
        .filter(|w| f64::from(w.second) + 1.0 <= fault_start_s)
        .fold((0u64, 0u64), |(i, s), w| (i + w.issued, s + w.succeeded));
    ratio(succeeded as f64, issued as f64)
}

/// Mean over trials, per second, of `f` of that second's window, from each trial's timeline
/// (trials without a value for a second are left out of its mean): `(second, mean)`.
pub fn mean_timeline<'a>(
    timelines: impl IntoIterator<Item = &'a [Window]>,
    f: impl Fn(&Window) -> Option<f64>,
) -> Vec<(f64, f64)> {
    let mut by_second: BTreeMap<u32, (f64, usize)> = BTreeMap::new();
    for w in timelines.into_iter().flatten() {
        if let Some(v) = f(w).filter(|v| v.is_finite()) {
            let e = by_second.entry(w.second).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
    }
    by_second
        .into_iter()
        .map(|(s, (total, n))| (f64::from(s), total / n as f64))
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// Windows of 100 requests each, `succeeded[i]` of them OK, from second 0.
    pub(in crate::measure) fn timeline(succeeded: &[u64]) -> Vec<Window> {
        succeeded
            .iter()
            .enumerate()
            .map(|(i, &s)| Window {
                second: i as u32,
                issued: 100,
                succeeded: s,
                p95_ms: Some(10.0),
            })
            .collect()
    }

    #[test]
    fn baseline_pools_the_pre_fault_windows() {
        // Seconds 0..3 are before a fault starting at 3.0: (90 + 100 + 80) / 300.
        let t = timeline(&[90, 100, 80, 0, 0]);
        assert_eq!(baseline_rate(&t, 3.0), Some(0.9));
        // A fault starting mid-second excludes the window it starts in.
        assert_eq!(baseline_rate(&t, 2.5), Some(0.95));
        assert_eq!(baseline_rate(&t, 0.0), None);
        assert_eq!(baseline_rate(&[], 10.0), None);
    }
}

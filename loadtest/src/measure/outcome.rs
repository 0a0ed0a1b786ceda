//! How a run came through a trigger (a fault in force for a while, the offered load
//! unchanged): the four outcomes the metastability sweep maps, read from the per-second
//! timeline.
//!
//! - **stable**: no dip — every second from the trigger's start to the end of the run kept
//!   a success rate of at least [`RECOVERY_FRACTION`] of the pre-trigger baseline.
//! - **recovered** (with its recovery time): the MTTR definition of [`recovery`] holds
//!   within the run: five healthy seconds in a row, starting after the trigger ended.
//! - **metastable**: `hold` seconds after the trigger ended, and through to the end of the
//!   run, every second's goodput is below [`METASTABLE_GOODPUT`] of the baseline goodput —
//!   the trigger is gone, the offered load is what it was, and the system stays down: what
//!   keeps it down is its own behaviour (retries, queues of abandoned work).
//! - **did not recover**: neither — it dipped, did not recover within the run, but did not
//!   stay collapsed either (partial service, or recovering too late to show five healthy
//!   seconds).

use std::fmt;

use serde::{Deserialize, Serialize};

use super::recovery::{Recovery, recovery};
use super::timeline::{RECOVERY_FRACTION, Window, baseline_rate};

/// A second's goodput below this share of the baseline goodput counts as collapsed.
pub const METASTABLE_GOODPUT: f64 = 0.5;

/// How a run came through its trigger.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    Stable,
    Recovered { seconds: f64 },
    Metastable,
    DidNotRecover,
}

impl Outcome {
    /// A short label for tables and maps.
    pub fn label(&self) -> String {
        match self {
            Outcome::Stable => "stable".into(),
            Outcome::Recovered { seconds } => format!("recovered {seconds:.0} s"),
            Outcome::Metastable => "METASTABLE".into(),
            Outcome::DidNotRecover => "did not recover".into(),
        }
    }

    /// The class without its time: `stable`, `recovered`, `metastable`, `did not recover`.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Stable => "stable",
            Outcome::Recovered { .. } => "recovered",
            Outcome::Metastable => "metastable",
            Outcome::DidNotRecover => "did not recover",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// Where a trigger sits in a run's timeline (seconds of the measured phase).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TriggerWindow {
    pub start_s: f64,
    pub end_s: f64,
    /// The end of the run: no window at or after it counts.
    pub run_end_s: f64,
    /// Seconds after the trigger's end from which a collapse counts as metastable.
    pub hold_s: f64,
}

/// The outcome of a run, or `None` when there is no baseline (nothing issued before the
/// trigger) to compare with.
pub fn classify(timeline: &[Window], w: TriggerWindow) -> Option<Outcome> {
    let baseline = baseline_rate(timeline, w.start_s)?;
    let before: Vec<&Window> = timeline
        .iter()
        .filter(|x| f64::from(x.second) + 1.0 <= w.start_s)
        .collect();
    let baseline_goodput =
        before.iter().map(|x| x.succeeded as f64).sum::<f64>() / before.len() as f64;
    let after_start: Vec<&Window> = timeline
        .iter()
        .filter(|x| f64::from(x.second) >= w.start_s.floor() && in_run(x, w.run_end_s))
        .collect();
    let healthy = |x: &Window| {
        x.success_rate()
            .is_some_and(|r| r >= RECOVERY_FRACTION * baseline - 1e-9)
    };
    if after_start.iter().all(|x| healthy(x)) {
        return Some(Outcome::Stable);
    }
    if let Recovery::Recovered { seconds } = recovery(timeline, w.end_s, baseline, w.run_end_s) {
        return Some(Outcome::Recovered { seconds });
    }
    let held: Vec<&Window> = timeline
        .iter()
        .filter(|x| f64::from(x.second) >= w.end_s + w.hold_s && in_run(x, w.run_end_s))
        .collect();
    let collapsed = |x: &&Window| (x.succeeded as f64) < METASTABLE_GOODPUT * baseline_goodput;
    if !held.is_empty() && held.iter().all(collapsed) {
        return Some(Outcome::Metastable);
    }
    Some(Outcome::DidNotRecover)
}

/// Whether a window lies wholly within the run.
fn in_run(x: &Window, run_end_s: f64) -> bool {
    f64::from(x.second) + 1.0 <= run_end_s + 1e-9
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::timeline::tests::timeline;

    /// Trigger from 3 s to 6 s of a 20 s run, metastable if still down from 6 + 8 = 14 s.
    const W: TriggerWindow = TriggerWindow {
        start_s: 3.0,
        end_s: 6.0,
        run_end_s: 20.0,
        hold_s: 8.0,
    };

    #[test]
    fn no_dip_is_stable() {
        let t = timeline(&[100; 20]);
        assert_eq!(classify(&t, W), Some(Outcome::Stable));
        // Within 95 % of the baseline is no dip.
        let mut s = [100; 20];
        s[4] = 96;
        assert_eq!(classify(&timeline(&s), W), Some(Outcome::Stable));
    }

    #[test]
    fn a_dip_that_ends_is_recovered_with_its_time() {
        // Down during the trigger and 2 s after it, healthy from second 8 on.
        let mut s = [100; 20];
        for x in &mut s[3..8] {
            *x = 10;
        }
        assert_eq!(
            classify(&timeline(&s), W),
            Some(Outcome::Recovered { seconds: 2.0 })
        );
    }

    #[test]
    fn a_collapse_that_outlives_the_trigger_is_metastable() {
        // Goodput near zero from the trigger to the end, offered load unchanged.
        let mut s = [100; 20];
        for x in &mut s[3..] {
            *x = 3;
        }
        assert_eq!(classify(&timeline(&s), W), Some(Outcome::Metastable));
        // One second above half the baseline after the hold breaks "stays down".
        s[16] = 60;
        assert_eq!(classify(&timeline(&s), W), Some(Outcome::DidNotRecover));
    }

    #[test]
    fn partial_service_or_late_recovery_did_not_recover() {
        // Stuck at 70 %: never healthy, never collapsed.
        let mut s = [100; 20];
        for x in &mut s[3..] {
            *x = 70;
        }
        assert_eq!(classify(&timeline(&s), W), Some(Outcome::DidNotRecover));
        // Collapsed, then healthy from second 17: only 3 healthy seconds before the end.
        let mut s = [100; 20];
        for x in &mut s[3..17] {
            *x = 0;
        }
        assert_eq!(classify(&timeline(&s), W), Some(Outcome::DidNotRecover));
    }

    #[test]
    fn no_baseline_no_outcome() {
        let mut t = timeline(&[100; 20]);
        for x in &mut t[..3] {
            x.issued = 0;
            x.succeeded = 0;
        }
        assert_eq!(classify(&t, W), None);
    }
}

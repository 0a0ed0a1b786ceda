//! Recovery time after the fault ends (MTTR), or "did not recover", from the timeline.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::interval::{Interval, ci95};
use super::timeline::{RECOVERY_FRACTION, RECOVERY_WINDOWS, Window};

/// How a trial came back after the fault ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Recovery {
    /// Seconds from the fault's end to the start of the first healthy run.
    Recovered { seconds: f64 },
    /// No healthy run within the recovery phase: an outcome of its own, never a number.
    DidNotRecover,
}

/// How [`Recovery::DidNotRecover`] is written in results and reports.
pub const DID_NOT_RECOVER: &str = "did not recover";

impl Recovery {
    pub fn seconds(&self) -> Option<f64> {
        match self {
            Recovery::Recovered { seconds } => Some(*seconds),
            Recovery::DidNotRecover => None,
        }
    }
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::Recovered { seconds } => write!(f, "{seconds} s"),
            Recovery::DidNotRecover => f.write_str(DID_NOT_RECOVER),
        }
    }
}

/// Serialized as the number of seconds, or as the string `"did not recover"`.
impl Serialize for Recovery {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Recovery::Recovered { seconds } => serializer.serialize_f64(*seconds),
            Recovery::DidNotRecover => serializer.serialize_str(DID_NOT_RECOVER),
        }
    }
}

impl<'de> Deserialize<'de> for Recovery {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Seconds(f64),
            Text(String),
        }
        match Repr::deserialize(deserializer)? {
            Repr::Seconds(seconds) => Ok(Recovery::Recovered { seconds }),
            Repr::Text(t) if t == DID_NOT_RECOVER => Ok(Recovery::DidNotRecover),
            Repr::Text(t) => Err(serde::de::Error::custom(format!(
                "recovery must be a number of seconds or {DID_NOT_RECOVER:?}, not {t:?}"
            ))),
        }
    }
}

/// Recovery time (MTTR): from `fault_end_s` to the START of the first run of
/// [`RECOVERY_WINDOWS`] consecutive one-second windows whose success rate is at least
/// [`RECOVERY_FRACTION`] × `baseline_rate`.
///
/// - Only windows that start at or after the fault's end count (a run that began during
///   the fault does not), and the whole run must lie within the recovery phase: its last
///   window must end by `recovery_end_s`. Otherwise [`Recovery::DidNotRecover`].
/// - A window with nothing issued, or missing from the timeline, is not healthy: there is
///   no evidence the system served anyone (with an open-loop generator it means the
///   generator itself stalled), so it breaks the run.
/// - The comparison allows 1e-9 of floating-point slack, so a window exactly at the
///   threshold counts.
pub fn recovery(
    timeline: &[Window],
    fault_end_s: f64,
    baseline_rate: f64,
    recovery_end_s: f64,
) -> Recovery {
    let threshold = RECOVERY_FRACTION * baseline_rate;
    let healthy: BTreeMap<u32, bool> = timeline
        .iter()
        .map(|w| {
            let ok = w.success_rate().is_some_and(|r| r >= threshold - 1e-9);
            (w.second, ok)
        })
        .collect();
    // Windows past the timeline's last second are missing, hence unhealthy.
    let Some(&last) = healthy.keys().next_back() else {
        return Recovery::DidNotRecover;
    };
    let mut start = fault_end_s.max(0.0).ceil() as u32;
    while start + RECOVERY_WINDOWS - 1 <= last
        && f64::from(start + RECOVERY_WINDOWS) <= recovery_end_s
    {
        match (start..start + RECOVERY_WINDOWS).find(|s| !healthy.get(s).copied().unwrap_or(false))
        {
            // Every window of the run is healthy.
            None => {
                return Recovery::Recovered {
                    seconds: f64::from(start) - fault_end_s,
                };
            }
            // No run can contain the unhealthy window: restart just after it.
            Some(bad) => start = bad + 1,
        }
    }
    Recovery::DidNotRecover
}

/// Recovery over a cell's trials.
pub enum RecoverySummary {
    /// No trial had a fault end to recover from.
    NotApplicable,
    /// Some trials did not recover.
    DidNotRecover {
        failed: usize,
        of: usize,
    },
    Recovered(Interval),
}

impl RecoverySummary {
    /// From each trial's outcome (`None`: the trial had no fault end to recover from).
    pub fn of(outcomes: impl IntoIterator<Item = Option<Recovery>>) -> RecoverySummary {
        let outcomes: Vec<Recovery> = outcomes.into_iter().flatten().collect();
        let failed = outcomes
            .iter()
            .filter(|r| matches!(r, Recovery::DidNotRecover))
            .count();
        if outcomes.is_empty() {
            return RecoverySummary::NotApplicable;
        }
        if failed > 0 {
            return RecoverySummary::DidNotRecover {
                failed,
                of: outcomes.len(),
            };
        }
        let seconds: Vec<f64> = outcomes.iter().filter_map(Recovery::seconds).collect();
        match ci95(&seconds) {
            Some(i) => RecoverySummary::Recovered(i),
            None => RecoverySummary::NotApplicable,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::timeline::tests::timeline;

    #[test]
    fn mttr_is_fault_end_to_start_of_first_five_healthy_windows() {
        // Baseline 1.0, threshold 0.95. Fault ends at 10. Seconds 10..12 bad, 12 good,
        // 13 bad (breaks that run), then 14..=18 all >= 95: MTTR = 14 − 10 = 4 s.
        let mut ok = vec![100; 10];
        ok.extend([0, 50, 99, 94, 95, 100, 96, 97, 98, 20]);
        let t = timeline(&ok);
        assert_eq!(
            recovery(&t, 10.0, 1.0, 20.0),
            Recovery::Recovered { seconds: 4.0 }
        );
        // Threshold is relative to the baseline: with baseline 0.9 (threshold 0.855) the
        // 94 at second 13 is healthy, so the run starts at 12.
        assert_eq!(
            recovery(&t, 10.0, 0.9, 20.0),
            Recovery::Recovered { seconds: 2.0 }
        );
        // Fault ending mid-second: the run may only start at 12 or later; 11.5 -> 14 = 2.5.
        assert_eq!(
            recovery(&t, 11.5, 1.0, 20.0),
            Recovery::Recovered { seconds: 2.5 }
        );
        // Healthy right at the fault's end: 0 s.
        assert_eq!(
            recovery(&t, 14.0, 1.0, 20.0),
            Recovery::Recovered { seconds: 0.0 }
        );
    }

    #[test]
    fn did_not_recover_when_no_run_fits_the_recovery_phase() {
        let mut ok = vec![100; 10];
        ok.extend([0, 50, 99, 94, 95, 100, 96, 97, 98, 20]);
        let t = timeline(&ok);
        // The run 14..=18 ends at 19: a recovery phase ending at 18.9 cannot hold it.
        assert_eq!(recovery(&t, 10.0, 1.0, 18.9), Recovery::DidNotRecover);
        assert_eq!(
            recovery(&t, 10.0, 1.0, 19.0),
            Recovery::Recovered { seconds: 4.0 }
        );
        // Healthy windows before the fault's end do not count.
        assert_eq!(
            recovery(&timeline(&[100; 10]), 10.0, 1.0, 30.0),
            Recovery::DidNotRecover
        );
    }

    #[test]
    fn empty_or_missing_windows_break_a_run() {
        let mut t = timeline(&[100; 20]);
        // Second 12 issued nothing; second 15 is missing from the timeline.
        t[12].issued = 0;
        t[12].succeeded = 0;
        t.retain(|w| w.second != 15);
        // Runs from 10 and 13 are broken; 16..=19 is only 4 long; the timeline ends at 20.
        assert_eq!(recovery(&t, 10.0, 1.0, 20.0), Recovery::DidNotRecover);
        t.push(Window {
            second: 20,
            issued: 5,
            succeeded: 5,
            p95_ms: None,
        });
        assert_eq!(
            recovery(&t, 10.0, 1.0, 25.0),
            Recovery::Recovered { seconds: 6.0 }
        );
    }

    #[test]
    fn recovery_serializes_as_seconds_or_did_not_recover() {
        let both = vec![
            Some(Recovery::Recovered { seconds: 4.5 }),
            Some(Recovery::DidNotRecover),
            None,
        ];
        let json = serde_json::to_string(&both).unwrap();
        assert_eq!(json, r#"[4.5,"did not recover",null]"#);
        let back: Vec<Option<Recovery>> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, both);
        assert!(serde_json::from_str::<Recovery>(r#""soon""#).is_err());
        assert_eq!(Recovery::DidNotRecover.to_string(), "did not recover");
    }
}

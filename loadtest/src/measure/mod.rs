//! The numbers an experiment reports, as pure functions of what was observed: the
//! services' counters (two scrapes), their `lab.v1.Audit` snapshots and the load
//! generator's per-second timeline. The definitions are those of DESIGN.md ("Metrics —
//! exact definitions"); each function says which counter it reads.
//!
//! - [`counters`]: the increase of every counter between two scrapes (resets handled).
//! - [`amplification`]: retry amplification per hop, end to end and at the gateway.
//! - [`breakers`]: breaker openings, time not closed, calls each pattern refused.
//! - [`invariants`]: duplicates, lost events, orphaned reservations, wasted charges.
//! - [`timeline`]: the per-second windows, the pre-fault baseline, means per second.
//! - [`recovery`]: recovery time (MTTR) or "did not recover", per trial and over trials.
//! - [`outcome`]: stable / recovered / metastable / did not recover, after a trigger.
//! - [`knee`]: capacity from a ramp: pass or fail per step, the knee, what binds.
//! - [`interval`]: mean and 95 % confidence interval over trials.

pub mod amplification;
pub mod breakers;
pub mod counters;
pub mod interval;
pub mod invariants;
pub mod knee;
pub mod outcome;
pub mod recovery;
pub mod timeline;

pub use amplification::{
    Amplification, CHARGE, CLIENT_REQUESTS, HOPS, Hop, HopCounts, PLACE_ORDER, SERVER_REQUESTS,
};
pub use breakers::{Rejections, any_breaker_not_closed, breaker_opens, time_not_closed};
pub use counters::{counter_deltas, increase, is_counter};
pub use interval::{Interval, ci95, t_975};
pub use invariants::{
    Audit, Audits, Duplicates, Invariants, Promises, lost_events, orphaned_reservations,
    unrefunded_unconfirmed, wasted_charges,
};
pub use outcome::{METASTABLE_GOODPUT, Outcome, TriggerWindow, classify};
pub use recovery::{DID_NOT_RECOVER, Recovery, RecoverySummary, recovery};
pub use timeline::{RECOVERY_FRACTION, RECOVERY_WINDOWS, Window, baseline_rate, mean_timeline};

/// `numerator / denominator`, or `None` when the denominator is zero (never NaN or ∞).
pub fn ratio(numerator: f64, denominator: f64) -> Option<f64> {
    if denominator == 0.0 || !numerator.is_finite() || !denominator.is_finite() {
        None
    } else {
        Some(numerator / denominator)
    }
}

//! Capacity from a ramp: which offered rates the system sustains, where the knee is, and
//! which resource binds there. Pure functions over what each step of the ramp measured;
//! `crate::experiment::calibrate` runs the steps.
//!
//! - A step **passes** when at least [`MIN_SUCCESS`] of its logical requests ended OK within
//!   the client deadline, payments' queue did not keep growing through the second half of
//!   the step (goodput keeps up with the offered rate: a queue growing faster than
//!   [`MAX_QUEUE_GROWTH`] of the rate per second means it does not), and their p99 latency,
//!   from the intended send time, stays within the SLO. The queue test matters near the
//!   knee: a few seconds above capacity fit in payments' queue without breaking the SLO yet.
//! - The **knee** is the highest rate that passed below the lowest rate that failed.
//! - The ramp ([`next_rate`]) climbs geometrically from a start rate until a step fails,
//!   then halves the gap between the last pass and the first failure [`REFINEMENTS`] times.
//! - The **binding resource** is read from the first failing step: the machine's CPU when
//!   the processes together used most of its cores or one used most of one core (then
//!   nothing else measured there can be trusted); else payments when its slots were busy
//!   most of the time; else the load generator if it could not keep its schedule;
//!   "unclear" otherwise.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Share of logical requests that must end OK for a step to pass.
pub const MIN_SUCCESS: f64 = 0.99;
/// A step fails when payments' queue grew faster than this share of the offered rate per
/// second over the second half of the step.
pub const MAX_QUEUE_GROWTH: f64 = 0.03;
/// Each ramp step offers this many times the rate of the one before, until one fails.
pub const RAMP_FACTOR: f64 = 1.12;
/// Bisection steps between the last pass and the first failure.
pub const REFINEMENTS: usize = 2;
/// CPU counts as binding when the processes used this share of the machine's cores...
pub const CPU_MACHINE_SHARE: f64 = 0.85;
/// ... or one process used this share of one core.
pub const CPU_PROCESS_SHARE: f64 = 0.9;
/// Payments counts as binding when its slots were busy this share of the time.
pub const PAYMENTS_BUSY_SHARE: f64 = 0.85;

/// What one step of the ramp measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// Offered logical requests per second.
    pub rate: f64,
    pub issued: u64,
    pub succeeded: u64,
    /// p99 latency of the successes, from the intended send time.
    pub p99_ms: f64,
    /// Successes per second of the step.
    pub goodput_rps: f64,
    /// Mean share of payments' slots in use, sampled during the step (0 to 1).
    pub payments_busy: Option<f64>,
    /// Mean number of charges waiting in payments' queue, sampled during the step.
    pub payments_queued: Option<f64>,
    /// How fast payments' queue grew over the second half of the step (least-squares slope
    /// of the samples, charges per second); `None` without samples.
    #[serde(default)]
    pub payments_queue_growth: Option<f64>,
    /// CPU cores each process used on average during the step (CPU seconds / seconds);
    /// the load generator is `frlab`.
    pub cpu_cores: BTreeMap<String, f64>,
    /// The load generator could not keep its schedule.
    pub generator_saturated: bool,
}

impl Step {
    pub fn success_rate(&self) -> f64 {
        if self.issued == 0 {
            0.0
        } else {
            self.succeeded as f64 / self.issued as f64
        }
    }

    /// Why the step failed against `slo_p99_ms`, or `None` when it passed.
    pub fn failure(&self, slo_p99_ms: f64) -> Option<String> {
        let success = self.success_rate();
        if success < MIN_SUCCESS {
            return Some(format!(
                "{:.1} % of requests succeeded (< {:.0} %)",
                success * 100.0,
                MIN_SUCCESS * 100.0
            ));
        }
        if let Some(g) = self.payments_queue_growth
            && g > MAX_QUEUE_GROWTH * self.rate
        {
            return Some(format!(
                "payments' queue grew {g:.1}/s (> {:.0} % of the rate): goodput falls behind",
                MAX_QUEUE_GROWTH * 100.0
            ));
        }
        if self.p99_ms > slo_p99_ms {
            return Some(format!(
                "p99 {:.0} ms > SLO {slo_p99_ms:.0} ms",
                self.p99_ms
            ));
        }
        None
    }

    /// CPU cores all the processes used together.
    pub fn cpu_total(&self) -> f64 {
        self.cpu_cores.values().sum()
    }
}

/// The resource that limits the rate at the knee.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Binding {
    /// Payments' slots were busy: the modelled bottleneck.
    Payments { busy: f64 },
    /// The machine's CPU: the lab measured itself, not the model.
    Cpu {
        cores_used: f64,
        cores: usize,
        busiest: String,
        busiest_cores: f64,
    },
    /// The load generator fell behind its schedule.
    Generator,
    /// No step failed: the ramp never reached the knee.
    NotReached,
    /// The failing step shows none of the above.
    Unclear,
}

impl Binding {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Binding::Payments { busy } => format!(
                "payments' slots (busy {:.0} % of the time at the first failing step): the \
                 modelled bottleneck",
                busy * 100.0
            ),
            Binding::Cpu {
                cores_used,
                cores,
                busiest,
                busiest_cores,
            } => format!(
                "this machine's CPU ({cores_used:.2} of {cores} cores, {busiest} {busiest_cores:.2}): \
                 the lab measured itself, not the model"
            ),
            Binding::Generator => "the load generator (it fell behind its schedule)".into(),
            Binding::NotReached => "none reached: every step of the ramp passed".into(),
            Binding::Unclear => {
                "unclear: the first failing step shows neither busy slots nor busy CPU".into()
            }
        }
    }
}

/// Least-squares slope of `(seconds, value)` samples; `None` for fewer than two distinct
/// times.
pub fn slope(samples: &[(f64, f64)]) -> Option<f64> {
    let n = samples.len() as f64;
    if samples.len() < 2 {
        return None;
    }
    let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_v = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let var: f64 = samples.iter().map(|s| (s.0 - mean_t).powi(2)).sum();
    if var == 0.0 {
        return None;
    }
    let cov: f64 = samples
        .iter()
        .map(|s| (s.0 - mean_t) * (s.1 - mean_v))
        .sum();
    Some(cov / var)
}

/// The rate to try after `steps` (in the order they ran), or `None` when the knee is known.
/// The ramp starts at `start` and gives up climbing above `ceiling`.
pub fn next_rate(steps: &[Step], start: f64, ceiling: f64, slo_p99_ms: f64) -> Option<f64> {
    let Some(last) = steps.last() else {
        return Some(start);
    };
    let (pass, fail) = bracket(steps, slo_p99_ms);
    match (pass, fail) {
        // Still climbing.
        (_, None) => {
            let next = last.rate * RAMP_FACTOR;
            (next <= ceiling).then_some(next)
        }
        // The first step failed: nothing below it to refine towards.
        (None, Some(_)) => None,
        // Halve the gap, REFINEMENTS times after the first failure.
        (Some(p), Some(f)) => {
            let after_first_failure = steps
                .iter()
                .skip_while(|s| s.failure(slo_p99_ms).is_none())
                .count()
                - 1;
            (after_first_failure < REFINEMENTS).then_some((p + f) / 2.0)
        }
    }
}

/// The highest passing rate below the lowest failing rate, and that lowest failing rate.
fn bracket(steps: &[Step], slo_p99_ms: f64) -> (Option<f64>, Option<f64>) {
    let fail = steps
        .iter()
        .filter(|s| s.failure(slo_p99_ms).is_some())
        .map(|s| s.rate)
        .min_by(f64::total_cmp);
    let pass = steps
        .iter()
        .filter(|s| s.failure(slo_p99_ms).is_none())
        .map(|s| s.rate)
        .filter(|r| fail.is_none_or(|f| *r < f))
        .max_by(f64::total_cmp);
    (pass, fail)
}

/// The knee: the highest passing rate below the lowest failing one (`None` when the first
/// step already failed).
pub fn knee(steps: &[Step], slo_p99_ms: f64) -> Option<f64> {
    bracket(steps, slo_p99_ms).0
}

/// What bound the rate: read from the lowest failing step, or [`Binding::NotReached`].
pub fn binding(steps: &[Step], slo_p99_ms: f64, cores: usize) -> Binding {
    let Some(step) = steps
        .iter()
        .filter(|s| s.failure(slo_p99_ms).is_some())
        .min_by(|a, b| a.rate.total_cmp(&b.rate))
    else {
        return Binding::NotReached;
    };
    let used = step.cpu_total();
    let busiest = step
        .cpu_cores
        .iter()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map(|(p, c)| (p.clone(), *c))
        .unwrap_or_default();
    if used >= CPU_MACHINE_SHARE * cores as f64 || busiest.1 >= CPU_PROCESS_SHARE {
        return Binding::Cpu {
            cores_used: used,
            cores,
            busiest: busiest.0,
            busiest_cores: busiest.1,
        };
    }
    match step.payments_busy {
        Some(busy) if busy >= PAYMENTS_BUSY_SHARE => Binding::Payments { busy },
        _ if step.generator_saturated => Binding::Generator,
        _ => Binding::Unclear,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A system that sustains up to `capacity` requests/s: above it latency blows the SLO.
    fn measure(rate: f64, capacity: f64) -> Step {
        let over = rate > capacity;
        Step {
            rate,
            issued: 1000,
            succeeded: if rate > capacity * 1.3 { 900 } else { 1000 },
            p99_ms: if over { 900.0 } else { 200.0 },
            goodput_rps: rate.min(capacity),
            payments_busy: Some((rate / capacity).min(1.0)),
            payments_queued: Some(if over { 50.0 } else { 0.5 }),
            payments_queue_growth: Some(0.0),
            cpu_cores: BTreeMap::from([("orders".into(), rate / 1000.0)]),
            generator_saturated: false,
        }
    }

    fn ramp(capacity: f64, start: f64) -> Vec<Step> {
        let mut steps = Vec::new();
        while let Some(rate) = next_rate(&steps, start, 1000.0, 500.0) {
            steps.push(measure(rate, capacity));
            assert!(steps.len() < 40, "the ramp must end");
        }
        steps
    }

    #[test]
    fn the_ramp_finds_a_known_knee_within_its_resolution() {
        let steps = ramp(100.0, 40.0);
        let k = knee(&steps, 500.0).unwrap();
        // Climbing by 12 % then halving the gap twice: within 3 % below the capacity.
        assert!((97.0..=100.0).contains(&k), "knee {k} from {steps:#?}");
        assert_eq!(binding(&steps, 500.0, 2), Binding::Payments { busy: 1.0 });
        // The refinement stops after REFINEMENTS steps past the first failure.
        let first_fail = steps.iter().position(|s| s.rate > 100.0).unwrap();
        assert_eq!(steps.len() - first_fail - 1, REFINEMENTS);
    }

    #[test]
    fn a_failing_first_step_has_no_knee_and_a_ramp_that_never_fails_is_named() {
        let steps = ramp(10.0, 40.0);
        assert_eq!(steps.len(), 1);
        assert_eq!(knee(&steps, 500.0), None);
        let steps = ramp(10_000.0, 40.0);
        assert!(steps.iter().all(|s| s.failure(500.0).is_none()));
        assert!(steps.last().unwrap().rate <= 1000.0);
        assert_eq!(binding(&steps, 500.0, 2), Binding::NotReached);
    }

    #[test]
    fn slope_fits_a_line() {
        let line: Vec<(f64, f64)> = (0..10)
            .map(|i| (i as f64 * 0.1, 3.0 + 5.0 * i as f64 * 0.1))
            .collect();
        assert!((slope(&line).unwrap() - 5.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None);
    }

    #[test]
    fn cpu_and_the_generator_are_named_when_they_bind() {
        let mut s = measure(120.0, 100.0);
        s.cpu_cores = BTreeMap::from([("orders".into(), 0.95), ("gateway".into(), 0.3)]);
        assert!(matches!(
            binding(&[s.clone()], 500.0, 2),
            Binding::Cpu { ref busiest, .. } if busiest == "orders"
        ));
        // Busy slots explain a failing step even when the generator also lagged a little.
        s.cpu_cores.clear();
        s.generator_saturated = true;
        assert!(matches!(
            binding(&[s.clone()], 500.0, 2),
            Binding::Payments { .. }
        ));
        s.payments_busy = Some(0.3);
        assert_eq!(binding(&[s.clone()], 500.0, 2), Binding::Generator);
        s.generator_saturated = false;
        assert_eq!(binding(&[s], 500.0, 2), Binding::Unclear);
    }

    #[test]
    fn failures_name_what_was_missed() {
        let mut s = measure(50.0, 100.0);
        assert_eq!(s.failure(500.0), None);
        // A queue growing 2/s at 50/s (4 %) means goodput falls behind; 1/s (2 %) does not.
        s.payments_queue_growth = Some(2.0);
        assert!(s.failure(500.0).unwrap().contains("queue grew 2.0/s"));
        s.payments_queue_growth = Some(1.0);
        assert_eq!(s.failure(500.0), None);
        s.p99_ms = 650.0;
        assert_eq!(s.failure(500.0).unwrap(), "p99 650 ms > SLO 500 ms");
        s.succeeded = 950;
        assert!(s.failure(500.0).unwrap().starts_with("95.0 % of requests"));
    }
}

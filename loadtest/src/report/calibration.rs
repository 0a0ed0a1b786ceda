//! The record of a calibration (`frlab calibrate`, and the first thing `frlab experiment`
//! and `frlab sweep` do): the ramp's steps, the knee, what bound it, and the text printed
//! and written for it (`calibration.json`, a section of `report.md`).

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::experiment::PaymentsModel;
use crate::measure::knee::{Binding, Step};

/// `calibration.json` in a run directory.
pub const CALIBRATION_JSON: &str = "calibration.json";

/// One calibration: how it ran and what it found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// UTC, RFC 3339.
    pub started_at: String,
    /// `git rev-parse HEAD` of the working directory, or "unknown".
    pub commit: String,
    /// The profile the services ran (a-baseline: nothing between the load and payments).
    pub profile: String,
    pub payments: PaymentsModel,
    /// `slots / mean service time`: what the model promises (the ramp starts from it).
    pub model_capacity_rps: f64,
    /// A step passes when its p99 stays within this (and its success rate is high enough).
    pub slo_p99_ms: f64,
    /// Client deadline of each logical request.
    pub deadline_ms: u64,
    /// Seconds each step offered its rate.
    pub step_s: f64,
    /// Cores of the machine.
    pub cores: usize,
    /// In the order they ran.
    pub steps: Vec<Step>,
    /// The highest rate that passed below the lowest that failed; `None` when the first
    /// step failed.
    pub knee_rps: Option<f64>,
    pub binding: Binding,
}

impl Calibration {
    /// CPU cores the processes used together at the knee step.
    pub fn cpu_at_knee(&self) -> Option<f64> {
        let knee = self.knee_rps?;
        self.steps
            .iter()
            .find(|s| s.rate == knee)
            .map(Step::cpu_total)
    }

    /// Why the knee cannot be used as the load's reference, if it cannot: no knee, or a knee
    /// set by something other than payments.
    pub fn unusable(&self) -> Option<String> {
        match (&self.knee_rps, &self.binding) {
            (None, _) => Some(format!(
                "even the first step ({:.1} requests/s) failed: {}",
                self.steps.first().map_or(0.0, |s| s.rate),
                self.steps
                    .first()
                    .and_then(|s| s.failure(self.slo_p99_ms))
                    .unwrap_or_default()
            )),
            (Some(_), Binding::Payments { .. }) => None,
            (Some(_), other) => Some(format!(
                "the knee was not set by payments but by {}",
                other.describe()
            )),
        }
    }

    /// A Markdown section: the settings, one row per step, the knee and what bound it.
    pub fn markdown(&self, heading: &str) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "{heading} Capacity (calibration)\n");
        let _ = writeln!(
            o,
            "Open-loop ramp against a fresh stack running `{}`, started {} at commit `{}`. \
             Payments: {}. Each step offers its rate for {} s with a client deadline of {} ms; it \
             passes when at least {:.0} % of requests succeed and p99 (from the intended send \
             time) is at most {:.0} ms. CPU is cores used on average during the step ({} cores \
             here).\n",
            self.profile,
            self.started_at,
            self.commit,
            self.payments.describe(),
            self.step_s,
            self.deadline_ms,
            crate::measure::knee::MIN_SUCCESS * 100.0,
            self.slo_p99_ms,
            self.cores
        );
        let _ = writeln!(
            o,
            "| offered (req/s) | success | goodput (req/s) | p99 (ms) | payments slots busy | \
             payments queue | CPU, all processes | busiest process | verdict |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for s in &self.steps {
            let busiest = s
                .cpu_cores
                .iter()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map_or("n/a".to_string(), |(p, c)| format!("{p} {c:.2}"));
            let _ = writeln!(
                o,
                "| {:.1} | {:.2} % | {:.1} | {:.0} | {} | {} | {:.2} | {busiest} | {} |",
                s.rate,
                s.success_rate() * 100.0,
                s.goodput_rps,
                s.p99_ms,
                s.payments_busy
                    .map_or("n/a".into(), |b| format!("{:.0} %", b * 100.0)),
                s.payments_queued
                    .map_or("n/a".into(), |q| format!("{q:.1}")),
                s.cpu_total(),
                s.failure(self.slo_p99_ms)
                    .map_or("pass".to_string(), |why| format!("fail: {why}")),
            );
        }
        let _ = writeln!(o);
        match self.knee_rps {
            Some(k) => {
                let _ = writeln!(
                    o,
                    "**Knee: {k:.1} requests/s** ({:.0} % of the model's {:.1}). Bound by {}. \
                     At the knee the processes used {:.2} of {} cores.\n",
                    k / self.model_capacity_rps * 100.0,
                    self.model_capacity_rps,
                    self.binding.describe(),
                    self.cpu_at_knee().unwrap_or(0.0),
                    self.cores
                );
            }
            None => {
                let _ = writeln!(o, "**No knee:** {}\n", self.unusable().unwrap_or_default());
            }
        }
        o
    }
}

//! The record of a calibration (`frlab calibrate`, and the first thing `frlab experiment`
//! and `frlab sweep` do): the ramp's steps, the knee, what bound it, and the text printed
//! and written for it (`calibration.json`, a section of `report.md`).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

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

/// The calibration in `file`: a `calibration.json` written by `frlab calibrate --out`, or
/// the one stored in a run's `results.json` or a sweep's `sweep.json`.
pub fn read_calibration(file: &Path) -> Result<Calibration> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", file.display()))?;
    let value = match value.get("calibration") {
        Some(serde_json::Value::Null) => anyhow::bail!(
            "{} holds no calibration (its knee was given, or it came from --rate)",
            file.display()
        ),
        Some(inner) => inner.clone(),
        None => value,
    };
    serde_json::from_value(value).with_context(|| {
        format!(
            "{} is neither a calibration.json nor a results.json or sweep.json with one",
            file.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::knee::Binding;

    fn calibration() -> Calibration {
        Calibration {
            started_at: "2026-12-06T00:00:00Z".into(),
            commit: "abc".into(),
            profile: "a-baseline".into(),
            payments: PaymentsModel::default(),
            model_capacity_rps: 114.4,
            slo_p99_ms: 500.0,
            deadline_ms: 2000,
            step_s: 5.0,
            cores: 2,
            steps: vec![],
            knee_rps: Some(112.9),
            binding: Binding::Payments { busy: 0.97 },
        }
    }

    #[test]
    fn a_calibration_is_read_alone_or_from_a_run_record() {
        let dir = tempfile::tempdir().unwrap();
        let alone = dir.path().join("calibration.json");
        std::fs::write(&alone, serde_json::to_string(&calibration()).unwrap()).unwrap();
        assert_eq!(read_calibration(&alone).unwrap(), calibration());
        let run = dir.path().join("sweep.json");
        let record = serde_json::json!({"run_id": "s", "calibration": calibration()});
        std::fs::write(&run, record.to_string()).unwrap();
        assert_eq!(read_calibration(&run).unwrap(), calibration());
        let given = dir.path().join("results.json");
        std::fs::write(&given, r#"{"run_id": "r", "calibration": null}"#).unwrap();
        let err = read_calibration(&given).unwrap_err().to_string();
        assert!(err.contains("holds no calibration"), "{err}");
        std::fs::write(&given, r#"{"run_id": 3}"#).unwrap();
        let err = format!("{:#}", read_calibration(&given).unwrap_err());
        assert!(err.contains("neither a calibration.json"), "{err}");
    }
}

//! The run loop: every scenario x load x profile x trial of a plan, one fresh stack per
//! trial, the report rewritten after every cell so an interrupted run leaves one that says
//! so.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use super::plan::{Backend, Plan, SCENARIOS, Scenario, scaled_profile_yaml, scenario};
use super::trial::{DRAIN, TrialSetup, promises_of, run_trial};
use crate::report::{self, Calibration, Run, Settings};

/// The capacity the plan's load fractions refer to.
#[derive(Clone, Debug, Default)]
pub struct Reference {
    /// Requests per second the fractions multiply; `None` with an absolute `plan.rate`.
    pub knee_rps: Option<f64>,
    /// The calibration that measured the knee, stored with the run; `None` when the knee
    /// was given.
    pub calibration: Option<Calibration>,
}

/// Runs the whole plan, writing `out` after every cell (so an interrupted run leaves a
/// report that says it did not finish). Returns the run.
pub async fn run(
    plan: &Plan,
    reference: &Reference,
    backend: &Backend,
    out: &Path,
    command: &str,
) -> Result<Run> {
    plan.validate()?;
    for s in &plan.scenarios {
        scenario(s).with_context(|| {
            format!(
                "unknown scenario {s:?}; expected one of {}",
                SCENARIOS.map(|s| s.name).join(", ")
            )
        })?;
    }
    let levels = plan.levels(reference.knee_rps)?;
    let mut profiles = Vec::new();
    for p in &plan.profiles {
        let (name, yaml) = scaled_profile_yaml(p, plan.time_scale)?;
        profiles.push((name, yaml));
    }
    let environment = report::Environment::collect(
        Path::new("."),
        profiles.iter().map(|(n, y)| (n.as_str(), y.as_str())),
    );
    let settings = Settings {
        loads: levels.clone(),
        offered_rps: 0.0,
        deadline_ms: plan.deadline.as_millis() as u64,
        warmup_s: plan.warmup.as_secs_f64(),
        pre_fault_s: plan.pre_fault.as_secs_f64(),
        fault_s: plan.fault.as_secs_f64(),
        recovery_s: plan.recovery.as_secs_f64(),
        drain_s: DRAIN.as_secs_f64(),
        seed: plan.seed,
        trials: plan.trials,
        profiles: profiles.iter().map(|(n, _)| n.clone()).collect(),
        scenarios: plan.scenarios.clone(),
        stack: backend.describe(),
        payments: Some(plan.payments),
        time_scale: Some(plan.time_scale),
    };
    let run_id = out
        .file_name()
        .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned());
    let mut run = Run::new(run_id, command, environment, settings);
    run.calibration = reference.calibration.clone();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    report::write_all(&run, out)?;
    let total = plan.trial_count();
    let started = Instant::now();
    let mut done = 0;
    let phases = plan.phases();
    // Once per profile (the same for every scenario and load), before the first trial.
    let promises = profiles
        .iter()
        .map(|(_, yaml)| promises_of(yaml))
        .collect::<Result<Vec<_>>>()?;
    for scenario_name in &plan.scenarios {
        let def = scenario(scenario_name).expect("checked above");
        let scenario = Scenario::from(def);
        for level in &levels {
            for ((profile, yaml), &promises) in profiles.iter().zip(&promises) {
                let setup = TrialSetup {
                    phases: &phases,
                    payments: &plan.payments,
                    backend,
                    profile,
                    profile_yaml: yaml,
                    scenario: &scenario,
                    load: level,
                    promises,
                };
                for trial in 1..=plan.trials {
                    // The same seeds for every profile: the same fault timeline.
                    let seed = plan.seed.wrapping_add(u64::from(trial) - 1);
                    let left = if done == 0 {
                        plan.trial_seconds() * total as f64
                    } else {
                        started.elapsed().as_secs_f64() / done as f64 * (total - done) as f64
                    };
                    eprintln!(
                        "[{}/{total}] {profile} x {} at {} trial {trial}  (about {} left)",
                        done + 1,
                        def.name,
                        level.label(),
                        format_secs(left)
                    );
                    let outcome = run_trial(&setup, trial, seed).await;
                    let cell = run.cell_mut(profile, def.name, Some(level));
                    match outcome {
                        Ok(t) => cell.trials.push(t),
                        Err(e) => {
                            eprintln!("  trial failed: {e:#}");
                            cell.failed_trials.push(report::FailedTrial {
                                trial,
                                seed,
                                error: format!("{e:#}"),
                            });
                        }
                    }
                    done += 1;
                }
                report::write_all(&run, out)?;
            }
        }
    }
    run.finish();
    report::write_all(&run, out)?;
    Ok(run)
}

pub fn format_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

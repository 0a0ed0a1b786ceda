//! `frlab sweep`: the metastability sweep. For each profile, a grid of cells — offered load
//! (fractions of the calibrated knee) across, the trigger's length (or its magnitude) down —
//! each one trial on a fresh stack: healthy load, a trigger on payments (a brownout that
//! removes part of its capacity, or an outage), then a watched stretch with the offered
//! load unchanged. Each cell is classified stable / recovered / metastable / did not recover
//! ([`crate::measure::outcome`]), and the grid is written as a table and a phase map
//! ([`crate::report::sweep`]) after every cell.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::payments::PaymentsModel;
use super::plan::{Backend, Phases, Scenario, scaled_profile_yaml};
use super::run::format_secs;
use super::trial::{TrialSetup, promises_of, run_trial};
use crate::report::sweep::{Sweep, SweepCell, SweepSettings, write_sweep};
use crate::report::{Calibration, Environment, LoadLevel};

/// What pushes the system in each cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Payments keeps `1 - cut` of its capacity.
    Brownout,
    /// Payments refuses every charge.
    Outage,
}

/// What a sweep runs.
#[derive(Clone, Debug)]
pub struct SweepPlan {
    pub profiles: Vec<String>,
    /// Offered loads, fractions of the knee: the grid's columns.
    pub loads: Vec<f64>,
    pub trigger: Trigger,
    /// Shares of payments' capacity the brownout removes (`[1.0]` for an outage).
    pub cuts: Vec<f64>,
    pub durations: Vec<Duration>,
    pub warmup: Duration,
    pub pre: Duration,
    pub observe: Duration,
    pub hold: Duration,
    pub deadline: Duration,
    pub time_scale: f64,
    pub payments: PaymentsModel,
    pub seed: u64,
}

impl SweepPlan {
    /// Refuses a grid that cannot run or cannot be read, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.profiles.is_empty() {
            bail!("--profile needs at least one profile");
        }
        if self.loads.is_empty() || self.cuts.is_empty() || self.durations.is_empty() {
            bail!("the grid is empty: --load, --trigger and --duration need a value each");
        }
        if self.cuts.len() > 1 && self.durations.len() > 1 {
            bail!(
                "vary either the trigger's magnitude (--trigger brownout:A..B) or its length \
                 (--duration A..B), not both: a phase map has two axes and load is one"
            );
        }
        for &f in &self.loads {
            if !(f > 0.0 && f <= 5.0) {
                bail!("--load fractions must be above 0 and at most 5, got {f}");
            }
        }
        for &c in &self.cuts {
            if !(c > 0.0 && c <= 1.0) {
                bail!("--trigger brownout cut must be above 0 and at most 1, got {c}");
            }
        }
        if self.hold >= self.observe {
            bail!(
                "--hold-s ({} s) must be shorter than --observe-s ({} s): metastable means \
                 still down from the hold to the end",
                self.hold.as_secs_f64(),
                self.observe.as_secs_f64()
            );
        }
        if self.observe < Duration::from_secs(5) {
            bail!("--observe-s must be at least 5 (recovery is 5 healthy seconds in a row)");
        }
        if self.pre < Duration::from_secs(1) {
            bail!("--pre-s must be at least 1 (the baseline)");
        }
        self.payments.validate()
    }

    /// Cells the sweep runs.
    pub fn cell_count(&self) -> usize {
        self.profiles.len() * self.loads.len() * self.cuts.len() * self.durations.len()
    }

    /// Seconds one cell takes, roughly, for a trigger of `d`.
    fn cell_seconds(&self, d: Duration) -> f64 {
        (self.warmup + self.pre + d + self.observe).as_secs_f64() + 1.5
    }

    /// Seconds the whole sweep takes, roughly.
    pub fn estimate_seconds(&self) -> f64 {
        let per_row: f64 = self
            .durations
            .iter()
            .map(|d| self.cell_seconds(*d))
            .sum::<f64>()
            * self.cuts.len() as f64;
        per_row * (self.profiles.len() * self.loads.len()) as f64
    }

    /// The FaultInjection of one cell's trigger (its duration is set per cell).
    fn manifest(&self, cut: f64) -> String {
        let action = match self.trigger {
            Trigger::Outage => "action: outage\n  methods: [/shop.v1.Payments/Charge]".to_string(),
            Trigger::Brownout => format!(
                "action: brownout\n  brownout: {{capacityFactor: {}}}",
                ((1.0 - cut) * 1000.0).round() / 1000.0
            ),
        };
        format!(
            "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {{name: \
             sweep-trigger}}\nspec:\n  selector: {{service: payments}}\n  mode: all\n  \
             {action}\n  duration: 1s\n  seed: {}\n",
            self.seed
        )
    }
}

/// Runs the sweep, writing `out` after every cell.
pub async fn run_sweep(
    plan: &SweepPlan,
    knee_rps: f64,
    calibration: Option<Calibration>,
    backend: &Backend,
    out: &Path,
    command: &str,
) -> Result<Sweep> {
    plan.validate()?;
    let loads: Vec<LoadLevel> = plan
        .loads
        .iter()
        .map(|&f| LoadLevel {
            fraction: Some(f),
            rps: (knee_rps * f * 10.0).round() / 10.0,
        })
        .collect();
    let mut profiles = Vec::new();
    for p in &plan.profiles {
        profiles.push(scaled_profile_yaml(p, plan.time_scale)?);
    }
    for c in &plan.cuts {
        // The trigger must be a valid FaultInjection before anything starts.
        lab_chaos::spec::parse_documents(&plan.manifest(*c))
            .with_context(|| format!("the trigger with cut {c}"))?;
    }
    let run_id = out
        .file_name()
        .map_or_else(|| "sweep".to_string(), |n| n.to_string_lossy().into_owned());
    let mut sweep = Sweep {
        run_id,
        started_at: crate::report::utc_timestamp(std::time::SystemTime::now()),
        finished_at: None,
        finished: false,
        command: command.to_string(),
        environment: Environment::collect(
            Path::new("."),
            profiles.iter().map(|(n, y)| (n.as_str(), y.as_str())),
        ),
        settings: SweepSettings {
            profiles: profiles.iter().map(|(n, _)| n.clone()).collect(),
            loads: loads.clone(),
            trigger: match plan.trigger {
                Trigger::Brownout => "brownout".into(),
                Trigger::Outage => "outage".into(),
            },
            cuts: plan.cuts.clone(),
            durations_s: plan.durations.iter().map(Duration::as_secs_f64).collect(),
            warmup_s: plan.warmup.as_secs_f64(),
            pre_s: plan.pre.as_secs_f64(),
            observe_s: plan.observe.as_secs_f64(),
            hold_s: plan.hold.as_secs_f64(),
            deadline_ms: plan.deadline.as_millis() as u64,
            seed: plan.seed,
            payments: plan.payments,
            time_scale: plan.time_scale,
            stack: backend.describe(),
        },
        calibration,
        cells: Vec::new(),
    };
    write_sweep(&sweep, out)?;
    let total = plan.cell_count();
    let started = Instant::now();
    let mut estimate_left = plan.estimate_seconds();
    for (profile, yaml) in &profiles {
        let promises = promises_of(yaml)?;
        for &cut in &plan.cuts {
            let scenario = Scenario {
                name: format!("{}-{cut}", sweep.settings.trigger),
                manifest: Some(plan.manifest(cut)),
                client_retries: 0,
                overload: None,
                kill: None,
            };
            for &d in &plan.durations {
                let phases = Phases {
                    warmup: plan.warmup,
                    pre_fault: plan.pre,
                    fault: d,
                    recovery: plan.observe,
                    deadline: plan.deadline,
                    hold: plan.hold,
                };
                for load in &loads {
                    let done = sweep.cells.len();
                    let left = if done == 0 {
                        estimate_left
                    } else {
                        started.elapsed().as_secs_f64() / done as f64 * (total - done) as f64
                    };
                    eprintln!(
                        "[{}/{total}] {profile}: {} x {} s at {}  (about {} left)",
                        done + 1,
                        scenario.name,
                        d.as_secs_f64(),
                        load.label(),
                        format_secs(left)
                    );
                    let setup = TrialSetup {
                        phases: &phases,
                        payments: &plan.payments,
                        backend,
                        profile,
                        profile_yaml: yaml,
                        scenario: &scenario,
                        load,
                        promises,
                    };
                    let (trial, error) = match run_trial(&setup, 1, plan.seed).await {
                        Ok(t) => {
                            eprintln!(
                                "  {}",
                                t.outcome.map_or("no baseline".into(), |o| o.label())
                            );
                            (Some(t), None)
                        }
                        Err(e) => {
                            eprintln!("  cell failed: {e:#}");
                            (None, Some(format!("{e:#}")))
                        }
                    };
                    sweep.cells.push(SweepCell {
                        profile: profile.clone(),
                        load: load.clone(),
                        cut,
                        duration_s: d.as_secs_f64(),
                        trial,
                        error,
                    });
                    estimate_left -= plan.cell_seconds(d);
                    write_sweep(&sweep, out)?;
                }
            }
        }
    }
    sweep.finished = true;
    sweep.finished_at = Some(crate::report::utc_timestamp(std::time::SystemTime::now()));
    write_sweep(&sweep, out)?;
    Ok(sweep)
}

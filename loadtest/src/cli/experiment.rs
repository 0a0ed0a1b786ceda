//! `frlab experiment`: its flags, the plan they describe, and the run's summary lines.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::calibrate::{BackendArgs, CapacityArgs};
use crate::experiment::{self, Plan, Reference, format_secs};

/// `frlab experiment` flags.
#[derive(Debug, clap::Args)]
pub struct ExperimentArgs {
    /// Profiles a, b, d, g x payment_errors, payment_brownout, payment_outage x loads 0.5
    /// and 0.9 of the knee, one trial (the default)
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// Every profile x every scenario, 3 trials, at 0.8 of the knee
    #[arg(long)]
    pub full: bool,
    /// Profiles to run, comma-separated (built-in names or files)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub profiles: Option<Vec<String>>,
    /// Scenarios to run, comma-separated (payment_errors, payment_slow, payment_outage,
    /// payment_brownout, inventory_lock, retry_storm, gateway_overload, payments_crash,
    /// orders_crash)
    #[arg(long, value_delimiter = ',', value_name = "NAMES")]
    pub scenarios: Option<Vec<String>>,
    /// Trials per cell
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub trials: Option<u32>,
    /// Base seed; trial n uses seed + n - 1
    #[arg(long)]
    pub seed: Option<u64>,
    /// Offered loads as fractions of the calibrated knee, comma-separated, e.g. 0.5,0.8,0.95
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "FRACTIONS",
        conflicts_with = "rate"
    )]
    pub load: Option<Vec<f64>>,
    /// Offered load in logical requests per second instead of fractions of the knee (no
    /// calibration runs)
    #[arg(long, value_name = "RPS")]
    pub rate: Option<f64>,
    /// Seconds of each phase: healthy before the fault, the fault, recovery after it
    #[arg(long, value_name = "S")]
    pub pre_fault_s: Option<f64>,
    #[arg(long, value_name = "S")]
    pub fault_s: Option<f64>,
    #[arg(long, value_name = "S")]
    pub recovery_s: Option<f64>,
    /// Multiply the profiles' time constants (breaker open time) by this [default: 0.1]
    #[arg(long, value_name = "FACTOR")]
    pub time_scale: Option<f64>,
    /// Where to write the run [default: results/<run-id>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub capacity: CapacityArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

impl ExperimentArgs {
    pub fn plan(&self) -> Result<Plan> {
        let mut plan = if self.full {
            Plan::full()
        } else {
            Plan::quick()
        };
        if let Some(p) = &self.profiles {
            plan.profiles = p.clone();
        }
        if let Some(s) = &self.scenarios {
            plan.scenarios = s.clone();
        }
        if let Some(t) = self.trials {
            plan.trials = t;
        }
        if let Some(s) = self.seed {
            plan.seed = s;
        }
        if let Some(l) = &self.load {
            plan.loads = l.clone();
        }
        if let Some(r) = self.rate {
            if !(r > 0.0 && r <= 10_000.0) {
                anyhow::bail!("--rate must be between 0 and 10000 requests per second, got {r}");
            }
            plan.rate = Some(r);
        }
        if let Some(k) = self.time_scale {
            if !(k > 0.0 && k <= 10.0) {
                anyhow::bail!("--time-scale must be above 0 and at most 10, got {k}");
            }
            plan.time_scale = k;
        }
        plan.payments = self.capacity.payments;
        let secs = |flag: &str, v: Option<f64>, into: &mut Duration| -> Result<()> {
            if let Some(v) = v {
                if !(v > 0.0 && v <= 3600.0) {
                    anyhow::bail!("{flag} must be between 0 and 3600 seconds, got {v}");
                }
                *into = Duration::from_secs_f64(v);
            }
            Ok(())
        };
        secs("--pre-fault-s", self.pre_fault_s, &mut plan.pre_fault)?;
        secs("--fault-s", self.fault_s, &mut plan.fault)?;
        secs("--recovery-s", self.recovery_s, &mut plan.recovery)?;
        plan.validate()?;
        Ok(plan)
    }
}

/// Runs `frlab experiment`.
pub async fn run(args: ExperimentArgs) -> Result<std::process::ExitCode> {
    let mut plan = args.plan()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::report::default_run_dir(""));
    let backend = args.backend.backend();
    let started = std::time::Instant::now();
    let reference = if plan.rate.is_some() {
        Reference::default()
    } else {
        let (knee, payments, calibration) = args.capacity.resolve(&backend, plan.seed).await?;
        // A calibration read from a file brings the payments model it measured.
        plan.payments = payments;
        Reference {
            knee_rps: Some(knee),
            calibration,
        }
    };
    let command: Vec<String> = std::env::args().collect();
    let levels = plan.levels(reference.knee_rps)?;
    eprintln!(
        "experiment: {} profiles x {} scenarios x {} loads ({}) x {} trials = {} trials, about {} \
         (writing {})",
        plan.profiles.len(),
        plan.scenarios.len(),
        levels.len(),
        levels
            .iter()
            .map(|l| l.label())
            .collect::<Vec<_>>()
            .join(", "),
        plan.trials,
        plan.trial_count(),
        format_secs(plan.trial_seconds() * plan.trial_count() as f64),
        out.display()
    );
    let run = experiment::run(&plan, &reference, &backend, &out, &command.join(" ")).await?;
    let failed: usize = run.cells.iter().map(|c| c.failed_trials.len()).sum();
    println!(
        "report: {} ({} in all)",
        out.join("report.md").display(),
        format_secs(started.elapsed().as_secs_f64())
    );
    if failed > 0 {
        eprintln!("{failed} trial(s) failed; see the report");
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

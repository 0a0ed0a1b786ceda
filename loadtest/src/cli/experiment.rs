//! `frlab experiment`: its flags, the plan they describe, and the run's summary lines.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::experiment::{self, Backend, Plan, format_secs};

/// `frlab experiment` flags.
#[derive(Debug, clap::Args)]
pub struct ExperimentArgs {
    /// Profiles a, b, d, f, g x payment_errors, payment_outage, retry_storm, one trial
    /// (the default)
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// Every profile x every scenario, 3 trials
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
    /// Offered load in logical requests per second
    #[arg(long)]
    pub rate: Option<f64>,
    /// Seconds of each phase: healthy before the fault, the fault, recovery after it
    #[arg(long, value_name = "S")]
    pub pre_fault_s: Option<f64>,
    #[arg(long, value_name = "S")]
    pub fault_s: Option<f64>,
    #[arg(long, value_name = "S")]
    pub recovery_s: Option<f64>,
    /// Where to write the run [default: results/<run-id>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Postgres URL instead of SQLite files
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Redis URL for idempotency keys instead of memory
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,
    /// Directory holding the service binaries [default: next to frlab]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
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
        if let Some(r) = self.rate {
            if !(r > 0.0 && r <= 10_000.0) {
                anyhow::bail!("--rate must be between 0 and 10000 requests per second, got {r}");
            }
            plan.rate = r;
        }
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
    let plan = args.plan()?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stamp = crate::report::utc_timestamp(std::time::SystemTime::now())
            .chars()
            .filter(|c| c.is_ascii_digit())
            .take(14)
            .collect::<String>();
        PathBuf::from("results").join(stamp)
    });
    let backend = Backend {
        database_url: args.database_url.clone(),
        redis_url: args.redis_url.clone(),
        bin_dir: args.bin_dir.clone(),
    };
    let command: Vec<String> = std::env::args().collect();
    let cells = plan.profiles.len() * plan.scenarios.len();
    eprintln!(
        "experiment: {} profiles x {} scenarios x {} trials = {} trials, {:.0} rps, about {} (writing {})",
        plan.profiles.len(),
        plan.scenarios.len(),
        plan.trials,
        cells * plan.trials as usize,
        plan.rate,
        format_secs(plan.trial_seconds() * (cells * plan.trials as usize) as f64),
        out.display()
    );
    let run = experiment::run(&plan, &backend, &out, &command.join(" ")).await?;
    let failed: usize = run.cells.iter().map(|c| c.failed_trials.len()).sum();
    println!("report: {}", out.join("report.md").display());
    if failed > 0 {
        eprintln!("{failed} trial(s) failed; see the report");
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

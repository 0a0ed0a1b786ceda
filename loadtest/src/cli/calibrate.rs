//! `frlab calibrate`: measure the knee on a fresh stack, print the ramp, and (with `--out`)
//! write `calibration.json` for `frlab experiment --calibration` / `frlab sweep
//! --calibration`. Also the flags every measuring command shares: where the services run
//! ([`BackendArgs`]) and where the load's reference capacity comes from ([`CapacityArgs`]).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::experiment::{Backend, CalibrateConfig, PaymentsModel, calibrate};
use crate::report::{CALIBRATION_JSON, Calibration, read_calibration};

/// Where the services run.
#[derive(Debug, Clone, clap::Args)]
pub struct BackendArgs {
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

impl BackendArgs {
    pub fn backend(&self) -> Backend {
        Backend {
            database_url: self.database_url.clone(),
            redis_url: self.redis_url.clone(),
            bin_dir: self.bin_dir.clone(),
        }
    }
}

/// How the knee is measured, or where an earlier measurement is read from.
#[derive(Debug, Clone, clap::Args)]
pub struct CapacityArgs {
    #[command(flatten)]
    pub payments: PaymentsModel,
    /// A calibration step passes when p99 latency stays within this
    #[arg(long, value_name = "MS", default_value_t = 500.0)]
    pub slo_p99_ms: f64,
    /// Seconds each calibration step offers its rate
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub calibration_step_s: f64,
    /// Use the knee of this calibration.json (or the calibration stored in a results.json
    /// or sweep.json) instead of measuring one; its payments model replaces the
    /// --payments-* flags
    #[arg(long, value_name = "FILE", conflicts_with = "knee_rps")]
    pub calibration: Option<PathBuf>,
    /// Take this as the knee instead of measuring one (requests per second; the report
    /// says the knee was given, not measured)
    #[arg(long, value_name = "RPS")]
    pub knee_rps: Option<f64>,
}

impl CapacityArgs {
    /// The calibration config these flags describe.
    pub fn config(&self, seed: u64) -> Result<CalibrateConfig> {
        self.payments.validate()?;
        if !(self.slo_p99_ms > 0.0 && self.slo_p99_ms <= 60_000.0) {
            bail!(
                "--slo-p99-ms must be between 0 and 60000, got {}",
                self.slo_p99_ms
            );
        }
        if !(self.calibration_step_s >= 0.5 && self.calibration_step_s <= 600.0) {
            bail!(
                "--calibration-step-s must be between 0.5 and 600, got {}",
                self.calibration_step_s
            );
        }
        Ok(CalibrateConfig {
            payments: self.payments,
            slo_p99_ms: self.slo_p99_ms,
            step: Duration::from_secs_f64(self.calibration_step_s),
            seed,
            ..CalibrateConfig::default()
        })
    }

    /// The reference capacity: read from `--calibration`, given by `--knee-rps` (`None`:
    /// the caller has no calibration to store), or measured now. Refuses a knee that
    /// payments did not set.
    pub async fn resolve(
        &self,
        backend: &Backend,
        seed: u64,
    ) -> Result<(f64, PaymentsModel, Option<Calibration>)> {
        if let Some(k) = self.knee_rps {
            if !(k > 0.0 && k <= 100_000.0) {
                bail!("--knee-rps must be between 0 and 100000, got {k}");
            }
            self.payments.validate()?;
            return Ok((k, self.payments, None));
        }
        let calibration = match &self.calibration {
            Some(file) => read_calibration(file)?,
            None => {
                let config = self.config(seed)?;
                eprintln!(
                    "calibrating: ramp from {:.0} requests/s against payments' {}",
                    config.payments.capacity_rps() * config.start_fraction,
                    config.payments.describe()
                );
                calibrate(&config, backend, |line| eprintln!("{line}")).await?
            }
        };
        if let Some(why) = calibration.unusable() {
            bail!(
                "the calibration cannot serve as the load's reference: {why}. Give --knee-rps \
                 to run anyway, or fewer --payments-slots / a longer service time so payments \
                 binds first"
            );
        }
        let knee = calibration.knee_rps.expect("usable means a knee");
        eprintln!(
            "knee: {knee:.1} requests/s ({})",
            calibration.binding.describe()
        );
        Ok((knee, calibration.payments, Some(calibration)))
    }
}

/// `frlab calibrate` flags.
#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// The profile the services run while calibrating
    #[arg(long, value_name = "NAME|FILE", default_value = "a-baseline")]
    pub profile: String,
    #[command(flatten)]
    pub payments: PaymentsModel,
    /// A step passes when p99 latency stays within this
    #[arg(long, value_name = "MS", default_value_t = 500.0)]
    pub slo_p99_ms: f64,
    /// Seconds each step offers its rate
    #[arg(long, value_name = "S", default_value_t = 5.0)]
    pub step_s: f64,
    /// Client deadline of each request
    #[arg(long, value_name = "MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub deadline_ms: u64,
    /// Seed of payments' service times and the orders' items
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write calibration.json and calibration.md into this directory
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Runs `frlab calibrate`: exit 0 when a knee set by payments was found, 1 otherwise.
pub async fn run(args: CalibrateArgs) -> Result<ExitCode> {
    let capacity = CapacityArgs {
        payments: args.payments,
        slo_p99_ms: args.slo_p99_ms,
        calibration_step_s: args.step_s,
        calibration: None,
        knee_rps: None,
    };
    let mut config = capacity.config(args.seed)?;
    config.profile = args.profile.clone();
    config.deadline = Duration::from_millis(args.deadline_ms);
    eprintln!(
        "calibrating {}: ramp from {:.0} requests/s, {} s per step, against payments' {}",
        config.profile,
        config.payments.capacity_rps() * config.start_fraction,
        args.step_s,
        config.payments.describe()
    );
    let calibration =
        calibrate(&config, &args.backend.backend(), |line| eprintln!("{line}")).await?;
    let text = calibration.markdown("#");
    print!("{text}");
    if let Some(dir) = &args.out {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(&calibration)? + "\n";
        std::fs::write(dir.join(CALIBRATION_JSON), json)
            .with_context(|| format!("writing {}", dir.join(CALIBRATION_JSON).display()))?;
        std::fs::write(dir.join("calibration.md"), &text)
            .with_context(|| format!("writing {}", dir.join("calibration.md").display()))?;
        eprintln!("wrote {}", dir.join(CALIBRATION_JSON).display());
    }
    Ok(match calibration.unusable() {
        None => ExitCode::SUCCESS,
        Some(why) => {
            eprintln!("error: {why}");
            ExitCode::FAILURE
        }
    })
}

//! `frlab sweep`: its flags, the grid they describe, and the summary it prints.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};

use super::calibrate::{BackendArgs, CapacityArgs};
use crate::experiment::format_secs;
use crate::experiment::sweep::{SweepPlan, Trigger, run_sweep};
use crate::report::sweep::{SWEEP_MD, boundaries};

pub const LONG_ABOUT: &str = "The metastability sweep. For each profile, a grid of cells: \
offered load (fractions of the calibrated knee) across, the trigger's length (or its \
magnitude) down. Each cell is one trial on a fresh stack: healthy load (the baseline), a \
trigger on payments (a brownout that removes part of its capacity, or an outage), then a \
watched stretch with the offered load unchanged. Each cell is classified: stable (no dip), \
recovered (with its recovery time), metastable (goodput still below half the baseline from \
--hold-s after the trigger ended to the end, although the trigger is gone), or did not \
recover. Writes sweep.json, sweep.md (a table per profile) and a phase map per profile \
(phase-<profile>.svg) after every cell; progress goes to stderr.\n\n\
Grid values: a list (0.3,0.5,0.9 or 1,5,10s) or a range A..B with --points values \
(0.1..0.9, 1..21s). Trigger: brownout:CUT (the share of payments' capacity removed, e.g. \
0.8 keeps 20 %), brownout:A..B (then the cut is the vertical axis and --duration takes one \
value), or outage.\n\n\
Examples:\n  frlab sweep --profile b-naive-retries\n  frlab sweep --profile \
b-naive-retries,g-adaptive --load 0.2..0.9 --duration 2..30s\n  frlab sweep --profile \
b-naive-retries --trigger brownout:0.5..0.9 --duration 10s";

/// `frlab sweep` flags.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Profiles, comma-separated; one grid each
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "NAMES",
        default_value = "b-naive-retries"
    )]
    pub profile: Vec<String>,
    /// Offered loads, fractions of the knee: a list or a range A..B
    #[arg(long, value_name = "SPEC", default_value = "0.1..0.9")]
    pub load: String,
    /// brownout:CUT, brownout:A..B or outage
    #[arg(long, value_name = "SPEC", default_value = "brownout:0.8")]
    pub trigger: String,
    /// How long the trigger lasts: a list or a range, in seconds (1..21s, 2,5,10s)
    #[arg(long, value_name = "SPEC", default_value = "1..21s")]
    pub duration: String,
    /// Values a range A..B expands to (evenly spaced, both ends included)
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(2..=20))]
    pub points: u32,
    /// Seconds of healthy load before the trigger (the baseline)
    #[arg(long, value_name = "S", default_value_t = 4.0)]
    pub pre_s: f64,
    /// Seconds watched after the trigger ends
    #[arg(long, value_name = "S", default_value_t = 15.0)]
    pub observe_s: f64,
    /// A collapse from this many seconds after the trigger to the end is metastable
    #[arg(long, value_name = "S", default_value_t = 10.0)]
    pub hold_s: f64,
    /// Seconds of load before each cell's measurement (not measured)
    #[arg(long, value_name = "S", default_value_t = 1.0)]
    pub warmup_s: f64,
    /// Client deadline of each request
    #[arg(long, value_name = "MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub deadline_ms: u64,
    /// Multiply the profiles' time constants (breaker open time) by this, so a breaker's
    /// cycle fits the watched stretch
    #[arg(long, value_name = "FACTOR", default_value_t = 0.1)]
    pub time_scale: f64,
    /// Seed of every cell (the same timeline in each)
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Where to write the sweep [default: results/sweep-<time>]
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub capacity: CapacityArgs,
    #[command(flatten)]
    pub backend: BackendArgs,
}

/// Parses a grid axis: `A..B` (with `points` values) or a comma list; values may end in
/// `unit` (e.g. `s`). `flag` names the flag in errors.
pub fn parse_axis(flag: &str, spec: &str, points: u32, unit: &str) -> Result<Vec<f64>> {
    let number = |s: &str| -> Result<f64> {
        let t = s.trim();
        let t = t
            .strip_suffix(unit)
            .filter(|_| !unit.is_empty())
            .unwrap_or(t);
        match t.trim().parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            _ => bail!("{flag} {spec:?}: {s:?} is not a number"),
        }
    };
    if let Some((a, b)) = spec.split_once("..") {
        let (a, b) = (number(a)?, number(b)?);
        if b <= a {
            bail!("{flag} {spec:?}: the range must go up ({a} to {b})");
        }
        let n = points.max(2);
        return Ok((0..n)
            .map(|i| {
                let v = a + (b - a) * f64::from(i) / f64::from(n - 1);
                (v * 1000.0).round() / 1000.0
            })
            .collect());
    }
    let values = spec.split(',').map(number).collect::<Result<Vec<_>>>()?;
    if values.is_empty() {
        bail!("{flag} is empty");
    }
    Ok(values)
}

impl SweepArgs {
    pub fn plan(&self) -> Result<SweepPlan> {
        let secs = |flag: &str, v: f64| -> Result<Duration> {
            if !(0.0..=3600.0).contains(&v) {
                bail!("{flag} must be between 0 and 3600 seconds, got {v}");
            }
            Ok(Duration::from_secs_f64(v))
        };
        let (trigger, cuts) = match self.trigger.split_once(':') {
            None if self.trigger == "outage" => (Trigger::Outage, vec![1.0]),
            Some(("brownout", cut)) => (
                Trigger::Brownout,
                parse_axis("--trigger brownout:", cut, self.points, "")?,
            ),
            _ => bail!(
                "--trigger {:?}: expected brownout:CUT (e.g. brownout:0.8), brownout:A..B or \
                 outage",
                self.trigger
            ),
        };
        let durations = parse_axis("--duration", &self.duration, self.points, "s")?
            .into_iter()
            .map(|d| {
                if d > 0.0 && d <= 3600.0 {
                    Ok(Duration::from_secs_f64(d))
                } else {
                    bail!("--duration values must be above 0 and at most 3600 s, got {d}")
                }
            })
            .collect::<Result<Vec<_>>>()?;
        if !(self.time_scale > 0.0 && self.time_scale <= 10.0) {
            bail!(
                "--time-scale must be above 0 and at most 10, got {}",
                self.time_scale
            );
        }
        let plan = SweepPlan {
            profiles: self.profile.clone(),
            loads: parse_axis("--load", &self.load, self.points, "")?,
            trigger,
            cuts,
            durations,
            warmup: secs("--warmup-s", self.warmup_s)?,
            pre: secs("--pre-s", self.pre_s)?,
            observe: secs("--observe-s", self.observe_s)?,
            hold: secs("--hold-s", self.hold_s)?,
            deadline: Duration::from_millis(self.deadline_ms),
            time_scale: self.time_scale,
            payments: self.capacity.payments,
            seed: self.seed,
        };
        plan.validate()?;
        Ok(plan)
    }
}

/// Runs `frlab sweep`.
pub async fn run(args: SweepArgs) -> Result<ExitCode> {
    let mut plan = args.plan()?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| crate::report::default_run_dir("sweep-"));
    let backend = args.backend.backend();
    let started = std::time::Instant::now();
    let (knee, payments, calibration) = args.capacity.resolve(&backend, plan.seed).await?;
    plan.payments = payments;
    eprintln!(
        "sweep: {} profile(s) x {} loads x {} triggers = {} cells, about {} (writing {})",
        plan.profiles.len(),
        plan.loads.len(),
        plan.cuts.len() * plan.durations.len(),
        plan.cell_count(),
        format_secs(plan.estimate_seconds()),
        out.display()
    );
    let command: Vec<String> = std::env::args().collect();
    let sweep = run_sweep(&plan, knee, calibration, &backend, &out, &command.join(" ")).await?;
    for line in boundaries(&sweep) {
        println!("{line}");
    }
    println!(
        "report: {} ({} in all)",
        out.join(SWEEP_MD).display(),
        format_secs(started.elapsed().as_secs_f64())
    );
    let failed = sweep.cells.iter().filter(|c| c.error.is_some()).count();
    if failed > 0 {
        eprintln!("{failed} cell(s) could not be measured; see the report");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn axes_are_ranges_or_lists_and_bad_ones_are_named() {
        assert_eq!(
            parse_axis("--load", "0.1..0.9", 5, "").unwrap(),
            [0.1, 0.3, 0.5, 0.7, 0.9]
        );
        assert_eq!(
            parse_axis("--duration", "2..30s", 5, "s").unwrap(),
            [2.0, 9.0, 16.0, 23.0, 30.0]
        );
        assert_eq!(
            parse_axis("--duration", "1,5s, 10s", 5, "s").unwrap(),
            [1.0, 5.0, 10.0]
        );
        let err = parse_axis("--load", "0.9..0.1", 5, "")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--load") && err.contains("must go up"),
            "{err}"
        );
        let err = parse_axis("--load", "0.5,abc", 5, "")
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"abc\" is not a number"), "{err}");
    }

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sweep: SweepArgs,
    }

    fn plan(args: &[&str]) -> Result<SweepPlan> {
        let mut argv = vec!["sweep"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().sweep.plan()
    }

    #[test]
    fn the_default_grid_is_five_by_five_and_fits_twenty_minutes() {
        let p = plan(&[]).unwrap();
        assert_eq!(p.profiles, ["b-naive-retries"]);
        assert_eq!(
            (p.loads.len(), p.durations.len(), &p.cuts),
            (5, 5, &vec![0.8])
        );
        assert!(
            p.estimate_seconds() < 19.0 * 60.0,
            "{}",
            p.estimate_seconds()
        );
    }

    #[test]
    fn triggers_parse_and_two_varying_axes_are_refused() {
        let p = plan(&["--trigger", "outage"]).unwrap();
        assert_eq!((p.trigger, p.cuts), (Trigger::Outage, vec![1.0]));
        let p = plan(&["--trigger", "brownout:0.5..0.9", "--duration", "10s"]).unwrap();
        assert_eq!(p.cuts, [0.5, 0.6, 0.7, 0.8, 0.9]);
        let err = plan(&["--trigger", "brownout:0.5..0.9"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not both"), "{err}");
        let err = plan(&["--trigger", "latency"]).unwrap_err().to_string();
        assert!(err.contains("--trigger \"latency\""), "{err}");
        let err = plan(&["--hold-s", "20"]).unwrap_err().to_string();
        assert!(err.contains("--hold-s"), "{err}");
    }
}

//! The run record: what an experiment run measured and how, the one data model every
//! report file is written from (serialized as `results.json`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::calibration::Calibration;
use super::environment::utc_timestamp;
use crate::experiment::PaymentsModel;
use crate::measure::{Amplification, Duplicates, Outcome, Recovery, Rejections, Window};

/// One experiment run: every cell it measured and how.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub run_id: String,
    /// UTC, RFC 3339 ([`utc_timestamp`]).
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    /// False while the run is in progress, or when it stopped early: the report then says
    /// so at the top and covers only the cells present.
    pub finished: bool,
    /// The command line that produced it.
    pub command: String,
    pub environment: Environment,
    pub settings: Settings,
    /// The calibration the load levels are fractions of; `None` when the rate was given
    /// (`--rate`, `--knee-rps`) or for runs made before calibrations existed.
    #[serde(default)]
    pub calibration: Option<Calibration>,
    pub cells: Vec<Cell>,
}

impl Run {
    /// A run that starts now, with no cells yet and not finished.
    pub fn new(
        run_id: impl Into<String>,
        command: impl Into<String>,
        environment: Environment,
        settings: Settings,
    ) -> Run {
        Run {
            run_id: run_id.into(),
            started_at: utc_timestamp(SystemTime::now()),
            finished_at: None,
            finished: false,
            command: command.into(),
            environment,
            settings,
            calibration: None,
            cells: Vec::new(),
        }
    }

    /// The cell of `profile` × `scenario` × `load`, created empty if the run has none yet.
    pub fn cell_mut(
        &mut self,
        profile: &str,
        scenario: &str,
        load: Option<&LoadLevel>,
    ) -> &mut Cell {
        let i =
            match self.cells.iter().position(|c| {
                c.profile == profile && c.scenario == scenario && c.load.as_ref() == load
            }) {
                Some(i) => i,
                None => {
                    self.cells.push(Cell {
                        profile: profile.to_string(),
                        scenario: scenario.to_string(),
                        load: load.cloned(),
                        trials: Vec::new(),
                        failed_trials: Vec::new(),
                    });
                    self.cells.len() - 1
                }
            };
        &mut self.cells[i]
    }

    /// Marks the run finished now: every planned cell ran.
    pub fn finish(&mut self) {
        self.finished = true;
        self.finished_at = Some(utc_timestamp(SystemTime::now()));
    }
}

/// Where the run happened and on which code.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Environment {
    pub machine: Machine,
    /// `git rev-parse HEAD`, or `"unknown"`.
    pub commit: String,
    /// Whether tracked files differed from `commit`; `None` when git could not tell.
    #[serde(default)]
    pub dirty: Option<bool>,
    /// Profile name -> FNV-1a 64 of its YAML text ([`fnv1a64_hex`]), so a reader can tell
    /// whether two runs used the same profile files.
    pub profile_hashes: BTreeMap<String, String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    /// Cores available to the process.
    pub cores: usize,
    pub memory_mib: u64,
    /// Distribution, kernel and architecture.
    pub os: String,
    /// `model name` of /proc/cpuinfo.
    pub cpu_model: String,
}

/// The experiment's parameters, the same for every cell. Times are seconds; phase times
/// are those of the measured phase, which starts after warm-up.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// The offered loads, one per level; every cell runs at one of them.
    #[serde(default)]
    pub loads: Vec<LoadLevel>,
    /// Offered load of runs made before load levels existed (their only level), logical
    /// requests per second; 0 in newer runs, which use [`Settings::loads`].
    #[serde(default)]
    pub offered_rps: f64,
    /// The client deadline of one logical request.
    pub deadline_ms: u64,
    pub warmup_s: f64,
    /// Healthy seconds before the fault: the baseline of recovery.
    pub pre_fault_s: f64,
    pub fault_s: f64,
    /// Seconds after the fault ends in which recovery is looked for.
    pub recovery_s: f64,
    /// Seconds allowed for outboxes and queues to empty before the audits are read.
    pub drain_s: f64,
    /// Base seed; each trial's own seed is in [`Trial::seed`].
    pub seed: u64,
    pub trials: u32,
    pub profiles: Vec<String>,
    pub scenarios: Vec<String>,
    /// How the services ran, e.g. "local processes, SQLite, in-memory idempotency keys".
    #[serde(default)]
    pub stack: String,
    /// Payments' capacity model; `None` for runs that used the services' defaults.
    #[serde(default)]
    pub payments: Option<PaymentsModel>,
    /// The factor the profiles' time constants (breaker open time and its backoff) were
    /// multiplied by; `None` for runs that did not record it.
    #[serde(default)]
    pub time_scale: Option<f64>,
}

/// One offered load: a fraction of the calibrated knee, or a rate given as such.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoadLevel {
    /// Share of the knee (`frlab calibrate`); `None` when the rate was given directly.
    #[serde(default)]
    pub fraction: Option<f64>,
    /// Logical requests per second offered.
    pub rps: f64,
}

impl LoadLevel {
    /// `0.5 × knee (57.2 req/s)` or `60.0 req/s`.
    pub fn label(&self) -> String {
        match self.fraction {
            Some(f) => format!("{f} × knee ({:.1} req/s)", self.rps),
            None => format!("{:.1} req/s", self.rps),
        }
    }

    /// A file-name-safe tag: `load0.5` or `rate60`.
    pub fn slug(&self) -> String {
        match self.fraction {
            Some(f) => format!("load{f}"),
            None => format!("rate{}", self.rps),
        }
    }
}

/// One resilience profile under one fault scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub profile: String,
    pub scenario: String,
    /// The load the cell ran at; `None` in runs made before load levels existed.
    #[serde(default)]
    pub load: Option<LoadLevel>,
    pub trials: Vec<Trial>,
    /// Trials that could not be measured (the stack did not start, …): listed, never
    /// averaged in.
    #[serde(default)]
    pub failed_trials: Vec<FailedTrial>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FailedTrial {
    pub trial: u32,
    pub seed: u64,
    pub error: String,
}

/// One trial of a cell: every metric of DESIGN.md "Metrics — exact definitions".
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub trial: u32,
    pub seed: u64,
    /// Logical requests issued in the measured phase.
    pub issued: u64,
    /// Logical requests that ended OK within the client deadline.
    pub succeeded: u64,
    /// `succeeded / issued`; `None` when nothing was issued.
    pub success_rate: Option<f64>,
    /// Successes per second of the measured phase.
    pub goodput_rps: f64,
    /// From the intended send time to the final answer.
    pub latency_ms: Latency,
    pub amplification: Amplification,
    pub duplicates: Duplicates,
    pub lost_events: u64,
    pub orphaned_reservations: u64,
    /// Charges completed after the caller's deadline had passed.
    pub wasted_charges: u64,
    /// Orders not confirmed whose charge was never refunded.
    #[serde(default)]
    pub unrefunded_unconfirmed: u64,
    /// Sagas neither confirmed nor failed after the drain.
    #[serde(default)]
    pub sagas_unfinished: u64,
    /// The promises of the profile this trial broke
    /// ([`crate::measure::Invariants::violations`]); empty when it kept them all.
    #[serde(default)]
    pub violations: Vec<String>,
    /// Pre-fault success rate ([`metrics::baseline_rate`]).
    pub baseline_success_rate: Option<f64>,
    /// `None` when the scenario has no fault end (or no baseline to compare with).
    pub recovery: Option<Recovery>,
    /// Stable, recovered, metastable or did not recover ([`crate::measure::outcome`]);
    /// `None` without a fault or a baseline, and in runs made before it was recorded.
    #[serde(default)]
    pub outcome: Option<Outcome>,
    pub breaker: Breaker,
    pub rejections: Rejections,
    pub generator: Generator,
    /// CPU seconds each process used during the trial (service names, `frlab`).
    pub cpu_s_per_process: BTreeMap<String, f64>,
    /// When the fault was in force, seconds of the measured phase.
    pub fault_window: Option<FaultWindow>,
    /// One entry per second of the measured phase.
    pub timeline: Vec<Window>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    /// Transitions to open over every service and hop ([`metrics::breaker_opens`]).
    pub opens: u64,
    /// Seconds of the measured load with at least one breaker not closed (open or
    /// half-open), sampled every 250 ms; `None` when it was not measured.
    pub time_open_s: Option<f64>,
}

/// The load generator's own health: if it could not keep its schedule, the load was not
/// what the settings say.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Generator {
    /// p99 of how late requests were sent after their intended time.
    pub lag_p99_ms: f64,
    /// Scheduled requests never sent.
    pub dropped: u64,
    pub cpu_s: f64,
    /// The generator was the bottleneck (lag or drops beyond its limits).
    pub saturated: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FaultWindow {
    pub start_s: f64,
    pub end_s: f64,
}

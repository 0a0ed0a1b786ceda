//! The run record: what an experiment run measured and how, the one data model every
//! report file is written from (serialized as `results.json`).

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::environment::utc_timestamp;
use crate::measure::{Amplification, Duplicates, Recovery, Rejections, Window};

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
            cells: Vec::new(),
        }
    }

    /// The cell of `profile` × `scenario`, created empty if the run has none yet.
    pub fn cell_mut(&mut self, profile: &str, scenario: &str) -> &mut Cell {
        let i = match self
            .cells
            .iter()
            .position(|c| c.profile == profile && c.scenario == scenario)
        {
            Some(i) => i,
            None => {
                self.cells.push(Cell {
                    profile: profile.to_string(),
                    scenario: scenario.to_string(),
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
    /// Offered load of the open-loop generator, logical requests per second.
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
}

/// One resilience profile under one fault scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub profile: String,
    pub scenario: String,
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
    /// Pre-fault success rate ([`metrics::baseline_rate`]).
    pub baseline_success_rate: Option<f64>,
    /// `None` when the scenario has no fault end (or no baseline to compare with).
    pub recovery: Option<Recovery>,
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

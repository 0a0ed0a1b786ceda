//! What an experiment run records and the files written from it.
//!
//! [`Run`] is the whole record: how it was run ([`Environment`], [`Settings`]) and, per
//! profile × scenario [`Cell`], every [`Trial`]'s numbers. [`write_all`] writes it to a
//! run directory:
//!
//! | file | content |
//! |---|---|
//! | `results.json` | the [`Run`], the only source of everything else |
//! | `results.csv` | one row per trial, every metric, a header row |
//! | `report.md` | environment, then per scenario a table of mean ± 95 % CI per profile |
//! | `<scenario>-success.svg` | success rate over time per profile, fault window shaded |
//! | `<scenario>-p95.svg` | p95 latency over time per profile |
//! | `<scenario>-amplification.svg` | retry amplification per hop (grouped bars) |
//! | `<scenario>-recovery.svg` | recovery time per profile; "did not recover" hatched |
//!
//! [`rebuild`] rewrites everything but `results.json` from it (`frlab report <dir>`). No
//! number in a report is typed by hand: each comes from `results.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::metrics::{self, Amplification, DID_NOT_RECOVER, Duplicates, Interval, Recovery};
pub use crate::metrics::{Rejections, Window};

pub const RESULTS_JSON: &str = "results.json";
pub const RESULTS_CSV: &str = "results.csv";
pub const REPORT_MD: &str = "report.md";

// ---------------------------------------------------------------------------------------
// The data model
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Environment
// ---------------------------------------------------------------------------------------

impl Environment {
    /// The machine, the commit of the repository at `repo_dir`, and the hash of each
    /// `(profile name, YAML text)`.
    pub fn collect<'a>(
        repo_dir: &Path,
        profiles: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Environment {
        let (commit, dirty) = git_commit(repo_dir);
        Environment {
            machine: Machine::detect(),
            commit,
            dirty,
            profile_hashes: profiles
                .into_iter()
                .map(|(name, yaml)| (name.to_string(), fnv1a64_hex(yaml)))
                .collect(),
        }
    }
}

impl Machine {
    /// Reads /proc/cpuinfo, /proc/meminfo, /etc/os-release and the kernel release; what
    /// cannot be read is `"unknown"` or 0.
    pub fn detect() -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or_else(|_| {
                cpuinfo
                    .lines()
                    .filter(|l| l.starts_with("processor"))
                    .count()
            });
        let distro = os_release_name(&read("/etc/os-release"))
            .unwrap_or_else(|| std::env::consts::OS.to_string());
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        let os = if kernel.is_empty() {
            format!("{distro}, {}", std::env::consts::ARCH)
        } else {
            format!("{distro}, kernel {kernel}, {}", std::env::consts::ARCH)
        };
        Machine {
            cores,
            memory_mib: mem_total_mib(&read("/proc/meminfo")).unwrap_or(0),
            os,
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_string()),
        }
    }
}

/// The first `model name` of /proc/cpuinfo text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (key, value) = l.split_once(':')?;
        (key.trim() == "model name").then(|| value.trim().to_string())
    })
}

/// `MemTotal` of /proc/meminfo text, in MiB.
pub fn mem_total_mib(meminfo: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix("MemTotal:")?;
        let kib: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kib / 1024)
    })
}

/// `PRETTY_NAME` of /etc/os-release text.
pub fn os_release_name(text: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let v = l.strip_prefix("PRETTY_NAME=")?;
        Some(v.trim().trim_matches('"').to_string())
    })
}

/// `git rev-parse HEAD` in `dir` (or `"unknown"`), and whether tracked files differ from it.
pub fn git_commit(dir: &Path) -> (String, Option<bool>) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "HEAD"]) {
        Some(commit) if !commit.is_empty() => {
            let dirty =
                git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty());
            (commit, dirty)
        }
        _ => ("unknown".to_string(), None),
    }
}

/// FNV-1a 64-bit hash of `text`, 16 lower-case hex digits. Not cryptographic: it tells
/// whether two profile files were the same, nothing more.
pub fn fnv1a64_hex(text: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// `time` as UTC RFC 3339 with whole seconds: `2026-11-27T18:05:00Z`.
pub fn utc_timestamp(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

// ---------------------------------------------------------------------------------------
// Writing and rebuilding
// ---------------------------------------------------------------------------------------

/// A report file that could not be read or written; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid results file: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Writes `results.json`, then everything derived from it, into `dir` (created if
/// needed). Each file is written to a temporary name and renamed, so a reader never sees
/// half a file; the runner may call this after every cell with `finished: false`.
///
/// The derived files are built from the JSON text just written, read back, so that
/// [`rebuild`] reproduces them byte for byte.
pub fn write_all(run: &Run, dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(RESULTS_JSON);
    let json = serde_json::to_string_pretty(run).map_err(|source| ReportError::Invalid {
        path: path.clone(),
        source,
    })?;
    write_file(&path, &(json.clone() + "\n"))?;
    let reread: Run =
        serde_json::from_str(&json).map_err(|source| ReportError::Invalid { path, source })?;
    write_derived(&reread, dir)
}

/// Reads `dir/results.json` and rewrites `results.csv`, `report.md` and the charts.
pub fn rebuild(dir: &Path) -> Result<(), ReportError> {
    let run = read_run(dir)?;
    write_derived(&run, dir)
}

/// The [`Run`] in `dir/results.json`.
pub fn read_run(dir: &Path) -> Result<Run, ReportError> {
    let path = dir.join(RESULTS_JSON);
    let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Invalid { path, source })
}

fn write_derived(run: &Run, dir: &Path) -> Result<(), ReportError> {
    write_file(&dir.join(RESULTS_CSV), &csv(run))?;
    for (name, svg) in charts(run) {
        write_file(&dir.join(name), &svg)?;
    }
    write_file(&dir.join(REPORT_MD), &markdown(run))
}

fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

// ---------------------------------------------------------------------------------------
// Aggregation over trials
// ---------------------------------------------------------------------------------------

/// Scenarios in the order of the settings, then any only the cells name.
fn scenarios(run: &Run) -> Vec<String> {
    ordered(
        &run.settings.scenarios,
        run.cells.iter().map(|c| &c.scenario),
    )
}

/// Profiles in the order of the settings, then any only the cells name.
fn profiles(run: &Run) -> Vec<String> {
    ordered(&run.settings.profiles, run.cells.iter().map(|c| &c.profile))
}

fn ordered<'a>(first: &'a [String], more: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in first.iter().chain(more) {
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

fn cell<'a>(run: &'a Run, profile: &str, scenario: &str) -> Option<&'a Cell> {
    run.cells
        .iter()
        .find(|c| c.profile == profile && c.scenario == scenario)
}

/// Hop names in request-flow order, then any others the trials carry.
fn hop_names(run: &Run) -> Vec<String> {
    let known: Vec<String> = metrics::HOPS.iter().map(|h| h.name.to_string()).collect();
    let others: BTreeSet<&String> = run
        .cells
        .iter()
        .flat_map(|c| &c.trials)
        .flat_map(|t| t.amplification.per_hop.keys())
        .filter(|h| !known.contains(h))
        .collect();
    ordered(&known, others.into_iter())
}

/// `caller→callee` for a hop name.
fn hop_label(hop: &str) -> String {
    match metrics::HOPS.iter().find(|h| h.name == hop) {
        Some(h) => format!("{}→{}", h.caller, h.name),
        None => hop.to_string(),
    }
}

fn interval_of(trials: &[Trial], f: impl Fn(&Trial) -> Option<f64>) -> Option<Interval> {
    let values: Vec<f64> = trials.iter().filter_map(f).collect();
    metrics::ci95(&values)
}

/// Recovery over a cell's trials.
enum RecoverySummary {
    /// No trial had a fault end to recover from.
    NotApplicable,
    /// Some trials did not recover.
    DidNotRecover {
        failed: usize,
        of: usize,
    },
    Recovered(Interval),
}

fn recovery_summary(trials: &[Trial]) -> RecoverySummary {
    let outcomes: Vec<Recovery> = trials.iter().filter_map(|t| t.recovery).collect();
    let failed = outcomes
        .iter()
        .filter(|r| matches!(r, Recovery::DidNotRecover))
        .count();
    if outcomes.is_empty() {
        return RecoverySummary::NotApplicable;
    }
    if failed > 0 {
        return RecoverySummary::DidNotRecover {
            failed,
            of: outcomes.len(),
        };
    }
    let seconds: Vec<f64> = outcomes.iter().filter_map(Recovery::seconds).collect();
    match metrics::ci95(&seconds) {
        Some(i) => RecoverySummary::Recovered(i),
        None => RecoverySummary::NotApplicable,
    }
}

/// `mean ± half width`, with the number of trials when it differs from the cell's.
fn show(interval: Option<Interval>, trials: usize, decimals: usize, unit: &str) -> String {
    match interval {
        None => "n/a".to_string(),
        Some(i) if i.n != trials && i.half_width.is_some() => {
            format!("{} (n = {})", i.format(decimals, unit), i.n)
        }
        Some(i) => i.format(decimals, unit),
    }
}

fn show_recovery(trials: &[Trial]) -> String {
    match recovery_summary(trials) {
        RecoverySummary::NotApplicable => "n/a".to_string(),
        RecoverySummary::DidNotRecover { failed, of } => {
            format!("{DID_NOT_RECOVER} ({failed} of {of} trials)")
        }
        RecoverySummary::Recovered(i) => show(Some(i), trials.len(), 1, " s"),
    }
}

/// Mean over trials, per second, of `f` of that second's window (trials without a value
/// for a second are left out of its mean).
fn mean_timeline(trials: &[Trial], f: impl Fn(&Window) -> Option<f64>) -> Vec<(f64, f64)> {
    let mut by_second: BTreeMap<u32, (f64, usize)> = BTreeMap::new();
    for w in trials.iter().flat_map(|t| &t.timeline) {
        if let Some(v) = f(w).filter(|v| v.is_finite()) {
            let e = by_second.entry(w.second).or_insert((0.0, 0));
            e.0 += v;
            e.1 += 1;
        }
    }
    by_second
        .into_iter()
        .map(|(s, (total, n))| (f64::from(s), total / n as f64))
        .collect()
}

// ---------------------------------------------------------------------------------------
// results.csv
// ---------------------------------------------------------------------------------------

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// One row per measured trial; a header row first. Empty fields are values that do not
/// exist (a ratio with a zero denominator, no fault end).
fn csv(run: &Run) -> String {
    let hops = hop_names(run);
    let processes: BTreeSet<&String> = run
        .cells
        .iter()
        .flat_map(|c| &c.trials)
        .flat_map(|t| t.cpu_s_per_process.keys())
        .collect();
    let mut header: Vec<String> = [
        "run_id",
        "scenario",
        "profile",
        "trial",
        "seed",
        "issued",
        "succeeded",
        "success_rate",
        "goodput_rps",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "latency_max_ms",
        "amplification_end_to_end",
        "amplification_client",
    ]
    .map(String::from)
    .to_vec();
    header.extend(hops.iter().map(|h| format!("amplification_{h}")));
    header.extend(
        [
            "logical_requests",
            "place_order_attempts",
            "charge_attempts",
            "duplicate_order_keys",
            "extra_orders",
            "orders_charged_more_than_once",
            "extra_charges",
            "events_delivered_more_than_once",
            "lost_events",
            "orphaned_reservations",
            "wasted_charges",
            "baseline_success_rate",
            "recovery_s",
            "fault_start_s",
            "fault_end_s",
            "breaker_opens",
            "breaker_time_open_s",
            "rejections_bulkhead",
            "rejections_shed",
            "rejections_adaptive",
            "rejections_breaker",
            "generator_lag_p99_ms",
            "generator_dropped",
            "generator_cpu_s",
            "generator_saturated",
        ]
        .map(String::from),
    );
    header.extend(processes.iter().map(|p| format!("cpu_s_{p}")));
    let mut out = header.join(",") + "\n";
    for cell in &run.cells {
        for t in &cell.trials {
            let a = &t.amplification;
            let mut row: Vec<String> = vec![
                run.run_id.clone(),
                cell.scenario.clone(),
                cell.profile.clone(),
                t.trial.to_string(),
                t.seed.to_string(),
                t.issued.to_string(),
                t.succeeded.to_string(),
                opt(t.success_rate),
                t.goodput_rps.to_string(),
                t.latency_ms.p50.to_string(),
                t.latency_ms.p95.to_string(),
                t.latency_ms.p99.to_string(),
                t.latency_ms.max.to_string(),
                opt(a.end_to_end),
                opt(a.client),
            ];
            row.extend(
                hops.iter()
                    .map(|h| opt(a.per_hop.get(h).copied().flatten())),
            );
            row.extend([
                a.logical_requests.to_string(),
                a.place_order_attempts.to_string(),
                a.charge_attempts.to_string(),
                t.duplicates.orders.to_string(),
                t.duplicates.extra_orders.to_string(),
                t.duplicates.charges.to_string(),
                t.duplicates.extra_charges.to_string(),
                t.duplicates.deliveries.to_string(),
                t.lost_events.to_string(),
                t.orphaned_reservations.to_string(),
                t.wasted_charges.to_string(),
                opt(t.baseline_success_rate),
                match t.recovery {
                    Some(Recovery::Recovered { seconds }) => seconds.to_string(),
                    Some(Recovery::DidNotRecover) => DID_NOT_RECOVER.to_string(),
                    None => String::new(),
                },
                opt(t.fault_window.map(|w| w.start_s)),
                opt(t.fault_window.map(|w| w.end_s)),
                t.breaker.opens.to_string(),
                opt(t.breaker.time_open_s),
                t.rejections.bulkhead.to_string(),
                t.rejections.shed.to_string(),
                t.rejections.adaptive.to_string(),
                t.rejections.breaker.to_string(),
                t.generator.lag_p99_ms.to_string(),
                t.generator.dropped.to_string(),
                t.generator.cpu_s.to_string(),
                t.generator.saturated.to_string(),
            ]);
            row.extend(
                processes
                    .iter()
                    .map(|p| opt(t.cpu_s_per_process.get(*p).copied())),
            );
            let row: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
            out += &row.join(",");
            out.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// report.md
// ---------------------------------------------------------------------------------------

/// Text safe in a Markdown table cell: no column breaks, no HTML tags.
fn md(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Markdown table under a bold caption: one row per cell, its profile first.
fn table(
    o: &mut String,
    caption: &str,
    head: &[String],
    cells: &[&Cell],
    row: impl Fn(&[Trial], usize) -> Vec<String>,
) {
    if cells.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n**{caption}**\n\n| {} |", head.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(head.len()));
    for c in cells {
        let values = row(&c.trials, c.trials.len());
        let _ = writeln!(o, "| {} | {} |", md(&c.profile), values.join(" | "));
    }
}

/// File-name-safe form of a scenario name.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn chart_names(scenario: &str) -> [(String, &'static str); 4] {
    let s = slug(scenario);
    [
        (format!("{s}-success.svg"), "success rate over time"),
        (format!("{s}-p95.svg"), "p95 latency over time"),
        (
            format!("{s}-amplification.svg"),
            "retry amplification per hop",
        ),
        (format!("{s}-recovery.svg"), "recovery time"),
    ]
}

/// What the seed published for 20 % payment errors (DESIGN.md), to set beside ours.
struct Claim {
    profile: &'static str,
    success_pct: f64,
    p95_ms: f64,
    amplification: f64,
}

const SEED_CLAIMS: [Claim; 4] = [
    Claim {
        profile: "a-baseline",
        success_pct: 80.0,
        p95_ms: 340.0,
        amplification: 1.0,
    },
    Claim {
        profile: "b-naive-retries",
        success_pct: 51.0,
        p95_ms: 890.0,
        amplification: 2.6,
    },
    Claim {
        profile: "d-breakers",
        success_pct: 92.0,
        p95_ms: 210.0,
        amplification: 1.1,
    },
    Claim {
        profile: "f-full",
        success_pct: 94.0,
        p95_ms: 185.0,
        amplification: 1.1,
    },
];

/// Whether `claim` lies in the interval: a verdict only when there is an interval.
fn verdict(claim: f64, interval: Option<Interval>) -> &'static str {
    match interval {
        Some(Interval {
            mean,
            half_width: Some(hw),
            ..
        }) => {
            if (claim - mean).abs() <= hw {
                "within CI"
            } else if claim > mean {
                "claim higher"
            } else {
                "claim lower"
            }
        }
        _ => "no CI",
    }
}

fn markdown(run: &Run) -> String {
    let mut o = String::new();
    let s = &run.settings;
    let env = &run.environment;
    let expected = s.profiles.len() * s.scenarios.len();
    let _ = writeln!(o, "# Failure Recovery Lab — run {}\n", run.run_id);
    if run.finished {
        let _ = writeln!(o, "**Status: FINISHED** ({} cells).\n", run.cells.len());
    } else {
        let _ = writeln!(
            o,
            "> **Status: this run did NOT finish.** It holds {} of {} cells; missing cells \
             show as \"not run\" and every number below covers only the trials completed.\n",
            run.cells.len(),
            expected
        );
    }
    let _ = writeln!(o, "## How it was run\n");
    let _ = writeln!(o, "- Command: `{}`", run.command);
    let dirty = match env.dirty {
        Some(true) => " (with uncommitted changes)",
        Some(false) => "",
        None => " (state of the working tree unknown)",
    };
    let _ = writeln!(o, "- Commit: `{}`{dirty}", env.commit);
    let _ = writeln!(
        o,
        "- Started {}, finished {}",
        run.started_at,
        run.finished_at.as_deref().unwrap_or("—")
    );
    let m = &env.machine;
    let _ = writeln!(
        o,
        "- Machine: {} cores, {} MiB memory, {}; CPU {}",
        m.cores,
        m.memory_mib,
        md(&m.os),
        md(&m.cpu_model)
    );
    if !s.stack.is_empty() {
        let _ = writeln!(o, "- Stack: {}", md(&s.stack));
    }
    let _ = writeln!(
        o,
        "- Load: open loop, {} logical requests/s offered, client deadline {} ms",
        s.offered_rps, s.deadline_ms
    );
    let _ = writeln!(
        o,
        "- Phases: warm-up {} s (not measured), then pre-fault {} s, fault {} s, recovery {} s; \
         drain {} s before the audits",
        s.warmup_s, s.pre_fault_s, s.fault_s, s.recovery_s, s.drain_s
    );
    let _ = writeln!(o, "- Seed {}, {} trials per cell", s.seed, s.trials);
    let _ = writeln!(o, "\n| profile | FNV-1a 64 of its YAML |\n|---|---|");
    for (name, hash) in &env.profile_hashes {
        let _ = writeln!(o, "| {} | `{hash}` |", md(name));
    }
    let _ = writeln!(
        o,
        "\nEach value is the mean ± the half width of its 95 % confidence interval \
         (Student t, n − 1 degrees of freedom) over the cell's trials; `(n = k)` marks a value \
         only k trials had. Definitions: DESIGN.md, \"Metrics — exact definitions\". \
         Amplification per hop is attempts received by the callee (counted on arrival) / first \
         attempts of the caller; end to end, payments Charge attempts / logical requests. \
         MTTR runs from the fault's end to the start of the first {} consecutive one-second \
         windows whose success rate is at least {} % of the pre-fault baseline; a second in \
         which nothing was issued does not count as recovered. A cell \"did not recover\" when \
         any of its trials found no such run within the recovery phase.",
        metrics::RECOVERY_WINDOWS,
        metrics::RECOVERY_FRACTION * 100.0
    );

    let profiles = profiles(run);
    let hops = hop_names(run);
    for scenario in scenarios(run) {
        let _ = writeln!(o, "\n## Scenario `{}`\n", md(&scenario));
        let windows: BTreeSet<String> = run
            .cells
            .iter()
            .filter(|c| c.scenario == scenario)
            .flat_map(|c| &c.trials)
            .filter_map(|t| t.fault_window)
            .map(|w| format!("{}–{} s", w.start_s, w.end_s))
            .collect();
        if !windows.is_empty() {
            let list: Vec<String> = windows.into_iter().collect();
            let _ = writeln!(
                o,
                "Fault in force {} of the measured phase.\n",
                list.join(", ")
            );
        }
        let _ = writeln!(
            o,
            "| profile | trials | success rate | p95 (ms) | amplification (e2e) | MTTR | \
             duplicate orders | duplicate charges | lost events |\n\
             |---|---|---|---|---|---|---|---|---|"
        );
        for profile in &profiles {
            let Some(c) = cell(run, profile, &scenario).filter(|c| !c.trials.is_empty()) else {
                let _ = writeln!(o, "| {} | 0 | not run | | | | | | |", md(profile));
                continue;
            };
            let t = &c.trials;
            let n = t.len();
            let _ = writeln!(
                o,
                "| {} | {n} | {} | {} | {} | {} | {} | {} | {} |",
                md(profile),
                show(
                    interval_of(t, |x| x.success_rate).map(|i| i.scaled(100.0)),
                    n,
                    1,
                    " %"
                ),
                show(interval_of(t, |x| Some(x.latency_ms.p95)), n, 0, ""),
                show(interval_of(t, |x| x.amplification.end_to_end), n, 2, "×"),
                show_recovery(t),
                show(
                    interval_of(t, |x| Some(x.duplicates.orders as f64)),
                    n,
                    1,
                    ""
                ),
                show(
                    interval_of(t, |x| Some(x.duplicates.charges as f64)),
                    n,
                    1,
                    ""
                ),
                show(interval_of(t, |x| Some(x.lost_events as f64)), n, 1, ""),
            );
        }

        // Everything else measured, in three more tables of the same trials.
        let measured: Vec<&Cell> = profiles
            .iter()
            .filter_map(|p| cell(run, p, &scenario))
            .filter(|c| !c.trials.is_empty())
            .collect();
        let mut head: Vec<String> = [
            "profile",
            "goodput (req/s)",
            "p50 (ms)",
            "p99 (ms)",
            "max (ms)",
        ]
        .map(String::from)
        .to_vec();
        head.extend(hops.iter().map(|h| format!("amp. {}", hop_label(h))));
        head.push("amp. client".into());
        table(
            &mut o,
            "Latency and retry amplification per hop",
            &head,
            &measured,
            |t, n| {
                let mut row = vec![
                    show(interval_of(t, |x| Some(x.goodput_rps)), n, 1, ""),
                    show(interval_of(t, |x| Some(x.latency_ms.p50)), n, 0, ""),
                    show(interval_of(t, |x| Some(x.latency_ms.p99)), n, 0, ""),
                    show(interval_of(t, |x| Some(x.latency_ms.max)), n, 0, ""),
                ];
                row.extend(hops.iter().map(|h| {
                    let i = interval_of(t, |x| x.amplification.per_hop.get(h).copied().flatten());
                    show(i, n, 2, "×")
                }));
                row.push(show(interval_of(t, |x| x.amplification.client), n, 2, "×"));
                row
            },
        );
        let head = [
            "profile",
            "baseline success",
            "orphaned reservations",
            "events delivered more than once",
            "wasted charges",
            "breaker opens",
            "breaker open (s)",
            "breaker rejections",
            "bulkhead rejections",
            "shed",
            "adaptive rejections",
        ]
        .map(String::from);
        table(
            &mut o,
            "Invariants and resilience patterns",
            &head,
            &measured,
            |t, n| {
                let count =
                    |f: fn(&Trial) -> u64| show(interval_of(t, |x| Some(f(x) as f64)), n, 1, "");
                vec![
                    show(
                        interval_of(t, |x| x.baseline_success_rate).map(|i| i.scaled(100.0)),
                        n,
                        1,
                        " %",
                    ),
                    count(|x| x.orphaned_reservations),
                    count(|x| x.duplicates.deliveries),
                    count(|x| x.wasted_charges),
                    count(|x| x.breaker.opens),
                    show(interval_of(t, |x| x.breaker.time_open_s), n, 1, ""),
                    count(|x| x.rejections.breaker),
                    count(|x| x.rejections.bulkhead),
                    count(|x| x.rejections.shed),
                    count(|x| x.rejections.adaptive),
                ]
            },
        );
        let processes: BTreeSet<&String> = measured
            .iter()
            .flat_map(|c| &c.trials)
            .flat_map(|t| t.cpu_s_per_process.keys())
            .collect();
        let mut head: Vec<String> = [
            "profile",
            "generator lag p99 (ms)",
            "dropped",
            "generator saturated",
        ]
        .map(String::from)
        .to_vec();
        head.extend(processes.iter().map(|p| format!("CPU s {p}")));
        table(
            &mut o,
            "Load generator and CPU",
            &head,
            &measured,
            |t, n| {
                let mut row = vec![
                    show(interval_of(t, |x| Some(x.generator.lag_p99_ms)), n, 1, ""),
                    show(
                        interval_of(t, |x| Some(x.generator.dropped as f64)),
                        n,
                        1,
                        "",
                    ),
                    format!(
                        "{} of {n}",
                        t.iter().filter(|x| x.generator.saturated).count()
                    ),
                ];
                row.extend(processes.iter().map(|p| {
                    show(
                        interval_of(t, |x| x.cpu_s_per_process.get(*p).copied()),
                        n,
                        1,
                        "",
                    )
                }));
                row
            },
        );

        let saturated: usize = run
            .cells
            .iter()
            .filter(|c| c.scenario == scenario)
            .flat_map(|c| &c.trials)
            .filter(|t| t.generator.saturated)
            .count();
        if saturated > 0 {
            let _ = writeln!(
                o,
                "\n**Warning:** the load generator was saturated in {saturated} trial(s) of \
                 this scenario: their offered load was lower than the settings say."
            );
        }
        for c in run.cells.iter().filter(|c| c.scenario == scenario) {
            for f in &c.failed_trials {
                let _ = writeln!(
                    o,
                    "\n- `{}` trial {} (seed {}) could not be measured: {}",
                    md(&c.profile),
                    f.trial,
                    f.seed,
                    f.error.replace('\n', " ")
                );
            }
        }
        let _ = writeln!(o);
        for (file, alt) in chart_names(&scenario) {
            let _ = writeln!(o, "![{}: {alt}]({file})\n", md(&scenario));
        }
    }

    seed_comparison(run, &mut o);
    o
}

/// The seed's published numbers beside ours, when the run measured `payment_errors`.
fn seed_comparison(run: &Run, o: &mut String) {
    let scenario = "payment_errors";
    let rows: Vec<(&Claim, &Cell)> = SEED_CLAIMS
        .iter()
        .filter_map(|claim| {
            cell(run, claim.profile, scenario)
                .filter(|c| !c.trials.is_empty())
                .map(|c| (claim, c))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## The seed's claims for 20 % payment errors\n\n\
         The seed published these without runs; ours are from scenario `{scenario}` at {} \
         requests/s. A claim is \"within CI\" when it lies inside our 95 % interval.\n\n\
         | profile | seed success | ours | | seed p95 | ours (ms) | | seed amplification | ours (e2e) | |\n\
         |---|---|---|---|---|---|---|---|---|---|",
        run.settings.offered_rps
    );
    for (claim, c) in rows {
        let t = &c.trials;
        let n = t.len();
        let success = interval_of(t, |x| x.success_rate).map(|i| i.scaled(100.0));
        let p95 = interval_of(t, |x| Some(x.latency_ms.p95));
        let amp = interval_of(t, |x| x.amplification.end_to_end);
        let _ = writeln!(
            o,
            "| {} | {} % | {} | {} | {} ms | {} | {} | {}× | {} | {} |",
            claim.profile,
            claim.success_pct,
            show(success, n, 1, " %"),
            verdict(claim.success_pct, success),
            claim.p95_ms,
            show(p95, n, 0, ""),
            verdict(claim.p95_ms, p95),
            claim.amplification,
            show(amp, n, 2, "×"),
            verdict(claim.amplification, amp),
        );
    }
    let _ = writeln!(o);
}

// ---------------------------------------------------------------------------------------
// SVG charts
// ---------------------------------------------------------------------------------------

const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 380.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 190.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 56.0;

fn colour(profiles: &[String], profile: &str) -> &'static str {
    let i = profiles.iter().position(|p| p == profile).unwrap_or(0);
    PALETTE[i % PALETTE.len()]
}

fn xml(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

/// A round axis maximum and tick step for data up to `max` (steps of 1, 2 or 5 × 10^k).
fn nice_axis(max: f64) -> (f64, f64) {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let raw = max / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    ((max / step).ceil() * step, step)
}

fn tick_label(v: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{v:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{v:.decimals$}")
    }
}

struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn plot_w() -> f64 {
        WIDTH - LEFT - RIGHT
    }
    fn plot_h() -> f64 {
        HEIGHT - TOP - BOTTOM
    }
    fn x(&self, v: f64) -> f64 {
        LEFT + v / self.x_max * Self::plot_w()
    }
    fn y(&self, v: f64) -> f64 {
        TOP + Self::plot_h() - v.min(self.y_max) / self.y_max * Self::plot_h()
    }
}

fn svg_open(title: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
         viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <title>{}</title>\n\
         <rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"#ffffff\"/>\n\
         <text x=\"{}\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">{}</text>",
        xml(title),
        LEFT + Frame::plot_w() / 2.0,
        xml(title)
    );
    o
}

/// Y axis with ticks and grid lines, the axis label, and the X axis line.
fn y_axis(o: &mut String, frame: &Frame, step: f64, label: &str) {
    let mut v = 0.0;
    while v <= frame.y_max + step * 1e-9 {
        let y = frame.y(v);
        let _ = writeln!(
            o,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e0e0e0\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            LEFT + Frame::plot_w(),
            LEFT - 6.0,
            y + 4.0,
            tick_label(v, step)
        );
        v += step;
    }
    let mid = TOP + Frame::plot_h() / 2.0;
    let _ = writeln!(
        o,
        "<text x=\"16\" y=\"{mid:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {mid:.1})\">{}</text>\n\
         <line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#000000\"/>\n\
         <line x1=\"{LEFT}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000000\"/>",
        xml(label),
        TOP + Frame::plot_h(),
        TOP + Frame::plot_h(),
        LEFT + Frame::plot_w(),
        TOP + Frame::plot_h()
    );
}

fn legend(o: &mut String, entries: &[(String, &str)]) {
    let x = WIDTH - RIGHT + 16.0;
    for (i, (name, colour)) in entries.iter().enumerate() {
        let y = TOP + 8.0 + i as f64 * 20.0;
        let _ = writeln!(
            o,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"10\" fill=\"{colour}\"/>\n\
             <text x=\"{:.1}\" y=\"{y:.1}\">{}</text>",
            y - 9.0,
            x + 20.0,
            xml(name)
        );
    }
}

struct Series {
    name: String,
    colour: &'static str,
    points: Vec<(f64, f64)>,
}

/// Lines over time; a gap in the seconds breaks a line rather than bridging it.
fn line_chart(
    title: &str,
    y_label: &str,
    series: &[Series],
    y_max: Option<f64>,
    shade: Option<FaultWindow>,
) -> String {
    let last_x = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0 + 1.0))
        .chain(shade.map(|w| w.end_s))
        .fold(1.0, f64::max);
    let data_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let (y_top, y_step) = nice_axis(y_max.unwrap_or(data_max));
    let (x_top, x_step) = nice_axis(last_x);
    let frame = Frame {
        x_max: x_top,
        y_max: y_top,
    };
    let mut o = svg_open(title);
    if let Some(w) = shade {
        let (x0, x1) = (frame.x(w.start_s.max(0.0)), frame.x(w.end_s.min(x_top)));
        let _ = writeln!(
            o,
            "<rect x=\"{x0:.1}\" y=\"{TOP}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"#999999\" \
             fill-opacity=\"0.25\"/>\n<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" \
             fill=\"#555555\">fault</text>",
            (x1 - x0).max(0.0),
            Frame::plot_h(),
            (x0 + x1) / 2.0,
            TOP + 14.0
        );
    }
    y_axis(&mut o, &frame, y_step, y_label);
    let mut v = 0.0;
    while v <= x_top + x_step * 1e-9 {
        let x = frame.x(v);
        let base = TOP + Frame::plot_h();
        let _ = writeln!(
            o,
            "<line x1=\"{x:.1}\" y1=\"{base:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"#000000\"/>\n\
             <text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            base + 5.0,
            base + 18.0,
            tick_label(v, x_step)
        );
        v += x_step;
    }
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">seconds of the measured phase (mean over trials)</text>",
        LEFT + Frame::plot_w() / 2.0,
        HEIGHT - 12.0
    );
    for s in series {
        let mut segments: Vec<Vec<(f64, f64)>> = Vec::new();
        let mut previous: Option<f64> = None;
        for &(t, v) in &s.points {
            // Each point sits at the middle of its one-second window.
            let p = (frame.x(t + 0.5), frame.y(v));
            match segments.last_mut() {
                Some(seg) if previous == Some(t - 1.0) => seg.push(p),
                _ => segments.push(vec![p]),
            }
            previous = Some(t);
        }
        for seg in segments {
            if let [(x, y)] = seg[..] {
                // A lone second: a dot, since a one-point line draws nothing.
                let _ = writeln!(
                    o,
                    "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"2.5\" fill=\"{}\"/>",
                    s.colour
                );
                continue;
            }
            let pts: Vec<String> = seg.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                o,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.8\" points=\"{}\"><title>{}</title></polyline>",
                s.colour,
                pts.join(" "),
                xml(&s.name)
            );
        }
    }
    let entries: Vec<(String, &str)> = series.iter().map(|s| (s.name.clone(), s.colour)).collect();
    legend(&mut o, &entries);
    o.push_str("</svg>\n");
    o
}

struct Bar {
    colour: &'static str,
    /// The bar's height; `None` draws "n/a".
    value: Option<f64>,
    half_width: Option<f64>,
    /// Drawn hatched to the top of the axis with this label instead of a value.
    hatched: Option<String>,
}

/// Grouped bars; each group's bars in legend order; whiskers show the 95 % CI.
fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[(String, Vec<Bar>)],
    legend_entries: &[(String, &str)],
    y_floor: f64,
    reference: Option<(f64, &str)>,
) -> String {
    let data_max = groups
        .iter()
        .flat_map(|(_, bars)| bars)
        .filter_map(|b| b.value.map(|v| v + b.half_width.unwrap_or(0.0)))
        .fold(y_floor, f64::max);
    let (y_top, y_step) = nice_axis(data_max * 1.05);
    let frame = Frame {
        x_max: 1.0,
        y_max: y_top,
    };
    let mut o = svg_open(title);
    let _ = writeln!(
        o,
        "<defs><pattern id=\"hatch\" patternUnits=\"userSpaceOnUse\" width=\"8\" height=\"8\" \
         patternTransform=\"rotate(45)\"><rect width=\"8\" height=\"8\" fill=\"#ffffff\"/>\
         <line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"8\" stroke=\"#999999\" stroke-width=\"2\"/>\
         </pattern></defs>"
    );
    y_axis(&mut o, &frame, y_step, y_label);
    let base = TOP + Frame::plot_h();
    let mid = TOP + Frame::plot_h() / 2.0;
    let group_w = Frame::plot_w() / groups.len().max(1) as f64;
    for (g, (label, bars)) in groups.iter().enumerate() {
        let gx = LEFT + g as f64 * group_w;
        let bar_w = ((group_w * 0.8) / bars.len().max(1) as f64).min(56.0);
        let first_x = gx + (group_w - bar_w * bars.len() as f64) / 2.0;
        for (b, bar) in bars.iter().enumerate() {
            let x = first_x + b as f64 * bar_w;
            let w = bar_w * 0.9;
            let cx = x + w / 2.0;
            if let Some(text) = &bar.hatched {
                // Not a number: a hatched bar to the top of the axis, labelled.
                let _ = writeln!(
                    o,
                    "<rect x=\"{x:.1}\" y=\"{TOP}\" width=\"{w:.1}\" height=\"{:.1}\" \
                     fill=\"url(#hatch)\" stroke=\"{}\" stroke-width=\"2\"/>\n\
                     <text x=\"{cx:.1}\" y=\"{mid:.1}\" text-anchor=\"middle\" \
                     dominant-baseline=\"middle\" font-size=\"11\" font-weight=\"bold\" \
                     stroke=\"#ffffff\" stroke-width=\"4\" paint-order=\"stroke\" \
                     transform=\"rotate(-90 {cx:.1} {mid:.1})\">{}</text>",
                    Frame::plot_h(),
                    bar.colour,
                    xml(text)
                );
                continue;
            }
            match bar.value {
                Some(v) => {
                    let y = frame.y(v);
                    let _ = writeln!(
                        o,
                        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{:.1}\" \
                         fill=\"{}\"><title>{v:.2}</title></rect>",
                        base - y,
                        bar.colour
                    );
                    if let Some(hw) = bar.half_width {
                        // The 95 % interval as a whisker with caps.
                        let (lo, hi) = (frame.y((v - hw).max(0.0)), frame.y(v + hw));
                        let (c0, c1) = (cx - w / 4.0, cx + w / 4.0);
                        let _ = writeln!(
                            o,
                            "<path d=\"M{cx:.1} {lo:.1}V{hi:.1}M{c0:.1} {lo:.1}H{c1:.1}\
                             M{c0:.1} {hi:.1}H{c1:.1}\" stroke=\"#000000\" fill=\"none\"/>"
                        );
                    }
                }
                None => {
                    let _ = writeln!(
                        o,
                        "<text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"start\" \
                         font-size=\"9\" transform=\"rotate(-90 {cx:.1} {:.1})\">n/a</text>",
                        base - 4.0,
                        base - 4.0
                    );
                }
            }
        }
        // Labels split after an arrow go on two lines (`gateway→` / `orders`).
        let lx = gx + group_w / 2.0;
        let lines: Vec<String> = match label.split_once('→') {
            Some((a, b)) => vec![format!("{a}→"), b.to_string()],
            None => vec![label.clone()],
        };
        let _ = write!(
            o,
            "<text x=\"{lx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">",
            base + 17.0
        );
        for (i, line) in lines.iter().enumerate() {
            let dy = if i == 0 { 0.0 } else { 14.0 };
            let _ = write!(o, "<tspan x=\"{lx:.1}\" dy=\"{dy}\">{}</tspan>", xml(line));
        }
        o.push_str("</text>\n");
    }
    legend(&mut o, legend_entries);
    if let Some((v, text)) = reference {
        let y = frame.y(v);
        let ly = TOP + 8.0 + legend_entries.len() as f64 * 20.0;
        let lx = WIDTH - RIGHT + 16.0;
        let _ = writeln!(
            o,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#000000\" \
             stroke-dasharray=\"4 3\"/>\n\
             <line x1=\"{lx:.1}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#000000\" \
             stroke-dasharray=\"4 3\"/>\n<text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>",
            LEFT + Frame::plot_w(),
            ly - 4.0,
            lx + 14.0,
            ly - 4.0,
            lx + 20.0,
            xml(text)
        );
    }
    o.push_str("</svg>\n");
    o
}

/// Every chart of the run: `(file name, SVG text)`.
fn charts(run: &Run) -> Vec<(String, String)> {
    let profiles = profiles(run);
    let hops = hop_names(run);
    let mut out = Vec::new();
    for scenario in scenarios(run) {
        let cells: Vec<&Cell> = profiles
            .iter()
            .filter_map(|p| cell(run, p, &scenario))
            .filter(|c| !c.trials.is_empty())
            .collect();
        let shade = cells
            .iter()
            .flat_map(|c| &c.trials)
            .find_map(|t| t.fault_window);
        let legend_entries: Vec<(String, &str)> = cells
            .iter()
            .map(|c| (c.profile.clone(), colour(&profiles, &c.profile)))
            .collect();
        let series = |f: fn(&Window) -> Option<f64>| -> Vec<Series> {
            cells
                .iter()
                .map(|c| Series {
                    name: c.profile.clone(),
                    colour: colour(&profiles, &c.profile),
                    points: mean_timeline(&c.trials, f),
                })
                .collect()
        };
        let [success, p95, amp, rec] = chart_names(&scenario);
        out.push((
            success.0,
            line_chart(
                &format!("{scenario}: success rate per second"),
                "success rate (%)",
                &series(|w| w.success_rate().map(|r| r * 100.0)),
                Some(100.0),
                shade,
            ),
        ));
        out.push((
            p95.0,
            line_chart(
                &format!("{scenario}: p95 latency per second"),
                "p95 latency (ms)",
                &series(|w| w.p95_ms),
                None,
                shade,
            ),
        ));

        let mut groups: Vec<(String, Vec<Bar>)> = Vec::new();
        let group_names = hops
            .iter()
            .map(|h| (hop_label(h), Some(h.clone())))
            .chain([("end to end".to_string(), None)]);
        for (label, hop) in group_names {
            let bars = cells
                .iter()
                .map(|c| {
                    let i = interval_of(&c.trials, |t| match &hop {
                        Some(h) => t.amplification.per_hop.get(h).copied().flatten(),
                        None => t.amplification.end_to_end,
                    });
                    Bar {
                        colour: colour(&profiles, &c.profile),
                        value: i.map(|i| i.mean),
                        half_width: i.and_then(|i| i.half_width),
                        hatched: None,
                    }
                })
                .collect();
            groups.push((label, bars));
        }
        out.push((
            amp.0,
            bar_chart(
                &format!("{scenario}: retry amplification (attempts received / first attempts)"),
                "amplification (×)",
                &groups,
                &legend_entries,
                1.0,
                Some((1.0, "1× (no retries)")),
            ),
        ));

        // Full profile names under the bars when they fit, else their letters.
        let group_w = Frame::plot_w() / cells.len().max(1) as f64;
        let groups: Vec<(String, Vec<Bar>)> = cells
            .iter()
            .map(|c| {
                let colour = colour(&profiles, &c.profile);
                let bar = match recovery_summary(&c.trials) {
                    RecoverySummary::NotApplicable => Bar {
                        colour,
                        value: None,
                        half_width: None,
                        hatched: None,
                    },
                    RecoverySummary::DidNotRecover { failed, of } => Bar {
                        colour,
                        value: None,
                        half_width: None,
                        hatched: Some(format!("{DID_NOT_RECOVER} ({failed}/{of})")),
                    },
                    RecoverySummary::Recovered(i) => Bar {
                        colour,
                        value: Some(i.mean),
                        half_width: i.half_width,
                        hatched: None,
                    },
                };
                let fits = cells
                    .iter()
                    .all(|c| c.profile.chars().count() as f64 * 7.5 < group_w);
                let label = if fits {
                    c.profile.clone()
                } else {
                    short_profile(&c.profile)
                };
                (label, vec![bar])
            })
            .collect();
        out.push((
            rec.0,
            bar_chart(
                &format!("{scenario}: recovery time after the fault ends"),
                "seconds to recover",
                &groups,
                &legend_entries,
                run.settings.recovery_s.max(1.0),
                None,
            ),
        ));
    }
    out
}

/// The letter before the first `-` of a profile name (`d` for `d-breakers`), or the name.
fn short_profile(name: &str) -> String {
    match name.split_once('-') {
        Some((head, _)) if !head.is_empty() && head.len() <= 2 => head.to_string(),
        _ => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::HopCounts;

    /// A minimal XML well-formedness check: every tag closes in order, attributes are
    /// quoted, text and attribute values use only the five predefined entities (or
    /// character references), and there is exactly one root element.
    fn check_xml(text: &str) -> Result<(), String> {
        let mut stack: Vec<String> = Vec::new();
        let mut roots = 0;
        let mut rest = text;
        let check_entities = |s: &str| -> Result<(), String> {
            let mut parts = s.split('&');
            parts.next();
            for p in parts {
                let name = p.split(';').next().unwrap_or("");
                let ok = ["amp", "lt", "gt", "quot", "apos"].contains(&name)
                    || (name.starts_with('#') && p.contains(';'));
                if !ok || !p.contains(';') {
                    return Err(format!("bad entity near &{}", &p[..p.len().min(10)]));
                }
            }
            if s.contains('<') {
                return Err("raw '<'".into());
            }
            Ok(())
        };
        while let Some(lt) = rest.find('<') {
            let text_part = &rest[..lt];
            if stack.is_empty() && !text_part.trim().is_empty() {
                return Err(format!("text outside the root: {text_part:?}"));
            }
            check_entities(text_part)?;
            rest = &rest[lt..];
            if let Some(r) = rest.strip_prefix("<?") {
                let end = r.find("?>").ok_or("unterminated <?")?;
                rest = &r[end + 2..];
                continue;
            }
            if let Some(r) = rest.strip_prefix("<!--") {
                let end = r.find("-->").ok_or("unterminated comment")?;
                rest = &r[end + 3..];
                continue;
            }
            let gt = rest.find('>').ok_or("unterminated tag")?;
            let tag = &rest[1..gt];
            rest = &rest[gt + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let open = stack.pop().ok_or(format!("stray </{name}>"))?;
                if open != name.trim() {
                    return Err(format!("<{open}> closed by </{name}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let body = tag.trim_end_matches('/');
            let name_end = body.find(char::is_whitespace).unwrap_or(body.len());
            let name = &body[..name_end];
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '-' || c == ':')
            {
                return Err(format!("bad tag name {name:?}"));
            }
            // Attributes: name="value" pairs.
            let mut attrs = body[name_end..].trim();
            let mut seen = BTreeSet::new();
            while !attrs.is_empty() {
                let eq = attrs
                    .find('=')
                    .ok_or(format!("attribute without value in <{name}>"))?;
                let key = attrs[..eq].trim();
                if !seen.insert(key.to_string()) {
                    return Err(format!("duplicate attribute {key} in <{name}>"));
                }
                let after = attrs[eq + 1..].trim_start();
                let q = after.chars().next().ok_or("missing attribute value")?;
                if q != '"' && q != '\'' {
                    return Err(format!("unquoted attribute {key} in <{name}>"));
                }
                let close = after[1..].find(q).ok_or("unterminated attribute")?;
                check_entities(&after[1..1 + close])?;
                attrs = after[close + 2..].trim_start();
            }
            if stack.is_empty() {
                roots += 1;
            }
            if !self_closing {
                stack.push(name.to_string());
            }
        }
        if !rest.trim().is_empty() {
            return Err("text after the root".into());
        }
        match (stack.is_empty(), roots) {
            (true, 1) => Ok(()),
            (false, _) => Err(format!("unclosed {stack:?}")),
            (_, n) => Err(format!("{n} root elements")),
        }
    }

    #[test]
    fn xml_checker_catches_mistakes() {
        assert!(check_xml("<a><b x=\"1\"/>t &amp; u</a>").is_ok());
        assert!(check_xml("<a><b></a>").is_err());
        assert!(check_xml("<a x=1></a>").is_err());
        assert!(check_xml("<a>x & y</a>").is_err());
        assert!(check_xml("<a/><b/>").is_err());
        assert!(check_xml("<a x=\"1\" x=\"2\"/>").is_err());
    }

    fn window(second: u32, issued: u64, succeeded: u64) -> Window {
        Window {
            second,
            issued,
            succeeded,
            p95_ms: Some(20.0 + f64::from(second)),
        }
    }

    fn trial(i: u32, success: f64, recovery: Option<Recovery>) -> Trial {
        let mut per_hop = BTreeMap::new();
        per_hop.insert("orders".to_string(), Some(1.0));
        per_hop.insert("inventory".to_string(), Some(1.0));
        per_hop.insert("payments".to_string(), Some(1.5 + f64::from(i) * 0.1));
        per_hop.insert("notifications".to_string(), None);
        let mut counts = BTreeMap::new();
        counts.insert(
            "payments".to_string(),
            HopCounts {
                first_attempts: 200.0,
                attempts_received: 300.0,
            },
        );
        Trial {
            trial: i,
            seed: 42 + u64::from(i),
            issued: 1000,
            succeeded: (success * 1000.0) as u64,
            success_rate: Some(success),
            goodput_rps: success * 50.0,
            latency_ms: Latency {
                p50: 12.5,
                p95: 180.0 + f64::from(i),
                p99: 400.0,
                max: 900.0,
            },
            amplification: Amplification {
                per_hop,
                end_to_end: Some(1.6),
                client: Some(1.0),
                counts,
                logical_requests: 1000,
                place_order_attempts: 1000.0,
                charge_attempts: 1600.0,
            },
            duplicates: Duplicates {
                orders: u64::from(i),
                extra_orders: u64::from(i),
                charges: 1,
                extra_charges: 1,
                deliveries: 0,
            },
            lost_events: 2,
            orphaned_reservations: 1,
            wasted_charges: 3,
            baseline_success_rate: Some(0.99),
            recovery,
            breaker: Breaker {
                opens: 2,
                time_open_s: Some(12.5),
            },
            rejections: Rejections {
                bulkhead: 1,
                shed: 0,
                adaptive: 0,
                breaker: 5,
            },
            generator: Generator {
                lag_p99_ms: 0.8,
                dropped: 0,
                cpu_s: 1.2,
                saturated: false,
            },
            cpu_s_per_process: [("payments".to_string(), 0.5), ("frlab".to_string(), 1.2)]
                .into_iter()
                .collect(),
            fault_window: Some(FaultWindow {
                start_s: 3.0,
                end_s: 6.0,
            }),
            timeline: (0..10)
                .filter(|s| *s != 7)
                .map(|s| window(s, 50, if (3..6).contains(&s) { 30 } else { 49 }))
                .collect(),
        }
    }

    fn sample_run() -> Run {
        let recovered = |s| Some(Recovery::Recovered { seconds: s });
        Run {
            run_id: "20261127-test".into(),
            started_at: "2026-11-27T18:00:00Z".into(),
            finished_at: Some("2026-11-27T18:10:00Z".into()),
            finished: true,
            command: "frlab experiment --trials 3 --quick".into(),
            environment: Environment {
                machine: Machine {
                    cores: 2,
                    memory_mib: 7900,
                    os: "Debian GNU/Linux 12 (bookworm), kernel 6.1, x86_64".into(),
                    cpu_model: "Test CPU <fast> & \"cheap\"".into(),
                },
                commit: "a0887a4".into(),
                dirty: Some(false),
                profile_hashes: [
                    ("a-baseline".to_string(), fnv1a64_hex("a")),
                    ("d-breakers".to_string(), fnv1a64_hex("d")),
                ]
                .into_iter()
                .collect(),
            },
            settings: Settings {
                offered_rps: 50.0,
                deadline_ms: 1000,
                warmup_s: 2.0,
                pre_fault_s: 3.0,
                fault_s: 3.0,
                recovery_s: 4.0,
                drain_s: 2.0,
                seed: 42,
                trials: 3,
                profiles: vec!["a-baseline".into(), "d-breakers".into()],
                scenarios: vec!["payment_errors".into(), "payment_outage".into()],
                stack: "local processes, SQLite".into(),
            },
            cells: vec![
                Cell {
                    profile: "a-baseline".into(),
                    scenario: "payment_errors".into(),
                    trials: vec![
                        trial(0, 0.80, recovered(1.0)),
                        trial(1, 0.82, Some(Recovery::DidNotRecover)),
                        trial(2, 0.81, recovered(2.0)),
                    ],
                    failed_trials: vec![],
                },
                Cell {
                    profile: "d-breakers".into(),
                    scenario: "payment_errors".into(),
                    trials: vec![
                        trial(0, 0.90, recovered(1.0)),
                        trial(1, 0.92, recovered(2.0)),
                        trial(2, 0.94, recovered(3.0)),
                    ],
                    failed_trials: vec![FailedTrial {
                        trial: 3,
                        seed: 45,
                        error: "payments did not start".into(),
                    }],
                },
                Cell {
                    profile: "a-baseline".into(),
                    scenario: "payment_outage".into(),
                    trials: vec![trial(0, 0.5, None)],
                    failed_trials: vec![],
                },
            ],
        }
    }

    fn svg_files(dir: &Path) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "svg"))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_all_round_trips_and_writes_every_file() {
        let dir = tempfile::tempdir().unwrap();
        let run = sample_run();
        write_all(&run, dir.path()).unwrap();

        let back = read_run(dir.path()).unwrap();
        assert_eq!(back, run);

        let csv = std::fs::read_to_string(dir.path().join(RESULTS_CSV)).unwrap();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 7, "header + one row per trial");
        let header: Vec<&str> = lines[0].split(',').collect();
        for line in &lines[1..] {
            assert_eq!(line.split(',').count(), header.len(), "{line}");
        }
        let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
        let row1: Vec<&str> = lines[2].split(',').collect();
        assert_eq!(row1[col("recovery_s")], "did not recover");
        assert_eq!(row1[col("success_rate")], "0.82");
        assert_eq!(row1[col("amplification_notifications")], "");
        assert_eq!(row1[col("amplification_payments")], "1.6");
        assert_eq!(row1[col("cpu_s_frlab")], "1.2");
        let outage: Vec<&str> = lines[7].split(',').collect();
        assert_eq!(outage[col("recovery_s")], "");

        let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
        assert!(md.contains("**Status: FINISHED**"));
        assert!(md.contains(
            "| profile | trials | success rate | p95 (ms) | amplification (e2e) | MTTR |"
        ));
        // success rate 80, 82, 81 -> mean 81, s = 1, hw = 4.303 / √3 = 2.484...
        assert!(md.contains("| a-baseline | 3 | 81.0 % ± 2.5 |"), "{md}");
        assert!(md.contains("did not recover (1 of 3 trials)"));
        // MTTR 1, 2, 3 s -> 2.0 ± 4.303 × 1 / √3.
        assert!(md.contains("2.0 s ± 2.5"));
        // A single trial has no interval; a scenario without fault end shows n/a.
        assert!(md.contains("| a-baseline | 1 | 50.0 % (n = 1) |"));
        assert!(md.contains("| d-breakers | 0 | not run |"));
        assert!(md.contains("could not be measured: payments did not start"));
        assert!(
            md.contains("![payment_errors: success rate over time](payment_errors-success.svg)")
        );
        assert!(md.contains("The seed's claims"));
        assert!(
            md.contains("| d-breakers | 92 % | 92.0 % ± 5.0 | within CI |"),
            "{md}"
        );
        assert!(md.contains("Commit: `a0887a4`"));

        let svgs = svg_files(dir.path());
        assert_eq!(svgs.len(), 8, "four charts per scenario");
        for path in &svgs {
            let text = std::fs::read_to_string(path).unwrap();
            check_xml(&text)
                .map_err(|e| format!("{}: {e}", path.display()))
                .unwrap();
            assert!(text.contains("<title>"));
            assert!(md.contains(&format!(
                "]({})",
                path.file_name().unwrap().to_str().unwrap()
            )));
        }
        let rec = std::fs::read_to_string(dir.path().join("payment_errors-recovery.svg")).unwrap();
        assert!(rec.contains("did not recover (1/3)"));
        assert!(rec.contains("url(#hatch)"));
        let success =
            std::fs::read_to_string(dir.path().join("payment_errors-success.svg")).unwrap();
        assert!(success.contains(">fault</text>"));
        assert!(success.contains("d-breakers"));
        // Second 7 is missing: each profile's line is drawn in two pieces.
        assert_eq!(success.matches("<polyline").count(), 4);
    }

    #[test]
    fn run_builds_cells_and_finishes() {
        let base = sample_run();
        let mut run = Run::new("r1", "frlab experiment", base.environment, base.settings);
        assert!(!run.finished && run.finished_at.is_none());
        assert!(run.started_at.ends_with('Z'));
        run.cell_mut("a-baseline", "payment_errors")
            .trials
            .push(trial(0, 0.8, None));
        run.cell_mut("a-baseline", "payment_errors")
            .trials
            .push(trial(1, 0.8, None));
        run.cell_mut("d-breakers", "payment_errors");
        assert_eq!(run.cells.len(), 2);
        assert_eq!(run.cells[0].trials.len(), 2);
        run.finish();
        assert!(run.finished && run.finished_at.is_some());
    }

    #[test]
    fn unfinished_run_says_so_at_the_top() {
        let dir = tempfile::tempdir().unwrap();
        let mut run = sample_run();
        run.finished = false;
        run.finished_at = None;
        write_all(&run, dir.path()).unwrap();
        let md = std::fs::read_to_string(dir.path().join(REPORT_MD)).unwrap();
        let top: String = md.lines().take(4).collect::<Vec<_>>().join("\n");
        assert!(top.contains("did NOT finish"), "{top}");
        assert!(top.contains("3 of 4 cells"));
    }

    #[test]
    fn rebuild_reproduces_the_same_files() {
        let dir = tempfile::tempdir().unwrap();
        write_all(&sample_run(), dir.path()).unwrap();
        let snapshot = |dir: &Path| -> BTreeMap<String, String> {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .map(|p| {
                    (
                        p.file_name().unwrap().to_string_lossy().into_owned(),
                        std::fs::read_to_string(&p).unwrap(),
                    )
                })
                .collect()
        };
        let before = snapshot(dir.path());
        for name in before.keys().filter(|n| *n != RESULTS_JSON) {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        rebuild(dir.path()).unwrap();
        assert_eq!(snapshot(dir.path()), before);
    }

    #[test]
    fn rebuild_names_the_missing_or_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = rebuild(dir.path()).unwrap_err();
        assert!(matches!(err, ReportError::Read { .. }));
        assert!(err.to_string().contains("results.json"), "{err}");
        std::fs::write(dir.path().join(RESULTS_JSON), "{\"run_id\": 3}").unwrap();
        let err = rebuild(dir.path()).unwrap_err();
        assert!(matches!(err, ReportError::Invalid { .. }));
        assert!(err.to_string().contains("results.json"), "{err}");
    }

    #[test]
    fn environment_helpers() {
        assert_eq!(fnv1a64_hex(""), "cbf29ce484222325");
        assert_eq!(fnv1a64_hex("a"), "af63dc4c8601ec8c");
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n"),
            Some("AMD EPYC 7B13".into())
        );
        assert_eq!(mem_total_mib("MemTotal:        8192000 kB\n"), Some(8000));
        assert_eq!(
            os_release_name("NAME=x\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            Some("Debian GNU/Linux 12 (bookworm)".into())
        );
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + std::time::Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        let m = Machine::detect();
        assert!(m.cores >= 1);
        let (commit, _) = git_commit(Path::new("/nonexistent-dir"));
        assert_eq!(commit, "unknown");
    }

    #[test]
    fn nice_axes() {
        assert_eq!(nice_axis(100.0), (100.0, 20.0));
        assert_eq!(nice_axis(2.6), (3.0, 1.0));
        assert_eq!(nice_axis(0.0), (1.0, 0.2));
        assert_eq!(nice_axis(37.0), (40.0, 10.0));
        assert_eq!(tick_label(0.4, 0.2), "0.4");
    }
}

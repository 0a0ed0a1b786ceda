//! `frlab experiment`: every profile x scenario x trial on a local stack, from one seeded
//! fault timeline, and the report of what was measured.
//!
//! One trial: start the five services with the profile (time constants scaled for quick
//! runs) -> warm up -> scrape every service's /metrics -> run the open-loop load for
//! pre-fault + fault + recovery, applying the scenario's fault at a fixed offset with a
//! fixed seed -> drain (the outbox delivers what is committed) -> scrape again and read every
//! service's Audit -> stop. The metrics module turns the two scrapes, the audits and the load
//! report into the numbers of DESIGN.md; the report module writes them.

use std::time::Duration;

/// A fault scenario of DESIGN.md and how the experiment produces it.
#[derive(Clone, Copy, Debug)]
pub struct ScenarioDef {
    pub name: &'static str,
    /// The FaultInjection applied at the fault offset (k8s/chaos/), if any.
    pub manifest: Option<&'static str>,
    /// Extra immediate attempts by the load generator itself (retry_storm).
    pub client_retries: u32,
    /// Arrival rate multiplier during the fault window (gateway_overload).
    pub overload: Option<f64>,
    /// A service SIGKILLed at the fault offset and restarted at its end.
    pub kill: Option<&'static str>,
}

macro_rules! manifest {
    ($file:literal) => {
        Some(include_str!(concat!("../../k8s/chaos/", $file)))
    };
}

pub const SCENARIOS: [ScenarioDef; 9] = [
    ScenarioDef {
        name: "payment_errors",
        manifest: manifest!("payment-errors.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "payment_slow",
        manifest: manifest!("payment-slow.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "payment_outage",
        manifest: manifest!("payment-outage.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "payment_brownout",
        manifest: manifest!("payment-brownout.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "inventory_lock",
        manifest: manifest!("inventory-lock.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "retry_storm",
        manifest: manifest!("retry-storm.yaml"),
        client_retries: 3,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "gateway_overload",
        manifest: None,
        client_retries: 0,
        overload: Some(10.0),
        kill: None,
    },
    ScenarioDef {
        name: "payments_crash",
        manifest: None,
        client_retries: 0,
        overload: None,
        kill: Some("payments"),
    },
    ScenarioDef {
        name: "orders_crash",
        manifest: None,
        client_retries: 0,
        overload: None,
        kill: Some("orders"),
    },
];

pub fn scenario(name: &str) -> Option<&'static ScenarioDef> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// What an experiment runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub profiles: Vec<String>,
    pub scenarios: Vec<String>,
    pub trials: u32,
    pub seed: u64,
    /// Offered load (logical requests per second) outside the fault window.
    pub rate: f64,
    pub warmup: Duration,
    pub pre_fault: Duration,
    pub fault: Duration,
    pub recovery: Duration,
    /// Client deadline of each logical request.
    pub deadline: Duration,
    /// Multiplies the profiles' time constants (breaker open time) so quick runs see the
    /// whole open -> half-open -> closed cycle inside their recovery phase.
    pub time_scale: f64,
}

impl Plan {
    /// `--quick`: profiles a, b, d, f, g x payment_errors, payment_outage, retry_storm, one trial.
    pub fn quick() -> Self {
        Self {
            profiles: [
                "a-baseline",
                "b-naive-retries",
                "d-breakers",
                "f-full",
                "g-adaptive",
            ]
            .map(String::from)
            .to_vec(),
            scenarios: ["payment_errors", "payment_outage", "retry_storm"]
                .map(String::from)
                .to_vec(),
            trials: 1,
            seed: 42,
            rate: 60.0,
            warmup: Duration::from_secs(2),
            pre_fault: Duration::from_secs(5),
            fault: Duration::from_secs(5),
            recovery: Duration::from_secs(10),
            deadline: Duration::from_secs(2),
            time_scale: 0.1,
        }
    }

    /// `--full`: every profile x every scenario, 3 trials.
    pub fn full() -> Self {
        Self {
            profiles: lab_resilience::profiles::BUILTIN
                .map(|(n, _)| n.to_string())
                .to_vec(),
            scenarios: SCENARIOS.map(|s| s.name.to_string()).to_vec(),
            trials: 3,
            pre_fault: Duration::from_secs(10),
            fault: Duration::from_secs(20),
            recovery: Duration::from_secs(30),
            time_scale: 0.25,
            ..Self::quick()
        }
    }

    /// Checks what a run needs: MTTR looks for 5 one-second windows after the fault, and
    /// the baseline for at least one before it.
    pub fn validate(&self) -> Result<()> {
        if self.recovery < Duration::from_secs(5) {
            anyhow::bail!(
                "--recovery-s must be at least 5: recovery is the start of 5 healthy one-second windows, got {:?}",
                self.recovery
            );
        }
        if self.pre_fault < Duration::from_secs(1) {
            anyhow::bail!(
                "--pre-fault-s must be at least 1 (the baseline), got {:?}",
                self.pre_fault
            );
        }
        if self.profiles.is_empty() || self.scenarios.is_empty() {
            anyhow::bail!("nothing to run: --profiles and --scenarios need at least one name each");
        }
        Ok(())
    }

    /// Seconds one trial takes, roughly (for the progress estimate).
    pub fn trial_seconds(&self) -> f64 {
        (self.warmup + self.pre_fault + self.fault + self.recovery).as_secs_f64() + 4.0
    }
}

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, anyhow};
use lab_proto::lab::v1::faults_client::FaultsClient;
use lab_proto::lab::v1::{ApplyFaultRequest, SnapshotRequest, audit_client::AuditClient};

use crate::load::{self, LoadConfig, LoadReport, Schedule};
use crate::metrics::{self, Audit, Audits, Sample};
use crate::report::{self, Breaker, FaultWindow, Generator, Latency, Run, Settings, Trial};
use crate::stack::{LocalStack, StackOptions};

/// Where and how the services run.
#[derive(Clone, Debug, Default)]
pub struct Backend {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub bin_dir: Option<PathBuf>,
}

impl Backend {
    fn describe(&self) -> String {
        format!(
            "local processes on 127.0.0.1, {}, idempotency keys {}",
            if self.database_url.is_some() {
                "Postgres"
            } else {
                "SQLite"
            },
            if self.redis_url.is_some() {
                "in Redis"
            } else {
                "in memory"
            }
        )
    }
}

/// The profile YAML a trial runs: the built-in (or file) profile with its time constants
/// multiplied by `scale`, so a breaker's open time fits the run's recovery phase.
pub fn scaled_profile_yaml(spec: &str, scale: f64) -> Result<(String, String)> {
    let named = lab_resilience::profiles::resolve(spec)?;
    let yaml = named.profile.scale_time(scale).to_values_yaml()?;
    Ok((named.name, yaml))
}

/// Runs the whole plan, writing `out` after every cell (so an interrupted run leaves a
/// report that says it did not finish). Returns the run.
pub async fn run(plan: &Plan, backend: &Backend, out: &Path, command: &str) -> Result<Run> {
    plan.validate()?;
    for s in &plan.scenarios {
        scenario(s).with_context(|| {
            format!(
                "unknown scenario {s:?}; expected one of {}",
                SCENARIOS.map(|s| s.name).join(", ")
            )
        })?;
    }
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
        offered_rps: plan.rate,
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
    };
    let run_id = out
        .file_name()
        .map_or_else(|| "run".to_string(), |n| n.to_string_lossy().into_owned());
    let mut run = Run::new(run_id, command, environment, settings);
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let total = profiles.len() * plan.scenarios.len() * plan.trials as usize;
    let started = Instant::now();
    let mut done = 0;
    for scenario_name in &plan.scenarios {
        let def = scenario(scenario_name).expect("checked above");
        for (profile, yaml) in &profiles {
            for trial in 1..=plan.trials {
                let seed = plan.seed.wrapping_add(u64::from(trial) - 1);
                let left = if done == 0 {
                    plan.trial_seconds() * total as f64
                } else {
                    started.elapsed().as_secs_f64() / done as f64 * (total - done) as f64
                };
                eprintln!(
                    "[{}/{total}] {profile} x {} trial {trial}  (about {} left)",
                    done + 1,
                    def.name,
                    format_secs(left)
                );
                let cell = run.cell_mut(profile, def.name);
                match run_trial(plan, backend, profile, yaml, def, trial, seed).await {
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
    run.finish();
    report::write_all(&run, out)?;
    Ok(run)
}

fn format_secs(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// How long outboxes get to empty before the audits are read.
const DRAIN: Duration = Duration::from_secs(10);

/// One trial on a fresh stack (its own temporary data directory, ephemeral ports).
pub async fn run_trial(
    plan: &Plan,
    backend: &Backend,
    profile: &str,
    profile_yaml: &str,
    def: &ScenarioDef,
    trial: u32,
    seed: u64,
) -> Result<Trial> {
    let dir = std::env::temp_dir().join(format!("frlab-trial-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let profile_file = dir.join(format!("{profile}.yaml"));
    std::fs::write(&profile_file, profile_yaml)?;
    let mut opts = StackOptions::new(dir.join("data"));
    opts.bin_dir = backend.bin_dir.clone();
    opts.database_url = backend.database_url.clone();
    opts.redis_url = backend.redis_url.clone();
    if backend.database_url.is_some() {
        let tag = uuid::Uuid::new_v4().simple().to_string();
        opts.schema_prefix = Some(format!("x{}_", &tag[..8]));
    }
    opts.profile = Some(profile_file.display().to_string());
    opts.ephemeral_ports = true;
    opts.log_dir = Some(dir.join("logs"));
    opts.extra_args
        .insert("payments".into(), vec!["--seed".into(), seed.to_string()]);
    let mut stack = LocalStack::start(opts).await?;
    let measured = measure(plan, &mut stack, def, trial, seed).await;
    let stopped = stack.stop().await;
    match (&measured, &stopped) {
        // Keep the logs of a failed trial for whoever reads the error.
        (Err(_), _) | (_, Err(_)) => {
            eprintln!("  logs kept in {}", dir.join("logs").display())
        }
        _ => {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let trial = measured?;
    stopped?;
    Ok(trial)
}

/// Warm-up, scrape, measured load with the fault, drain, scrape, audits.
async fn measure(
    plan: &Plan,
    stack: &mut LocalStack,
    def: &ScenarioDef,
    trial: u32,
    seed: u64,
) -> Result<Trial> {
    let gateway = stack.gateway_url();
    let mut warm = LoadConfig::new(
        &gateway,
        Schedule::Constant { rate: plan.rate },
        plan.warmup,
    );
    warm.deadline = plan.deadline;
    warm.seed = seed;
    warm.key_prefix = format!("warm-{trial}-{seed}");
    load::run(warm, |_| {}).await.context("warm-up load")?;

    let before = scrape_all(stack).await?;
    let cpu_before = cpu_all(stack);
    let measured = plan.pre_fault + plan.fault + plan.recovery;
    let schedule = match def.overload {
        Some(k) => Schedule::Spike {
            base: plan.rate,
            peak: plan.rate * k,
            at: plan.pre_fault,
            length: plan.fault,
        },
        None => Schedule::Constant { rate: plan.rate },
    };
    let mut config = LoadConfig::new(&gateway, schedule, measured);
    config.deadline = plan.deadline;
    config.client_retries = def.client_retries;
    config.seed = seed;
    config.key_prefix = format!("t{trial}-{seed}");
    // Breaker states are sampled while the load runs (the crash scenarios restart a
    // process: its scrapes fail for a moment and are skipped).
    let http: Vec<std::net::SocketAddr> = stack.endpoints().iter().map(|e| e.http).collect();
    let (stop_sampling, sampling) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(sample_breakers(http, sampling));
    let (report, injected) =
        tokio::join!(load::run(config, |_| {}), inject(plan, stack, def, seed));
    let _ = stop_sampling.send(());
    let breaker_samples = sampler.await.unwrap_or_default();
    let report = report.context("measured load")?;
    injected.context("injecting the fault")?;

    drain(stack).await;
    let after = scrape_all(stack).await?;
    let audits = audit_all(stack).await?;
    let deltas = metrics::counter_deltas(&before, &after);
    // CPU used during the measured phase; a restarted process counts from its start.
    let mut cpu_s: std::collections::BTreeMap<String, f64> = cpu_all(stack)
        .into_iter()
        .map(|(service, (pid, now))| {
            let was = match cpu_before.get(&service) {
                Some((old_pid, was)) if *old_pid == pid => *was,
                _ => 0.0,
            };
            (service, now - was)
        })
        .collect();
    cpu_s.insert("frlab".into(), report.generator_cpu_s);
    let mut trial = trial_from(plan, def, trial, seed, &report, &deltas, &audits, cpu_s);
    trial.breaker.time_open_s = Some(metrics::time_not_closed(
        &breaker_samples,
        measured.as_secs_f64(),
    ));
    Ok(trial)
}

/// How often the breaker states are sampled during the measured load.
const BREAKER_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Samples whether any breaker is not closed (open or half-open) on any service, every
/// [`BREAKER_SAMPLE_EVERY`], until `stop`: `(seconds since start, any not closed)`.
async fn sample_breakers(
    http: Vec<std::net::SocketAddr>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> Vec<(f64, bool)> {
    let start = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(BREAKER_SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut samples = Vec::new();
    loop {
        tokio::select! {
            _ = &mut stop => return samples,
            _ = tick.tick() => {}
        }
        let at = start.elapsed().as_secs_f64();
        let mut open = false;
        for addr in &http {
            if let Ok((200, body)) = lab_runtime::client::http_get(*addr, "/metrics").await
                && let Ok(parsed) = metrics::parse_prometheus(&body)
            {
                open |= metrics::any_breaker_not_closed(&parsed);
            }
        }
        samples.push((at, open));
    }
}

/// Every number of one trial, from what was measured.
#[allow(clippy::too_many_arguments)]
pub fn trial_from(
    plan: &Plan,
    def: &ScenarioDef,
    trial: u32,
    seed: u64,
    report: &LoadReport,
    deltas: &[Sample],
    audits: &Audits,
    cpu_s_per_process: std::collections::BTreeMap<String, f64>,
) -> Trial {
    let timeline: Vec<metrics::Window> = report
        .timeline
        .iter()
        .map(|s| metrics::Window {
            second: s.second,
            issued: s.issued,
            succeeded: s.succeeded,
            p95_ms: s.p95_ms,
        })
        .collect();
    let has_fault = def.manifest.is_some() || def.kill.is_some() || def.overload.is_some();
    let fault_start = plan.pre_fault.as_secs_f64();
    let fault_end = fault_start + plan.fault.as_secs_f64();
    let end = fault_end + plan.recovery.as_secs_f64();
    let baseline = metrics::baseline_rate(&timeline, fault_start);
    let recovery = match (has_fault, baseline) {
        (true, Some(b)) => Some(metrics::recovery(&timeline, fault_end, b, end)),
        _ => None,
    };
    let invariants = metrics::Invariants::from_audits(audits);
    Trial {
        trial,
        seed,
        issued: report.issued,
        succeeded: report.succeeded,
        success_rate: (report.issued > 0).then(|| report.success_rate()),
        goodput_rps: report.goodput_rps,
        latency_ms: Latency {
            p50: report.latency_ms.p50,
            p95: report.latency_ms.p95,
            p99: report.latency_ms.p99,
            max: report.latency_ms.max,
        },
        amplification: metrics::Amplification::from_samples(deltas, report.issued),
        duplicates: invariants.duplicates,
        lost_events: invariants.lost_events,
        orphaned_reservations: invariants.orphaned_reservations,
        wasted_charges: invariants.wasted_charges,
        baseline_success_rate: baseline,
        recovery,
        breaker: Breaker {
            opens: metrics::breaker_opens(deltas),
            time_open_s: None,
        },
        rejections: metrics::Rejections::from_samples(deltas),
        generator: Generator {
            lag_p99_ms: report.lag_ms.p99,
            dropped: report.dropped,
            cpu_s: report.generator_cpu_s,
            saturated: report.saturated,
        },
        cpu_s_per_process,
        fault_window: has_fault.then_some(FaultWindow {
            start_s: fault_start,
            end_s: fault_end,
        }),
        timeline,
    }
}

/// At the fault offset: apply the scenario's FaultInjection (its duration set to the
/// plan's fault window, its seed to the trial's), or SIGKILL a service and restart it when
/// the window ends.
async fn inject(plan: &Plan, stack: &mut LocalStack, def: &ScenarioDef, seed: u64) -> Result<()> {
    tokio::time::sleep(plan.pre_fault).await;
    if let Some(yaml) = def.manifest {
        for doc in lab_chaos::spec::parse_documents(yaml)? {
            let mut spec = doc.spec.clone();
            spec.duration = format!("{}ms", plan.fault.as_millis());
            spec.validate()?;
            let service = spec.selector.service.clone();
            let endpoint = stack
                .endpoint(&service)
                .with_context(|| format!("{service} is not running"))?;
            let admin = endpoint
                .admin
                .with_context(|| format!("{service} announced no admin port"))?;
            let channel = lab_runtime::client::lazy_channel("admin", &format!("http://{admin}"))?;
            FaultsClient::new(channel)
                .apply(ApplyFaultRequest {
                    fault: Some(spec.to_fault(&doc.metadata.name, Some(seed))),
                })
                .await
                .map_err(|s| anyhow!("{service}: {}", s.message()))?;
        }
    }
    if let Some(service) = def.kill {
        stack.kill(service).await?;
        tokio::time::sleep(plan.fault).await;
        stack.restart(service).await?;
    }
    Ok(())
}

/// Every service's /metrics, as one list (each series carries its `service` label).
async fn scrape_all(stack: &LocalStack) -> Result<Vec<Sample>> {
    let mut all = Vec::new();
    for ep in stack.endpoints() {
        let (code, body) = lab_runtime::client::http_get(ep.http, "/metrics")
            .await
            .with_context(|| format!("scraping {}", ep.metrics_url()))?;
        if code != 200 {
            return Err(anyhow!("{} answered {code}", ep.metrics_url()));
        }
        all.extend(metrics::parse_prometheus(&body).with_context(|| ep.metrics_url())?);
    }
    Ok(all)
}

async fn audit(stack: &LocalStack, service: &str) -> Result<Audit> {
    let ep = stack
        .endpoint(service)
        .with_context(|| format!("{service} is not running"))?;
    let channel = lab_runtime::client::lazy_channel("audit", &ep.grpc_url())?;
    let answer = AuditClient::new(channel)
        .snapshot(SnapshotRequest { include_ids: true })
        .await
        .map_err(|s| anyhow!("{service} Audit/Snapshot: {}", s.message()))?;
    Ok(Audit::from(answer.get_ref()))
}

async fn audit_all(stack: &LocalStack) -> Result<Audits> {
    Ok(Audits {
        orders: audit(stack, "orders").await?,
        payments: audit(stack, "payments").await?,
        notifications: audit(stack, "notifications").await?,
        inventory: audit(stack, "inventory").await?,
    })
}

/// Waits (at most [`DRAIN`]) for the orders outbox to empty.
async fn drain(stack: &LocalStack) {
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline {
        match audit(stack, "orders").await {
            Ok(a) if a.counter("outbox_backlog") == 0 => return,
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// CPU seconds (user + system) of every service process so far, with its pid.
fn cpu_all(stack: &LocalStack) -> std::collections::HashMap<String, (u32, f64)> {
    stack
        .endpoints()
        .iter()
        .filter_map(|ep| {
            let pid = stack.pid(&ep.service)?;
            Some((ep.service.clone(), (pid, process_cpu_s(pid)?)))
        })
        .collect()
}

/// utime + stime of a process from /proc (clock ticks of 100 Hz, as Linux reports them).
fn process_cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

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

/// `frlab experiment`.
pub async fn command(args: ExperimentArgs) -> Result<std::process::ExitCode> {
    let plan = args.plan()?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stamp = report::utc_timestamp(std::time::SystemTime::now())
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
    let run = run(&plan, &backend, &out, &command.join(" ")).await?;
    let failed: usize = run.cells.iter().map(|c| c.failed_trials.len()).sum();
    println!("report: {}", out.join("report.md").display());
    if failed > 0 {
        eprintln!("{failed} trial(s) failed; see the report");
        return Ok(std::process::ExitCode::FAILURE);
    }
    Ok(std::process::ExitCode::SUCCESS)
}

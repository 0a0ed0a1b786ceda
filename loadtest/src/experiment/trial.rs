//! One trial on a fresh local stack: warm-up, the measured load with the scenario's fault,
//! the drain, the scrapes and audits, and the [`Trial`] record computed from them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use lab_proto::lab::v1::ApplyFaultRequest;

use super::fresh::FreshStack;
use super::payments::PaymentsModel;
use super::plan::{Backend, Phases, Scenario};
use crate::load::{self, LoadConfig, LoadReport, Schedule};
use crate::measure::{self, Audit, Audits};
use crate::observe::prometheus::Sample;
use crate::observe::{faults, grpc, scrape};
use crate::report::{Breaker, FaultWindow, Generator, Latency, LoadLevel, Trial};
use crate::stack::LocalStack;
use crate::stack::cpu::{cpu_all, cpu_used};

/// Longest wait, after the load, for the outbox to empty and every order saga to finish
/// (the recovery worker takes over a crashed saga within seconds; refunds after an outage
/// wait for the payments breaker to close) before the audits are read.
pub(super) const DRAIN: Duration = Duration::from_secs(30);

/// Where and what one trial runs: the same for every trial of an experiment's cell.
pub struct TrialSetup<'a> {
    pub phases: &'a Phases,
    pub payments: &'a PaymentsModel,
    pub backend: &'a Backend,
    /// Profile name and the (time-scaled) YAML the services load.
    pub profile: &'a str,
    pub profile_yaml: &'a str,
    pub scenario: &'a Scenario,
    pub load: &'a LoadLevel,
    /// What the profile promises (idempotency, outbox), for the invariants.
    pub promises: measure::Promises,
}

/// What a profile's YAML promises beyond the saga every profile runs.
pub fn promises_of(profile_yaml: &str) -> Result<measure::Promises> {
    let p = lab_resilience::Profile::parse(profile_yaml)?;
    Ok(measure::Promises {
        idempotency: p.idempotency.enabled,
        outbox: p.outbox,
    })
}

/// One trial on a fresh stack (its own temporary data directory, ephemeral ports).
pub async fn run_trial(setup: &TrialSetup<'_>, trial: u32, seed: u64) -> Result<Trial> {
    let mut fresh = FreshStack {
        backend: setup.backend,
        profile: setup.profile,
        profile_yaml: setup.profile_yaml,
        payments: setup.payments,
        seed,
    }
    .start()
    .await?;
    let measured = measured_phase(setup, &mut fresh.stack, trial, seed).await;
    fresh.finish(measured).await
}

/// Warm-up, scrape, measured load with the fault, drain, scrape, audits.
async fn measured_phase(
    setup: &TrialSetup<'_>,
    stack: &mut LocalStack,
    trial: u32,
    seed: u64,
) -> Result<Trial> {
    let (phases, scenario, rate) = (setup.phases, setup.scenario, setup.load.rps);
    let gateway = stack.gateway_url();
    let mut warm = LoadConfig::new(&gateway, Schedule::Constant { rate }, phases.warmup);
    warm.deadline = phases.deadline;
    warm.seed = seed;
    warm.key_prefix = format!("warm-{trial}-{seed}");
    load::run(warm, |_| {}).await.context("warm-up load")?;

    let before = scrape_all(stack).await?;
    let cpu_before = cpu_all(stack);
    let measured = phases.measured();
    let schedule = match scenario.overload {
        Some(k) => Schedule::Spike {
            base: rate,
            peak: rate * k,
            at: phases.pre_fault,
            length: phases.fault,
        },
        None => Schedule::Constant { rate },
    };
    let mut config = LoadConfig::new(&gateway, schedule, measured);
    config.deadline = phases.deadline;
    config.client_retries = scenario.client_retries;
    config.seed = seed;
    config.key_prefix = format!("t{trial}-{seed}");
    // Breaker states are sampled while the load runs (the crash scenarios restart a
    // process: its scrapes fail for a moment and are skipped).
    let http: Vec<std::net::SocketAddr> = stack.endpoints().iter().map(|e| e.http).collect();
    let (stop_sampling, sampling) = tokio::sync::oneshot::channel::<()>();
    let sampler = tokio::spawn(async move {
        scrape::sample_until(BREAKER_SAMPLE_EVERY, sampling, || any_breaker_open(&http)).await
    });
    let (report, injected) = tokio::join!(
        load::run(config, |_| {}),
        inject(phases, stack, scenario, seed)
    );
    let _ = stop_sampling.send(());
    let breaker_samples = sampler.await.unwrap_or_default();
    let report = report.context("measured load")?;
    injected.context("injecting the fault")?;

    drain(stack).await;
    let after = scrape_all(stack).await?;
    let audits = audit_all(stack).await?;
    let deltas = measure::counter_deltas(&before, &after);
    // CPU used during the measured phase; a restarted process counts from its start.
    let mut cpu_s = cpu_used(&cpu_before, &cpu_all(stack));
    cpu_s.insert("frlab".into(), report.generator_cpu_s);
    let mut trial = trial_from(
        phases, scenario, trial, seed, &report, &deltas, &audits, cpu_s,
    );
    trial.violations = measure::Invariants::from_audits(&audits).violations(setup.promises);
    trial.breaker.time_open_s = Some(measure::time_not_closed(
        &breaker_samples,
        measured.as_secs_f64(),
    ));
    Ok(trial)
}

/// How often the breaker states are sampled during the measured load.
const BREAKER_SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// Whether any breaker is not closed (open or half-open) on any of these services; `None`
/// when none could be read (a service restarting in a crash scenario is skipped).
async fn any_breaker_open(http: &[std::net::SocketAddr]) -> Option<bool> {
    let mut read = false;
    let mut open = false;
    for addr in http {
        if let Ok(parsed) = scrape::metrics(&addr.to_string(), SCRAPE_TIMEOUT).await {
            read = true;
            open |= measure::any_breaker_not_closed(&parsed);
        }
    }
    read.then_some(open)
}

/// Every number of one trial, from what was measured.
#[allow(clippy::too_many_arguments)]
pub fn trial_from(
    phases: &Phases,
    scenario: &Scenario,
    trial: u32,
    seed: u64,
    report: &LoadReport,
    deltas: &[Sample],
    audits: &Audits,
    cpu_s_per_process: BTreeMap<String, f64>,
) -> Trial {
    let timeline: Vec<measure::Window> = report
        .timeline
        .iter()
        .map(|s| measure::Window {
            second: s.second,
            issued: s.issued,
            succeeded: s.succeeded,
            p95_ms: s.p95_ms,
        })
        .collect();
    let has_fault = scenario.has_fault();
    let fault_start = phases.pre_fault.as_secs_f64();
    let fault_end = fault_start + phases.fault.as_secs_f64();
    let end = fault_end + phases.recovery.as_secs_f64();
    let baseline = measure::baseline_rate(&timeline, fault_start);
    let recovery = match (has_fault, baseline) {
        (true, Some(b)) => Some(measure::recovery(&timeline, fault_end, b, end)),
        _ => None,
    };
    let outcome = has_fault
        .then(|| {
            measure::classify(
                &timeline,
                measure::TriggerWindow {
                    start_s: fault_start,
                    end_s: fault_end,
                    run_end_s: end,
                    hold_s: phases.hold.as_secs_f64(),
                },
            )
        })
        .flatten();
    let invariants = measure::Invariants::from_audits(audits);
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
        amplification: measure::Amplification::from_samples(deltas, report.issued),
        duplicates: invariants.duplicates,
        lost_events: invariants.lost_events,
        orphaned_reservations: invariants.orphaned_reservations,
        wasted_charges: invariants.wasted_charges,
        unrefunded_unconfirmed: invariants.unrefunded_unconfirmed,
        sagas_unfinished: invariants.sagas_unfinished,
        violations: Vec::new(),
        baseline_success_rate: baseline,
        recovery,
        outcome,
        breaker: Breaker {
            opens: measure::breaker_opens(deltas),
            time_open_s: None,
        },
        rejections: measure::Rejections::from_samples(deltas),
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
async fn inject(
    phases: &Phases,
    stack: &mut LocalStack,
    scenario: &Scenario,
    seed: u64,
) -> Result<()> {
    tokio::time::sleep(phases.pre_fault).await;
    if let Some(yaml) = &scenario.manifest {
        for doc in lab_chaos::spec::parse_documents(yaml)? {
            let mut spec = doc.spec.clone();
            spec.duration = format!("{}ms", phases.fault.as_millis());
            spec.validate()?;
            let service = spec.selector.service.clone();
            let endpoint = stack
                .endpoint(&service)
                .with_context(|| format!("{service} is not running"))?;
            let admin = endpoint
                .admin
                .with_context(|| format!("{service} announced no admin port"))?;
            faults::faults_client(&admin.to_string(), None)?
                .apply(ApplyFaultRequest {
                    fault: Some(spec.to_fault(&doc.metadata.name, Some(seed))),
                })
                .await
                .map_err(|s| anyhow!("{service}: {}", s.message()))?;
        }
    }
    if let Some(service) = scenario.kill {
        stack.kill(service).await?;
        tokio::time::sleep(phases.fault).await;
        stack.restart(service).await?;
    }
    Ok(())
}

/// How long one scrape or one Audit snapshot of the experiment may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// Every service's /metrics, as one list (each series carries its `service` label).
async fn scrape_all(stack: &LocalStack) -> Result<Vec<Sample>> {
    let mut all = Vec::new();
    for ep in stack.endpoints() {
        let samples = scrape::metrics(&ep.http.to_string(), SCRAPE_TIMEOUT)
            .await
            .map_err(|e| anyhow!("scraping {}: {e}", ep.metrics_url()))?;
        all.extend(samples);
    }
    Ok(all)
}

/// One service's Audit snapshot with its id sets.
async fn audit(stack: &LocalStack, service: &str) -> Result<Audit> {
    let ep = stack
        .endpoint(service)
        .with_context(|| format!("{service} is not running"))?;
    let answer = grpc::audit_snapshot(&ep.grpc_url(), SCRAPE_TIMEOUT, true).await?;
    Ok(Audit::from(&answer))
}

async fn audit_all(stack: &LocalStack) -> Result<Audits> {
    Ok(Audits {
        orders: audit(stack, "orders").await?,
        payments: audit(stack, "payments").await?,
        notifications: audit(stack, "notifications").await?,
        inventory: audit(stack, "inventory").await?,
    })
}

/// Waits (at most [`DRAIN`]) for the orders outbox to empty and every saga to finish.
async fn drain(stack: &LocalStack) {
    let deadline = Instant::now() + DRAIN;
    while Instant::now() < deadline {
        match audit(stack, "orders").await {
            Ok(a) if a.counter("outbox_backlog") == 0 && a.counter("sagas_unfinished") == 0 => {
                return;
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

//! `frlab calibrate`: measure the knee of the system on a fresh stack, so experiments and
//! sweeps can offer load as a fraction of what it really sustains.
//!
//! An open-loop ramp ([`crate::measure::knee`]): each step offers one rate for a few
//! seconds while payments' `/state` is sampled (slots in use, queue) and every process's CPU
//! time is read before and after; between steps the stack idles until payments is empty,
//! so one step's backlog does not spill into the next.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::time::Instant;

use super::fresh::FreshStack;
use super::payments::PaymentsModel;
use super::plan::Backend;
use crate::load::{self, LoadConfig, Schedule};
use crate::measure::knee::{self, Step};
use crate::observe::scrape;
use crate::report::Calibration;
use crate::report::environment::{git_commit, utc_timestamp};
use crate::stack::LocalStack;
use crate::stack::cpu::{cpu_all, cpu_used};

/// How a calibration runs.
#[derive(Clone, Debug)]
pub struct CalibrateConfig {
    /// The profile the services run; a-baseline puts nothing between the load and payments.
    pub profile: String,
    pub payments: PaymentsModel,
    pub slo_p99_ms: f64,
    pub deadline: Duration,
    /// How long each step offers its rate.
    pub step: Duration,
    /// The first step's rate, as a share of the model's capacity.
    pub start_fraction: f64,
    /// The ramp stops climbing above this share of the model's capacity.
    pub ceiling_fraction: f64,
    pub seed: u64,
}

impl Default for CalibrateConfig {
    fn default() -> Self {
        Self {
            profile: "a-baseline".into(),
            payments: PaymentsModel::default(),
            slo_p99_ms: 500.0,
            deadline: Duration::from_secs(2),
            step: Duration::from_secs(5),
            start_fraction: 0.5,
            ceiling_fraction: 1.6,
            seed: 1,
        }
    }
}

/// How often payments' `/state` is read during a step.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Longest wait for payments to empty between steps.
const SETTLE_MAX: Duration = Duration::from_secs(5);

/// Runs the ramp on a fresh stack. `progress` gets one line per step.
pub async fn calibrate(
    config: &CalibrateConfig,
    backend: &Backend,
    mut progress: impl FnMut(&str),
) -> Result<Calibration> {
    config.payments.validate()?;
    let named = lab_resilience::profiles::resolve(&config.profile)?;
    let yaml = named.profile.to_values_yaml()?;
    let started_at = utc_timestamp(std::time::SystemTime::now());
    let model = config.payments.capacity_rps();
    let mut fresh = FreshStack {
        backend,
        profile: &named.name,
        profile_yaml: &yaml,
        payments: &config.payments,
        seed: config.seed,
    }
    .start()
    .await?;
    let ramp = ramp(config, model, &mut fresh.stack, &mut progress).await;
    let steps = fresh.finish(ramp).await?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(Calibration {
        started_at,
        commit: git_commit(std::path::Path::new(".")).0,
        profile: named.name,
        payments: config.payments,
        model_capacity_rps: model,
        slo_p99_ms: config.slo_p99_ms,
        deadline_ms: config.deadline.as_millis() as u64,
        step_s: config.step.as_secs_f64(),
        cores,
        knee_rps: knee::knee(&steps, config.slo_p99_ms),
        binding: knee::binding(&steps, config.slo_p99_ms, cores),
        steps,
    })
}

async fn ramp(
    config: &CalibrateConfig,
    model: f64,
    stack: &mut LocalStack,
    progress: &mut impl FnMut(&str),
) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let start = model * config.start_fraction;
    let ceiling = model * config.ceiling_fraction;
    while let Some(rate) = knee::next_rate(&steps, start, ceiling, config.slo_p99_ms) {
        let step = run_step(config, stack, rate, steps.len()).await?;
        progress(&format!(
            "  {rate:7.1} req/s: success {:6.2} %, p99 {:5.0} ms, payments busy {}, CPU {:.2} cores: {}",
            step.success_rate() * 100.0,
            step.p99_ms,
            step.payments_busy
                .map_or("n/a".into(), |b| format!("{:3.0} %", b * 100.0)),
            step.cpu_total(),
            step.failure(config.slo_p99_ms)
                .map_or("pass".into(), |why| format!("fail ({why})"))
        ));
        steps.push(step);
        settle(stack).await;
    }
    Ok(steps)
}

/// One step: `rate` for `config.step`, payments sampled meanwhile, CPU read around it.
async fn run_step(
    config: &CalibrateConfig,
    stack: &LocalStack,
    rate: f64,
    index: usize,
) -> Result<Step> {
    let payments_http = stack
        .endpoint("payments")
        .context("payments is not running")?
        .http
        .to_string();
    let mut load = LoadConfig::new(
        stack.gateway_url(),
        Schedule::Constant { rate },
        config.step,
    );
    load.deadline = config.deadline;
    load.seed = config.seed.wrapping_add(index as u64);
    load.key_prefix = format!(
        "cal{index}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let cpu_before = cpu_all(stack);
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let sampler = tokio::spawn(async move {
        scrape::sample_until(SAMPLE_EVERY, stopped, || payments_state(&payments_http)).await
    });
    let report = load::run(load, |_| {}).await.context("calibration step")?;
    let _ = stop.send(());
    let samples = sampler.await.unwrap_or_default();
    let elapsed = report.elapsed_s.max(config.step.as_secs_f64());
    let mut cpu_cores: BTreeMap<String, f64> = cpu_used(&cpu_before, &cpu_all(stack))
        .into_iter()
        .map(|(p, s)| (p, s / elapsed))
        .collect();
    cpu_cores.insert("frlab".into(), report.generator_cpu_s / elapsed);
    let mean = |f: fn(&(f64, (f64, f64))) -> f64| {
        (!samples.is_empty()).then(|| samples.iter().map(f).sum::<f64>() / samples.len() as f64)
    };
    // The second half of the schedule: not the seconds after it, when the last answers
    // come back and the queue empties.
    let end = config.step.as_secs_f64();
    let second_half: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.0 >= end / 2.0 && s.0 <= end)
        .map(|s| (s.0, s.1.1))
        .collect();
    Ok(Step {
        rate,
        issued: report.issued,
        succeeded: report.succeeded,
        p99_ms: report.latency_ms.p99,
        goodput_rps: report.goodput_rps,
        payments_busy: mean(|s| s.1.0),
        payments_queued: mean(|s| s.1.1),
        payments_queue_growth: knee::slope(&second_half),
        cpu_cores,
        generator_saturated: report.saturated,
    })
}

/// `(share of slots busy, charges queued)` from payments' `/state`.
async fn payments_state(http: &str) -> Option<(f64, f64)> {
    let body = scrape::get(http, "/state", Duration::from_secs(1))
        .await
        .ok()?;
    let state: serde_json::Value = serde_json::from_str(&body).ok()?;
    let capacity = state.get("capacity")?;
    let slots = capacity.get("slots")?.as_f64()?;
    let busy = capacity.get("slots_in_use")?.as_f64()?;
    let queued = capacity.get("queued")?.as_f64()?;
    Some((busy / slots.max(1.0), queued))
}

/// Waits (at most [`SETTLE_MAX`]) until payments has nothing running or queued.
async fn settle(stack: &LocalStack) {
    let Some(http) = stack.endpoint("payments").map(|e| e.http.to_string()) else {
        return;
    };
    let until = Instant::now() + SETTLE_MAX;
    while Instant::now() < until {
        if let Some((busy, queued)) = payments_state(&http).await
            && busy == 0.0
            && queued == 0.0
        {
            return;
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    }
}

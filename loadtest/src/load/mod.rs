//! The open-loop load generator behind `frlab load`: PlaceOrder calls on a fixed schedule,
//! whatever the gateway does.
//!
//! # Why open loop
//!
//! A closed-loop generator (N workers, each waiting for its answer before sending again)
//! slows down when the system slows down, so it never sends the requests that would have
//! queued, and its latencies leave out exactly the waits users would have seen: coordinated
//! omission. Here the i-th logical request has an *intended* send time fixed in advance by
//! the [`Schedule`] (the integral of the rate reaching `i`). One scheduler task sleeps until
//! each intended time and spawns the request without waiting for any answer, and latency
//! is measured from the intended time, not from when the request actually left. How late
//! the scheduler itself was is measured too (the *lag*), so a generator that cannot keep up
//! shows it ([`LoadReport::saturated`]) instead of quietly lowering the load.
//!
//! # Definitions (DESIGN.md, "Metrics — exact definitions")
//!
//! - A logical request is one idempotency key, `{key_prefix}-{i}`. With `client_retries`,
//!   a failed attempt (any code but OK) is retried at once with the same key, up to that
//!   many extra times, all within one client deadline that starts when the first attempt
//!   is sent; each attempt is sent with the time left as `grpc-timeout`.
//! - Success: an OK answer within the deadline. Latency: intended send time to the final
//!   answer, recorded in HDR histograms at microsecond resolution.
//! - The in-flight cap ([`LoadConfig::max_in_flight`]) protects the generator's machine:
//!   a request due while that many are unanswered is *dropped* and counted, never delayed.
//!
//! Layout: [`schedule`] (rates and intended times, pure functions), [`pace`] (waiting for
//! each intended time), [`report`] (what is recorded and printed), and this module (the run itself); the flags of `frlab load` are
//! in `cli::load`.

pub mod pace;
pub mod report;
pub mod schedule;
mod target;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Result, bail};
use lab_proto::shop::v1::{LineItem, PlaceOrderRequest};
use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

pub use pace::{Due, Pacer};
pub use report::{LoadReport, Percentiles, SATURATED_LAG_P99_MS, SecondStats};
pub use schedule::Schedule;

use report::{Finished, Recorder, RunSpec};
use target::{Channels, GatewayTarget, HealthTarget, Target};

/// Default cap on unanswered requests (`frlab load --max-in-flight`).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 10_000;
/// Default number of HTTP/2 connections to the gateway (`frlab load --connections`).
pub const DEFAULT_CONNECTIONS: usize = 4;

/// The most requests one run may issue, so a typo in the rate or duration is refused.
pub const MAX_REQUESTS: u64 = 50_000_000;

/// The seeded random orders choose from sku-1 ..= sku-PRODUCTS: the inventory's catalogue
/// but sku-10, a limited edition of 5 that a load run would sell out in its first second.
const PRODUCTS: u32 = 9;

/// What each logical request calls on the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Call {
    /// `shop.v1.Gateway/PlaceOrder`: the real workload, through all five services.
    #[default]
    PlaceOrder,
    /// `grpc.health.v1.Health/Check` on the gateway: costs the server almost nothing, so
    /// the rate is limited by the generator (used to compare generators).
    Health,
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Call::PlaceOrder => "place-order",
            Call::Health => "health",
        })
    }
}

/// How one load run goes.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// Gateway gRPC URL, e.g. `http://127.0.0.1:50051`.
    pub gateway: String,
    /// What each logical request calls.
    pub call: Call,
    pub schedule: Schedule,
    /// How long the schedule issues requests; answers are awaited after it ends.
    pub duration: Duration,
    /// Client deadline per logical request (all its attempts), sent as `grpc-timeout` too.
    pub deadline: Duration,
    /// Extra immediate attempts after a failed one, with the same key (the retry_storm
    /// scenario's client). 0: one attempt.
    pub client_retries: u32,
    /// Seeds the choice of line items (when `items` is empty).
    pub seed: u64,
    /// Idempotency keys are `{key_prefix}-{i}`: 1..=100 characters of `[A-Za-z0-9._:-]`.
    pub key_prefix: String,
    /// Safety cap on unanswered requests; requests due over it are dropped and counted.
    pub max_in_flight: usize,
    /// HTTP/2 connections to the gateway, used in turn (at least 1).
    pub connections: usize,
    /// The line items of every order; empty: 1 to 3 seeded random items per order.
    pub items: Vec<LineItem>,
}

impl LoadConfig {
    /// A config with the defaults of `frlab load` for everything but the target and load.
    pub fn new(gateway: impl Into<String>, schedule: Schedule, duration: Duration) -> Self {
        Self {
            gateway: gateway.into(),
            call: Call::PlaceOrder,
            schedule,
            duration,
            deadline: Duration::from_secs(1),
            client_retries: 0,
            seed: 1,
            key_prefix: format!("load-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            connections: DEFAULT_CONNECTIONS,
            items: Vec::new(),
        }
    }

    /// Refuses what cannot run, naming the field and the value.
    pub fn validate(&self) -> Result<()> {
        self.schedule.validate()?;
        if self.duration.is_zero() {
            bail!("duration must be above 0");
        }
        if self.deadline.is_zero() {
            bail!("deadline must be above 0");
        }
        if self.max_in_flight == 0 {
            bail!("max_in_flight must be at least 1");
        }
        if !(1..=256).contains(&self.connections) {
            bail!("connections must be 1..=256, got {}", self.connections);
        }
        if let Schedule::Spike { at, .. } = self.schedule
            && at >= self.duration
        {
            bail!(
                "the spike starts at {} s, after the run ends (duration {} s)",
                at.as_secs_f64(),
                self.duration.as_secs_f64()
            );
        }
        let count = self.schedule.request_count(self.duration);
        if count > MAX_REQUESTS {
            bail!(
                "{} for {} s is {count} requests, more than the limit of {MAX_REQUESTS}",
                self.schedule,
                self.duration.as_secs_f64()
            );
        }
        let prefix = &self.key_prefix;
        if prefix.is_empty()
            || prefix.len() > 100
            || !prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
        {
            bail!("key prefix `{prefix}` must be 1..=100 characters of [A-Za-z0-9._:-]");
        }
        if self.items.len() > 50 {
            bail!("{} line items; an order holds at most 50", self.items.len());
        }
        Ok(())
    }
}

/// Where a run is, passed to the progress callback about once a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// Since the start of the schedule.
    pub elapsed: Duration,
    /// Of the schedule still to run (zero while waiting for the last answers).
    pub remaining: Duration,
    pub sent: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub dropped: u64,
    pub in_flight: u64,
}

impl std::fmt::Display for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:>5.1} s  sent {}  ok {}  failed {}  dropped {}  in flight {}  ",
            self.elapsed.as_secs_f64(),
            self.sent,
            self.succeeded,
            self.failed,
            self.dropped,
            self.in_flight
        )?;
        if self.remaining.is_zero() {
            write!(f, "(waiting for the last answers)")
        } else {
            write!(f, "({:.0} s left)", self.remaining.as_secs_f64().ceil())
        }
    }
}

/// Runs the schedule against the gateway and reports what happened. `progress` is called
/// about once a second while the run goes on. Errors only on a bad config or URL: what
/// the gateway answers, including nothing at all, is part of the report.
pub async fn run(config: LoadConfig, progress: impl FnMut(&Progress)) -> Result<LoadReport> {
    config.validate()?;
    // A few long-lived connections (HTTP/2 multiplexes the requests on them, as a client
    // library would), opened once, so that no request measures connection setup.
    let channels = Channels::open(&config.gateway, config.connections)?;
    Ok(match config.call {
        Call::PlaceOrder => drive(config, GatewayTarget { channels }, progress).await,
        Call::Health => drive(config, HealthTarget { channels }, progress).await,
    })
}

/// What the scheduler and the requests tell the recorder.
enum Event {
    Scheduled {
        intended: Duration,
        lag: Duration,
        dropped: bool,
        in_flight: u64,
    },
    Finished(Finished),
}

/// The run itself, against any [`Target`]; the config is valid.
pub(crate) async fn drive<T: Target>(
    config: LoadConfig,
    target: T,
    mut progress: impl FnMut(&Progress),
) -> LoadReport {
    let cpu_before = cpu_time();
    let spec = RunSpec {
        call: config.call,
        schedule: config.schedule.to_string(),
        duration: config.duration,
        deadline: config.deadline,
        client_retries: config.client_retries,
        seed: config.seed,
    };
    let mut recorder = Recorder::new(config.duration);
    let (events, mut received) = mpsc::unbounded_channel();
    let in_flight = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let duration = config.duration;
    // Stops issuing if this future is dropped (a cancelled run); requests already sent
    // end by their deadline.
    let _scheduler = AbortOnDrop(tokio::spawn(schedule_requests(
        config,
        target,
        start,
        events,
        Arc::clone(&in_flight),
    )));

    let mut ticks =
        tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    // The channel closes when the scheduler and every request it spawned are done.
    loop {
        tokio::select! {
            event = received.recv() => match event {
                Some(Event::Scheduled { intended, lag, dropped, in_flight }) => {
                    recorder.scheduled(intended, lag, dropped);
                    recorder.in_flight(in_flight);
                }
                Some(Event::Finished(finished)) => recorder.finished(&finished),
                None => break,
            },
            _ = ticks.tick() => {
                let elapsed = start.elapsed();
                progress(&Progress {
                    elapsed,
                    remaining: duration.saturating_sub(elapsed),
                    sent: recorder.sent,
                    succeeded: recorder.succeeded,
                    failed: recorder.failed,
                    dropped: recorder.dropped,
                    in_flight: in_flight.load(Ordering::Relaxed) as u64,
                });
            }
        }
    }
    let elapsed = start.elapsed();
    let cpu = cpu_time().saturating_sub(cpu_before);
    recorder.finish(&spec, elapsed, cpu)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The scheduler: sleeps until each request's intended time and spawns it, never waiting
/// for an answer. Item choices are drawn for every request in order, sent or dropped, so
/// the sequence depends on the seed alone.
async fn schedule_requests<T: Target>(
    config: LoadConfig,
    target: T,
    start: Instant,
    events: mpsc::UnboundedSender<Event>,
    in_flight: Arc<AtomicUsize>,
) {
    let mut rng = SmallRng::seed_from_u64(config.seed);
    let mut pacer = Pacer::new(config.schedule.clone(), Some(config.duration), start);
    while let Some(Due {
        index: i,
        offset,
        intended,
        lag,
    }) = pacer.next().await
    {
        let request = PlaceOrderRequest {
            idempotency_key: format!("{}-{i}", config.key_prefix),
            customer_id: format!("customer-{}", i % 100),
            items: if config.items.is_empty() {
                random_items(&mut rng)
            } else {
                config.items.clone()
            },
        };
        let waiting = in_flight.load(Ordering::Relaxed);
        let dropped = waiting >= config.max_in_flight;
        let _ = events.send(Event::Scheduled {
            intended: offset,
            lag,
            dropped,
            in_flight: waiting as u64 + u64::from(!dropped),
        });
        if dropped {
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let job = Job {
            target: target.clone(),
            request,
            intended,
            offset,
            deadline: config.deadline,
            attempts: 1 + config.client_retries,
        };
        let events = events.clone();
        let in_flight = Arc::clone(&in_flight);
        tokio::spawn(async move {
            let finished = job.run().await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = events.send(Event::Finished(finished));
        });
    }
}

/// One logical request: its attempts within one deadline.
struct Job<T> {
    target: T,
    request: PlaceOrderRequest,
    intended: Instant,
    offset: Duration,
    deadline: Duration,
    /// At most this many attempts (1 + client retries).
    attempts: u32,
}

impl<T: Target> Job<T> {
    async fn run(self) -> Finished {
        let deadline_at = Instant::now() + self.deadline;
        let mut made = 0;
        let error = loop {
            made += 1;
            let left = deadline_at.saturating_duration_since(Instant::now());
            let attempt = self.target.attempt(self.request.clone(), left);
            match tokio::time::timeout_at(deadline_at, attempt).await {
                Ok(Ok(())) => break None,
                Err(_elapsed) => break Some("DEADLINE_EXCEEDED"),
                Ok(Err(code)) => {
                    if made >= self.attempts || Instant::now() >= deadline_at {
                        break Some(code);
                    }
                }
            }
        };
        Finished {
            intended: self.offset,
            latency: Instant::now().saturating_duration_since(self.intended),
            attempts: made,
            error,
        }
    }
}

/// 1 to 3 distinct products of sku-1..sku-9, 1 to 3 of each.
fn random_items(rng: &mut SmallRng) -> Vec<LineItem> {
    let n = rng.random_range(1..=3u32);
    let mut products: Vec<u32> = Vec::with_capacity(3);
    while products.len() < n as usize {
        let p = rng.random_range(1..=PRODUCTS);
        if !products.contains(&p) {
            products.push(p);
        }
    }
    products
        .into_iter()
        .map(|p| LineItem {
            product_id: format!("sku-{p}"),
            quantity: rng.random_range(1..=3),
        })
        .collect()
}

/// CPU time (user + system) of this whole process so far, from getrusage(2); zero if the
/// call fails. (The chain bench divides it by the orders placed.)
#[allow(unsafe_code)]
pub fn cpu_time() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points
    // to enough writable memory; it is read only when the call reports success.
    let usage = unsafe {
        if libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) != 0 {
            return Duration::ZERO;
        }
        usage.assume_init()
    };
    let time = |t: libc::timeval| {
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_usec).unwrap_or(0) * 1000,
        )
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[cfg(test)]
mod tests;

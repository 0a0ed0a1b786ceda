//! Adaptive concurrency limit: a gradient controller, after Netflix concurrency-limits'
//! `Gradient2Limit` and Envoy's adaptive concurrency filter.
//!
//! # Why
//!
//! A fixed cap ([`crate::shed`]) is right for one capacity only: set too high, it admits the
//! queue that turns a slowdown into an overload; set too low, it refuses work a healthy
//! server could do — and the right number moves with every fault, deploy and neighbour.
//! Queueing theory gives a signal that needs no tuning: while a server has spare capacity,
//! more concurrency does not raise latency; once it is saturated, each extra request in
//! flight only waits in a queue, and latency climbs. So the limiter watches round-trip
//! times and steers the concurrency limit to where latency starts to rise (Little's law:
//! limit ≈ throughput × uncongested latency, plus a small queue).
//!
//! # The controller
//!
//! Every successful (OK) response gives a latency sample. Samples are averaged over a
//! window (at least `window_ms` and `min_window_samples`): that is the *short-term* RTT. The
//! *long-term* RTT, the baseline, is a slow exponential average of the short-term ones over
//! `long_window` windows (and drops faster when latency falls to half of it, so the baseline
//! recovers after an overload). At the end of each window:
//!
//! ```text
//! gradient  = clamp(tolerance × rtt_long / rtt_short, 0.5, 1.0)
//! target    = limit × gradient + √limit            (√limit: the queue we allow)
//! limit     = limit × (1 − smoothing) + target × smoothing,  clamped to [min, max]
//! ```
//!
//! Latency within `tolerance` of the baseline keeps the gradient at 1 and the limit grows by
//! about √limit × smoothing per window; latency well above it (twice the tolerance and more)
//! halves the target. A window in which the server was not using half of its limit does not
//! grow it (a lightly loaded server learns nothing about its capacity; Gradient2 does the
//! same). A *dropped* request — one that timed out (DEADLINE_EXCEEDED), was refused further
//! in (RESOURCE_EXHAUSTED), or was cancelled at its deadline — cuts the limit at once by
//! `drop_decrease` (multiplicative decrease, at most once per window) and stops growth for
//! that window. Other errors and cancellations before the deadline (a hedge's loser, a
//! caller that went away) say nothing about capacity and are ignored.
//!
//! Requests over the limit are refused at once, before any work, with [`LimitExceeded`]
//! (RESOURCE_EXHAUSTED, and `grpc-retry-pushback-ms` when `pushback_ms` is set).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower::{Layer, Service};

use crate::BoxError;
use crate::deadline::grpc_timeout::header_timeout;
use crate::setting::ConfigError;

/// The largest `max_limit` a profile may set.
pub const MAX_LIMIT: u32 = 1_000_000;

/// `adaptive:` in a profile's server policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveConfig {
    #[serde(default = "default_initial")]
    pub initial_limit: u32,
    #[serde(default = "default_min")]
    pub min_limit: u32,
    #[serde(default = "default_max")]
    pub max_limit: u32,
    /// Retry pushback sent with a refusal, if any.
    #[serde(default)]
    pub pushback_ms: Option<u64>,
    /// Weight of each window's new limit, in (0, 1]: lower is steadier, higher reacts faster.
    #[serde(default = "default_smoothing")]
    pub smoothing: f64,
    /// How much slower than the baseline the short-term RTT may be before the limit comes
    /// down (>= 1; 1.5: 50 % slower).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// Shortest window over which samples are averaged into the short-term RTT.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// Fewest samples a window needs before it updates the limit.
    #[serde(default = "default_min_window_samples")]
    pub min_window_samples: u32,
    /// Windows the long-term (baseline) RTT averages over.
    #[serde(default = "default_long_window")]
    pub long_window: u32,
    /// Factor the limit is multiplied by on a dropped request, in (0, 1).
    #[serde(default = "default_drop_decrease")]
    pub drop_decrease: f64,
}

fn default_initial() -> u32 {
    20
}
fn default_min() -> u32 {
    4
}
fn default_max() -> u32 {
    200
}
fn default_smoothing() -> f64 {
    0.2
}
fn default_tolerance() -> f64 {
    1.5
}
fn default_window_ms() -> u64 {
    500
}
fn default_min_window_samples() -> u32 {
    10
}
fn default_long_window() -> u32 {
    20
}
fn default_drop_decrease() -> f64 {
    0.9
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            initial_limit: default_initial(),
            min_limit: default_min(),
            max_limit: default_max(),
            pushback_ms: None,
            smoothing: default_smoothing(),
            tolerance: default_tolerance(),
            window_ms: default_window_ms(),
            min_window_samples: default_min_window_samples(),
            long_window: default_long_window(),
            drop_decrease: default_drop_decrease(),
        }
    }
}

impl AdaptiveConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let err =
            |field: &str, message: String| Err(ConfigError::new(format!("{key}.{field}"), message));
        if self.min_limit == 0 {
            return err("min_limit", "must be at least 1, got 0".into());
        }
        if self.max_limit > MAX_LIMIT {
            return err(
                "max_limit",
                format!("must be at most {MAX_LIMIT}, got {}", self.max_limit),
            );
        }
        if self.max_limit < self.min_limit {
            return err(
                "max_limit",
                format!(
                    "must be at least min_limit ({}), got {}",
                    self.min_limit, self.max_limit
                ),
            );
        }
        if !(self.min_limit..=self.max_limit).contains(&self.initial_limit) {
            return err(
                "initial_limit",
                format!(
                    "must be between min_limit ({}) and max_limit ({}), got {}",
                    self.min_limit, self.max_limit, self.initial_limit
                ),
            );
        }
        crate::shed::validate_pushback(self.pushback_ms, key)?;
        if !(self.smoothing > 0.0 && self.smoothing <= 1.0) {
            return err(
                "smoothing",
                format!("must be in (0, 1], got {}", self.smoothing),
            );
        }
        if !(self.tolerance >= 1.0 && self.tolerance <= 100.0) {
            return err(
                "tolerance",
                format!("must be between 1 and 100, got {}", self.tolerance),
            );
        }
        if self.window_ms == 0 || self.window_ms > 60_000 {
            return err(
                "window_ms",
                format!("must be between 1 and 60000 ms, got {}", self.window_ms),
            );
        }
        if self.min_window_samples == 0 {
            return err("min_window_samples", "must be at least 1, got 0".into());
        }
        if self.long_window == 0 {
            return err("long_window", "must be at least 1, got 0".into());
        }
        if !(self.drop_decrease > 0.0 && self.drop_decrease < 1.0) {
            return err(
                "drop_decrease",
                format!("must be in (0, 1), got {}", self.drop_decrease),
            );
        }
        Ok(())
    }
}

/// The request was refused because the adaptive limit is reached.
#[derive(Debug, Clone, thiserror::Error)]
#[error("concurrency limit {limit} reached, request refused")]
pub struct LimitExceeded {
    pub limit: u32,
    pub pushback: Option<Duration>,
}

/// `resilience_adaptive_limit` (gauge) and `resilience_adaptive_rejections_total`. One per
/// server process.
#[derive(Clone, Debug, Default)]
pub struct AdaptiveMetrics {
    limit: Gauge,
    rejections: Counter,
}

impl AdaptiveMetrics {
    pub fn register(registry: &mut Registry) -> AdaptiveMetrics {
        let m = AdaptiveMetrics::default();
        registry.register(
            crate::metric_names::ADAPTIVE_LIMIT,
            "The adaptive concurrency limit now",
            m.limit.clone(),
        );
        registry.register(
            crate::metric_names::ADAPTIVE_REJECTIONS,
            "Requests refused because the adaptive concurrency limit was reached",
            m.rejections.clone(),
        );
        m
    }
}

/// A server's adaptive limit, shared by every clone of its layer and services.
#[derive(Clone, Debug)]
pub struct AdaptiveLimit {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    config: AdaptiveConfig,
    pushback: Option<Duration>,
    /// The limit admission checks against: `controller.estimate`, rounded down.
    limit: AtomicU32,
    in_flight: AtomicU32,
    /// The most requests in flight during the current window.
    peak: AtomicU32,
    controller: Mutex<Controller>,
    metrics: AdaptiveMetrics,
}

#[derive(Debug)]
struct Controller {
    /// The limit as a real number (the admitted limit is its floor).
    estimate: f64,
    /// Baseline RTT (seconds), `None` before the first window.
    rtt_long: Option<f64>,
    /// The last window's RTT (seconds).
    rtt_short: Option<f64>,
    window_start: Instant,
    window_sum: f64,
    window_count: u32,
    window_dropped: bool,
    last_decrease: Option<Instant>,
    windows: u64,
    drops: u64,
}

/// How a request ended, as the controller sees it.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    /// OK: a latency sample.
    Success(Duration),
    /// Timed out or refused further in: a sign of overload.
    Dropped,
    /// Says nothing about capacity.
    Ignored,
    /// The future was dropped before the response: a drop if it was at the deadline.
    Cancelled,
}

impl AdaptiveLimit {
    pub fn new(config: &AdaptiveConfig, metrics: &AdaptiveMetrics) -> AdaptiveLimit {
        let estimate = f64::from(
            config
                .initial_limit
                .clamp(config.min_limit, config.max_limit.max(config.min_limit)),
        );
        metrics.limit.set(estimate as i64);
        AdaptiveLimit {
            shared: Arc::new(Shared {
                config: config.clone(),
                pushback: config.pushback_ms.map(Duration::from_millis),
                limit: AtomicU32::new(estimate as u32),
                in_flight: AtomicU32::new(0),
                peak: AtomicU32::new(0),
                controller: Mutex::new(Controller {
                    estimate,
                    rtt_long: None,
                    rtt_short: None,
                    window_start: Instant::now(),
                    window_sum: 0.0,
                    window_count: 0,
                    window_dropped: false,
                    last_decrease: None,
                    windows: 0,
                    drops: 0,
                }),
                metrics: metrics.clone(),
            }),
        }
    }

    pub fn layer(&self) -> AdaptiveLayer {
        AdaptiveLayer {
            limit: self.clone(),
        }
    }

    /// The concurrency limit now.
    pub fn limit(&self) -> u32 {
        self.shared.limit.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u32 {
        self.shared.in_flight.load(Ordering::Relaxed)
    }

    /// `{"limit", "estimate", "min_limit", "max_limit", "in_flight", "rtt_short_ms",
    /// "rtt_long_ms", "windows", "drops", "rejections"}` for `/state`.
    pub fn snapshot(&self) -> serde_json::Value {
        let s = &self.shared;
        let c = s.controller();
        serde_json::json!({
            "limit": self.limit(),
            "estimate": c.estimate,
            "min_limit": s.config.min_limit,
            "max_limit": s.config.max_limit,
            "in_flight": self.in_flight(),
            "rtt_short_ms": c.rtt_short.map(|r| r * 1000.0),
            "rtt_long_ms": c.rtt_long.map(|r| r * 1000.0),
            "windows": c.windows,
            "drops": c.drops,
            "rejections": s.metrics.rejections.get(),
        })
    }
}

impl Shared {
    fn controller(&self) -> MutexGuard<'_, Controller> {
        self.controller.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a place if fewer than the limit are in flight.
    fn try_admit(&self) -> bool {
        let limit = self.limit.load(Ordering::Relaxed);
        match self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            }) {
            Ok(before) => {
                self.peak.fetch_max(before + 1, Ordering::Relaxed);
                true
            }
            Err(_) => false,
        }
    }

    fn record(&self, outcome: Outcome, deadline: Option<Instant>) {
        let now = Instant::now();
        let outcome = match outcome {
            // Cancelled at the deadline (by tonic's timer or the server deadline layer's,
            // which fires SERVER_MARGIN early): timed out.
            Outcome::Cancelled => {
                let margin = crate::deadline::SERVER_MARGIN;
                if deadline.is_some_and(|d| now + margin >= d) {
                    Outcome::Dropped
                } else {
                    Outcome::Ignored
                }
            }
            other => other,
        };
        let mut c = self.controller();
        match outcome {
            Outcome::Success(rtt) => {
                c.window_sum += rtt.as_secs_f64();
                c.window_count += 1;
                let window = Duration::from_millis(self.config.window_ms);
                if now.saturating_duration_since(c.window_start) >= window
                    && c.window_count >= self.config.min_window_samples
                {
                    self.close_window(&mut c, now);
                }
            }
            Outcome::Dropped => {
                c.drops += 1;
                c.window_dropped = true;
                let window = Duration::from_millis(self.config.window_ms);
                if c.last_decrease
                    .is_none_or(|t| now.saturating_duration_since(t) >= window)
                {
                    c.last_decrease = Some(now);
                    let decreased = c.estimate * self.config.drop_decrease;
                    self.publish(&mut c, decreased);
                }
            }
            Outcome::Ignored | Outcome::Cancelled => {}
        }
    }

    /// The end of a window: the gradient step.
    fn close_window(&self, c: &mut Controller, now: Instant) {
        let cfg = &self.config;
        let short = c.window_sum / f64::from(c.window_count);
        let mut long = match c.rtt_long {
            None => short,
            Some(long) => long + (short - long) * 2.0 / (f64::from(cfg.long_window) + 1.0),
        };
        // Latency fell well below the baseline (an overload ended): let the baseline follow
        // faster than the slow average would.
        if long > 2.0 * short {
            long *= 0.95;
        }
        c.rtt_long = Some(long);
        c.rtt_short = Some(short);
        c.windows += 1;

        let peak = self
            .peak
            .swap(self.in_flight.load(Ordering::Relaxed), Ordering::Relaxed);
        let gradient = if short > 0.0 {
            (cfg.tolerance * long / short).clamp(0.5, 1.0)
        } else {
            1.0
        };
        let app_limited = f64::from(peak) < c.estimate / 2.0;
        if !(gradient >= 1.0 && app_limited) {
            let mut target = c.estimate * gradient + c.estimate.sqrt();
            if c.window_dropped {
                target = target.min(c.estimate);
            }
            let next = c.estimate * (1.0 - cfg.smoothing) + target * cfg.smoothing;
            self.publish(c, next);
        }

        c.window_start = now;
        c.window_sum = 0.0;
        c.window_count = 0;
        c.window_dropped = false;
    }

    fn publish(&self, c: &mut Controller, estimate: f64) {
        let (min, max) = (
            f64::from(self.config.min_limit),
            f64::from(self.config.max_limit),
        );
        c.estimate = estimate.clamp(min, max);
        let limit = c.estimate.floor() as u32;
        self.limit.store(limit, Ordering::Relaxed);
        self.metrics.limit.set(i64::from(limit));
    }
}

/// A place taken under the limit; given back, with the request's outcome, when dropped.
struct Ticket {
    shared: Arc<Shared>,
    start: Instant,
    deadline: Option<Instant>,
    outcome: Outcome,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.shared.record(self.outcome, self.deadline);
    }
}

/// Builds [`AdaptiveService`]s that share one [`AdaptiveLimit`].
#[derive(Clone, Debug)]
pub struct AdaptiveLayer {
    limit: AdaptiveLimit,
}

impl<S> Layer<S> for AdaptiveLayer {
    type Service = AdaptiveService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveService {
            inner,
            shared: self.limit.shared.clone(),
        }
    }
}

/// Refuses requests over the adaptive limit with [`LimitExceeded`] and feeds the controller
/// with the outcome of the others.
#[derive(Clone, Debug)]
pub struct AdaptiveService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, B, R> Service<http::Request<B>> for AdaptiveService<S>
where
    S: Service<http::Request<B>, Response = http::Response<R>>,
    S::Error: Into<BoxError>,
{
    type Response = http::Response<R>;
    type Error = BoxError;
    type Future = AdaptiveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let shared = &self.shared;
        if !shared.try_admit() {
            shared.metrics.rejections.inc();
            let error = LimitExceeded {
                limit: shared.limit.load(Ordering::Relaxed),
                pushback: shared.pushback,
            };
            return AdaptiveFuture {
                state: State::Refused { error: Some(error) },
            };
        }
        let start = Instant::now();
        let from_header = header_timeout(req.headers()).and_then(|t| start.checked_add(t));
        let deadline = [from_header, crate::deadline::current()]
            .into_iter()
            .flatten()
            .min();
        let ticket = Ticket {
            shared: shared.clone(),
            start,
            deadline,
            outcome: Outcome::Cancelled,
        };
        AdaptiveFuture {
            state: State::Called {
                inner: self.inner.call(req),
                ticket: Some(ticket),
            },
        }
    }
}

/// The response future of [`AdaptiveService`].
#[pin_project::pin_project]
pub struct AdaptiveFuture<F> {
    #[pin]
    state: State<F>,
}

#[pin_project::pin_project(project = StateProj)]
enum State<F> {
    Refused {
        error: Option<LimitExceeded>,
    },
    Called {
        #[pin]
        inner: F,
        ticket: Option<Ticket>,
    },
}

impl<F, R, E> Future for AdaptiveFuture<F>
where
    F: Future<Output = Result<http::Response<R>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<http::Response<R>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Refused { error } => Poll::Ready(Err(Box::new(
                error
                    .take()
                    .expect("AdaptiveFuture polled after completion"),
            ))),
            StateProj::Called { inner, ticket } => {
                let result = ready!(inner.poll(cx)).map_err(Into::into);
                if let Some(mut ticket) = ticket.take() {
                    ticket.outcome = classify(&result, ticket.start);
                }
                Poll::Ready(result)
            }
        }
    }
}

fn classify<R>(result: &Result<http::Response<R>, BoxError>, start: Instant) -> Outcome {
    use tonic::Code;
    match crate::classify::code_of(result) {
        Code::Ok => Outcome::Success(start.elapsed()),
        Code::DeadlineExceeded | Code::ResourceExhausted => Outcome::Dropped,
        _ => Outcome::Ignored,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fields_default() {
        AdaptiveConfig::default().validate("a").unwrap();
        let c: AdaptiveConfig = serde_json::from_str(r#"{"max_limit": 50}"#).unwrap();
        assert_eq!(c.max_limit, 50);
        assert_eq!(c.smoothing, 0.2);
        assert_eq!(c.window_ms, 500);
        let err = serde_json::from_str::<AdaptiveConfig>(r#"{"limit": 5}"#).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn validation_names_the_key_and_the_value() {
        let key = "resilience.services.payments.adaptive";
        let cases: Vec<(AdaptiveConfig, &str, &str)> = vec![
            (
                AdaptiveConfig {
                    min_limit: 0,
                    ..Default::default()
                },
                "min_limit",
                "got 0",
            ),
            (
                AdaptiveConfig {
                    min_limit: 10,
                    max_limit: 5,
                    initial_limit: 5,
                    ..Default::default()
                },
                "max_limit",
                "got 5",
            ),
            (
                AdaptiveConfig {
                    initial_limit: 500,
                    ..Default::default()
                },
                "initial_limit",
                "got 500",
            ),
            (
                AdaptiveConfig {
                    max_limit: 2_000_000,
                    ..Default::default()
                },
                "max_limit",
                "2000000",
            ),
            (
                AdaptiveConfig {
                    smoothing: 0.0,
                    ..Default::default()
                },
                "smoothing",
                "got 0",
            ),
            (
                AdaptiveConfig {
                    smoothing: f64::NAN,
                    ..Default::default()
                },
                "smoothing",
                "NaN",
            ),
            (
                AdaptiveConfig {
                    tolerance: 0.9,
                    ..Default::default()
                },
                "tolerance",
                "got 0.9",
            ),
            (
                AdaptiveConfig {
                    window_ms: 0,
                    ..Default::default()
                },
                "window_ms",
                "got 0",
            ),
            (
                AdaptiveConfig {
                    min_window_samples: 0,
                    ..Default::default()
                },
                "min_window_samples",
                "got 0",
            ),
            (
                AdaptiveConfig {
                    long_window: 0,
                    ..Default::default()
                },
                "long_window",
                "got 0",
            ),
            (
                AdaptiveConfig {
                    drop_decrease: 1.0,
                    ..Default::default()
                },
                "drop_decrease",
                "got 1",
            ),
            (
                AdaptiveConfig {
                    pushback_ms: Some(90_000),
                    ..Default::default()
                },
                "pushback_ms",
                "90000",
            ),
        ];
        for (config, field, shown) in cases {
            let err = config.validate(key).unwrap_err();
            assert_eq!(err.key, format!("{key}.{field}"));
            assert!(err.message.contains(shown), "{field}: {err}");
        }
    }
}

//! Circuit breaker, one per downstream.
//!
//! # Why
//!
//! When a downstream is failing, every call sent to it costs the caller a connection, a
//! thread of work and — worse — a wait for its timeout, while adding load to a service that
//! is already in trouble; retries multiply that load. A breaker watches the outcomes of calls
//! to one downstream and, once they say the downstream is unhealthy, *stops sending* for a
//! while: calls fail at once with [`CircuitOpen`] (UNAVAILABLE, see [`crate::status`]), the
//! caller answers quickly (or falls back), and the downstream gets room to recover. Then a few
//! probe calls test whether it did before normal traffic is let through again.
//!
//! # The state machine
//!
//! ```text
//!         trip: consecutive failures,     the open period is over
//!         failure or slow-call rate       (open_ms, with backoff)
//! CLOSED ────────────────────────► OPEN ────────────────────────────────────► HALF_OPEN
//!   ▲                                ▲                                            │
//!   │                                │ a probe failed or its permit expired       │
//!   │                                └────────────────────────────────────────────┤
//!   │       all probes succeeded (window and open backoff reset)                  │
//!   └─────────────────────────────────────────────────────────────────────────────┘
//! ```
//!
//! - **CLOSED**: every call goes through; outcomes are recorded. The breaker trips after
//!   `consecutive_failures` failures in a row, or when the share of failed (or slow:
//!   slower than `slow_call_ms`) calls in a rolling window of `window_ms`, divided into
//!   `buckets` buckets, reaches `failure_rate` (`slow_call_rate`) once the window holds
//!   `min_calls` calls. Buckets older than the window drop out of it.
//! - **OPEN**: calls are refused with [`CircuitOpen`] without calling the inner service, for
//!   `open_ms` — or, with `open_backoff`, `open_ms × multiplierⁿ` (capped at `max_ms`) after
//!   the n-th re-open in a row from HALF_OPEN; closing resets n.
//! - **HALF_OPEN**: up to `half_open_probes` calls are let through as probes; any further call
//!   is refused. When all of them succeed the breaker closes with an empty window; when one
//!   fails it opens again (with backoff). A probe permit not answered within
//!   `probe_timeout_ms` expires and counts as a failure, so a hung probe cannot keep the
//!   breaker half open; a probe whose response future is dropped (the caller went away)
//!   gives its permit back.
//!
//! What is a failure: the gRPC code of the outcome ([`crate::classify::code_of`]) is a
//! server failure ([`crate::classify::is_server_failure`]: UNAVAILABLE, DEADLINE_EXCEEDED,
//! RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN, DATA_LOSS, ABORTED; a transport error maps to
//! UNAVAILABLE). Caller errors (INVALID_ARGUMENT, NOT_FOUND, …) are answers of a healthy
//! server and count as successes. A probe also fails when it is slow and `slow_call_rate` is
//! set (slowness is then a trip condition).
//!
//! Time-driven transitions (OPEN → HALF_OPEN, probe expiry) need no timer task: they are
//! applied, at the instant they were due, whenever the breaker is next consulted (a call,
//! [`Breaker::state_name`], [`Breaker::snapshot`]); the log line and the state gauge follow
//! then. Time is read only through `tokio::time`, so tests run on a paused clock.
//!
//! # Concurrency
//!
//! The breaker is shared by every clone of the service. Admission while CLOSED is one atomic
//! load of a state word (state and transition epoch packed together), and refusal while OPEN
//! is that load plus one of the open deadline: no lock. Outcomes are recorded in atomic
//! counters (consecutive failures) and atomic window buckets. A mutex guards the transitions
//! and the HALF_OPEN probe bookkeeping only; it is held for a few instructions, never across
//! the inner call. A call admitted before a transition carries the old epoch, and its outcome
//! is ignored: a slow call sent while CLOSED cannot fail (or close) a HALF_OPEN breaker.
//!
//! Admission is decided in `poll_ready`: a refused call does not wait for the inner service
//! to become ready (a reconnecting channel to a dead downstream may never be).
//!
//! Layout: `window.rs` the rolling window (atomic buckets), `state.rs` the state machine,
//! `metrics.rs` the Prometheus families, `service.rs` the tower service and its future.

mod metrics;
mod service;
mod state;
mod window;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tower::Layer;

use crate::setting::ConfigError;

pub use metrics::BreakerMetrics;
pub use service::{BreakerService, ResponseFuture};

/// `breaker:` in a profile. A breaker trips on `consecutive_failures`, or on
/// `failure_rate` / `slow_call_rate` over a rolling window of `window_ms` (in `buckets`
/// buckets) once it saw `min_calls`; any of the three that is set can trip it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Trip after this many failures in a row (None: not used).
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: Option<u32>,
    /// Trip when this share (0..=1] of calls in the window failed (None: not used).
    #[serde(default)]
    pub failure_rate: Option<f64>,
    /// Trip when this share (0..=1] of calls in the window were slower than `slow_call_ms`.
    #[serde(default)]
    pub slow_call_rate: Option<f64>,
    /// A call slower than this counts as slow.
    #[serde(default = "default_slow_call_ms")]
    pub slow_call_ms: u64,
    /// Length of the rolling window.
    #[serde(default = "default_window_ms")]
    pub window_ms: u64,
    /// Buckets the window is divided into.
    #[serde(default = "default_buckets")]
    pub buckets: u32,
    /// Calls the window must hold before a rate can trip the breaker.
    #[serde(default = "default_min_calls")]
    pub min_calls: u32,
    /// How long the breaker stays OPEN before letting probes through.
    #[serde(default = "default_open_ms")]
    pub open_ms: u64,
    /// Each re-open after a failed probe multiplies the open duration, up to `max_ms`.
    #[serde(default)]
    pub open_backoff: Option<OpenBackoff>,
    /// Probes let through in HALF_OPEN; all must succeed to close.
    #[serde(default = "default_half_open_probes")]
    pub half_open_probes: u32,
    /// A probe permit not answered within this expires (counted as a failure), so the
    /// breaker never sticks in HALF_OPEN.
    #[serde(default = "default_probe_timeout_ms")]
    pub probe_timeout_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenBackoff {
    pub multiplier: f64,
    pub max_ms: u64,
}

fn default_consecutive_failures() -> Option<u32> {
    Some(5)
}
fn default_slow_call_ms() -> u64 {
    1000
}
fn default_window_ms() -> u64 {
    10_000
}
fn default_buckets() -> u32 {
    10
}
fn default_min_calls() -> u32 {
    20
}
fn default_open_ms() -> u64 {
    30_000
}
fn default_half_open_probes() -> u32 {
    3
}
fn default_probe_timeout_ms() -> u64 {
    5_000
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: default_consecutive_failures(),
            failure_rate: None,
            slow_call_rate: None,
            slow_call_ms: default_slow_call_ms(),
            window_ms: default_window_ms(),
            buckets: default_buckets(),
            min_calls: default_min_calls(),
            open_ms: default_open_ms(),
            open_backoff: None,
            half_open_probes: default_half_open_probes(),
            probe_timeout_ms: default_probe_timeout_ms(),
        }
    }
}

impl BreakerConfig {
    /// Multiplies the open time (and the cap of its backoff, kept at least the open time)
    /// by `factor`, rounding to whole milliseconds, at least 1 ms.
    pub fn scale_time(&mut self, factor: f64) {
        let scale = |ms: u64| ((ms as f64 * factor).round() as u64).max(1);
        self.open_ms = scale(self.open_ms);
        if let Some(backoff) = &mut self.open_backoff {
            backoff.max_ms = scale(backoff.max_ms).max(self.open_ms);
        }
    }

    /// Checks every value; the error names the key under `key` (e.g. `client.breaker`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        fn at_least(key: &str, field: &str, min: u64, value: u64) -> Result<(), ConfigError> {
            if value < min {
                return Err(ConfigError::new(
                    format!("{key}.{field}"),
                    format!("must be at least {min}, got {value}"),
                ));
            }
            Ok(())
        }
        fn rate(key: &str, field: &str, value: Option<f64>) -> Result<(), ConfigError> {
            match value {
                // `!(0 < r <= 1)` also rejects NaN.
                Some(r) if !(r > 0.0 && r <= 1.0) => Err(ConfigError::new(
                    format!("{key}.{field}"),
                    format!("must be a share in (0, 1], got {r}"),
                )),
                _ => Ok(()),
            }
        }

        if let Some(n) = self.consecutive_failures {
            at_least(key, "consecutive_failures", 1, n.into())?;
        }
        rate(key, "failure_rate", self.failure_rate)?;
        rate(key, "slow_call_rate", self.slow_call_rate)?;
        if self.consecutive_failures.is_none()
            && self.failure_rate.is_none()
            && self.slow_call_rate.is_none()
        {
            return Err(ConfigError::new(
                key,
                "no trip condition: set at least one of consecutive_failures, failure_rate, \
                 slow_call_rate (all are null)",
            ));
        }
        at_least(key, "slow_call_ms", 1, self.slow_call_ms)?;
        at_least(key, "buckets", 1, self.buckets.into())?;
        if self.window_ms < u64::from(self.buckets) {
            return Err(ConfigError::new(
                format!("{key}.window_ms"),
                format!(
                    "must be at least buckets ({}) so each bucket spans at least 1 ms, got {}",
                    self.buckets, self.window_ms
                ),
            ));
        }
        at_least(key, "min_calls", 1, self.min_calls.into())?;
        at_least(key, "open_ms", 1, self.open_ms)?;
        at_least(key, "half_open_probes", 1, self.half_open_probes.into())?;
        at_least(key, "probe_timeout_ms", 1, self.probe_timeout_ms)?;
        if let Some(b) = &self.open_backoff {
            if !(b.multiplier.is_finite() && b.multiplier >= 1.0) {
                return Err(ConfigError::new(
                    format!("{key}.open_backoff.multiplier"),
                    format!("must be a finite number >= 1, got {}", b.multiplier),
                ));
            }
            if b.max_ms < self.open_ms {
                return Err(ConfigError::new(
                    format!("{key}.open_backoff.max_ms"),
                    format!(
                        "must be at least open_ms ({}), got {}",
                        self.open_ms, b.max_ms
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// The breaker refused the call without sending it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker for {hop} is open")]
pub struct CircuitOpen {
    pub hop: String,
}

/// One downstream's circuit breaker: a cheap shared handle (`Arc`) to its state. Every
/// service built from [`Breaker::layer`] (and every clone of those) shares it.
#[derive(Clone)]
pub struct Breaker {
    shared: Arc<state::Shared>,
}

impl Breaker {
    /// A CLOSED breaker for calls to `hop`. `config` should have passed
    /// [`BreakerConfig::validate`]; out-of-range values are clamped to the nearest valid one.
    pub fn new(hop: &str, config: &BreakerConfig, metrics: &BreakerMetrics) -> Breaker {
        Breaker {
            shared: Arc::new(state::Shared::new(hop, config, metrics.handles(hop))),
        }
    }

    /// The layer that puts this breaker in front of a service.
    pub fn layer(&self) -> BreakerLayer {
        BreakerLayer {
            breaker: self.clone(),
        }
    }

    /// The downstream this breaker guards.
    pub fn hop(&self) -> &str {
        self.shared.hop()
    }

    /// `"closed"`, `"open"` or `"half_open"` (time-driven transitions applied first).
    pub fn state_name(&self) -> &'static str {
        self.shared.state_name()
    }

    /// The breaker's state for the `/state` page:
    ///
    /// ```json
    /// { "hop": "payments", "state": "open", "since_ms": 1200,
    ///   "calls_in_window": 20, "failures_in_window": 12, "slow_in_window": 0,
    ///   "consecutive_failures": 3, "trips": 1, "reopens": 0, "reopen_count": 0,
    ///   "probes_in_flight": 0, "probes_succeeded": 0,
    ///   "open_ms": 30000, "open_remaining_ms": 28800 }
    /// ```
    ///
    /// `since_ms`: time spent in the current state. `trips`: CLOSED → OPEN transitions so far;
    /// `reopens`: HALF_OPEN → OPEN ones; `reopen_count`: re-opens in a row (the backoff
    /// exponent). `open_ms`: the current open duration — while OPEN the one in force, else the
    /// one the next opening would get. `open_remaining_ms` is `null` unless OPEN.
    pub fn snapshot(&self) -> serde_json::Value {
        self.shared.snapshot()
    }
}

impl std::fmt::Debug for Breaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Breaker")
            .field("hop", &self.shared.hop())
            .field("state", &self.shared.state_name())
            .finish()
    }
}

/// Puts a [`Breaker`] in front of a service; see the [module docs](self).
#[derive(Clone, Debug)]
pub struct BreakerLayer {
    breaker: Breaker,
}

impl<S> Layer<S> for BreakerLayer {
    type Service = BreakerService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BreakerService::new(inner, self.breaker.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(config: BreakerConfig) -> ConfigError {
        config
            .validate("resilience.hops.payments.breaker")
            .expect_err("should be invalid")
    }

    fn assert_names(e: &ConfigError, key: &str, shows: &str) {
        assert_eq!(
            e.key,
            format!("resilience.hops.payments.breaker.{key}"),
            "{e}"
        );
        assert!(e.message.contains(shows), "{e} should show {shows}");
    }

    #[test]
    fn defaults_are_valid() {
        BreakerConfig::default().validate("b").unwrap();
        let all = BreakerConfig {
            failure_rate: Some(1.0),
            slow_call_rate: Some(0.5),
            open_backoff: Some(OpenBackoff {
                multiplier: 1.0,
                max_ms: 30_000,
            }),
            window_ms: 10,
            buckets: 10,
            ..Default::default()
        };
        all.validate("b").unwrap();
    }

    #[test]
    fn rates_must_be_in_zero_one() {
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            let e = err(BreakerConfig {
                failure_rate: Some(bad),
                ..Default::default()
            });
            assert_names(&e, "failure_rate", &bad.to_string());
            let e = err(BreakerConfig {
                slow_call_rate: Some(bad),
                ..Default::default()
            });
            assert_names(&e, "slow_call_rate", &bad.to_string());
        }
    }

    #[test]
    fn a_trip_condition_is_required() {
        let e = err(BreakerConfig {
            consecutive_failures: None,
            ..Default::default()
        });
        assert_eq!(e.key, "resilience.hops.payments.breaker");
        assert!(e.message.contains("consecutive_failures"), "{e}");
        let e = err(BreakerConfig {
            consecutive_failures: Some(0),
            ..Default::default()
        });
        assert_names(&e, "consecutive_failures", "got 0");
    }

    #[test]
    fn window_and_buckets() {
        let e = err(BreakerConfig {
            buckets: 0,
            ..Default::default()
        });
        assert_names(&e, "buckets", "got 0");
        let e = err(BreakerConfig {
            window_ms: 5,
            buckets: 10,
            ..Default::default()
        });
        assert_names(&e, "window_ms", "got 5");
        assert!(e.message.contains("(10)"), "{e}");
        let e = err(BreakerConfig {
            slow_call_ms: 0,
            ..Default::default()
        });
        assert_names(&e, "slow_call_ms", "got 0");
    }

    #[test]
    fn counts_and_durations_must_be_positive() {
        let e = err(BreakerConfig {
            min_calls: 0,
            ..Default::default()
        });
        assert_names(&e, "min_calls", "got 0");
        let e = err(BreakerConfig {
            half_open_probes: 0,
            ..Default::default()
        });
        assert_names(&e, "half_open_probes", "got 0");
        let e = err(BreakerConfig {
            open_ms: 0,
            ..Default::default()
        });
        assert_names(&e, "open_ms", "got 0");
        let e = err(BreakerConfig {
            probe_timeout_ms: 0,
            ..Default::default()
        });
        assert_names(&e, "probe_timeout_ms", "got 0");
    }

    #[test]
    fn open_backoff_is_checked() {
        for bad in [0.5, f64::INFINITY, f64::NAN] {
            let e = err(BreakerConfig {
                open_backoff: Some(OpenBackoff {
                    multiplier: bad,
                    max_ms: 60_000,
                }),
                ..Default::default()
            });
            assert_names(&e, "open_backoff.multiplier", &bad.to_string());
        }
        let e = err(BreakerConfig {
            open_backoff: Some(OpenBackoff {
                multiplier: 2.0,
                max_ms: 1_000,
            }),
            ..Default::default()
        });
        assert_names(&e, "open_backoff.max_ms", "got 1000");
        assert!(e.message.contains("30000"), "{e}");
    }

    #[test]
    fn parses_from_yaml_and_rejects_unknown_keys() {
        let c: BreakerConfig = serde_saphyr::from_str(
            "{ consecutive_failures: null, failure_rate: 0.5, open_backoff: { multiplier: 2, max_ms: 120000 } }",
        )
        .unwrap();
        assert_eq!(c.consecutive_failures, None);
        assert_eq!(c.failure_rate, Some(0.5));
        assert_eq!(c.open_ms, 30_000);
        c.validate("b").unwrap();
        assert!(serde_saphyr::from_str::<BreakerConfig>("{ open_for_ms: 1 }").is_err());
    }
}

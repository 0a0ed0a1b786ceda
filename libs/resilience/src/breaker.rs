//! Circuit breaker, one per downstream. (Skeleton: config and error; the state machine and
//! layer are being written.)

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `breaker:` in a profile. A breaker trips on `consecutive_failures`, or on
/// `failure_rate` / `slow_call_rate` over a rolling window of `window_ms` (in `buckets`
/// buckets) once it saw `min_calls`; any of the three that is set can trip it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    /// Checks every value; the error names the key under `key` (e.g. `client.breaker`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let _ = key;
        Ok(())
    }
}

/// The breaker refused the call without sending it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker for {hop} is open")]
pub struct CircuitOpen {
    pub hop: String,
}

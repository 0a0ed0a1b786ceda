//! Per-try timeouts and end-to-end deadline propagation. (Skeleton.)

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `timeout:` in a client policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    /// Each attempt gets at most this long.
    pub per_try_ms: u64,
}

impl TimeoutConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let _ = key;
        Ok(())
    }
}

/// `deadline:` in a client policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineConfig {
    /// Send what is left of the incoming deadline on outgoing calls.
    #[serde(default)]
    pub propagate: bool,
    /// Deadline for calls made without an incoming one.
    #[serde(default)]
    pub default_ms: Option<u64>,
}

impl DeadlineConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let _ = key;
        Ok(())
    }
}

/// `deadline:` in a server policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerDeadlineConfig {
    /// Refuse work whose deadline has already passed (DEADLINE_EXCEEDED) before doing it.
    #[serde(default)]
    pub enforce: bool,
}

/// The deadline passed before the call could be made (or completed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("deadline exceeded: {0}")]
pub struct DeadlineExceeded(pub String);

/// The absolute deadline of an outgoing call, as a request extension. The client deadline
/// layer (outermost) inserts it; the retry policy and the per-attempt timeout read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Deadline(pub tokio::time::Instant);

impl Deadline {
    /// Time left, zero once passed.
    pub fn remaining(&self) -> std::time::Duration {
        self.0.saturating_duration_since(tokio::time::Instant::now())
    }
}

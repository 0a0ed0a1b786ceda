//! Retries with backoff and jitter, server pushback and a retry budget. (Skeleton.)

use serde::{Deserialize, Serialize};

use crate::config::{CodeName, ConfigError};

/// `retry:` in a client policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1: no retries).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff: BackoffConfig,
    /// Codes that are retried. Default: UNAVAILABLE only.
    #[serde(default = "default_retry_on")]
    pub retry_on: Vec<CodeName>,
    /// Wait what the server asks in `grpc-retry-pushback-ms` (and never retry when it says no).
    #[serde(default = "default_true")]
    pub honor_pushback: bool,
    /// Retry budget shared by the hop's retries and hedges.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    #[serde(default)]
    pub kind: BackoffKind,
    #[serde(default = "default_base_ms")]
    pub base_ms: u64,
    #[serde(default = "default_max_ms")]
    pub max_ms: u64,
    #[serde(default)]
    pub jitter: Jitter,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    #[default]
    None,
    Fixed,
    Exponential,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    #[default]
    None,
    Full,
    Decorrelated,
}

/// Retries may add at most `ratio` of recent requests, plus `min_per_second`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    pub ratio: f64,
    #[serde(default = "default_min_per_second")]
    pub min_per_second: u32,
    #[serde(default = "default_window_s")]
    pub window_s: u64,
}

fn default_max_attempts() -> u32 {
    1
}
fn default_retry_on() -> Vec<CodeName> {
    vec![CodeName(tonic::Code::Unavailable)]
}
fn default_true() -> bool {
    true
}
fn default_base_ms() -> u64 {
    100
}
fn default_max_ms() -> u64 {
    2000
}
fn default_min_per_second() -> u32 {
    10
}
fn default_window_s() -> u64 {
    10
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            kind: BackoffKind::None,
            base_ms: default_base_ms(),
            max_ms: default_max_ms(),
            jitter: Jitter::None,
        }
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: default_max_attempts(),
            backoff: BackoffConfig::default(),
            retry_on: default_retry_on(),
            honor_pushback: true,
            budget: None,
        }
    }
}

impl RetryConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let _ = key;
        Ok(())
    }
}

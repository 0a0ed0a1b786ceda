//! Adaptive concurrency limit (gradient controller). (Skeleton.)

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `adaptive:` in a profile's server policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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

impl AdaptiveConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let _ = key;
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

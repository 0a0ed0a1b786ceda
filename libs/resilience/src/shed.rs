//! Load shedding at the gateway: a fixed cap on requests in flight. (Skeleton.)

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `shed:` in a profile's server policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShedConfig {
    /// Requests in flight at most; more are refused with RESOURCE_EXHAUSTED.
    pub max_in_flight: u32,
    /// Retry pushback sent with a refusal (`grpc-retry-pushback-ms`), if any.
    #[serde(default)]
    pub pushback_ms: Option<u64>,
}

impl ShedConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let _ = key;
        Ok(())
    }
}

/// The request was refused because too many are in flight.
#[derive(Debug, Clone, thiserror::Error)]
#[error("overloaded: {max_in_flight} requests in flight, request shed")]
pub struct Shed {
    pub max_in_flight: u32,
    pub pushback: Option<Duration>,
}

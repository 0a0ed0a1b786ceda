//! Bulkhead: bounded concurrency per downstream with a bounded wait. (Skeleton: config and
//! error; the layer is being written.)

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `bulkhead:` in a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls in flight to this downstream at most.
    pub max_concurrent: u32,
    /// How long a call may wait for a free place before RESOURCE_EXHAUSTED (0: no wait).
    #[serde(default)]
    pub max_wait_ms: u64,
}

impl BulkheadConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let _ = key;
        Ok(())
    }
}

/// No place freed up within the bounded wait.
#[derive(Debug, Clone, thiserror::Error)]
#[error("bulkhead for {hop} is full ({max_concurrent} calls in flight; waited {waited_ms} ms)")]
pub struct BulkheadFull {
    pub hop: String,
    pub max_concurrent: u32,
    pub waited_ms: u64,
}

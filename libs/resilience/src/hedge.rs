//! Budgeted hedging of idempotent reads. (Skeleton.)

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `hedge:` in a client policy. Applies to the methods named in `methods` (reads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HedgeConfig {
    /// Send a second attempt when the first has not answered after this long.
    pub delay_ms: u64,
    /// Extra attempts at most.
    #[serde(default = "default_max_extra")]
    pub max_extra: u32,
    /// Full gRPC method paths that are safe to hedge (idempotent reads).
    #[serde(default)]
    pub methods: Vec<String>,
}

fn default_max_extra() -> u32 {
    1
}

impl HedgeConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        let _ = key;
        Ok(())
    }
}

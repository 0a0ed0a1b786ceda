//! Idempotency keys: the client side forwards the incoming `idempotency-key` header (or the
//! one the caller put in the request) on every attempt, so retries of one logical request
//! carry one key; the server side is the claim / replay / in-flight store of lab-store,
//! used by orders and payments when the profile enables it.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `idempotency:` in a profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    #[serde(default)]
    pub enabled: bool,
    /// How long a completed answer is replayable.
    #[serde(default = "default_ttl_s")]
    pub ttl_s: u64,
}

fn default_ttl_s() -> u64 {
    24 * 3600
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            ttl_s: default_ttl_s(),
        }
    }
}

impl IdempotencyConfig {
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.enabled && self.ttl_s == 0 {
            return Err(ConfigError::new(format!("{key}.ttl_s"), "must be at least 1 when idempotency is enabled"));
        }
        Ok(())
    }
}

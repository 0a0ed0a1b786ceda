//! Retries with backoff and jitter, server pushback, a retry budget and deadline awareness.
//!
//! # Why retries need limits
//!
//! A retry turns one failed call into several, and it does so exactly when the callee is in
//! trouble. With 3 attempts at every hop of a 3-hop chain, one logical request can become
//! 3 × 3 × 3 = 27 calls at the deepest service: a *retry storm*, the self-inflicted load that
//! profile b (naive retries) is there to measure. Each mechanism here removes one way
//! retries hurt:
//!
//! - **Retryable codes only** (`retry_on`, default UNAVAILABLE). INVALID_ARGUMENT will fail
//!   again; an open circuit ([`crate::breaker::CircuitOpen`]) is a deliberate fail-fast and is
//!   never retried; our own load refusals (bulkhead full, shed: RESOURCE_EXHAUSTED) only when
//!   RESOURCE_EXHAUSTED is listed. Transport errors count as UNAVAILABLE
//!   ([`crate::status::to_status`]).
//! - **Backoff** ([`backoff`]) gives a struggling server time, and **jitter** spreads the
//!   retries of many clients that failed at the same instant: without it they come back in
//!   synchronised waves that recreate the spike that made them fail (Brooker, "Exponential
//!   Backoff and Jitter", AWS Architecture Blog, 2015).
//! - **Server pushback** (gRFC A6, `grpc-retry-pushback-ms`): the server knows best when to
//!   come back; its value replaces the backoff, and a negative or malformed one means "do
//!   not retry".
//! - **A retry budget** ([`budget`]): attempts-per-call caps amplification per request, not
//!   per system; under a 100 % failure rate 3 attempts still triple the load. A budget caps
//!   retries at a *ratio of recent first attempts* (plus a small floor), so the extra load is
//!   bounded whatever the failure rate. This is the argument of the metastability papers
//!   (Bronson et al., "Metastable Failures in Distributed Systems", HotOS 2021; Huang et al.,
//!   OSDI 2022): a trigger such as a short brownout pushes the system into a state where
//!   retries alone keep it overloaded after the trigger is gone — a feedback loop whose gain
//!   is the retry amplification. Keeping that gain bounded (here at `1 + ratio`) is what lets
//!   the system fall back to its good state. The budget of a hop is shared by its retries and
//!   its hedges ([`crate::hedge`]).
//! - **Deadline awareness**: an attempt that cannot finish before the call's
//!   [`Deadline`](crate::deadline::Deadline) is wasted work on a server that may be
//!   overloaded; no retry is made when what is left cannot hold the delay plus
//!   `min_attempt_ms`.
//!
//! # Layout
//!
//! - this module: the `retry:` config and its validation;
//! - [`backoff`]: the delay curves and jitter (seedable RNG);
//! - [`budget`]: [`RetryBudget`], tower's `TpsBudget` shared per hop;
//! - [`policy`]: [`RetryPolicy`], a `tower::retry::Policy` (classification, pushback,
//!   `grpc-previous-rpc-attempts`, budget, deadline);
//! - [`layer`]: [`RetryLayer`] / [`Retry`], tower's `Retry` driven by that policy;
//! - [`metrics`]: [`RetryMetrics`] and the two counting layers that make retry amplification
//!   per hop (`attempts / requests`) exact.
//!
//! Requests must be replayable: the layer takes `http::Request<`[`ReplayBody`]`>`, made by
//! [`crate::body::BufferLayer`] above it.
//!
//! [`ReplayBody`]: crate::body::ReplayBody

use serde::{Deserialize, Serialize};

use crate::setting::{CodeName, ConfigError};

pub mod backoff;
pub mod budget;
pub mod layer;
pub mod metrics;
pub mod policy;

pub use backoff::Backoff;
pub use budget::RetryBudget;
pub use layer::{Retry, RetryLayer};
pub use metrics::{Count, CountLayer, HopLabels, RetryMetrics};
pub use policy::RetryPolicy;

/// The header that tells the server how many attempts of this call came before (gRFC A6).
pub const PREVIOUS_RPC_ATTEMPTS: &str = "grpc-previous-rpc-attempts";

/// `max_attempts` may not exceed this (gRPC clamps at 5; we allow the naive profiles more).
pub const MAX_ATTEMPTS: u32 = 10;

/// `retry:` in a client policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
    /// The least time an attempt is given: no retry is made when the call's deadline leaves
    /// less than the delay plus this.
    #[serde(default = "default_min_attempt_ms")]
    pub min_attempt_ms: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BackoffKind {
    #[default]
    None,
    Fixed,
    Exponential,
}

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    #[default]
    None,
    Full,
    Decorrelated,
}

/// Retries may add at most `ratio` of recent requests, plus `min_per_second`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
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
fn default_min_attempt_ms() -> u64 {
    1
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
            min_attempt_ms: default_min_attempt_ms(),
        }
    }
}

/// `min_per_second` above this is surely a typo (and would overflow tower's budget).
const MAX_MIN_PER_SECOND: u32 = 1_000_000;

impl RetryConfig {
    /// Checks every value; the error names the key under `key` (`resilience.client.retry`)
    /// and shows the value.
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(1..=MAX_ATTEMPTS).contains(&self.max_attempts) {
            return Err(ConfigError::new(
                format!("{key}.max_attempts"),
                format!(
                    "must be between 1 and {MAX_ATTEMPTS} (attempts in all, the first included), got {}",
                    self.max_attempts
                ),
            ));
        }
        self.backoff.validate(&format!("{key}.backoff"))?;
        if let Some(i) = self.retry_on.iter().position(|c| c.0 == tonic::Code::Ok) {
            return Err(ConfigError::new(
                format!("{key}.retry_on[{i}]"),
                "OK is a success and is never retried; remove it",
            ));
        }
        if self.max_attempts > 1 && self.retry_on.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.retry_on"),
                format!(
                    "is empty, so max_attempts {} would never retry; list the codes to retry (e.g. [UNAVAILABLE]) or set max_attempts: 1",
                    self.max_attempts
                ),
            ));
        }
        if let Some(budget) = &self.budget {
            budget.validate(&format!("{key}.budget"))?;
        }
        Ok(())
    }
}

impl BackoffConfig {
    /// Checks every value; the error names the key under `key` (`….retry.backoff`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if self.kind != BackoffKind::None && self.base_ms < 1 {
            return Err(ConfigError::new(
                format!("{key}.base_ms"),
                format!(
                    "must be at least 1 with kind {:?}, got {}",
                    self.kind, self.base_ms
                ),
            ));
        }
        if self.max_ms < self.base_ms {
            return Err(ConfigError::new(
                format!("{key}.max_ms"),
                format!(
                    "must be at least base_ms ({}), got {}",
                    self.base_ms, self.max_ms
                ),
            ));
        }
        Ok(())
    }
}

impl BudgetConfig {
    /// Checks every value; the error names the key under `key` (`….retry.budget`).
    pub fn validate(&self, key: &str) -> Result<(), ConfigError> {
        if !(self.ratio.is_finite() && (0.0..=1.0).contains(&self.ratio)) {
            return Err(ConfigError::new(
                format!("{key}.ratio"),
                format!(
                    "must be between 0 and 1 (retries per first attempt), got {}",
                    self.ratio
                ),
            ));
        }
        if !(1..=60).contains(&self.window_s) {
            return Err(ConfigError::new(
                format!("{key}.window_s"),
                format!("must be between 1 and 60 seconds, got {}", self.window_s),
            ));
        }
        if self.min_per_second > MAX_MIN_PER_SECOND {
            return Err(ConfigError::new(
                format!("{key}.min_per_second"),
                format!(
                    "must be at most {MAX_MIN_PER_SECOND}, got {}",
                    self.min_per_second
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn retrying() -> RetryConfig {
        RetryConfig {
            max_attempts: 3,
            backoff: BackoffConfig {
                kind: BackoffKind::Exponential,
                jitter: Jitter::Full,
                ..BackoffConfig::default()
            },
            budget: Some(BudgetConfig {
                ratio: 0.2,
                min_per_second: 10,
                window_s: 10,
            }),
            ..RetryConfig::default()
        }
    }

    fn error_of(config: &RetryConfig) -> ConfigError {
        config.validate("resilience.client.retry").unwrap_err()
    }

    #[test]
    fn defaults_and_a_full_config_are_valid() {
        RetryConfig::default().validate("k").unwrap();
        retrying().validate("k").unwrap();
        let off = RetryConfig {
            retry_on: vec![],
            ..RetryConfig::default()
        };
        off.validate("k")
            .expect("an empty retry_on is fine with one attempt");
    }

    #[test]
    fn max_attempts_out_of_range_is_named_with_its_value() {
        for bad in [0, 11] {
            let e = error_of(&RetryConfig {
                max_attempts: bad,
                ..retrying()
            });
            assert_eq!(e.key, "resilience.client.retry.max_attempts");
            assert!(e.message.contains(&format!("got {bad}")), "{e}");
        }
        RetryConfig {
            max_attempts: 10,
            ..retrying()
        }
        .validate("k")
        .unwrap();
    }

    #[test]
    fn backoff_values_are_checked() {
        let mut c = retrying();
        c.backoff.base_ms = 0;
        let e = error_of(&c);
        assert_eq!(e.key, "resilience.client.retry.backoff.base_ms");
        assert!(e.message.contains("got 0"), "{e}");

        c.backoff.kind = BackoffKind::None;
        c.validate("k").expect("base_ms 0 is fine without backoff");

        let mut c = retrying();
        c.backoff.base_ms = 500;
        c.backoff.max_ms = 100;
        let e = error_of(&c);
        assert_eq!(e.key, "resilience.client.retry.backoff.max_ms");
        assert!(
            e.message.contains("500") && e.message.contains("got 100"),
            "{e}"
        );
    }

    #[test]
    fn budget_values_are_checked() {
        for bad in [-0.1, 1.5, f64::NAN] {
            let mut c = retrying();
            c.budget.as_mut().unwrap().ratio = bad;
            let e = error_of(&c);
            assert_eq!(e.key, "resilience.client.retry.budget.ratio");
            assert!(e.message.contains(&format!("got {bad}")), "{e}");
        }
        for ok in [0.0, 1.0] {
            let mut c = retrying();
            c.budget.as_mut().unwrap().ratio = ok;
            c.validate("k").unwrap();
        }
        for bad in [0, 61] {
            let mut c = retrying();
            c.budget.as_mut().unwrap().window_s = bad;
            let e = error_of(&c);
            assert_eq!(e.key, "resilience.client.retry.budget.window_s");
            assert!(e.message.contains(&format!("got {bad}")), "{e}");
        }
        let mut c = retrying();
        c.budget.as_mut().unwrap().min_per_second = u32::MAX;
        assert_eq!(
            error_of(&c).key,
            "resilience.client.retry.budget.min_per_second"
        );
    }

    #[test]
    fn retry_on_must_name_codes_and_never_ok() {
        let e = error_of(&RetryConfig {
            retry_on: vec![],
            ..retrying()
        });
        assert_eq!(e.key, "resilience.client.retry.retry_on");
        assert!(e.message.contains("max_attempts 3"), "{e}");

        let e = error_of(&RetryConfig {
            retry_on: vec![
                CodeName(tonic::Code::Unavailable),
                CodeName(tonic::Code::Ok),
            ],
            ..retrying()
        });
        assert_eq!(e.key, "resilience.client.retry.retry_on[1]");
        assert!(e.message.contains("OK"), "{e}");
    }

    #[test]
    fn yaml_with_new_field_defaults_and_unknown_keys_rejected() {
        let c: RetryConfig = serde_saphyr::from_str(
            "max_attempts: 3\nbackoff: { kind: exponential, base_ms: 50, jitter: decorrelated }\nretry_on: [UNAVAILABLE, RESOURCE_EXHAUSTED]\nbudget: { ratio: 0.1 }\n",
        )
        .unwrap();
        assert_eq!(c.min_attempt_ms, 1);
        assert_eq!(c.backoff.max_ms, 2000);
        assert_eq!(c.budget.as_ref().unwrap().window_s, 10);
        assert_eq!(c.backoff.jitter, Jitter::Decorrelated);
        c.validate("k").unwrap();
        assert!(serde_saphyr::from_str::<RetryConfig>("max_attempt: 3\n").is_err());
    }
}

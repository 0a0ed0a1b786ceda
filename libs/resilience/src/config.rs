//! The profile schema: the `resilience:` key of a Helm values file in `helm/profiles/`.
//!
//! ```yaml
//! resilience:
//!   description: exponential backoff with full jitter, per-try timeouts, deadlines
//!   client:                 # every hop (gateway->orders, orders->inventory|payments|notifications)
//!     retry: { max_attempts: 3, backoff: { kind: exponential, base_ms: 100, jitter: full } }
//!     timeout: { per_try_ms: 500 }
//!     deadline: { propagate: true }
//!   hops:                   # per downstream: a block given here replaces the client one;
//!     payments:             # `null` switches it off for that hop
//!       bulkhead: { max_concurrent: 20 }
//!   server:                 # every service
//!     deadline: { enforce: true }
//!   services:               # per service, same rule as hops
//!     gateway:
//!       shed: { max_in_flight: 200 }
//!   idempotency: { enabled: true, ttl_s: 86400 }
//!   outbox: true
//! ```
//!
//! Every struct denies unknown keys; [`Profile::validate`] checks values and names the key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize};

use crate::adaptive::AdaptiveConfig;
use crate::breaker::BreakerConfig;
use crate::bulkhead::BulkheadConfig;
use crate::deadline::{DeadlineConfig, ServerDeadlineConfig, TimeoutConfig};
use crate::hedge::HedgeConfig;
use crate::idempotency::IdempotencyConfig;
use crate::retry::RetryConfig;
pub use crate::setting::{CodeName, ConfigError};
use crate::shed::ShedConfig;

/// A profile that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("profile {path} is not valid: {message}")]
    Parse { path: String, message: String },
    #[error("profile {path}: {error}")]
    Invalid { path: String, error: ConfigError },
}

/// What a client does on one hop.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientPolicy {
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub timeout: Option<TimeoutConfig>,
    #[serde(default)]
    pub deadline: DeadlineConfig,
    #[serde(default)]
    pub breaker: Option<BreakerConfig>,
    #[serde(default)]
    pub bulkhead: Option<BulkheadConfig>,
    #[serde(default)]
    pub hedge: Option<HedgeConfig>,
}

/// A hop's changes to [`ClientPolicy`]: a block that is given replaces the default's; a
/// block given as `null` switches it off.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientOverride {
    #[serde(default)]
    pub retry: Option<RetryConfig>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Option<TimeoutConfig>>,
    #[serde(default)]
    pub deadline: Option<DeadlineConfig>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub breaker: Option<Option<BreakerConfig>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub bulkhead: Option<Option<BulkheadConfig>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub hedge: Option<Option<HedgeConfig>>,
}

/// What a server does with incoming calls.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerPolicy {
    #[serde(default)]
    pub deadline: ServerDeadlineConfig,
    #[serde(default)]
    pub shed: Option<ShedConfig>,
    #[serde(default)]
    pub adaptive: Option<AdaptiveConfig>,
}

/// A service's changes to [`ServerPolicy`], by the same rule as [`ClientOverride`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ServerOverride {
    #[serde(default)]
    pub deadline: Option<ServerDeadlineConfig>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub shed: Option<Option<ShedConfig>>,
    #[serde(
        default,
        deserialize_with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub adaptive: Option<Option<AdaptiveConfig>>,
}

/// Absent: `None` (inherit); `null`: `Some(None)` (off); a value: `Some(Some(v))`.
fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The downstream hops a client stack can be built for.
pub const HOPS: [&str; 4] = ["orders", "inventory", "payments", "notifications"];
/// The services a server stack can be built for.
pub const SERVICES: [&str; 5] = [
    "gateway",
    "orders",
    "inventory",
    "payments",
    "notifications",
];

/// The `resilience:` key of a profile file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// One line on what the profile adds, for reports.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub client: ClientPolicy,
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "enum": HOPS }))]
    pub hops: BTreeMap<String, ClientOverride>,
    #[serde(default)]
    pub server: ServerPolicy,
    #[serde(default)]
    #[schemars(extend("propertyNames" = { "enum": SERVICES }))]
    pub services: BTreeMap<String, ServerOverride>,
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    /// Publish order events through the transactional outbox (else direct, best effort).
    #[serde(default)]
    pub outbox: bool,
}

/// A Helm values file: only `resilience:` is ours; other keys belong to the chart.
#[derive(Deserialize)]
struct ValuesFile {
    resilience: Option<Profile>,
}

impl Profile {
    /// Reads, parses and validates a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|error| ProfileError::Read {
            path: shown.clone(),
            error,
        })?;
        Self::parse(&text).map_err(|e| match e {
            ProfileError::Parse { message, .. } => ProfileError::Parse {
                path: shown,
                message,
            },
            ProfileError::Invalid { error, .. } => ProfileError::Invalid { path: shown, error },
            other => other,
        })
    }

    /// Parses and validates the text of a values file.
    pub fn parse(text: &str) -> Result<Profile, ProfileError> {
        let values: ValuesFile = serde_saphyr::from_str(text).map_err(|e| ProfileError::Parse {
            path: String::new(),
            message: e.to_string(),
        })?;
        let profile = values.resilience.ok_or_else(|| ProfileError::Parse {
            path: String::new(),
            message: "no `resilience:` key".into(),
        })?;
        profile.validate().map_err(|error| ProfileError::Invalid {
            path: String::new(),
            error,
        })?;
        Ok(profile)
    }

    /// The text of a values file holding this profile under `resilience:`, which
    /// [`Profile::parse`] reads back as the same profile.
    pub fn to_values_yaml(&self) -> Result<String, ProfileError> {
        #[derive(Serialize)]
        struct Values<'a> {
            resilience: &'a Profile,
        }
        serde_saphyr::to_string(&Values { resilience: self }).map_err(|e| ProfileError::Parse {
            path: String::new(),
            message: format!("cannot write the profile as YAML: {e}"),
        })
    }

    /// The same profile with its time constants multiplied by `factor` (> 0): every
    /// breaker's open time, so that a short run sees the whole open -> half-open -> closed
    /// cycle (see [`BreakerConfig::scale_time`]). Every other value is kept.
    pub fn scale_time(&self, factor: f64) -> Profile {
        let mut scaled = self.clone();
        if let Some(b) = &mut scaled.client.breaker {
            b.scale_time(factor);
        }
        for hop in scaled.hops.values_mut() {
            if let Some(Some(b)) = &mut hop.breaker {
                b.scale_time(factor);
            }
        }
        scaled
    }

    /// Checks every value; the error names the full key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate_client(&self.client, "resilience.client")?;
        for (hop, o) in &self.hops {
            if !HOPS.contains(&hop.as_str()) {
                return Err(ConfigError::new(
                    format!("resilience.hops.{hop}"),
                    format!("unknown hop; expected one of {}", HOPS.join(", ")),
                ));
            }
            validate_client(&self.client_for(hop), &format!("resilience.hops.{hop}"))?;
            let _ = o;
        }
        validate_server(&self.server, "resilience.server")?;
        for service in self.services.keys() {
            if !SERVICES.contains(&service.as_str()) {
                return Err(ConfigError::new(
                    format!("resilience.services.{service}"),
                    format!("unknown service; expected one of {}", SERVICES.join(", ")),
                ));
            }
            validate_server(
                &self.server_for(service),
                &format!("resilience.services.{service}"),
            )?;
        }
        self.idempotency.validate("resilience.idempotency")
    }

    /// The effective client policy for calls to `hop`.
    pub fn client_for(&self, hop: &str) -> ClientPolicy {
        let mut policy = self.client.clone();
        if let Some(o) = self.hops.get(hop) {
            if let Some(retry) = &o.retry {
                policy.retry = retry.clone();
            }
            if let Some(timeout) = &o.timeout {
                policy.timeout = timeout.clone();
            }
            if let Some(deadline) = &o.deadline {
                policy.deadline = deadline.clone();
            }
            if let Some(breaker) = &o.breaker {
                policy.breaker = breaker.clone();
            }
            if let Some(bulkhead) = &o.bulkhead {
                policy.bulkhead = bulkhead.clone();
            }
            if let Some(hedge) = &o.hedge {
                policy.hedge = hedge.clone();
            }
        }
        policy
    }

    /// The effective server policy of `service`.
    pub fn server_for(&self, service: &str) -> ServerPolicy {
        let mut policy = self.server.clone();
        if let Some(o) = self.services.get(service) {
            if let Some(deadline) = &o.deadline {
                policy.deadline = deadline.clone();
            }
            if let Some(shed) = &o.shed {
                policy.shed = shed.clone();
            }
            if let Some(adaptive) = &o.adaptive {
                policy.adaptive = adaptive.clone();
            }
        }
        policy
    }
}

fn validate_client(p: &ClientPolicy, key: &str) -> Result<(), ConfigError> {
    p.retry.validate(&format!("{key}.retry"))?;
    if let Some(t) = &p.timeout {
        t.validate(&format!("{key}.timeout"))?;
    }
    p.deadline.validate(&format!("{key}.deadline"))?;
    if let Some(b) = &p.breaker {
        b.validate(&format!("{key}.breaker"))?;
    }
    if let Some(b) = &p.bulkhead {
        b.validate(&format!("{key}.bulkhead"))?;
    }
    if let Some(h) = &p.hedge {
        h.validate(&format!("{key}.hedge"))?;
    }
    Ok(())
}

fn validate_server(p: &ServerPolicy, key: &str) -> Result<(), ConfigError> {
    p.deadline.validate(&format!("{key}.deadline"))?;
    if let Some(s) = &p.shed {
        s.validate(&format!("{key}.shed"))?;
    }
    if let Some(a) = &p.adaptive {
        a.validate(&format!("{key}.adaptive"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_and_service_overrides_replace_or_switch_off_blocks() {
        let p = Profile::parse(
            "replicas: 1\nresilience:\n  client:\n    retry: { max_attempts: 3 }\n    bulkhead: { max_concurrent: 5 }\n  hops:\n    payments:\n      bulkhead: { max_concurrent: 20 }\n    notifications:\n      bulkhead: null\n  services:\n    gateway:\n      shed: { max_in_flight: 200 }\n",
        )
        .unwrap();
        assert_eq!(
            p.client_for("payments").bulkhead.unwrap().max_concurrent,
            20
        );
        assert_eq!(
            p.client_for("inventory").bulkhead.unwrap().max_concurrent,
            5
        );
        assert!(
            p.client_for("notifications").bulkhead.is_none(),
            "null switches it off"
        );
        assert_eq!(
            p.client_for("notifications").retry.max_attempts,
            3,
            "other blocks inherit"
        );
        assert_eq!(p.server_for("gateway").shed.unwrap().max_in_flight, 200);
        assert!(p.server_for("payments").shed.is_none());
    }

    #[test]
    fn scale_time_scales_breaker_open_times_only_and_stays_valid() {
        let p = Profile::parse(
            "resilience:\n  client:\n    retry: { max_attempts: 3 }\n    breaker: { open_ms: 30000, open_backoff: { multiplier: 2.0, max_ms: 60000 } }\n  hops:\n    payments:\n      breaker: { open_ms: 1000 }\n    notifications:\n      breaker: null\n",
        )
        .unwrap();
        let scaled = p.scale_time(0.1);
        let client = scaled.client.breaker.as_ref().unwrap();
        assert_eq!(client.open_ms, 3000);
        assert_eq!(client.open_backoff.as_ref().unwrap().max_ms, 6000);
        assert_eq!(scaled.client_for("payments").breaker.unwrap().open_ms, 100);
        assert!(scaled.client_for("notifications").breaker.is_none());
        assert_eq!(scaled.client.retry, p.client.retry);
        // Never below 1 ms, and the backoff cap never below the open time.
        let tiny = p.scale_time(1e-9);
        let b = tiny.client.breaker.unwrap();
        assert_eq!((b.open_ms, b.open_backoff.unwrap().max_ms), (1, 1));
        scaled.validate().unwrap();
    }

    #[test]
    fn values_yaml_reads_back_as_the_same_profile() {
        for (name, _) in crate::profiles::BUILTIN {
            let p = crate::profiles::resolve(name)
                .unwrap()
                .profile
                .scale_time(0.25);
            let back = Profile::parse(&p.to_values_yaml().unwrap()).unwrap();
            assert_eq!(back, p, "{name}");
        }
    }

    #[test]
    fn unknown_keys_hops_and_codes_are_named() {
        let err = Profile::parse("resilience:\n  client:\n    retyr: {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("retyr"), "{err}");
        let err = Profile::parse("resilience:\n  hops:\n    shipping: {}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("resilience.hops.shipping"), "{err}");
        let err = Profile::parse("resilience:\n  client:\n    retry: { retry_on: [UNAVAIL] }\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("UNAVAIL") && err.contains("UNAVAILABLE"),
            "{err}"
        );
        let err = Profile::parse("other: 1\n").unwrap_err().to_string();
        assert!(err.contains("resilience"), "{err}");
    }
}

//! What an experiment runs: the fault scenarios of DESIGN.md, the plan (profiles,
//! scenarios, trials, phase lengths, load), where the services run, and the profiles with
//! their time constants scaled to the run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

/// A fault scenario of DESIGN.md and how the experiment produces it.
#[derive(Clone, Copy, Debug)]
pub struct ScenarioDef {
    pub name: &'static str,
    /// The FaultInjection applied at the fault offset (k8s/chaos/), if any.
    pub manifest: Option<&'static str>,
    /// Extra immediate attempts by the load generator itself (retry_storm).
    pub client_retries: u32,
    /// Arrival rate multiplier during the fault window (gateway_overload).
    pub overload: Option<f64>,
    /// A service SIGKILLed at the fault offset and restarted at its end.
    pub kill: Option<&'static str>,
}

macro_rules! manifest {
    ($file:literal) => {
        Some(include_str!(concat!("../../../k8s/chaos/", $file)))
    };
}

pub const SCENARIOS: [ScenarioDef; 9] = [
    ScenarioDef {
        name: "payment_errors",
        manifest: manifest!("payment-errors.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "payment_slow",
        manifest: manifest!("payment-slow.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "payment_outage",
        manifest: manifest!("payment-outage.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "payment_brownout",
        manifest: manifest!("payment-brownout.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "inventory_lock",
        manifest: manifest!("inventory-lock.yaml"),
        client_retries: 0,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "retry_storm",
        manifest: manifest!("retry-storm.yaml"),
        client_retries: 3,
        overload: None,
        kill: None,
    },
    ScenarioDef {
        name: "gateway_overload",
        manifest: None,
        client_retries: 0,
        overload: Some(10.0),
        kill: None,
    },
    ScenarioDef {
        name: "payments_crash",
        manifest: None,
        client_retries: 0,
        overload: None,
        kill: Some("payments"),
    },
    ScenarioDef {
        name: "orders_crash",
        manifest: None,
        client_retries: 0,
        overload: None,
        kill: Some("orders"),
    },
];

pub fn scenario(name: &str) -> Option<&'static ScenarioDef> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// What an experiment runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub profiles: Vec<String>,
    pub scenarios: Vec<String>,
    pub trials: u32,
    pub seed: u64,
    /// Offered load (logical requests per second) outside the fault window.
    pub rate: f64,
    pub warmup: Duration,
    pub pre_fault: Duration,
    pub fault: Duration,
    pub recovery: Duration,
    /// Client deadline of each logical request.
    pub deadline: Duration,
    /// Multiplies the profiles' time constants (breaker open time) so quick runs see the
    /// whole open -> half-open -> closed cycle inside their recovery phase.
    pub time_scale: f64,
}

impl Plan {
    /// `--quick`: profiles a, b, d, f, g x payment_errors, payment_outage, retry_storm, one trial.
    pub fn quick() -> Self {
        Self {
            profiles: [
                "a-baseline",
                "b-naive-retries",
                "d-breakers",
                "f-full",
                "g-adaptive",
            ]
            .map(String::from)
            .to_vec(),
            scenarios: ["payment_errors", "payment_outage", "retry_storm"]
                .map(String::from)
                .to_vec(),
            trials: 1,
            seed: 42,
            rate: 60.0,
            warmup: Duration::from_secs(2),
            pre_fault: Duration::from_secs(5),
            fault: Duration::from_secs(5),
            recovery: Duration::from_secs(10),
            deadline: Duration::from_secs(2),
            time_scale: 0.1,
        }
    }

    /// `--full`: every profile x every scenario, 3 trials.
    pub fn full() -> Self {
        Self {
            profiles: lab_resilience::profiles::BUILTIN
                .map(|(n, _)| n.to_string())
                .to_vec(),
            scenarios: SCENARIOS.map(|s| s.name.to_string()).to_vec(),
            trials: 3,
            pre_fault: Duration::from_secs(10),
            fault: Duration::from_secs(20),
            recovery: Duration::from_secs(30),
            time_scale: 0.25,
            ..Self::quick()
        }
    }

    /// Checks what a run needs: MTTR looks for 5 one-second windows after the fault, and
    /// the baseline for at least one before it.
    pub fn validate(&self) -> anyhow::Result<()> {
        if self.recovery < Duration::from_secs(5) {
            anyhow::bail!(
                "--recovery-s must be at least 5: recovery is the start of 5 healthy one-second windows, got {:?}",
                self.recovery
            );
        }
        if self.pre_fault < Duration::from_secs(1) {
            anyhow::bail!(
                "--pre-fault-s must be at least 1 (the baseline), got {:?}",
                self.pre_fault
            );
        }
        if self.profiles.is_empty() || self.scenarios.is_empty() {
            anyhow::bail!("nothing to run: --profiles and --scenarios need at least one name each");
        }
        Ok(())
    }

    /// Seconds one trial takes, roughly (for the progress estimate).
    pub fn trial_seconds(&self) -> f64 {
        (self.warmup + self.pre_fault + self.fault + self.recovery).as_secs_f64() + 4.0
    }
}

/// Where and how the services run.
#[derive(Clone, Debug, Default)]
pub struct Backend {
    pub database_url: Option<String>,
    pub redis_url: Option<String>,
    pub bin_dir: Option<PathBuf>,
}

impl Backend {
    pub fn describe(&self) -> String {
        format!(
            "local processes on 127.0.0.1, {}, idempotency keys {}",
            if self.database_url.is_some() {
                "Postgres"
            } else {
                "SQLite"
            },
            if self.redis_url.is_some() {
                "in Redis"
            } else {
                "in memory"
            }
        )
    }
}

/// The profile YAML a trial runs: the built-in (or file) profile with its time constants
/// multiplied by `scale`, so a breaker's open time fits the run's recovery phase.
pub fn scaled_profile_yaml(spec: &str, scale: f64) -> Result<(String, String)> {
    let named = lab_resilience::profiles::resolve(spec)?;
    let yaml = named.profile.scale_time(scale).to_values_yaml()?;
    Ok((named.name, yaml))
}

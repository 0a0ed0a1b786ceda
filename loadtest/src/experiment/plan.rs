//! What an experiment runs: the fault scenarios of DESIGN.md, the plan (profiles,
//! scenarios, trials, phase lengths, load), where the services run, and the profiles with
//! their time constants scaled to the run.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::payments::PaymentsModel;
use crate::report::LoadLevel;

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

/// A scenario as one trial runs it: a built-in one ([`ScenarioDef`]) or a trigger a sweep
/// builds.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    /// FaultInjection documents applied at the fault offset, their duration set to the
    /// fault window and their seed to the trial's.
    pub manifest: Option<String>,
    pub client_retries: u32,
    pub overload: Option<f64>,
    pub kill: Option<&'static str>,
}

impl From<&ScenarioDef> for Scenario {
    fn from(def: &ScenarioDef) -> Self {
        Scenario {
            name: def.name.to_string(),
            manifest: def.manifest.map(str::to_string),
            client_retries: def.client_retries,
            overload: def.overload,
            kill: def.kill,
        }
    }
}

impl Scenario {
    /// Whether anything happens at the fault offset (else there is no fault to recover from).
    pub fn has_fault(&self) -> bool {
        self.manifest.is_some() || self.kill.is_some() || self.overload.is_some()
    }
}

/// The phases of one trial and its client deadline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Phases {
    /// Load before the measured phase (not measured).
    pub warmup: Duration,
    /// Healthy seconds before the fault: the baseline.
    pub pre_fault: Duration,
    pub fault: Duration,
    /// Seconds after the fault in which recovery is looked for.
    pub recovery: Duration,
    /// Client deadline of each logical request.
    pub deadline: Duration,
    /// A collapse that lasts from this long after the fault's end to the end of the run is
    /// metastable ([`crate::measure::outcome`]).
    pub hold: Duration,
}

impl Phases {
    /// Seconds of the measured phase.
    pub fn measured(&self) -> Duration {
        self.pre_fault + self.fault + self.recovery
    }
}

/// What an experiment runs.
#[derive(Clone, Debug)]
pub struct Plan {
    pub profiles: Vec<String>,
    pub scenarios: Vec<String>,
    pub trials: u32,
    pub seed: u64,
    /// Offered loads as fractions of the calibrated knee, one level each.
    pub loads: Vec<f64>,
    /// An absolute offered load (logical requests per second) instead of `loads`.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub pre_fault: Duration,
    pub fault: Duration,
    pub recovery: Duration,
    /// Client deadline of each logical request.
    pub deadline: Duration,
    /// Multiplies the profiles' time constants (breaker open time) so short runs see the
    /// whole open -> half-open -> closed cycle inside their recovery phase.
    pub time_scale: f64,
    /// Payments' capacity model (the same for every profile).
    pub payments: PaymentsModel,
}

impl Plan {
    /// `--quick` (what `make experiment` runs): profiles a, b, d, g x payment_errors,
    /// payment_brownout, payment_outage x loads 0.5 and 0.9 of the knee, one trial.
    /// Breakers open for 3 s instead of 30 s (time scale 0.1), so a 6 s outage outlasts
    /// the open time and the 10 s recovery phase holds the open -> half-open -> closed
    /// cycle and five healthy seconds after it.
    pub fn quick() -> Self {
        Self {
            profiles: ["a-baseline", "b-naive-retries", "d-breakers", "g-adaptive"]
                .map(String::from)
                .to_vec(),
            scenarios: ["payment_errors", "payment_brownout", "payment_outage"]
                .map(String::from)
                .to_vec(),
            trials: 1,
            seed: 42,
            loads: vec![0.5, 0.9],
            rate: None,
            warmup: Duration::from_secs(1),
            pre_fault: Duration::from_secs(3),
            fault: Duration::from_secs(6),
            recovery: Duration::from_secs(10),
            deadline: Duration::from_secs(2),
            time_scale: 0.1,
            payments: PaymentsModel::default(),
        }
    }

    /// `--full`: every profile x every scenario, 3 trials, at 0.8 of the knee: 189 trials
    /// of 16.5 s of load, so the whole matrix fits an hour here. Breakers open 3 s (time
    /// scale 0.1), outlasted by the 5 s faults.
    pub fn full() -> Self {
        Self {
            profiles: lab_resilience::profiles::BUILTIN
                .map(|(n, _)| n.to_string())
                .to_vec(),
            scenarios: SCENARIOS.map(|s| s.name.to_string()).to_vec(),
            trials: 3,
            loads: vec![0.8],
            warmup: Duration::from_millis(500),
            pre_fault: Duration::from_secs(2),
            fault: Duration::from_secs(5),
            recovery: Duration::from_secs(9),
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
        if self.rate.is_none() && self.loads.is_empty() {
            anyhow::bail!("nothing to run: --load needs at least one fraction of the knee");
        }
        for &f in &self.loads {
            if !(f > 0.0 && f <= 5.0) {
                anyhow::bail!("--load fractions must be above 0 and at most 5, got {f}");
            }
        }
        self.payments.validate()
    }

    /// The offered load levels: the fractions of `knee`, or the one absolute rate.
    pub fn levels(&self, knee: Option<f64>) -> anyhow::Result<Vec<LoadLevel>> {
        if let Some(rps) = self.rate {
            return Ok(vec![LoadLevel {
                fraction: None,
                rps,
            }]);
        }
        let knee = knee.ok_or_else(|| {
            anyhow::anyhow!("load levels are fractions of the knee, and no knee was measured")
        })?;
        Ok(self
            .loads
            .iter()
            .map(|&f| LoadLevel {
                fraction: Some(f),
                rps: (knee * f * 10.0).round() / 10.0,
            })
            .collect())
    }

    /// The phases every trial of the plan runs; a collapse still there half-way through the
    /// recovery phase, and to its end, is metastable.
    pub fn phases(&self) -> Phases {
        Phases {
            warmup: self.warmup,
            pre_fault: self.pre_fault,
            fault: self.fault,
            recovery: self.recovery,
            deadline: self.deadline,
            hold: self.recovery / 2,
        }
    }

    /// Trials the plan runs.
    pub fn trial_count(&self) -> usize {
        let levels = if self.rate.is_some() {
            1
        } else {
            self.loads.len()
        };
        self.profiles.len() * self.scenarios.len() * levels * self.trials as usize
    }

    /// Seconds one trial takes, roughly (for the progress estimate).
    pub fn trial_seconds(&self) -> f64 {
        (self.warmup + self.pre_fault + self.fault + self.recovery).as_secs_f64() + 1.5
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

//! `frlab experiment`: every profile x scenario x trial on a local stack, from one seeded
//! fault timeline, and the report of what was measured.
//!
//! - [`plan`]: what runs — the fault scenarios of DESIGN.md, the plan (profiles,
//!   scenarios, trials, phases, load), where the services run, the time-scaled profiles.
//! - [`trial`]: one trial on a fresh stack: start the five services with the profile ->
//!   warm up -> scrape every service's /metrics -> run the open-loop load for pre-fault +
//!   fault + recovery, applying the scenario's fault at a fixed offset with a fixed seed ->
//!   drain (the outbox delivers what is committed) -> scrape again and read every service's
//!   Audit -> stop. `crate::measure` turns the two scrapes, the audits and the load report
//!   into the numbers of DESIGN.md, recorded as one `report::Trial`.
//! - [`run`]: the loop over the plan, writing the report after every cell.

pub mod calibrate;
pub mod fresh;
pub mod payments;
pub mod plan;
pub mod run;
pub mod sweep;
pub mod trial;

pub use calibrate::{CalibrateConfig, calibrate};
pub use payments::PaymentsModel;

pub use plan::{
    Backend, Phases, Plan, SCENARIOS, Scenario, ScenarioDef, scaled_profile_yaml, scenario,
};
pub use run::{Reference, format_secs, run};
pub use trial::{TrialSetup, run_trial, trial_from};

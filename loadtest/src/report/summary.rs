//! A run's cells read for the report: scenarios, profiles and hops in their order, and a
//! cell's trials summarised as mean ± 95 % interval (or a recovery outcome).

use std::collections::BTreeSet;

use super::record::{Cell, LoadLevel, Run, Trial};
use crate::measure::{self, DID_NOT_RECOVER, Interval, RecoverySummary, Window};

/// Scenarios in the order of the settings, then any only the cells name.
pub(super) fn scenarios(run: &Run) -> Vec<String> {
    ordered(
        &run.settings.scenarios,
        run.cells.iter().map(|c| &c.scenario),
    )
}

/// Profiles in the order of the settings, then any only the cells name.
pub(super) fn profiles(run: &Run) -> Vec<String> {
    ordered(&run.settings.profiles, run.cells.iter().map(|c| &c.profile))
}

pub(super) fn ordered<'a>(
    first: &'a [String],
    more: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in first.iter().chain(more) {
        if !out.contains(name) {
            out.push(name.clone());
        }
    }
    out
}

/// The load levels in the order of the settings, then any only the cells name; `[None]`
/// for a run made before load levels existed (its one load is `settings.offered_rps`).
pub(super) fn loads(run: &Run) -> Vec<Option<LoadLevel>> {
    let mut out: Vec<Option<LoadLevel>> = run.settings.loads.iter().cloned().map(Some).collect();
    for c in &run.cells {
        if !out.contains(&c.load) {
            out.push(c.load.clone());
        }
    }
    if out.is_empty() {
        out.push(None);
    }
    out
}

pub(super) fn cell<'a>(
    run: &'a Run,
    profile: &str,
    scenario: &str,
    load: Option<&LoadLevel>,
) -> Option<&'a Cell> {
    run.cells
        .iter()
        .find(|c| c.profile == profile && c.scenario == scenario && c.load.as_ref() == load)
}

/// A scenario's heading at one load, for text and chart titles.
pub(super) fn scenario_at(scenario: &str, load: Option<&LoadLevel>) -> String {
    match load {
        Some(l) => format!("{scenario} at {}", l.label()),
        None => scenario.to_string(),
    }
}

/// Hop names in request-flow order, then any others the trials carry.
pub(super) fn hop_names(run: &Run) -> Vec<String> {
    let known: Vec<String> = measure::HOPS.iter().map(|h| h.name.to_string()).collect();
    let others: BTreeSet<&String> = run
        .cells
        .iter()
        .flat_map(|c| &c.trials)
        .flat_map(|t| t.amplification.per_hop.keys())
        .filter(|h| !known.contains(h))
        .collect();
    ordered(&known, others.into_iter())
}

/// `caller→callee` for a hop name.
pub(super) fn hop_label(hop: &str) -> String {
    match measure::HOPS.iter().find(|h| h.name == hop) {
        Some(h) => format!("{}→{}", h.caller, h.name),
        None => hop.to_string(),
    }
}

pub(super) fn interval_of(trials: &[Trial], f: impl Fn(&Trial) -> Option<f64>) -> Option<Interval> {
    let values: Vec<f64> = trials.iter().filter_map(f).collect();
    measure::ci95(&values)
}

/// `mean ± half width`, with the number of trials when it differs from the cell's.
pub(super) fn show(
    interval: Option<Interval>,
    trials: usize,
    decimals: usize,
    unit: &str,
) -> String {
    match interval {
        None => "n/a".to_string(),
        Some(i) if i.n != trials && i.half_width.is_some() => {
            format!("{} (n = {})", i.format(decimals, unit), i.n)
        }
        Some(i) => i.format(decimals, unit),
    }
}

pub(super) fn show_recovery(trials: &[Trial]) -> String {
    match recovery_of(trials) {
        RecoverySummary::NotApplicable => "n/a".to_string(),
        RecoverySummary::DidNotRecover { failed, of } => {
            format!("{DID_NOT_RECOVER} ({failed} of {of} trials)")
        }
        RecoverySummary::Recovered(i) => show(Some(i), trials.len(), 1, " s"),
    }
}

/// Recovery over a cell's trials ([`RecoverySummary`]).
pub(super) fn recovery_of(trials: &[Trial]) -> RecoverySummary {
    RecoverySummary::of(trials.iter().map(|t| t.recovery))
}

/// Mean over a cell's trials, per second, of `f` of that second's window.
pub(super) fn mean_timeline_of(
    trials: &[Trial],
    f: impl Fn(&Window) -> Option<f64>,
) -> Vec<(f64, f64)> {
    measure::mean_timeline(trials.iter().map(|t| t.timeline.as_slice()), f)
}

//! `results.csv`: one row per measured trial, every metric, a header row first.

use std::collections::BTreeSet;

use super::record::Run;
use super::summary::hop_names;
use crate::measure::{DID_NOT_RECOVER, Outcome, Recovery};

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| x.to_string()).unwrap_or_default()
}

/// One row per measured trial; a header row first. Empty fields are values that do not
/// exist (a ratio with a zero denominator, no fault end).
pub(super) fn csv(run: &Run) -> String {
    let hops = hop_names(run);
    let processes: BTreeSet<&String> = run
        .cells
        .iter()
        .flat_map(|c| &c.trials)
        .flat_map(|t| t.cpu_s_per_process.keys())
        .collect();
    let mut header: Vec<String> = [
        "run_id",
        "scenario",
        "profile",
        "load_fraction",
        "offered_rps",
        "trial",
        "seed",
        "issued",
        "succeeded",
        "success_rate",
        "goodput_rps",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p99_ms",
        "latency_max_ms",
        "amplification_end_to_end",
        "amplification_client",
    ]
    .map(String::from)
    .to_vec();
    header.extend(hops.iter().map(|h| format!("amplification_{h}")));
    header.extend(
        [
            "logical_requests",
            "place_order_attempts",
            "charge_attempts",
            "duplicate_order_keys",
            "extra_orders",
            "orders_charged_more_than_once",
            "extra_charges",
            "events_delivered_more_than_once",
            "lost_events",
            "orphaned_reservations",
            "wasted_charges",
            "baseline_success_rate",
            "recovery_s",
            "fault_start_s",
            "fault_end_s",
            "breaker_opens",
            "breaker_time_open_s",
            "rejections_bulkhead",
            "rejections_shed",
            "rejections_adaptive",
            "rejections_breaker",
            "generator_lag_p99_ms",
            "generator_dropped",
            "generator_cpu_s",
            "generator_saturated",
            "keys_with_multiple_orders",
            "keys_charged_more_than_once",
            "keys_with_unrefunded_duplicates",
            "unrefunded_unconfirmed",
            "sagas_unfinished",
            "outcome",
            "outcome_recovery_s",
            "violations",
        ]
        .map(String::from),
    );
    header.extend(processes.iter().map(|p| format!("cpu_s_{p}")));
    let mut out = header.join(",") + "\n";
    for cell in &run.cells {
        for t in &cell.trials {
            let a = &t.amplification;
            let mut row: Vec<String> = vec![
                run.run_id.clone(),
                cell.scenario.clone(),
                cell.profile.clone(),
                opt(cell.load.as_ref().and_then(|l| l.fraction)),
                cell.load
                    .as_ref()
                    .map_or(run.settings.offered_rps, |l| l.rps)
                    .to_string(),
                t.trial.to_string(),
                t.seed.to_string(),
                t.issued.to_string(),
                t.succeeded.to_string(),
                opt(t.success_rate),
                t.goodput_rps.to_string(),
                t.latency_ms.p50.to_string(),
                t.latency_ms.p95.to_string(),
                t.latency_ms.p99.to_string(),
                t.latency_ms.max.to_string(),
                opt(a.end_to_end),
                opt(a.client),
            ];
            row.extend(
                hops.iter()
                    .map(|h| opt(a.per_hop.get(h).copied().flatten())),
            );
            row.extend([
                a.logical_requests.to_string(),
                a.place_order_attempts.to_string(),
                a.charge_attempts.to_string(),
                t.duplicates.orders.to_string(),
                t.duplicates.extra_orders.to_string(),
                t.duplicates.charges.to_string(),
                t.duplicates.extra_charges.to_string(),
                t.duplicates.deliveries.to_string(),
                t.lost_events.to_string(),
                t.orphaned_reservations.to_string(),
                t.wasted_charges.to_string(),
                opt(t.baseline_success_rate),
                match t.recovery {
                    Some(Recovery::Recovered { seconds }) => seconds.to_string(),
                    Some(Recovery::DidNotRecover) => DID_NOT_RECOVER.to_string(),
                    None => String::new(),
                },
                opt(t.fault_window.map(|w| w.start_s)),
                opt(t.fault_window.map(|w| w.end_s)),
                t.breaker.opens.to_string(),
                opt(t.breaker.time_open_s),
                t.rejections.bulkhead.to_string(),
                t.rejections.shed.to_string(),
                t.rejections.adaptive.to_string(),
                t.rejections.breaker.to_string(),
                t.generator.lag_p99_ms.to_string(),
                t.generator.dropped.to_string(),
                t.generator.cpu_s.to_string(),
                t.generator.saturated.to_string(),
                t.duplicates.keys_with_multiple_orders.to_string(),
                t.duplicates.keys_charged_more_than_once.to_string(),
                t.duplicates.keys_with_unrefunded_duplicates.to_string(),
                t.unrefunded_unconfirmed.to_string(),
                t.sagas_unfinished.to_string(),
                t.outcome.map_or(String::new(), |o| o.class().to_string()),
                match t.outcome {
                    Some(Outcome::Recovered { seconds }) => seconds.to_string(),
                    _ => String::new(),
                },
                t.violations.join("; "),
            ]);
            row.extend(
                processes
                    .iter()
                    .map(|p| opt(t.cpu_s_per_process.get(*p).copied())),
            );
            let row: Vec<String> = row.iter().map(|f| csv_field(f)).collect();
            out += &row.join(",");
            out.push('\n');
        }
    }
    out
}

// ---------------------------------------------------------------------------------------

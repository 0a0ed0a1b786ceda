//! The four charts of every scenario, from the run record: success rate and p95 per
//! second, amplification per hop, recovery time ("did not recover" hatched).

use super::record::{Cell, LoadLevel, Run};
use super::summary::{
    cell, hop_label, hop_names, interval_of, loads, mean_timeline_of, profiles, recovery_of,
    scenario_at, scenarios,
};
use super::svg::{Bar, Frame, Series, bar_chart, colour, line_chart};
use crate::measure::{DID_NOT_RECOVER, RecoverySummary, Window};

/// File-name-safe form of a scenario name.
fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// The chart files of a scenario at a load and what each shows, in the order they are
/// written.
pub(super) fn chart_names(scenario: &str, load: Option<&LoadLevel>) -> [(String, &'static str); 4] {
    let s = match load {
        Some(l) => format!("{}-{}", slug(scenario), slug(&l.slug())),
        None => slug(scenario),
    };
    [
        (format!("{s}-success.svg"), "success rate over time"),
        (format!("{s}-p95.svg"), "p95 latency over time"),
        (
            format!("{s}-amplification.svg"),
            "retry amplification per hop",
        ),
        (format!("{s}-recovery.svg"), "recovery time"),
    ]
}

/// Every chart of the run: `(file name, SVG text)`.
pub(super) fn charts(run: &Run) -> Vec<(String, String)> {
    let profiles = profiles(run);
    let hops = hop_names(run);
    let mut out = Vec::new();
    for (scenario_name, load) in scenarios(run)
        .into_iter()
        .flat_map(|s| loads(run).into_iter().map(move |l| (s.clone(), l)))
    {
        let cells: Vec<&Cell> = profiles
            .iter()
            .filter_map(|p| cell(run, p, &scenario_name, load.as_ref()))
            .filter(|c| !c.trials.is_empty())
            .collect();
        if cells.is_empty() {
            continue;
        }
        let scenario = scenario_at(&scenario_name, load.as_ref());
        let shade = cells
            .iter()
            .flat_map(|c| &c.trials)
            .find_map(|t| t.fault_window);
        let legend_entries: Vec<(String, &str)> = cells
            .iter()
            .map(|c| (c.profile.clone(), colour(&profiles, &c.profile)))
            .collect();
        let series = |f: fn(&Window) -> Option<f64>| -> Vec<Series> {
            cells
                .iter()
                .map(|c| Series {
                    name: c.profile.clone(),
                    colour: colour(&profiles, &c.profile),
                    points: mean_timeline_of(&c.trials, f),
                })
                .collect()
        };
        let [success, p95, amp, rec] = chart_names(&scenario_name, load.as_ref());
        out.push((
            success.0,
            line_chart(
                &format!("{scenario}: success rate per second"),
                "success rate (%)",
                &series(|w| w.success_rate().map(|r| r * 100.0)),
                Some(100.0),
                shade,
            ),
        ));
        out.push((
            p95.0,
            line_chart(
                &format!("{scenario}: p95 latency per second"),
                "p95 latency (ms)",
                &series(|w| w.p95_ms),
                None,
                shade,
            ),
        ));

        let mut groups: Vec<(String, Vec<Bar>)> = Vec::new();
        let group_names = hops
            .iter()
            .map(|h| (hop_label(h), Some(h.clone())))
            .chain([("end to end".to_string(), None)]);
        for (label, hop) in group_names {
            let bars = cells
                .iter()
                .map(|c| {
                    let i = interval_of(&c.trials, |t| match &hop {
                        Some(h) => t.amplification.per_hop.get(h).copied().flatten(),
                        None => t.amplification.end_to_end,
                    });
                    Bar {
                        colour: colour(&profiles, &c.profile),
                        value: i.map(|i| i.mean),
                        half_width: i.and_then(|i| i.half_width),
                        hatched: None,
                    }
                })
                .collect();
            groups.push((label, bars));
        }
        out.push((
            amp.0,
            bar_chart(
                &format!("{scenario}: retry amplification (attempts received / first attempts)"),
                "amplification (×)",
                &groups,
                &legend_entries,
                1.0,
                Some((1.0, "1× (no retries)")),
            ),
        ));

        // Full profile names under the bars when they fit, else their letters.
        let group_w = Frame::plot_w() / cells.len().max(1) as f64;
        let groups: Vec<(String, Vec<Bar>)> = cells
            .iter()
            .map(|c| {
                let colour = colour(&profiles, &c.profile);
                let bar = match recovery_of(&c.trials) {
                    RecoverySummary::NotApplicable => Bar {
                        colour,
                        value: None,
                        half_width: None,
                        hatched: None,
                    },
                    RecoverySummary::DidNotRecover { failed, of } => Bar {
                        colour,
                        value: None,
                        half_width: None,
                        hatched: Some(format!("{DID_NOT_RECOVER} ({failed}/{of})")),
                    },
                    RecoverySummary::Recovered(i) => Bar {
                        colour,
                        value: Some(i.mean),
                        half_width: i.half_width,
                        hatched: None,
                    },
                };
                let fits = cells
                    .iter()
                    .all(|c| c.profile.chars().count() as f64 * 7.5 < group_w);
                let label = if fits {
                    c.profile.clone()
                } else {
                    short_profile(&c.profile)
                };
                (label, vec![bar])
            })
            .collect();
        out.push((
            rec.0,
            bar_chart(
                &format!("{scenario}: recovery time after the fault ends"),
                "seconds to recover",
                &groups,
                &legend_entries,
                run.settings.recovery_s.max(1.0),
                None,
            ),
        ));
    }
    out
}

/// The letter before the first `-` of a profile name (`d` for `d-breakers`), or the name.
fn short_profile(name: &str) -> String {
    match name.split_once('-') {
        Some((head, _)) if !head.is_empty() && head.len() <= 2 => head.to_string(),
        _ => name.to_string(),
    }
}

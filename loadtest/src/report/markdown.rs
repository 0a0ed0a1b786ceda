//! `report.md`: how the run was made, then per scenario one table per concern (the
//! headline numbers; latency and amplification per hop; invariants and patterns; the
//! load generator and CPU), warnings, the charts, and the seed's claims beside ours.
//! One function per part, each appending to the text.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::charts::chart_names;
use super::record::{Cell, LoadLevel, Run, Trial};
use super::summary::{
    cell, hop_label, hop_names, interval_of, loads, profiles, scenario_at, scenarios, show,
    show_recovery,
};
use crate::measure::{self, Interval};

/// The whole of `report.md`.
pub(super) fn markdown(run: &Run) -> String {
    let mut o = String::new();
    status(run, &mut o);
    how_it_was_run(run, &mut o);
    if let Some(c) = &run.calibration {
        o.push('\n');
        o.push_str(&c.markdown("##"));
    }
    let profiles = profiles(run);
    let hops = hop_names(run);
    let loads = loads(run);
    for scenario in scenarios(run) {
        let _ = writeln!(o, "\n## Scenario `{}`\n", md(&scenario));
        fault_windows(run, &scenario, &mut o);
        for load in &loads {
            let load = load.as_ref();
            if let Some(l) = load {
                let _ = writeln!(o, "\n### At {}\n", l.label());
            }
            headline_table(run, &scenario, load, &profiles, &mut o);
            // Everything else measured, in three more tables of the same trials.
            let measured: Vec<&Cell> = profiles
                .iter()
                .filter_map(|p| cell(run, p, &scenario, load))
                .filter(|c| !c.trials.is_empty())
                .collect();
            latency_table(&measured, &hops, &mut o);
            invariants_table(&measured, &mut o);
            generator_table(&measured, &mut o);
            warnings(run, &scenario, load, &mut o);
            chart_links(&scenario, load, &mut o);
        }
    }
    seed_comparison(run, &mut o);
    o.push('\n');
    o.push_str(&super::findings::markdown(
        "##",
        &super::findings::for_run(run),
    ));
    o
}

/// The title and whether the run finished.
fn status(run: &Run, o: &mut String) {
    let s = &run.settings;
    let expected = s.profiles.len() * s.scenarios.len() * s.loads.len().max(1);
    let _ = writeln!(o, "# Failure Recovery Lab — run {}\n", run.run_id);
    if run.finished {
        let _ = writeln!(o, "**Status: FINISHED** ({} cells).\n", run.cells.len());
    } else {
        let _ = writeln!(
            o,
            "> **Status: this run did NOT finish.** It holds {} of {} cells; missing cells \
             show as \"not run\" and every number below covers only the trials completed.\n",
            run.cells.len(),
            expected
        );
    }
}

/// "How it was run": command, commit, machine, stack, load, phases, profile hashes, and
/// how to read the numbers.
fn how_it_was_run(run: &Run, o: &mut String) {
    let s = &run.settings;
    let env = &run.environment;
    let _ = writeln!(o, "## How it was run\n");
    let _ = writeln!(o, "- Command: `{}`", run.command);
    let dirty = match env.dirty {
        Some(true) => " (with uncommitted changes)",
        Some(false) => "",
        None => " (state of the working tree unknown)",
    };
    let _ = writeln!(o, "- Commit: `{}`{dirty}", env.commit);
    let _ = writeln!(
        o,
        "- Started {}, finished {}",
        run.started_at,
        run.finished_at.as_deref().unwrap_or("—")
    );
    let m = &env.machine;
    let _ = writeln!(
        o,
        "- Machine: {} cores, {} MiB memory, {}; CPU {}",
        m.cores,
        m.memory_mib,
        md(&m.os),
        md(&m.cpu_model)
    );
    if !s.stack.is_empty() {
        let _ = writeln!(o, "- Stack: {}", md(&s.stack));
    }
    let levels: Vec<String> = if s.loads.is_empty() {
        vec![format!("{} logical requests/s", s.offered_rps)]
    } else {
        s.loads.iter().map(LoadLevel::label).collect()
    };
    let _ = writeln!(
        o,
        "- Load: open loop, {} offered, client deadline {} ms",
        levels.join("; "),
        s.deadline_ms
    );
    if run.calibration.is_none() && s.loads.iter().any(|l| l.fraction.is_some()) {
        let _ = writeln!(
            o,
            "- Knee: given on the command line (`--knee-rps`), not measured by this run"
        );
    }
    if let Some(p) = &s.payments {
        let _ = writeln!(o, "- Payments: {}", p.describe());
    }
    match s.time_scale {
        Some(k) if k != 1.0 => {
            let _ = writeln!(
                o,
                "- Time constants scaled: every profile's breaker open time (and its backoff \
                 ceiling) multiplied by {k}, so the open → half-open → closed cycle fits the \
                 run's phases (a 30 s open time ran as {} s)",
                30.0 * k
            );
        }
        Some(_) => {
            let _ = writeln!(o, "- Time constants as the profiles set them (not scaled)");
        }
        None => {}
    }
    let _ = writeln!(
        o,
        "- Phases: warm-up {} s (not measured), then pre-fault {} s, fault {} s, recovery {} s; \
         drain {} s before the audits",
        s.warmup_s, s.pre_fault_s, s.fault_s, s.recovery_s, s.drain_s
    );
    let _ = writeln!(o, "- Seed {}, {} trials per cell", s.seed, s.trials);
    let _ = writeln!(o, "\n| profile | FNV-1a 64 of its YAML |\n|---|---|");
    for (name, hash) in &env.profile_hashes {
        let _ = writeln!(o, "| {} | `{hash}` |", md(name));
    }
    let _ = writeln!(
        o,
        "\nEach value is the mean ± the half width of its 95 % confidence interval \
         (Student t, n − 1 degrees of freedom) over the cell's trials; `(n = k)` marks a value \
         only k trials had. Definitions: DESIGN.md, \"Metrics — exact definitions\". \
         Amplification per hop is attempts received by the callee (counted on arrival) / first \
         attempts of the caller; end to end, payments Charge attempts / logical requests. \
         MTTR runs from the fault's end to the start of the first {} consecutive one-second \
         windows whose success rate is at least {} % of the pre-fault baseline; a second in \
         which nothing was issued does not count as recovered. A cell \"did not recover\" when \
         any of its trials found no such run within the recovery phase.",
        measure::RECOVERY_WINDOWS,
        measure::RECOVERY_FRACTION * 100.0
    );
}

/// When the fault was in force in this scenario's trials.
fn fault_windows(run: &Run, scenario: &str, o: &mut String) {
    let windows: BTreeSet<String> = run
        .cells
        .iter()
        .filter(|c| c.scenario == scenario)
        .flat_map(|c| &c.trials)
        .filter_map(|t| t.fault_window)
        .map(|w| format!("{}–{} s", w.start_s, w.end_s))
        .collect();
    if !windows.is_empty() {
        let list: Vec<String> = windows.into_iter().collect();
        let _ = writeln!(
            o,
            "Fault in force {} of the measured phase.\n",
            list.join(", ")
        );
    }
}

/// The headline table: success, p95, amplification, MTTR, duplicates, lost events; a
/// profile without trials shows "not run".
fn headline_table(
    run: &Run,
    scenario: &str,
    load: Option<&LoadLevel>,
    profiles: &[String],
    o: &mut String,
) {
    let _ = writeln!(
        o,
        "| profile | trials | success rate | p95 (ms) | amplification (e2e) | MTTR | outcome | \
         keys with more than one order | keys charged twice | lost events | invariants |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for profile in profiles {
        let Some(c) = cell(run, profile, scenario, load).filter(|c| !c.trials.is_empty()) else {
            let _ = writeln!(o, "| {} | 0 | not run | | | | | | | | |", md(profile));
            continue;
        };
        let t = &c.trials;
        let n = t.len();
        let broken = t.iter().filter(|x| !x.violations.is_empty()).count();
        let invariants = if broken == 0 {
            "kept".to_string()
        } else {
            format!("**BROKEN** ({broken} of {n} trials)")
        };
        let _ = writeln!(
            o,
            "| {} | {n} | {} | {} | {} | {} | {} | {} | {} | {} | {invariants} |",
            md(profile),
            show(
                interval_of(t, |x| x.success_rate).map(|i| i.scaled(100.0)),
                n,
                1,
                " %"
            ),
            show(interval_of(t, |x| Some(x.latency_ms.p95)), n, 0, ""),
            show(interval_of(t, |x| x.amplification.end_to_end), n, 2, "×"),
            show_recovery(t),
            outcomes(t),
            show(
                interval_of(t, |x| Some(x.duplicates.keys_with_multiple_orders as f64)),
                n,
                1,
                ""
            ),
            show(
                interval_of(t, |x| Some(
                    x.duplicates.keys_with_unrefunded_duplicates as f64
                )),
                n,
                1,
                ""
            ),
            show(interval_of(t, |x| Some(x.lost_events as f64)), n, 1, ""),
        );
    }
}

/// How the trials came through the fault: `recovered ×2, metastable ×1`.
fn outcomes(trials: &[Trial]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for t in trials {
        let class = t.outcome.map_or("n/a", |o| o.class());
        match counts.iter_mut().find(|(c, _)| *c == class) {
            Some((_, n)) => *n += 1,
            None => counts.push((class, 1)),
        }
    }
    counts
        .iter()
        .map(|(c, n)| {
            if trials.len() == 1 {
                c.to_string()
            } else {
                format!("{c} ×{n}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Goodput, latency percentiles and amplification per hop.
fn latency_table(measured: &[&Cell], hops: &[String], o: &mut String) {
    let mut head: Vec<String> = [
        "profile",
        "goodput (req/s)",
        "p50 (ms)",
        "p99 (ms)",
        "max (ms)",
    ]
    .map(String::from)
    .to_vec();
    head.extend(hops.iter().map(|h| format!("amp. {}", hop_label(h))));
    head.push("amp. client".into());
    table(
        o,
        "Latency and retry amplification per hop",
        &head,
        measured,
        |t, n| {
            let mut row = vec![
                show(interval_of(t, |x| Some(x.goodput_rps)), n, 1, ""),
                show(interval_of(t, |x| Some(x.latency_ms.p50)), n, 0, ""),
                show(interval_of(t, |x| Some(x.latency_ms.p99)), n, 0, ""),
                show(interval_of(t, |x| Some(x.latency_ms.max)), n, 0, ""),
            ];
            row.extend(hops.iter().map(|h| {
                let i = interval_of(t, |x| x.amplification.per_hop.get(h).copied().flatten());
                show(i, n, 2, "×")
            }));
            row.push(show(interval_of(t, |x| x.amplification.client), n, 2, "×"));
            row
        },
    );
}

/// Invariants and what each resilience pattern did.
fn invariants_table(measured: &[&Cell], o: &mut String) {
    let head = [
        "profile",
        "baseline success",
        "orphaned reservations",
        "unrefunded charges of unconfirmed orders",
        "sagas unfinished",
        "keys charged more than once (refunded or not)",
        "events delivered more than once",
        "wasted charges",
        "breaker opens",
        "breaker open (s)",
        "breaker rejections",
        "bulkhead rejections",
        "shed",
        "adaptive rejections",
    ]
    .map(String::from);
    table(
        o,
        "Invariants and resilience patterns",
        &head,
        measured,
        |t, n| {
            let count =
                |f: fn(&Trial) -> u64| show(interval_of(t, |x| Some(f(x) as f64)), n, 1, "");
            vec![
                show(
                    interval_of(t, |x| x.baseline_success_rate).map(|i| i.scaled(100.0)),
                    n,
                    1,
                    " %",
                ),
                count(|x| x.orphaned_reservations),
                count(|x| x.unrefunded_unconfirmed),
                count(|x| x.sagas_unfinished),
                count(|x| x.duplicates.keys_charged_more_than_once),
                count(|x| x.duplicates.deliveries),
                count(|x| x.wasted_charges),
                count(|x| x.breaker.opens),
                show(interval_of(t, |x| x.breaker.time_open_s), n, 1, ""),
                count(|x| x.rejections.breaker),
                count(|x| x.rejections.bulkhead),
                count(|x| x.rejections.shed),
                count(|x| x.rejections.adaptive),
            ]
        },
    );
}

/// The load generator's health and the CPU of every process.
fn generator_table(measured: &[&Cell], o: &mut String) {
    let processes: BTreeSet<&String> = measured
        .iter()
        .flat_map(|c| &c.trials)
        .flat_map(|t| t.cpu_s_per_process.keys())
        .collect();
    let mut head: Vec<String> = [
        "profile",
        "generator lag p99 (ms)",
        "dropped",
        "generator saturated",
    ]
    .map(String::from)
    .to_vec();
    head.extend(processes.iter().map(|p| format!("CPU s {p}")));
    table(o, "Load generator and CPU", &head, measured, |t, n| {
        let mut row = vec![
            show(interval_of(t, |x| Some(x.generator.lag_p99_ms)), n, 1, ""),
            show(
                interval_of(t, |x| Some(x.generator.dropped as f64)),
                n,
                1,
                "",
            ),
            format!(
                "{} of {n}",
                t.iter().filter(|x| x.generator.saturated).count()
            ),
        ];
        row.extend(processes.iter().map(|p| {
            show(
                interval_of(t, |x| x.cpu_s_per_process.get(*p).copied()),
                n,
                1,
                "",
            )
        }));
        row
    });
}

/// A saturated generator, and the trials that could not be measured.
fn warnings(run: &Run, scenario: &str, load: Option<&LoadLevel>, o: &mut String) {
    let here = |c: &&Cell| c.scenario == scenario && c.load.as_ref() == load;
    let saturated: usize = run
        .cells
        .iter()
        .filter(here)
        .flat_map(|c| &c.trials)
        .filter(|t| t.generator.saturated)
        .count();
    if saturated > 0 {
        let _ = writeln!(
            o,
            "\n**Warning:** the load generator was saturated in {saturated} trial(s) of \
             this scenario: their offered load was lower than the settings say."
        );
    }
    for c in run.cells.iter().filter(here) {
        for t in c.trials.iter().filter(|t| !t.violations.is_empty()) {
            let _ = writeln!(
                o,
                "\n- **`{}` trial {} (seed {}) broke what its profile promises:** {}",
                md(&c.profile),
                t.trial,
                t.seed,
                t.violations.join("; ")
            );
        }
        for f in &c.failed_trials {
            let _ = writeln!(
                o,
                "\n- `{}` trial {} (seed {}) could not be measured: {}",
                md(&c.profile),
                f.trial,
                f.seed,
                f.error.replace('\n', " ")
            );
        }
    }
}

/// The scenario's four charts at one load.
fn chart_links(scenario: &str, load: Option<&LoadLevel>, o: &mut String) {
    let _ = writeln!(o);
    for (file, alt) in chart_names(scenario, load) {
        let _ = writeln!(
            o,
            "![{}: {alt}]({file})\n",
            md(&scenario_at(scenario, load))
        );
    }
}

/// Text safe in a Markdown table cell: no column breaks, no HTML tags.
fn md(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A Markdown table under a bold caption: one row per cell, its profile first.
fn table(
    o: &mut String,
    caption: &str,
    head: &[String],
    cells: &[&Cell],
    row: impl Fn(&[Trial], usize) -> Vec<String>,
) {
    if cells.is_empty() {
        return;
    }
    let _ = writeln!(o, "\n**{caption}**\n\n| {} |", head.join(" | "));
    let _ = writeln!(o, "|{}", "---|".repeat(head.len()));
    for c in cells {
        let values = row(&c.trials, c.trials.len());
        let _ = writeln!(o, "| {} | {} |", md(&c.profile), values.join(" | "));
    }
}

/// What the seed published for 20 % payment errors (DESIGN.md), to set beside ours.
struct Claim {
    profile: &'static str,
    success_pct: f64,
    p95_ms: f64,
    amplification: f64,
}

const SEED_CLAIMS: [Claim; 4] = [
    Claim {
        profile: "a-baseline",
        success_pct: 80.0,
        p95_ms: 340.0,
        amplification: 1.0,
    },
    Claim {
        profile: "b-naive-retries",
        success_pct: 51.0,
        p95_ms: 890.0,
        amplification: 2.6,
    },
    Claim {
        profile: "d-breakers",
        success_pct: 92.0,
        p95_ms: 210.0,
        amplification: 1.1,
    },
    Claim {
        profile: "f-full",
        success_pct: 94.0,
        p95_ms: 185.0,
        amplification: 1.1,
    },
];

/// Whether `claim` lies in the interval: a verdict only when there is an interval.
fn verdict(claim: f64, interval: Option<Interval>) -> &'static str {
    match interval {
        Some(Interval {
            mean,
            half_width: Some(hw),
            ..
        }) => {
            if (claim - mean).abs() <= hw {
                "within CI"
            } else if claim > mean {
                "claim higher"
            } else {
                "claim lower"
            }
        }
        _ => "no CI",
    }
}

/// The seed's published numbers beside ours, at every load the run measured
/// `payment_errors` at.
fn seed_comparison(run: &Run, o: &mut String) {
    let scenario = "payment_errors";
    let rows: Vec<(&Claim, &Cell)> = loads(run)
        .iter()
        .flat_map(|load| {
            SEED_CLAIMS.iter().filter_map(move |claim| {
                cell(run, claim.profile, scenario, load.as_ref())
                    .filter(|c| !c.trials.is_empty())
                    .map(|c| (claim, c))
            })
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        o,
        "## The seed's claims for 20 % payment errors\n\n\
         The seed published these without runs; ours are from scenario `{scenario}`. A claim \
         is \"within CI\" when it lies inside our 95 % interval.\n\n\
         | profile | load | seed success | ours | | seed p95 | ours (ms) | | seed amplification | ours (e2e) | |\n\
         |---|---|---|---|---|---|---|---|---|---|---|"
    );
    for (claim, c) in rows {
        let t = &c.trials;
        let n = t.len();
        let success = interval_of(t, |x| x.success_rate).map(|i| i.scaled(100.0));
        let p95 = interval_of(t, |x| Some(x.latency_ms.p95));
        let amp = interval_of(t, |x| x.amplification.end_to_end);
        let load = c.load.as_ref().map_or_else(
            || format!("{} req/s", run.settings.offered_rps),
            LoadLevel::label,
        );
        let _ = writeln!(
            o,
            "| {} | {load} | {} % | {} | {} | {} ms | {} | {} | {}× | {} | {} |",
            claim.profile,
            claim.success_pct,
            show(success, n, 1, " %"),
            verdict(claim.success_pct, success),
            claim.p95_ms,
            show(p95, n, 0, ""),
            verdict(claim.p95_ms, p95),
            claim.amplification,
            show(amp, n, 2, "×"),
            verdict(claim.amplification, amp),
        );
    }
    let _ = writeln!(o);
}

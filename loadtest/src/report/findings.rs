//! Findings, generated: for each claim of the seed and each figure of the metastability
//! papers the lab tests (DESIGN.md, "What the original system claims"), the conditions
//! under which our measurements agree or disagree, read from a run's or a sweep's record.
//! Nothing here is typed by hand but the claims themselves; every number comes from the
//! record, and a claim the record cannot speak to says "not measured".

use std::fmt::Write as _;

use super::record::{Cell, LoadLevel, Run, Trial};
use super::summary::{cell, interval_of, loads};
use super::sweep::{Sweep, SweepCell};
use crate::measure::{Interval, Outcome, RecoverySummary};

/// How a claim fared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Holds,
    DoesNotHold,
    /// Holds under some of the measured conditions and not under others.
    Depends,
    NotMeasured,
}

impl Verdict {
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Holds => "holds",
            Verdict::DoesNotHold => "does not hold",
            Verdict::Depends => "depends on the conditions",
            Verdict::NotMeasured => "not measured here",
        }
    }

    /// From per-condition results: all true, all false, or a mix.
    fn of(results: &[bool]) -> Verdict {
        match (results.iter().any(|r| *r), results.iter().all(|r| *r)) {
            _ if results.is_empty() => Verdict::NotMeasured,
            (true, true) => Verdict::Holds,
            (false, _) => Verdict::DoesNotHold,
            (true, false) => Verdict::Depends,
        }
    }
}

/// One claim and what the record says of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Finding {
    pub claim: String,
    pub source: &'static str,
    pub verdict: Verdict,
    /// The conditions and the numbers behind the verdict.
    pub evidence: String,
}

/// A "Findings" section: one bullet per claim.
pub fn markdown(heading: &str, findings: &[Finding]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "{heading} Findings\n");
    let _ = writeln!(
        o,
        "Generated from this record (`frlab report` rewrites it). Each claim is followed by \
         our verdict and the conditions behind it; intervals are 95 % over the trials, and a \
         value from a single trial is marked (n = 1) and compared as it is.\n"
    );
    for f in findings {
        let _ = writeln!(
            o,
            "- **{}** ({}) — *{}*. {}",
            f.claim,
            f.source,
            f.verdict.label(),
            f.evidence
        );
    }
    o
}

const SEED: &str = "the seed";
const HOTOS: &str = "HotOS'21, Metastable failures in distributed systems";
const OSDI: &str = "OSDI'22, Metastable failures in the wild";

/// A claimed success rate under 20 % payment errors, per profile.
const SEED_SUCCESS: [(&str, f64); 4] = [
    ("a-baseline", 80.0),
    ("b-naive-retries", 51.0),
    ("d-breakers", 92.0),
    ("f-full", 94.0),
];

/// The findings of an experiment run.
pub fn for_run(run: &Run) -> Vec<Finding> {
    let mut out = Vec::new();
    for (profile, claim) in SEED_SUCCESS {
        out.push(seed_success(run, profile, claim));
    }
    out.push(naive_vs_baseline(run));
    out.push(amplification(run));
    out.push(breaker_recovery(run));
    out.push(duplicates(run));
    out.push(after_the_trigger(run));
    out
}

/// `0.5 × knee (57.2 req/s)`, or the rate of an old run.
fn load_name(run: &Run, load: Option<&LoadLevel>) -> String {
    load.map_or_else(
        || format!("{} req/s", run.settings.offered_rps),
        LoadLevel::label,
    )
}

fn measured<'a>(
    run: &'a Run,
    profile: &str,
    scenario: &str,
    load: Option<&LoadLevel>,
) -> Option<&'a Cell> {
    cell(run, profile, scenario, load).filter(|c| !c.trials.is_empty())
}

fn success_pct(trials: &[Trial]) -> Option<Interval> {
    interval_of(trials, |t| t.success_rate).map(|i| i.scaled(100.0))
}

/// Success rate while the fault was in force (the seconds of the fault window, pooled), in
/// percent: what a claim about "under 20 % errors" speaks of, without the healthy seconds
/// before and after.
fn fault_success_pct(trials: &[Trial]) -> Option<Interval> {
    interval_of(trials, |t| {
        let w = t.fault_window?;
        let (issued, ok) = t
            .timeline
            .iter()
            .filter(|x| f64::from(x.second) >= w.start_s && f64::from(x.second) + 1.0 <= w.end_s)
            .fold((0, 0), |(i, s), x| (i + x.issued, s + x.succeeded));
        (issued > 0).then(|| ok as f64 / issued as f64 * 100.0)
    })
}

fn show(i: &Interval, decimals: usize, unit: &str) -> String {
    i.format(decimals, unit)
}

/// Whether `value` lies in the interval (within 2 units when there is a single trial).
fn within(value: f64, i: &Interval) -> bool {
    (value - i.mean).abs() <= i.half_width.unwrap_or(2.0)
}

/// Whether two intervals lie apart: `Some(true)` when `a` is clearly above `b`, `Some(false)`
/// when clearly below, `None` when they overlap (single trials: apart by more than 2 units).
fn apart(a: &Interval, b: &Interval) -> Option<bool> {
    let (ha, hb) = (a.half_width.unwrap_or(1.0), b.half_width.unwrap_or(1.0));
    if a.mean - ha > b.mean + hb {
        Some(true)
    } else if a.mean + ha < b.mean - hb {
        Some(false)
    } else {
        None
    }
}

fn seed_success(run: &Run, profile: &'static str, claim: f64) -> Finding {
    let mut results = Vec::new();
    let mut parts = Vec::new();
    for load in loads(run) {
        if let Some(c) = measured(run, profile, "payment_errors", load.as_ref())
            && let Some(i) = fault_success_pct(&c.trials)
        {
            results.push(within(claim, &i));
            parts.push(format!(
                "at {}: {}",
                load_name(run, load.as_ref()),
                show(&i, 1, " %")
            ));
        }
    }
    Finding {
        claim: format!("{profile} keeps {claim} % of orders under 20 % payment errors"),
        source: SEED,
        verdict: Verdict::of(&results),
        evidence: if parts.is_empty() {
            "The run has no payment_errors cell of this profile.".into()
        } else {
            format!(
                "Ours, over the seconds the errors were in force: {}.",
                parts.join("; ")
            )
        },
    }
}

fn naive_vs_baseline(run: &Run) -> Finding {
    let (mut below, mut above, mut level) = (Vec::new(), Vec::new(), Vec::new());
    for scenario in &run.settings.scenarios {
        for load in loads(run) {
            let (Some(a), Some(b)) = (
                measured(run, "a-baseline", scenario, load.as_ref()),
                measured(run, "b-naive-retries", scenario, load.as_ref()),
            ) else {
                continue;
            };
            let (Some(ia), Some(ib)) = (success_pct(&a.trials), success_pct(&b.trials)) else {
                continue;
            };
            let line = format!(
                "{scenario} at {} (b {} vs a {})",
                load_name(run, load.as_ref()),
                show(&ib, 1, " %"),
                show(&ia, 1, " %")
            );
            match apart(&ib, &ia) {
                Some(false) => below.push(line),
                Some(true) => above.push(line),
                None => level.push(line),
            }
        }
    }
    let verdict = match (below.is_empty(), above.is_empty() && level.is_empty()) {
        _ if below.is_empty() && above.is_empty() && level.is_empty() => Verdict::NotMeasured,
        (false, true) => Verdict::Holds,
        (true, _) => Verdict::DoesNotHold,
        (false, false) => Verdict::Depends,
    };
    let list = |name: &str, v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" {name}: {}.", v.join("; "))
        }
    };
    Finding {
        claim: "naive retries lower the success rate (51 % against the baseline's 80 %)".into(),
        source: SEED,
        verdict,
        evidence: format!(
            "Naive retries against the baseline, cell by cell.{}{}{}",
            list("Below the baseline", &below),
            list("Above it", &above),
            list("Within each other's interval", &level)
        ),
    }
}

fn amplification(run: &Run) -> Finding {
    let mut parts = Vec::new();
    let mut max_e2e: f64 = 0.0;
    let mut max_hop: f64 = 0.0;
    for scenario in &run.settings.scenarios {
        for load in loads(run) {
            let Some(b) = measured(run, "b-naive-retries", scenario, load.as_ref()) else {
                continue;
            };
            let e2e = interval_of(&b.trials, |t| t.amplification.end_to_end);
            let hop = interval_of(&b.trials, |t| {
                t.amplification.per_hop.get("payments").copied().flatten()
            });
            if let (Some(e), Some(h)) = (e2e, hop) {
                max_e2e = max_e2e.max(e.mean);
                max_hop = max_hop.max(h.mean);
                parts.push(format!(
                    "{scenario} at {}: {} at the payments hop, {} end to end",
                    load_name(run, load.as_ref()),
                    show(&h, 2, "×"),
                    show(&e, 2, "×")
                ));
            }
        }
    }
    let verdict = if parts.is_empty() {
        Verdict::NotMeasured
    } else if max_hop >= 1.9 {
        Verdict::Holds
    } else {
        Verdict::Depends
    };
    Finding {
        claim: "one retry after a timeout doubles the offered load (seed: naive retries 2.6×)"
            .into(),
        source: HOTOS,
        verdict,
        evidence: if parts.is_empty() {
            "The run has no b-naive-retries cell.".into()
        } else {
            format!(
                "b-naive-retries (3 attempts per hop, so up to 3× per hop and 9× from gateway to \
                 payments while every attempt fails): {}. Largest: {max_hop:.2}× at one hop, \
                 {max_e2e:.2}× end to end; near 1× wherever attempts succeed.",
                parts.join("; ")
            )
        },
    }
}

/// MTTR of a cell: its recovery summary in words, and a number when all trials recovered.
fn mttr(c: &Cell) -> (String, Option<f64>) {
    match RecoverySummary::of(c.trials.iter().map(|t| t.recovery)) {
        RecoverySummary::NotApplicable => ("n/a".into(), None),
        RecoverySummary::DidNotRecover { failed, of } => {
            (format!("did not recover ({failed} of {of})"), None)
        }
        RecoverySummary::Recovered(i) => (show(&i, 1, " s"), Some(i.mean)),
    }
}

fn breaker_recovery(run: &Run) -> Finding {
    let mut results = Vec::new();
    let mut parts = Vec::new();
    for scenario in &run.settings.scenarios {
        for load in loads(run) {
            // d-breakers is c-backoff-timeouts plus breakers: the one difference. Without c
            // in the run, b (no breakers, retries) is the nearest comparison.
            let Some(d) = measured(run, "d-breakers", scenario, load.as_ref()) else {
                continue;
            };
            let Some((other, o)) = ["c-backoff-timeouts", "b-naive-retries", "a-baseline"]
                .into_iter()
                .find_map(|p| measured(run, p, scenario, load.as_ref()).map(|c| (p, c)))
            else {
                continue;
            };
            let ((dt, dm), (ot, om)) = (mttr(d), mttr(o));
            if dt == "n/a" {
                continue;
            }
            let shorter = match (dm, om) {
                (Some(d), Some(o)) => d + 0.5 < o,
                (Some(_), None) => true,
                _ => false,
            };
            results.push(shorter);
            parts.push(format!(
                "{scenario} at {}: d-breakers {dt}, {other} {ot}",
                load_name(run, load.as_ref())
            ));
        }
    }
    let scale = run.settings.time_scale.map_or(String::new(), |k| {
        format!(" (breakers open {} s, 30 s × {k})", 30.0 * k)
    });
    Finding {
        claim: "circuit breakers cut recovery time (from 120 s to 35 s)".into(),
        source: SEED,
        verdict: Verdict::of(&results),
        evidence: if parts.is_empty() {
            "The run has no d-breakers cell with a fault that ends.".into()
        } else {
            format!(
                "MTTR{scale}: {}. Breakers shorten recovery only where the system without them \
                 stays down; where it recovers at once, the open breaker itself delays \
                 recovery by up to its open time.",
                parts.join("; ")
            )
        },
    }
}

fn duplicates(run: &Run) -> Finding {
    let share = |c: &Cell| {
        interval_of(&c.trials, |t| {
            (t.issued > 0)
                .then(|| t.duplicates.keys_with_multiple_orders as f64 / t.issued as f64 * 100.0)
        })
    };
    let (mut naive, mut keyed) = (Vec::new(), Vec::new());
    let (mut keyed_zero, mut naive_in_range) = (Vec::new(), Vec::new());
    for scenario in &run.settings.scenarios {
        for load in loads(run) {
            let at = format!("{scenario} at {}", load_name(run, load.as_ref()));
            if let Some(b) = measured(run, "b-naive-retries", scenario, load.as_ref())
                && let Some(i) = share(b)
            {
                naive_in_range.push((8.0..=12.0).contains(&i.mean));
                naive.push(format!("{at}: {}", show(&i, 1, " %")));
            }
            for p in ["f-full", "g-adaptive"] {
                if let Some(c) = measured(run, p, scenario, load.as_ref()) {
                    let dup: u64 = c
                        .trials
                        .iter()
                        .map(|t| {
                            t.duplicates.keys_with_multiple_orders
                                + t.duplicates.keys_with_unrefunded_duplicates
                        })
                        .sum();
                    keyed_zero.push(dup == 0);
                    if dup > 0 {
                        keyed.push(format!("{p} {at}: {dup}"));
                    }
                }
            }
        }
    }
    Finding {
        claim: "naive retries duplicate 8–12 % of orders; idempotency keys 0 %".into(),
        source: SEED,
        // The 0 % is a promise (it must hold everywhere); the 8–12 % a measurement that may
        // hold under some conditions only.
        verdict: match (Verdict::of(&keyed_zero), Verdict::of(&naive_in_range)) {
            (Verdict::DoesNotHold | Verdict::Depends, _) => Verdict::DoesNotHold,
            (Verdict::Holds, Verdict::Holds) => Verdict::Holds,
            (Verdict::NotMeasured, v) => v,
            _ => Verdict::Depends,
        },
        evidence: format!(
            "Keys with more than one order under b-naive-retries (idempotency off: every retry \
             of CreateOrder is a saga of its own): {}. With idempotency keys (f, g): {}.",
            if naive.is_empty() {
                "not run".to_string()
            } else {
                naive.join("; ")
            },
            if keyed_zero.is_empty() {
                "not run".to_string()
            } else if keyed.is_empty() {
                format!(
                    "no key with a second order or a second kept charge in {} cells",
                    keyed_zero.len()
                )
            } else {
                keyed.join("; ")
            }
        ),
    }
}

fn outcome_counts(trials: &[Trial], class: &str) -> usize {
    trials
        .iter()
        .filter(|t| t.outcome.is_some_and(|o| o.class() == class))
        .count()
}

fn after_the_trigger(run: &Run) -> Finding {
    let mut results = Vec::new();
    let mut parts = Vec::new();
    for scenario in ["payment_outage", "payment_brownout"] {
        for load in loads(run) {
            let Some(b) = measured(run, "b-naive-retries", scenario, load.as_ref()) else {
                continue;
            };
            let meta = outcome_counts(&b.trials, "metastable");
            results.push(meta > 0);
            parts.push(format!(
                "{scenario} at {}: metastable in {meta} of {} trials ({})",
                load_name(run, load.as_ref()),
                b.trials.len(),
                mttr(b).0
            ));
        }
    }
    Finding {
        claim: "after a trigger ends, retries can hold goodput near zero (a 10 s outage)".into(),
        source: HOTOS,
        verdict: Verdict::of(&results),
        evidence: if parts.is_empty() {
            "The run has no b-naive-retries cell under payment_outage or payment_brownout.".into()
        } else {
            format!(
                "b-naive-retries: {}. An outage that refuses at once leaves nothing queued; a \
                 brownout fills payments' queue with attempts whose callers have given up.",
                parts.join("; ")
            )
        },
    }
}

/// The findings of a sweep.
pub fn for_sweep(sweep: &Sweep) -> Vec<Finding> {
    let mut out = vec![load_boundary(sweep), metastable_state(sweep)];
    out.push(axis_boundary(sweep, false));
    out.push(axis_boundary(sweep, true));
    out.push(what_removes_it(sweep));
    out
}

fn cells_of<'a>(sweep: &'a Sweep, profile: &str) -> Vec<&'a SweepCell> {
    sweep
        .cells
        .iter()
        .filter(|c| c.profile == profile && c.trial.is_some())
        .collect()
}

fn is_meta(c: &SweepCell) -> bool {
    c.outcome() == Some(Outcome::Metastable)
}

/// The sweep's main subject: b-naive-retries when it ran, else its first profile.
fn subject(sweep: &Sweep) -> Option<&str> {
    let p = &sweep.settings.profiles;
    p.iter()
        .find(|p| p.as_str() == "b-naive-retries")
        .or(p.first())
        .map(String::as_str)
}

fn load_boundary(sweep: &Sweep) -> Finding {
    let Some(profile) = subject(sweep) else {
        return not_measured("stable only below about 54 % of capacity", HOTOS);
    };
    let mut parts = Vec::new();
    let mut lowest: Option<f64> = None;
    for row in sweep.rows() {
        let first = sweep.settings.loads.iter().find(|l| {
            cells_of(sweep, profile)
                .iter()
                .any(|c| &c.load == *l && (c.cut, c.duration_s) == row && is_meta(c))
        });
        if let Some(l) = first {
            let f = l.fraction.unwrap_or(0.0);
            lowest = Some(lowest.map_or(f, |x: f64| x.min(f)));
            parts.push(format!("after {} from {}", row_name(sweep, row), l.label()));
        }
    }
    let grid_min = sweep
        .settings
        .loads
        .iter()
        .filter_map(|l| l.fraction)
        .fold(f64::INFINITY, f64::min);
    Finding {
        claim: "with retries a system is stable only below about 54 % of its capacity".into(),
        source: HOTOS,
        verdict: match lowest {
            None => Verdict::DoesNotHold,
            Some(_) => Verdict::Depends,
        },
        evidence: match lowest {
            None => format!(
                "{profile} was not metastable anywhere in the grid (loads {} of the knee).",
                loads_list(sweep)
            ),
            Some(f) => format!(
                "{profile} turned metastable {}; the lowest load with a metastable cell is {f} × \
                 the knee{}. The boundary exists; where it lies depends on the retry policy \
                 (attempts per hop multiply across hops) and on how long payments' queue holds \
                 abandoned work, not on a fixed share of capacity.",
                parts.join("; "),
                if f <= grid_min {
                    " — the lowest load of the grid, so the boundary lies below it"
                } else {
                    ""
                }
            ),
        },
    }
}

fn metastable_state(sweep: &Sweep) -> Finding {
    let Some(profile) = subject(sweep) else {
        return not_measured("≈3× attempted load and −90 % goodput, no recovery", OSDI);
    };
    let meta: Vec<&SweepCell> = cells_of(sweep, profile)
        .into_iter()
        .filter(|c| is_meta(c))
        .collect();
    if meta.is_empty() {
        return Finding {
            claim: "in the metastable state attempted load is ≈3× and goodput −90 %, with no \
                    recovery in 500 s"
                .into(),
            source: OSDI,
            verdict: Verdict::NotMeasured,
            evidence: format!("{profile} had no metastable cell in this sweep."),
        };
    }
    let amps: Vec<f64> = meta
        .iter()
        .filter_map(|c| c.trial.as_ref()?.amplification.end_to_end)
        .collect();
    let drops: Vec<f64> = meta
        .iter()
        .filter_map(|c| goodput_drop(c, sweep.settings.hold_s))
        .collect();
    let amp = crate::measure::ci95(&amps);
    let drop = crate::measure::ci95(&drops);
    Finding {
        claim: "in the metastable state attempted load is ≈3× and goodput −90 %, with no \
                recovery in 500 s"
            .into(),
        source: OSDI,
        // Holds when goodput collapsed and the attempted load was near 3x; a collapse with
        // another amplification holds only in part.
        verdict: match (drop, amp) {
            (Some(d), Some(a)) if d.mean >= 90.0 && (2.0..=4.0).contains(&a.mean) => Verdict::Holds,
            (Some(d), _) if d.mean >= 90.0 => Verdict::Depends,
            _ => Verdict::DoesNotHold,
        },
        evidence: format!(
            "Over the {} metastable cells of {profile}: attempts at payments per logical \
             request {} (the whole cell, end to end), goodput from {} s after the trigger to \
             the end {} below the baseline. None recovered within the {} s watched; 500 s were \
             not watched.",
            meta.len(),
            amp.map_or("n/a".into(), |i| show(&i, 2, "×")),
            sweep.settings.hold_s,
            drop.map_or("n/a".into(), |i| show(&i, 1, " %")),
            sweep.settings.observe_s
        ),
    }
}

/// How far below the baseline goodput the seconds from `hold` after the trigger to the end
/// were, in percent.
fn goodput_drop(c: &SweepCell, hold_s: f64) -> Option<f64> {
    let t = c.trial.as_ref()?;
    let w = t.fault_window?;
    let before: Vec<f64> = t
        .timeline
        .iter()
        .filter(|x| f64::from(x.second) + 1.0 <= w.start_s)
        .map(|x| x.succeeded as f64)
        .collect();
    let after: Vec<f64> = t
        .timeline
        .iter()
        .filter(|x| f64::from(x.second) >= w.end_s + hold_s)
        .map(|x| x.succeeded as f64)
        .collect();
    if before.is_empty() || after.is_empty() {
        return None;
    }
    let base = before.iter().sum::<f64>() / before.len() as f64;
    let late = after.iter().sum::<f64>() / after.len() as f64;
    (base > 0.0).then(|| (1.0 - late / base) * 100.0)
}

/// Along the trigger axis (length, or magnitude when `magnitude`), the pairs of neighbours
/// where one recovers and the next is metastable, per load.
fn axis_boundary(sweep: &Sweep, magnitude: bool) -> Finding {
    let (claim, varies) = if magnitude {
        (
            "a capacity cut of 78 % recovers where 80 % does not",
            sweep.settings.cuts.len() > 1,
        )
    } else {
        (
            "a 9 s trigger recovers where a 10 s one does not",
            sweep.settings.durations_s.len() > 1,
        )
    };
    let Some(profile) = subject(sweep).filter(|_| varies) else {
        return not_measured(claim, OSDI).with_evidence(if magnitude {
            "This sweep varies the trigger's length, not its magnitude (run frlab sweep \
             --trigger brownout:0.5..0.9 --duration 10s)."
        } else {
            "This sweep varies the trigger's magnitude, not its length."
        });
    };
    let rows = sweep.rows();
    let mut found = Vec::new();
    let mut all_meta_loads = Vec::new();
    for load in &sweep.settings.loads {
        let outcome = |row: (f64, f64)| {
            cells_of(sweep, profile)
                .into_iter()
                .find(|c| &c.load == load && (c.cut, c.duration_s) == row)
                .and_then(SweepCell::outcome)
        };
        let classes: Vec<Option<Outcome>> = rows.iter().map(|r| outcome(*r)).collect();
        for (i, pair) in classes.windows(2).enumerate() {
            if let [Some(a), Some(Outcome::Metastable)] = pair
                && *a != Outcome::Metastable
            {
                found.push(format!(
                    "at {}: {} {}, {} metastable",
                    load.label(),
                    row_name(sweep, rows[i]),
                    a.label(),
                    row_name(sweep, rows[i + 1])
                ));
            }
        }
        if classes.iter().all(|c| *c == Some(Outcome::Metastable)) {
            all_meta_loads.push(load.label());
        }
    }
    Finding {
        claim: claim.into(),
        source: OSDI,
        verdict: if found.is_empty() {
            Verdict::DoesNotHold
        } else {
            Verdict::Holds
        },
        evidence: if found.is_empty() {
            format!(
                "{profile}: no neighbouring pair of triggers where the smaller recovers and the \
                 larger is metastable.{}",
                if all_meta_loads.is_empty() {
                    String::new()
                } else {
                    format!(
                        " Metastable after every trigger of the grid at {} — even the \
                         smallest tips it.",
                        all_meta_loads.join(", ")
                    )
                }
            )
        } else {
            format!(
                "{profile}, a boundary between neighbouring triggers: {}.",
                found.join("; ")
            )
        },
    }
}

fn what_removes_it(sweep: &Sweep) -> Finding {
    let mut parts = Vec::new();
    let mut others_clear = Vec::new();
    for profile in &sweep.settings.profiles {
        let cells = cells_of(sweep, profile);
        let meta = cells.iter().filter(|c| is_meta(c)).count();
        if Some(profile.as_str()) != subject(sweep) {
            others_clear.push(meta == 0);
        }
        parts.push(format!(
            "{profile}: {meta} of {} cells metastable",
            cells.len()
        ));
    }
    Finding {
        claim: "retry budgets, adaptive limits, breakers and shedding keep a system out of \
                the metastable state"
            .into(),
        source: "the lab's question",
        verdict: Verdict::of(&others_clear),
        evidence: format!("Same grid, same seeds, per profile: {}.", parts.join("; ")),
    }
}

fn row_name(sweep: &Sweep, row: (f64, f64)) -> String {
    if sweep.settings.cuts.len() > 1 {
        format!("a {:.0} % cut", row.0 * 100.0)
    } else {
        format!("a {} s trigger", row.1)
    }
}

fn loads_list(sweep: &Sweep) -> String {
    sweep
        .settings
        .loads
        .iter()
        .map(|l| {
            l.fraction
                .map_or(format!("{} req/s", l.rps), |f| f.to_string())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn not_measured(claim: &str, source: &'static str) -> Finding {
    Finding {
        claim: claim.into(),
        source,
        verdict: Verdict::NotMeasured,
        evidence: "Nothing in this record speaks to it.".into(),
    }
}

impl Finding {
    fn with_evidence(mut self, evidence: &str) -> Finding {
        self.evidence = evidence.into();
        self
    }
}

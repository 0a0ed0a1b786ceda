//! The record of a metastability sweep (`frlab sweep`) and the files written from it:
//! `sweep.json` (the [`Sweep`], the only source of the rest), `sweep.md` (per profile a
//! table of outcomes over the grid, then what the grid shows), and one phase map per
//! profile, `phase-<profile>.svg`.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::calibration::Calibration;
use super::record::{Environment, LoadLevel, Trial};
use super::svg::{svg_document, xml};
use super::{ReportError, write_file};
use crate::experiment::PaymentsModel;
use crate::measure::{METASTABLE_GOODPUT, Outcome, RECOVERY_FRACTION, RECOVERY_WINDOWS};

pub const SWEEP_JSON: &str = "sweep.json";
pub const SWEEP_MD: &str = "sweep.md";

/// One sweep: a grid of (load x trigger) cells per profile.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub run_id: String,
    pub started_at: String,
    #[serde(default)]
    pub finished_at: Option<String>,
    pub finished: bool,
    pub command: String,
    pub environment: Environment,
    pub settings: SweepSettings,
    #[serde(default)]
    pub calibration: Option<Calibration>,
    pub cells: Vec<SweepCell>,
}

/// What every cell of the sweep shares, and the grid.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepSettings {
    pub profiles: Vec<String>,
    /// The grid's columns.
    pub loads: Vec<LoadLevel>,
    /// `brownout` (payments keeps `1 - cut` of its capacity) or `outage` (every charge
    /// refused).
    pub trigger: String,
    /// Share of payments' capacity the trigger removes, one row each when there are several
    /// (an outage removes 1.0).
    pub cuts: Vec<f64>,
    /// How long the trigger lasts, one row each when there are several.
    pub durations_s: Vec<f64>,
    pub warmup_s: f64,
    /// Healthy seconds before the trigger: the baseline.
    pub pre_s: f64,
    /// Seconds watched after the trigger ends.
    pub observe_s: f64,
    /// A collapse still there this long after the trigger ended, and to the end, is
    /// metastable.
    pub hold_s: f64,
    pub deadline_ms: u64,
    pub seed: u64,
    pub payments: PaymentsModel,
    /// The profiles' time constants (breaker open time) were multiplied by this.
    pub time_scale: f64,
    pub stack: String,
}

/// One cell: one profile at one load under one trigger.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SweepCell {
    pub profile: String,
    pub load: LoadLevel,
    pub cut: f64,
    pub duration_s: f64,
    /// Everything measured (its `outcome` is the cell's class); `None` when it failed.
    pub trial: Option<Trial>,
    /// Why the cell could not be measured.
    #[serde(default)]
    pub error: Option<String>,
}

impl SweepCell {
    pub fn outcome(&self) -> Option<Outcome> {
        self.trial.as_ref().and_then(|t| t.outcome)
    }
}

impl Sweep {
    /// The grid's rows: `(cut, duration)` pairs in order (one axis varies).
    pub fn rows(&self) -> Vec<(f64, f64)> {
        let s = &self.settings;
        let mut rows = Vec::new();
        for &cut in &s.cuts {
            for &d in &s.durations_s {
                rows.push((cut, d));
            }
        }
        rows
    }

    fn cell(&self, profile: &str, load: &LoadLevel, row: (f64, f64)) -> Option<&SweepCell> {
        self.cells.iter().find(|c| {
            c.profile == profile && &c.load == load && c.cut == row.0 && c.duration_s == row.1
        })
    }

    /// How a row is named: the varying axis (trigger length, or the cut).
    fn row_label(&self, row: (f64, f64)) -> String {
        if self.settings.cuts.len() > 1 {
            format!("cut {:.0} %", row.0 * 100.0)
        } else {
            format!("{} s", row.1)
        }
    }

    fn trigger_label(&self) -> String {
        let s = &self.settings;
        match (
            s.trigger.as_str(),
            s.cuts.as_slice(),
            s.durations_s.as_slice(),
        ) {
            ("outage", _, _) => "payments outage (every charge refused)".into(),
            (_, [cut], _) => format!(
                "payments brownout: {:.0} % of its capacity removed (it keeps {:.0} %)",
                cut * 100.0,
                (1.0 - cut) * 100.0
            ),
            (_, _, [d]) => format!("payments brownout for {d} s, of several magnitudes"),
            _ => s.trigger.clone(),
        }
    }
}

/// Writes `sweep.json`, `sweep.md` and the phase maps into `dir`.
pub fn write_sweep(sweep: &Sweep, dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(SWEEP_JSON);
    let json = serde_json::to_string_pretty(sweep).map_err(|source| ReportError::Invalid {
        path: path.clone(),
        source,
    })?;
    write_file(&path, &(json + "\n"))?;
    for profile in &sweep.settings.profiles {
        write_file(
            &dir.join(phase_map_name(profile)),
            &phase_map(sweep, profile),
        )?;
    }
    write_file(&dir.join(SWEEP_MD), &markdown(sweep))
}

/// Reads `dir/sweep.json` and rewrites `sweep.md` and the phase maps.
pub fn rebuild_sweep(dir: &Path) -> Result<(), ReportError> {
    let path = dir.join(SWEEP_JSON);
    let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Read {
        path: path.clone(),
        source,
    })?;
    let sweep: Sweep =
        serde_json::from_str(&text).map_err(|source| ReportError::Invalid { path, source })?;
    write_sweep(&sweep, dir)
}

pub fn phase_map_name(profile: &str) -> String {
    let safe: String = profile
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("phase-{safe}.svg")
}

/// `sweep.md`.
pub fn markdown(sweep: &Sweep) -> String {
    let mut o = String::new();
    let s = &sweep.settings;
    let _ = writeln!(o, "# Failure Recovery Lab — sweep {}\n", sweep.run_id);
    let expected = s.profiles.len() * s.loads.len() * sweep.rows().len();
    if sweep.finished {
        let _ = writeln!(o, "**Status: FINISHED** ({} cells).\n", sweep.cells.len());
    } else {
        let _ = writeln!(
            o,
            "> **Status: this sweep did NOT finish.** It holds {} of {} cells.\n",
            sweep.cells.len(),
            expected
        );
    }
    let env = &sweep.environment;
    let _ = writeln!(o, "## How it was run\n");
    let _ = writeln!(o, "- Command: `{}`", sweep.command);
    let _ = writeln!(
        o,
        "- Commit: `{}`{}",
        env.commit,
        if env.dirty == Some(true) {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        o,
        "- Started {}, finished {}",
        sweep.started_at,
        sweep.finished_at.as_deref().unwrap_or("—")
    );
    let _ = writeln!(
        o,
        "- Machine: {} cores, {} MiB; stack: {}",
        env.machine.cores, env.machine.memory_mib, s.stack
    );
    let _ = writeln!(o, "- Payments: {}", s.payments.describe());
    let _ = writeln!(o, "- Trigger: {}", sweep.trigger_label());
    let _ = writeln!(
        o,
        "- Each cell: a fresh stack, warm-up {} s, {} s of healthy load (the baseline), the \
         trigger, then {} s watched with the offered load unchanged; client deadline {} ms; \
         seed {} for every cell",
        s.warmup_s, s.pre_s, s.observe_s, s.deadline_ms, s.seed
    );
    let _ = writeln!(
        o,
        "- Time constants: breaker open time multiplied by {} ({} s instead of 30 s)",
        s.time_scale,
        30.0 * s.time_scale
    );
    let _ = writeln!(
        o,
        "\n**Outcomes.** *stable*: no second after the trigger began fell below {:.0} % of the \
         baseline success rate. *recovered N s*: {RECOVERY_WINDOWS} healthy seconds in a row \
         began N s after the trigger ended (MTTR). *METASTABLE*: from {} s after the trigger \
         ended to the end of the cell, every second's goodput stayed below {:.0} % of the \
         baseline goodput — the trigger was gone and the offered load unchanged. *did not \
         recover*: none of these within the {} s watched.",
        RECOVERY_FRACTION * 100.0,
        s.hold_s,
        METASTABLE_GOODPUT * 100.0,
        s.observe_s
    );
    if let Some(c) = &sweep.calibration {
        o.push('\n');
        o.push_str(&c.markdown("##"));
    }
    for profile in &s.profiles {
        profile_table(sweep, profile, &mut o);
    }
    let _ = writeln!(o, "\n## What the grid shows\n");
    for line in boundaries(sweep) {
        let _ = writeln!(o, "- {line}");
    }
    o.push('\n');
    o.push_str(&super::findings::markdown(
        "##",
        &super::findings::for_sweep(sweep),
    ));
    let failed: Vec<&SweepCell> = sweep.cells.iter().filter(|c| c.error.is_some()).collect();
    if !failed.is_empty() {
        let _ = writeln!(o, "\n**Cells that could not be measured:**\n");
        for c in failed {
            let _ = writeln!(
                o,
                "- {} at {}, {}: {}",
                c.profile,
                c.load.label(),
                sweep.row_label((c.cut, c.duration_s)),
                c.error.as_deref().unwrap_or_default().replace('\n', " ")
            );
        }
    }
    o
}

fn profile_table(sweep: &Sweep, profile: &str, o: &mut String) {
    let s = &sweep.settings;
    let _ = writeln!(o, "\n## `{profile}`\n");
    let _ = writeln!(
        o,
        "Rows: {}; columns: offered load. Each entry: outcome, then the worst second's goodput \
         and the end-to-end amplification at payments over the cell.\n",
        if s.cuts.len() > 1 {
            "share of payments' capacity removed"
        } else {
            "how long the trigger lasted"
        }
    );
    let head: Vec<String> = s.loads.iter().map(LoadLevel::label).collect();
    let _ = writeln!(o, "| | {} |", head.join(" | "));
    let _ = writeln!(o, "|---|{}", "---|".repeat(head.len()));
    for row in sweep.rows() {
        let entries: Vec<String> = s
            .loads
            .iter()
            .map(|load| match sweep.cell(profile, load, row) {
                None => "not run".into(),
                Some(c) => match (&c.trial, c.outcome()) {
                    (Some(t), Some(outcome)) => {
                        let worst = t
                            .fault_window
                            .map(|w| {
                                t.timeline
                                    .iter()
                                    .filter(|x| f64::from(x.second) >= w.start_s)
                                    .map(|x| x.succeeded)
                                    .min()
                                    .unwrap_or(0)
                            })
                            .unwrap_or(0);
                        let amp = t
                            .amplification
                            .end_to_end
                            .map_or("n/a".into(), |a| format!("{a:.2}×"));
                        format!("{} ({worst}/s, {amp})", outcome.label())
                    }
                    (Some(_), None) => "no baseline".into(),
                    (None, _) => "failed".into(),
                },
            })
            .collect();
        let _ = writeln!(o, "| {} | {} |", sweep.row_label(row), entries.join(" | "));
    }
    let _ = writeln!(o, "\n![{profile}: phase map]({})", phase_map_name(profile));
}

/// Per profile, in words: where metastable cells begin, along each row of the grid.
pub fn boundaries(sweep: &Sweep) -> Vec<String> {
    let s = &sweep.settings;
    let mut lines = Vec::new();
    for profile in &s.profiles {
        let cells: Vec<&SweepCell> = sweep
            .cells
            .iter()
            .filter(|c| &c.profile == profile && c.trial.is_some())
            .collect();
        let count = |class: &str| {
            cells
                .iter()
                .filter(|c| c.outcome().is_some_and(|o| o.class() == class))
                .count()
        };
        let meta = count("metastable");
        let mut line = format!(
            "`{profile}`: {} cells measured — {} stable, {} recovered, {meta} metastable, {} \
             did not recover.",
            cells.len(),
            count("stable"),
            count("recovered"),
            count("did not recover")
        );
        if meta > 0 {
            let mut firsts = Vec::new();
            for row in sweep.rows() {
                let first = s.loads.iter().find(|l| {
                    sweep
                        .cell(profile, l, row)
                        .and_then(SweepCell::outcome)
                        .is_some_and(|o| o == Outcome::Metastable)
                });
                if let Some(l) = first {
                    firsts.push(format!("{}: from {}", sweep.row_label(row), l.label()));
                }
            }
            let _ = write!(
                line,
                " Metastable from the lowest load up: {}.",
                firsts.join("; ")
            );
        } else {
            line.push_str(" No cell was metastable.");
        }
        lines.push(line);
    }
    lines
}

/// Colour and text colour of an outcome on the map.
fn outcome_fill(outcome: Option<Outcome>) -> (&'static str, &'static str) {
    match outcome {
        Some(Outcome::Stable) => ("#2ca02c", "#ffffff"),
        Some(Outcome::Recovered { .. }) => ("#a6d96a", "#000000"),
        Some(Outcome::DidNotRecover) => ("#fdae61", "#000000"),
        Some(Outcome::Metastable) => ("#d7191c", "#ffffff"),
        None => ("#bdbdbd", "#000000"),
    }
}

/// The phase map of one profile: one square per cell, load across, the trigger down.
pub fn phase_map(sweep: &Sweep, profile: &str) -> String {
    let s = &sweep.settings;
    let rows = sweep.rows();
    let (cell_w, cell_h) = (110.0, 44.0);
    let (left, top) = (110.0, 64.0);
    let width = left + cell_w * s.loads.len().max(1) as f64 + 20.0;
    let height = top + cell_h * rows.len().max(1) as f64 + 70.0;
    let title = format!("{profile}: {}", sweep.trigger_label());
    let mut o = svg_document(&title, width, height, width / 2.0);
    let _ = writeln!(
        o,
        "<text x=\"{:.1}\" y=\"44\" text-anchor=\"middle\">offered load</text>",
        left + cell_w * s.loads.len() as f64 / 2.0
    );
    let mid = top + cell_h * rows.len() as f64 / 2.0;
    let _ = writeln!(
        o,
        "<text x=\"16\" y=\"{mid:.1}\" text-anchor=\"middle\" transform=\"rotate(-90 16 \
         {mid:.1})\">{}</text>",
        if s.cuts.len() > 1 {
            "capacity removed"
        } else {
            "trigger length"
        }
    );
    for (i, load) in s.loads.iter().enumerate() {
        let x = left + cell_w * (i as f64 + 0.5);
        let label = match load.fraction {
            Some(f) => format!("{f} × knee"),
            None => format!("{:.0} req/s", load.rps),
        };
        let _ = writeln!(
            o,
            "<text x=\"{x:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            top - 6.0,
            xml(&label)
        );
    }
    for (j, row) in rows.iter().enumerate() {
        let y = top + cell_h * j as f64;
        let _ = writeln!(
            o,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            left - 8.0,
            y + cell_h / 2.0 + 4.0,
            xml(&sweep.row_label(*row))
        );
        for (i, load) in s.loads.iter().enumerate() {
            let x = left + cell_w * i as f64;
            let outcome = sweep.cell(profile, load, *row).and_then(SweepCell::outcome);
            let measured = sweep.cell(profile, load, *row).is_some();
            let (fill, ink) = outcome_fill(outcome);
            let text = match (measured, outcome) {
                (false, _) => "not run".to_string(),
                (true, None) => "failed".to_string(),
                (true, Some(o)) => o.label(),
            };
            let _ = writeln!(
                o,
                "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" \
                 stroke=\"#ffffff\" stroke-width=\"2\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{ink}\">{}</text>",
                cell_w,
                cell_h,
                x + cell_w / 2.0,
                y + cell_h / 2.0 + 4.0,
                xml(&text)
            );
        }
    }
    let legend_y = top + cell_h * rows.len() as f64 + 30.0;
    let entries = [
        (Some(Outcome::Stable), "stable"),
        (Some(Outcome::Recovered { seconds: 0.0 }), "recovered"),
        (Some(Outcome::DidNotRecover), "did not recover"),
        (Some(Outcome::Metastable), "metastable"),
    ];
    for (i, (outcome, name)) in entries.iter().enumerate() {
        let x = 20.0 + i as f64 * 130.0;
        let (fill, _) = outcome_fill(*outcome);
        let _ = writeln!(
            o,
            "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"14\" height=\"10\" fill=\"{fill}\"/>\n\
             <text x=\"{:.1}\" y=\"{legend_y:.1}\">{name}</text>",
            legend_y - 9.0,
            x + 20.0
        );
    }
    let _ = writeln!(
        o,
        "<text x=\"20\" y=\"{:.1}\" font-size=\"11\">{}</text>\n</svg>",
        legend_y + 24.0,
        xml(&format!(
            "{} s healthy, the trigger, {} s watched; metastable = goodput < {:.0} % of baseline \
             from {} s after the trigger to the end",
            s.pre_s,
            s.observe_s,
            METASTABLE_GOODPUT * 100.0,
            s.hold_s
        ))
    );
    o
}

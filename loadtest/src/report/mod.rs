//! What an experiment run records and the files written from it.
//!
//! [`Run`] is the whole record: how it was run ([`Environment`], [`Settings`]) and, per
//! profile × scenario [`Cell`], every [`Trial`]'s numbers. [`write_all`] writes it to a
//! run directory:
//!
//! | file | content |
//! |---|---|
//! | `results.json` | the [`Run`], the only source of everything else |
//! | `results.csv` | one row per trial, every metric, a header row |
//! | `report.md` | environment, then per scenario a table of mean ± 95 % CI per profile |
//! | `<scenario>-success.svg` | success rate over time per profile, fault window shaded |
//! | `<scenario>-p95.svg` | p95 latency over time per profile |
//! | `<scenario>-amplification.svg` | retry amplification per hop (grouped bars) |
//! | `<scenario>-recovery.svg` | recovery time per profile; "did not recover" hatched |
//!
//! [`rebuild`] rewrites everything but `results.json` from it (`frlab report <dir>`). No
//! number in a report is typed by hand: each comes from `results.json`.
//!
//! Layout: [`record`] (the data model), [`environment`] (machine, commit, timestamps),
//! `summary` (a cell's trials as mean ± 95 % interval), `csv`, `markdown` (one function
//! per table), `svg` (the chart library) and `charts` (the charts of a run). The report
//! reads `crate::measure` and the record only, never the experiment that produced it.

pub mod calibration;
mod charts;
mod csv;
pub mod environment;
pub mod findings;
mod markdown;
pub mod record;
mod summary;
mod svg;
pub mod sweep;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

pub use crate::measure::{Rejections, Window};
pub use calibration::{CALIBRATION_JSON, Calibration, read_calibration};
pub use environment::{
    cpu_model, fnv1a64_hex, git_commit, mem_total_mib, os_release_name, utc_timestamp,
};
pub use record::{
    Breaker, Cell, Environment, FailedTrial, FaultWindow, Generator, Latency, LoadLevel, Machine,
    Run, Settings, Trial,
};

pub const RESULTS_JSON: &str = "results.json";
pub const RESULTS_CSV: &str = "results.csv";
pub const REPORT_MD: &str = "report.md";

/// A report file that could not be read or written; each names its file.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{} is not a valid results file: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `results/<prefix><UTC time as YYYYMMDDhhmmss>`: where a run goes unless told otherwise.
pub fn default_run_dir(prefix: &str) -> PathBuf {
    let stamp: String = utc_timestamp(std::time::SystemTime::now())
        .chars()
        .filter(|c| c.is_ascii_digit())
        .take(14)
        .collect();
    PathBuf::from("results").join(format!("{prefix}{stamp}"))
}

/// Writes `results.json`, then everything derived from it, into `dir` (created if
/// needed). Each file is written to a temporary name and renamed, so a reader never sees
/// half a file; the runner may call this after every cell with `finished: false`.
///
/// The derived files are built from the JSON text just written, read back, so that
/// [`rebuild`] reproduces them byte for byte.
pub fn write_all(run: &Run, dir: &Path) -> Result<(), ReportError> {
    std::fs::create_dir_all(dir).map_err(|source| ReportError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    let path = dir.join(RESULTS_JSON);
    let json = serde_json::to_string_pretty(run).map_err(|source| ReportError::Invalid {
        path: path.clone(),
        source,
    })?;
    write_file(&path, &(json.clone() + "\n"))?;
    let reread: Run =
        serde_json::from_str(&json).map_err(|source| ReportError::Invalid { path, source })?;
    write_derived(&reread, dir)
}

/// Reads `dir/results.json` and rewrites `results.csv`, `report.md` and the charts.
pub fn rebuild(dir: &Path) -> Result<(), ReportError> {
    let run = read_run(dir)?;
    write_derived(&run, dir)
}

/// The [`Run`] in `dir/results.json`.
pub fn read_run(dir: &Path) -> Result<Run, ReportError> {
    let path = dir.join(RESULTS_JSON);
    let text = std::fs::read_to_string(&path).map_err(|source| ReportError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| ReportError::Invalid { path, source })
}

fn write_derived(run: &Run, dir: &Path) -> Result<(), ReportError> {
    write_file(&dir.join(RESULTS_CSV), &csv::csv(run))?;
    for (name, svg) in charts::charts(run) {
        write_file(&dir.join(name), &svg)?;
    }
    write_file(&dir.join(REPORT_MD), &markdown::markdown(run))
}

pub(crate) fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    let err = |source| ReportError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

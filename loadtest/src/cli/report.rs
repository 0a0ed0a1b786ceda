//! `frlab report DIR`: rebuild a run's results.csv, report.md and charts from its
//! results.json, or a sweep's sweep.md and phase maps from its sweep.json.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

use crate::report::sweep::{SWEEP_JSON, SWEEP_MD, rebuild_sweep};

/// Runs `frlab report`.
pub fn run(dir: &Path) -> Result<ExitCode> {
    if dir.join(SWEEP_JSON).is_file() {
        rebuild_sweep(dir)?;
        println!("rebuilt {}", dir.join(SWEEP_MD).display());
    } else {
        crate::report::rebuild(dir)?;
        println!("rebuilt {}", dir.join("report.md").display());
    }
    Ok(ExitCode::SUCCESS)
}

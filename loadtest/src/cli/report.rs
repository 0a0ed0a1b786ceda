//! `frlab report DIR`: rebuild a run's results.csv, report.md and charts from its
//! results.json.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Result;

/// Runs `frlab report`.
pub fn run(dir: &Path) -> Result<ExitCode> {
    crate::report::rebuild(dir)?;
    println!("rebuilt {}", dir.join("report.md").display());
    Ok(ExitCode::SUCCESS)
}

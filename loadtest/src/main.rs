//! The `frlab` binary: parse the command line, run it, turn errors into exit status 1.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    // Children are spawned from this (the main) thread, which lives as long as any stack:
    // their PR_SET_PDEATHSIG is tied to it.
    match frlab::cli::run(frlab::cli::Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

//! `frlab`, the Failure Recovery Lab CLI, as a library so tests and the experiment runner
//! can drive the same code.
//!
//! - [`stack`]: starts the five service binaries as local processes
//!   ([`stack::LocalStack`]), kills and restarts them, stops them in order.
//! - [`client`]: the gRPC calls the commands make (PlaceOrder, Audit snapshots) and how
//!   their answers are printed.
//! - [`console`]: `frlab console`, the live web console (SSE snapshots, controls, request log).
//! - [`chaos`]: `frlab chaos apply|clear|ls` through the services' admin ports.
//! - [`profile`]: `frlab profile check|show|list`.
//! - [`load`]: the open-loop load generator (`frlab load`): PlaceOrder on a fixed
//!   schedule, latency from each request's intended send time, HDR percentiles.
//! - [`metrics`]: the experiment's numbers from scrapes, audits and timelines (retry
//!   amplification, duplicates, lost events, recovery time, 95 % intervals); pure functions.
//! - [`report`]: the run record ([`report::Run`]) and the files written from it
//!   (results.json, results.csv, report.md, SVG charts); `frlab report` rebuilds them.
//! - [`experiment`]: `frlab experiment`: profiles x scenarios x trials, one fresh stack per trial.
//! - [`cli`]: the clap command line (`frlab up`, `frlab order`, `frlab run-sample`) and
//!   one function per command; `main.rs` only parses and calls [`cli::run`].

pub mod chaos;
pub mod cli;
pub mod client;
pub mod console;
pub mod experiment;
pub mod load;
pub mod metrics;
pub mod profile;
pub mod report;
pub mod stack;

//! `frlab`, the Failure Recovery Lab CLI, as a library so tests and the experiment runner
//! can drive the same code. Imports run one way, top to bottom:
//!
//! ```text
//! cli -> experiment, console -> load, observe, measure, report, stack
//!                                report -> measure;  measure -> observe (its Sample type)
//! ```
//!
//! - [`cli`]: the clap command line, one file per command (its flags and what it prints);
//!   `main.rs` only parses and calls [`cli::run`]. Nothing imports it.
//! - [`stack`]: starts the five service binaries as local processes
//!   ([`stack::LocalStack`]), kills and restarts them, stops them in order; [`stack::file`]
//!   is the stack file `frlab up` writes and `frlab chaos` / `frlab console` read.
//! - [`observe`]: reading the services — the Prometheus text parser, one scrape of a side
//!   port, the gRPC calls (PlaceOrder, Audit snapshots) and the faults-admin client.
//! - [`load`]: the open-loop load generator: PlaceOrder on a fixed schedule, latency from
//!   each request's intended send time, HDR percentiles.
//! - [`measure`]: the DESIGN.md metric definitions as pure functions (retry amplification,
//!   duplicates, lost events, the timeline, recovery time, 95 % intervals).
//! - [`report`]: the run record ([`report::Run`]) and the files written from it
//!   (results.json, results.csv, report.md, SVG charts); `frlab report` rebuilds them.
//! - [`experiment`]: profiles x scenarios x trials, one fresh stack per trial: the plan,
//!   one trial, the run loop.
//! - [`console`]: the live web console (SSE snapshots, controls, request log), built on
//!   `observe`, `stack::file` and `load`.

pub mod cli;
pub mod console;
pub mod experiment;
pub mod load;
pub mod measure;
pub mod observe;
pub mod report;
pub mod stack;

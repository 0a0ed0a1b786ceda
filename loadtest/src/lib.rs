//! `frlab`, the Failure Recovery Lab CLI, as a library so tests and the experiment runner
//! can drive the same code.
//!
//! - [`stack`]: starts the five service binaries as local processes
//!   ([`stack::LocalStack`]), kills and restarts them, stops them in order.
//! - [`client`]: the gRPC calls the commands make (PlaceOrder, Audit snapshots) and how
//!   their answers are printed.
//! - [`chaos`]: `frlab chaos apply|clear|ls` through the services' admin ports.
//! - [`profile`]: `frlab profile check|show|list`.
//! - [`cli`]: the clap command line (`frlab up`, `frlab order`, `frlab run-sample`) and
//!   one function per command; `main.rs` only parses and calls [`cli::run`].

pub mod chaos;
pub mod cli;
pub mod client;
pub mod profile;
pub mod stack;

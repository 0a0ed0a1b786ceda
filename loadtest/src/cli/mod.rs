//! The `frlab` command line: the clap types, one file per command (its flags and what it
//! prints), each calling into the modules below; `main.rs` only parses and calls [`run`].
//! Nothing else in the crate imports this module.

pub mod calibrate;
pub mod chaos;
pub mod console;
pub mod experiment;
pub mod load;
pub mod order;
pub mod profile;
pub mod report;
pub mod run_sample;
pub mod sweep;
pub mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use crate::stack::{DEFAULT_HTTP_BASE_PORT, LocalStack, StackOptions, StopOutcome};

pub use order::parse_item;

#[derive(Debug, Parser)]
#[command(
    name = "frlab",
    version,
    about = "Failure Recovery Lab: run the five-service order system locally and measure \
             how resilience patterns behave under faults",
    after_help = "Service binaries are looked up in --bin-dir, else $FRLAB_BIN_DIR, else next \
                  to frlab (build them with `cargo build --workspace`). Log verbosity: RUST_LOG."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start gateway, orders, payments, inventory and notifications locally; stop them on
    /// ctrl-c or SIGTERM
    #[command(
        long_about = "Start gateway, orders, payments, inventory and notifications as \
        local processes on 127.0.0.1 (SQLite under --data-dir, idempotency keys in memory \
        unless --database-url / --redis-url say otherwise), print their endpoints, and keep \
        them running until ctrl-c or SIGTERM; then stop them gateway first, each draining its \
        in-flight calls. If a service dies on its own, frlab reports it, stops the others and \
        exits non-zero. Service logs go to <data-dir>/logs/<service>.log."
    )]
    Up(up::UpArgs),
    /// Place one order through the gateway and print the outcome
    #[command(
        long_about = "Place one order through the gateway (shop.v1.Gateway/PlaceOrder) \
        and print the order id, status, total and latency.\n\nExit status: 0 when the order is \
        CONFIRMED, 3 when the gateway answered with an order that is not (e.g. FAILED), 1 on \
        an error (the gRPC code and message are printed)."
    )]
    Order(order::OrderArgs),
    /// Start the stack, place one sample order, print it and the audit counters, stop
    /// (what `make run` calls)
    #[command(
        long_about = "Start the stack (ephemeral ports unless --base-port is given), \
        place one sample order, print it and every service's lab.v1.Audit counters, then stop \
        the stack cleanly. Exits non-zero unless the order ended CONFIRMED and every service \
        stopped cleanly. Without --data-dir the data goes to a fresh temporary directory, \
        removed after a successful run and kept (with the logs) after a failed one."
    )]
    RunSample(run_sample::SampleArgs),
    /// Validate a resilience profile, or show the stack it builds on every hop
    Profile(profile::ProfileArgs),
    /// Apply, clear or list faults (FaultInjection documents) on a running local stack
    Chaos(chaos::ChaosArgs),
    /// Measure the system's capacity: an open-loop ramp on a fresh stack finds the knee
    /// (the highest rate it sustains within the SLO) and which resource binds there
    #[command(
        long_about = "Measure the system's capacity. An open-loop ramp against a fresh \
        stack (profile a-baseline unless --profile) offers one rate per step, starting at half \
        of what the payments model promises and climbing 12 % per step until a step fails \
        (under 99 % of requests OK within the deadline, or p99 over --slo-p99-ms), then \
        halving the gap twice. The knee is the highest rate that passed. During each step \
        payments' slots and queue are sampled and every process's CPU time is read, so the \
        report says which resource bound the rate: payments (the modelled bottleneck) or the \
        machine's CPU (then the lab would measure itself; lower --payments-slots). Takes \
        about a minute.\n\nExit status: 0 when payments set the knee, 1 otherwise."
    )]
    Calibrate(calibrate::CalibrateArgs),
    /// Run resilience profiles x fault scenarios x trials on local stacks and write a
    /// report of what was measured (results/<run-id>/)
    Experiment(experiment::ExperimentArgs),
    /// The metastability sweep: a grid of load x trigger cells per profile, each classified
    /// stable / recovered / metastable / did not recover, with a phase map per profile
    #[command(long_about = sweep::LONG_ABOUT)]
    Sweep(sweep::SweepArgs),
    /// Rebuild a run's results.csv, report.md and charts from its results.json (or a
    /// sweep's sweep.md and phase maps from its sweep.json)
    Report {
        /// The run's directory, e.g. results/20261127190500
        dir: PathBuf,
    },
    /// Serve the live web console of a running stack (http://127.0.0.1:8080): services,
    /// breakers, totals, controls to send orders and inject faults, a request log
    #[command(
        long_about = "Serve the live web console of a running stack: the five \
        services and the edges between them with each circuit breaker's state machine, \
        bulkhead use and retries per second; live totals and sparklines; controls to send \
        orders (one, a burst, a steady load) and to inject or clear faults on payments and \
        inventory; the log of the console's last orders. It reads the endpoints from \
        --stack (written by `frlab up`; `frlab up` also starts a console itself) and polls \
        every service's /state and /metrics twice a second. The page is built into the \
        binary and works offline. Prints `console listening on URL` once it listens."
    )]
    Console(console::ConsoleArgs),
    /// Drive PlaceOrder with an open-loop schedule and report success rate, goodput and
    /// latency (from each request's intended send time)
    #[command(long_about = load::LONG_ABOUT)]
    Load(load::LoadArgs),
}

/// Flags shared by the commands that start the stack.
#[derive(Debug, Args)]
pub struct StackArgs {
    /// Resilience profile: a built-in name (a-baseline … g-adaptive, see `frlab profile
    /// list`) or a YAML file, passed to every service [default: f-full]
    #[arg(long, value_name = "NAME|FILE", env = "FRLAB_PROFILE")]
    pub profile: Option<String>,
    /// Postgres URL (postgres://user:pass@host/db) instead of SQLite files; each service
    /// uses its own schema
    #[arg(long, value_name = "URL", env = "FRLAB_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Redis URL (redis://host:6379) for idempotency keys instead of memory
    #[arg(long, value_name = "URL", env = "FRLAB_REDIS_URL")]
    pub redis_url: Option<String>,
    /// gRPC port of the gateway; orders, inventory, payments, notifications take the next
    /// four. 0 makes every port, HTTP included, ephemeral. [default: 50051 for `up`,
    /// 0 for `run-sample`]
    #[arg(long, value_name = "PORT")]
    pub base_port: Option<u16>,
    /// HTTP side port (/metrics, /state) of the gateway; the others take the next four in
    /// the same order. Ignored with --base-port 0
    #[arg(long, value_name = "PORT", default_value_t = DEFAULT_HTTP_BASE_PORT)]
    pub http_base_port: u16,
    /// Directory holding the service binaries [default: $FRLAB_BIN_DIR, else next to frlab]
    #[arg(long, value_name = "DIR")]
    pub bin_dir: Option<PathBuf>,
}

impl StackArgs {
    /// The stack options these flags describe. A bad profile is refused here, naming the
    /// key, before any service starts.
    fn options(&self, data_dir: &Path, default_base_port: u16) -> Result<StackOptions> {
        if let Some(profile) = &self.profile {
            lab_resilience::profiles::resolve(profile)?;
        }
        let base_port = self.base_port.unwrap_or(default_base_port);
        let mut opts = StackOptions::new(data_dir);
        opts.bin_dir = self.bin_dir.clone();
        opts.database_url = self.database_url.clone();
        opts.redis_url = self.redis_url.clone();
        opts.profile = self.profile.clone();
        opts.ephemeral_ports = base_port == 0;
        opts.grpc_base_port = base_port;
        opts.http_base_port = self.http_base_port;
        opts.log_dir = Some(data_dir.join("logs"));
        Ok(opts)
    }
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up::run(args).await,
        Command::Order(args) => order::run(args).await,
        Command::RunSample(args) => run_sample::run(args).await,
        Command::Profile(args) => Ok(profile::run(args)),
        Command::Chaos(args) => chaos::run(args).await,
        Command::Calibrate(args) => calibrate::run(args).await,
        Command::Experiment(args) => experiment::run(args).await,
        Command::Sweep(args) => sweep::run(args).await,
        Command::Report { dir } => report::run(&dir),
        Command::Load(args) => load::run(args).await,
        Command::Console(args) => console::run(args).await,
    }
}

/// The endpoints table `up` and `run-sample` print.
fn print_endpoints(stack: &LocalStack) {
    println!(
        "\n{:<14} {:<22} {:<22} metrics",
        "service", "gRPC", "admin (faults)"
    );
    for ep in stack.endpoints() {
        let admin = ep.admin.map_or_else(|| "-".to_string(), |a| a.to_string());
        println!(
            "{:<14} {:<22} {:<22} {}",
            ep.service,
            ep.grpc,
            admin,
            ep.metrics_url()
        );
    }
}

/// Prints how each service stopped; true when all stopped cleanly.
fn print_stopped(outcomes: &[StopOutcome]) -> bool {
    for outcome in outcomes {
        println!("  {outcome}");
    }
    outcomes.iter().all(StopOutcome::is_clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn base_port_zero_means_ephemeral() {
        let cli = Cli::try_parse_from(["frlab", "up", "--base-port", "0"]).unwrap();
        let Command::Up(args) = cli.command else {
            panic!("not up");
        };
        let opts = args.stack.options(&args.data_dir, 50051).unwrap();
        assert!(opts.ephemeral_ports);
        assert_eq!(opts.log_dir, Some(PathBuf::from("./data/logs")));
        let cli = Cli::try_parse_from(["frlab", "run-sample"]).unwrap();
        let Command::RunSample(args) = cli.command else {
            panic!("not run-sample");
        };
        assert!(
            args.stack
                .options(Path::new("d"), 0)
                .unwrap()
                .ephemeral_ports
        );
    }

    #[test]
    fn a_bad_profile_is_refused_before_starting() {
        let cli = Cli::try_parse_from(["frlab", "up", "--profile", "no-such"]).unwrap();
        let Command::Up(args) = cli.command else {
            panic!("not up");
        };
        let err = args
            .stack
            .options(&args.data_dir, 50051)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such") && err.contains("f-full"), "{err}");
    }
}

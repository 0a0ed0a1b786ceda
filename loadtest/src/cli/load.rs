//! `frlab load`: flags, the once-a-second progress line, and the printed report.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use clap::builder::TypedValueParser as _;
use clap::{ArgGroup, Args};
use lab_proto::shop::v1::LineItem;

use crate::load::{Call, DEFAULT_CONNECTIONS, DEFAULT_MAX_IN_FLIGHT, LoadConfig, Schedule};

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("load").required(true).args(["rate", "schedule"])))]
pub struct LoadArgs {
    /// Gateway gRPC URL
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:50051")]
    pub gateway: String,
    /// What each request calls: place-order (the workload) or health (the gateway's
    /// grpc.health.v1 Check, almost free for the server: measures the generator itself)
    #[arg(long, value_enum, default_value_t = Call::PlaceOrder)]
    pub call: Call,
    /// Constant arrival rate in requests per second (same as --schedule constant:RPS)
    #[arg(long, value_name = "RPS", value_parser = parse_rate)]
    pub rate: Option<f64>,
    /// Arrival schedule: constant:RPS, ramp:FROM-TO (linear over the run) or
    /// spike:BASE-PEAK@AT+LENGTH, e.g. spike:50-500@10s+5s
    #[arg(long, value_name = "SPEC", value_parser = parse_schedule)]
    pub schedule: Option<Schedule>,
    /// How long the schedule runs (500ms, 10s, 2m); answers still due are awaited after
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_run_duration)]
    pub duration: Duration,
    /// Client deadline per logical request in milliseconds, covering all its attempts;
    /// sent as grpc-timeout too
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    pub deadline_ms: u64,
    /// Extra immediate attempts after a failed one, with the same idempotency key, within
    /// the deadline (the retry_storm scenario uses 3)
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=100))]
    pub client_retries: u32,
    /// Seed of the random line items
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Idempotency keys are PREFIX-0, PREFIX-1, ...; give one to replay a run's exact keys
    /// [default: load-<random>, so runs against the same stack never share keys]
    #[arg(long, value_name = "PREFIX")]
    pub key_prefix: Option<String>,
    /// Requests waiting for an answer at most; requests due over it are dropped and
    /// counted (the generator is then reported saturated), never sent late
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_IN_FLIGHT,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000).map(|n| n as usize))]
    pub max_in_flight: usize,
    /// HTTP/2 connections to the gateway, used in turn (one connection's framing task
    /// caps its rate at a few thousand calls/s on a small machine)
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CONNECTIONS,
          value_parser = clap::value_parser!(u64).range(1..=256).map(|n| n as usize))]
    pub connections: usize,
    /// A line item of every order, as PRODUCT:QUANTITY; repeat for more
    /// [default: 1 to 3 random items of sku-1..sku-9 per order, drawn from --seed]
    #[arg(long = "item", value_name = "PRODUCT:QTY", value_parser = crate::cli::parse_item)]
    pub items: Vec<LineItem>,
    /// Print the report as JSON (and no progress line)
    #[arg(long)]
    pub json: bool,
}

/// The `long_about` of `frlab load`.
pub const LONG_ABOUT: &str = "Drive shop.v1.Gateway/PlaceOrder with an open-loop schedule and \
report success rate, goodput and latency.\n\nOpen loop: each logical request (one idempotency \
key) has an intended send time fixed by the schedule, and is sent then whether or not earlier \
requests were answered. Latency is measured from that intended time to the final answer, so \
it includes any wait caused by the system falling behind (no coordinated omission). Success \
means OK within the client deadline. The report also gives the generator's own send lag and \
CPU time, and warns when the generator could not keep up (lag p99 above 10 ms, or requests \
dropped at --max-in-flight).\n\nA progress line goes to stderr once a second when stderr is a \
terminal and --json is not given. Exit status: 0 once the run completes, whatever the success \
rate; 1 on bad flags.\n\nExamples:\n  frlab load --rate 200 --duration 30s\n  frlab load \
--schedule ramp:10-500 --duration 1m --json > ramp.json\n  frlab load --rate 100 \
--client-retries 3 --deadline-ms 2000   # the retry_storm client";

impl LoadArgs {
    /// The run these flags describe.
    pub fn config(&self) -> LoadConfig {
        let schedule = match (&self.schedule, self.rate) {
            (Some(schedule), _) => schedule.clone(),
            (None, Some(rate)) => Schedule::Constant { rate },
            // clap requires one of the two.
            (None, None) => Schedule::Constant { rate: 1.0 },
        };
        let mut config = LoadConfig::new(&self.gateway, schedule, self.duration);
        config.call = self.call;
        config.deadline = Duration::from_millis(self.deadline_ms);
        config.client_retries = self.client_retries;
        config.seed = self.seed;
        if let Some(prefix) = &self.key_prefix {
            config.key_prefix = prefix.clone();
        }
        config.max_in_flight = self.max_in_flight;
        config.connections = self.connections;
        config.items = self.items.clone();
        config
    }
}

/// Runs `frlab load`.
pub async fn run(args: LoadArgs) -> Result<ExitCode> {
    let config = args.config();
    config.validate()?;
    let show_progress = !args.json && std::io::stderr().is_terminal();
    if !args.json {
        println!(
            "load on {}: {} {} for {} s, keys {}-N",
            config.gateway,
            config.call,
            config.schedule,
            config.duration.as_secs_f64(),
            config.key_prefix
        );
    }
    let report = crate::load::run(config, |p| {
        if show_progress {
            // \r and erase-line: one line, rewritten each second.
            eprint!("\r\x1b[K{p}");
            let _ = std::io::stderr().flush();
        }
    })
    .await?;
    if show_progress {
        eprint!("\r\x1b[K");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.summary());
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_schedule(s: &str) -> Result<Schedule, String> {
    Schedule::parse(s).map_err(|e| format!("{e:#}"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let schedule = format!("constant:{s}");
    match Schedule::parse(&schedule) {
        Ok(Schedule::Constant { rate }) => Ok(rate),
        _ => Err(format!(
            "`{s}` is not a rate: a number of requests per second above 0, e.g. 100"
        )),
    }
}

fn parse_run_duration(s: &str) -> Result<Duration, String> {
    match lab_chaos::spec::parse_duration(s) {
        Some(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "`{s}` is not a duration above 0 (a number and ms, s, m or h, e.g. 10s)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn load(args: &[&str]) -> Result<LoadArgs, clap::Error> {
        let cli = Cli::try_parse_from(["frlab", "load"].iter().chain(args))?;
        match cli.command {
            Command::Load(args) => Ok(args),
            _ => panic!("not a load command"),
        }
    }

    #[test]
    fn rate_and_defaults() {
        let args = load(&["--rate", "100"]).unwrap();
        let c = args.config();
        assert_eq!(c.schedule, Schedule::Constant { rate: 100.0 });
        assert_eq!(c.gateway, "http://127.0.0.1:50051");
        assert_eq!(c.duration, Duration::from_secs(10));
        assert_eq!(c.deadline, Duration::from_millis(1000));
        assert_eq!((c.client_retries, c.seed), (0, 1));
        assert_eq!(c.max_in_flight, DEFAULT_MAX_IN_FLIGHT);
        assert!(c.key_prefix.starts_with("load-"));
        assert!(c.items.is_empty());
        c.validate().unwrap();
        assert_ne!(
            load(&["--rate", "1"]).unwrap().config().key_prefix,
            c.key_prefix,
            "runs never share keys by default"
        );
    }

    #[test]
    fn every_flag() {
        let args = load(&[
            "--gateway",
            "http://127.0.0.1:1",
            "--schedule",
            "spike:5-50@1s+500ms",
            "--duration",
            "3s",
            "--deadline-ms",
            "250",
            "--client-retries",
            "3",
            "--seed",
            "9",
            "--key-prefix",
            "run1",
            "--max-in-flight",
            "7",
            "--item",
            "sku-2:3",
            "--json",
        ])
        .unwrap();
        assert!(args.json);
        let c = args.config();
        assert_eq!(c.schedule.to_string(), "spike:5-50@1s+500ms");
        assert_eq!(c.duration, Duration::from_secs(3));
        assert_eq!(c.deadline, Duration::from_millis(250));
        assert_eq!((c.client_retries, c.seed, c.max_in_flight), (3, 9, 7));
        assert_eq!(c.key_prefix, "run1");
        assert_eq!(c.items[0].product_id, "sku-2");
        c.validate().unwrap();
    }

    #[test]
    fn bad_flags_are_usage_errors_naming_the_value() {
        for (args, names) in [
            (vec!["--rate", "fast"], "`fast`"),
            (vec!["--rate", "0"], "`0`"),
            (vec!["--schedule", "ramp:1"], "`ramp:1`"),
            (vec!["--rate", "5", "--duration", "0s"], "`0s`"),
            (vec!["--rate", "5", "--duration", "10"], "`10`"),
            (
                vec!["--rate", "5", "--schedule", "constant:5"],
                "cannot be used",
            ),
            (vec![], "--rate"),
        ] {
            let err = load(&args).unwrap_err().to_string();
            assert!(err.contains(names), "{args:?}: {err}");
        }
    }
}

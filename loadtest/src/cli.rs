//! The `frlab` command line: argument types (clap) and one function per command.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, OrderStatus, PlaceOrderRequest};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::client::{self, Placed};
use crate::stack::{DEFAULT_HTTP_BASE_PORT, LocalStack, StackOptions, StopOutcome};

/// Exit status of `frlab order` when the gateway answered but the order is not CONFIRMED.
const EXIT_NOT_CONFIRMED: u8 = 3;

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
    Up(UpArgs),
    /// Place one order through the gateway and print the outcome
    #[command(
        long_about = "Place one order through the gateway (shop.v1.Gateway/PlaceOrder) \
        and print the order id, status, total and latency.\n\nExit status: 0 when the order is \
        CONFIRMED, 3 when the gateway answered with an order that is not (e.g. FAILED), 1 on \
        an error (the gRPC code and message are printed)."
    )]
    Order(OrderArgs),
    /// Start the stack, place one sample order, print it and the audit counters, stop
    /// (what `make run` calls)
    #[command(
        long_about = "Start the stack (ephemeral ports unless --base-port is given), \
        place one sample order, print it and every service's lab.v1.Audit counters, then stop \
        the stack cleanly. Exits non-zero unless the order ended CONFIRMED and every service \
        stopped cleanly. Without --data-dir the data goes to a fresh temporary directory, \
        removed after a successful run and kept (with the logs) after a failed one."
    )]
    RunSample(SampleArgs),
    /// Validate a resilience profile, or show the stack it builds on every hop
    Profile(crate::profile::ProfileArgs),
    /// Apply, clear or list faults (FaultInjection documents) on a running local stack
    Chaos(crate::chaos::ChaosArgs),
    /// Run resilience profiles x fault scenarios x trials on local stacks and write a
    /// report of what was measured (results/<run-id>/)
    Experiment(crate::experiment::ExperimentArgs),
    /// Rebuild a run's results.csv, report.md and charts from its results.json
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
    Console(crate::console::ConsoleArgs),
    /// Drive PlaceOrder with an open-loop schedule and report success rate, goodput and
    /// latency (from each request's intended send time)
    #[command(long_about = crate::load::command::LONG_ABOUT)]
    Load(crate::load::LoadArgs),
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

#[derive(Debug, Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Where the services keep their SQLite files; logs go to DIR/logs/
    #[arg(long, value_name = "DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Serve the live console (see `frlab console`) on this address. If it cannot listen
    /// there (e.g. the port is taken), frlab warns and runs the stack without it
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub console: std::net::SocketAddr,
    /// Do not start the console
    #[arg(long, conflicts_with = "console")]
    pub no_console: bool,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Where the services keep their SQLite files and logs (kept afterwards)
    /// [default: a fresh temporary directory]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct OrderArgs {
    /// Gateway gRPC URL
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:50051")]
    pub gateway: String,
    /// Idempotency key: reuse one to retry the same logical order [default: a random UUID]
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Customer id
    #[arg(long, value_name = "ID", default_value = "customer-1")]
    pub customer: String,
    /// A line item as PRODUCT:QUANTITY (QUANTITY defaults to 1); repeat for more.
    /// Products are sku-1 .. sku-10 [default: sku-1:1]
    #[arg(long = "item", value_name = "PRODUCT:QTY", value_parser = parse_item)]
    pub items: Vec<LineItem>,
    /// Client deadline in milliseconds, also sent to the gateway as grpc-timeout
    #[arg(long, value_name = "MS", default_value_t = 3000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: u64,
}

/// Parses `--item sku-1:2` (or `sku-1`, meaning one unit).
pub fn parse_item(value: &str) -> Result<LineItem, String> {
    let (product, quantity) = match value.rsplit_once(':') {
        Some((product, quantity)) => (product, quantity),
        None => (value, "1"),
    };
    let product = product.trim();
    if product.is_empty() {
        return Err(format!(
            "`{value}` has no product; expected PRODUCT:QUANTITY, e.g. sku-1:2"
        ));
    }
    let quantity = quantity
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|q| *q > 0)
        .ok_or_else(|| {
            format!(
                "`{value}`: quantity `{quantity}` is not a positive whole number; \
                 expected PRODUCT:QUANTITY, e.g. sku-1:2"
            )
        })?;
    Ok(LineItem {
        product_id: product.to_string(),
        quantity,
    })
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Order(args) => order(args).await,
        Command::RunSample(args) => run_sample(args).await,
        Command::Profile(args) => Ok(crate::profile::run(args)),
        Command::Chaos(args) => crate::chaos::run(args).await,
        Command::Experiment(args) => crate::experiment::command(args).await,
        Command::Report { dir } => {
            crate::report::rebuild(&dir)?;
            println!("rebuilt {}", dir.join("report.md").display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Load(args) => crate::load::command::run(args).await,
        Command::Console(args) => crate::console::run(args).await,
    }
}

async fn up(args: UpArgs) -> Result<ExitCode> {
    let opts = args
        .stack
        .options(&args.data_dir, crate::stack::DEFAULT_GRPC_BASE_PORT)?;
    // Registered before anything starts: from here on ctrl-c and SIGTERM are ours to
    // handle (the services sit in their own process group and do not see ctrl-c).
    let mut signals = Signals::new()?;
    println!(
        "starting the stack (data in {}, logs in {}/logs)",
        args.data_dir.display(),
        args.data_dir.display()
    );
    let mut stack = tokio::select! {
        stack = LocalStack::start(opts) => stack?,
        sig = signals.recv() => {
            println!("{sig} while starting: killed the services started so far");
            return Ok(ExitCode::FAILURE);
        }
    };
    print_endpoints(&stack);
    // Where every port is, for `frlab chaos` (and anyone else) to find them.
    let stack_file = args.data_dir.join(crate::chaos::STACK_FILE);
    std::fs::write(
        &stack_file,
        serde_json::to_string_pretty(stack.endpoints())?,
    )
    .with_context(|| format!("writing {}", stack_file.display()))?;
    let console = if args.no_console {
        None
    } else {
        match crate::console::start_in_background(args.console, stack.endpoints()).await {
            Ok((addr, task)) => {
                println!("\n{}http://{addr}", crate::console::READY_PREFIX);
                Some(task)
            }
            Err(e) => {
                eprintln!(
                    "\nwarning: {e:#}; the stack runs without its console (pick another \
                     address with --console ADDR, or run `frlab console --listen ADDR` later)"
                );
                None
            }
        }
    };
    let gateway = stack.gateway_url();
    let grpc = gateway.trim_start_matches("http://");
    println!(
        "\ntry:  frlab order --gateway {gateway} --item sku-1:2\n  or: grpcurl -plaintext -d \
         '{{\"idempotency_key\":\"k1\",\"customer_id\":\"c1\",\"items\":[{{\"product_id\":\"sku-1\",\
         \"quantity\":2}}]}}' {grpc} shop.v1.Gateway/PlaceOrder\n  or: frlab chaos apply -f k8s/chaos/payment-errors.yaml\n\nrunning; ctrl-c to stop"
    );
    let mut code = tokio::select! {
        sig = signals.recv() => {
            println!("\n{sig}: stopping the stack, gateway first");
            ExitCode::SUCCESS
        }
        exited = stack.exited() => {
            eprintln!(
                "\nerror: {} exited unexpectedly ({})\n{}",
                exited.service, exited.status, exited.log_tail
            );
            println!("\nstopping the others, gateway first");
            ExitCode::FAILURE
        }
    };
    // The console stops first: it would only report the services going away.
    if let Some(task) = console {
        task.abort();
    }
    // A second ctrl-c while draining: give up waiting, dropping the stack SIGKILLs the rest.
    let outcomes = tokio::select! {
        outcomes = stack.stop_each() => outcomes,
        sig = signals.recv() => {
            println!("{sig} again: killed the remaining services");
            return Ok(ExitCode::FAILURE);
        }
    };
    if !print_stopped(&outcomes) {
        code = ExitCode::FAILURE;
    }
    let _ = std::fs::remove_file(&stack_file);
    Ok(code)
}

async fn order(args: OrderArgs) -> Result<ExitCode> {
    let items = if args.items.is_empty() {
        vec![parse_item("sku-1:1").map_err(anyhow::Error::msg)?]
    } else {
        args.items
    };
    let request = PlaceOrderRequest {
        idempotency_key: args.key.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        customer_id: args.customer,
        items,
    };
    let mut gateway = GatewayClient::new(client::channel(&args.gateway)?);
    let timeout = Duration::from_millis(args.timeout_ms);
    match client::place_order(&mut gateway, request, timeout).await {
        Ok(placed) => {
            println!("{}", client::describe_order(&placed));
            Ok(if is_confirmed(&placed) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_NOT_CONFIRMED)
            })
        }
        Err(status) => {
            eprintln!(
                "error: PlaceOrder at {} failed: {}",
                args.gateway,
                client::describe_status(&status)
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

async fn run_sample(args: SampleArgs) -> Result<ExitCode> {
    let temporary = args.data_dir.is_none();
    let data_dir = args.data_dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("frlab-sample-{}", uuid::Uuid::new_v4()))
    });
    let opts = args.stack.options(&data_dir, 0)?;
    println!(
        "starting the stack (data and logs in {})",
        data_dir.display()
    );
    let stack = LocalStack::start(opts).await?;
    print_endpoints(&stack);

    let confirmed = sample_order(&stack).await;
    print_audit(&stack).await;

    println!("\nstopping the stack, gateway first");
    let clean = print_stopped(&stack.stop_each().await);
    if confirmed && clean {
        if temporary {
            std::fs::remove_dir_all(&data_dir)
                .with_context(|| format!("removing {}", data_dir.display()))?;
        }
        println!("\nsample run OK");
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "\nsample run FAILED; data and logs kept in {}",
            data_dir.display()
        );
        Ok(ExitCode::FAILURE)
    }
}

/// Places the sample order and prints it; true when it ended CONFIRMED.
async fn sample_order(stack: &LocalStack) -> bool {
    let request = PlaceOrderRequest {
        idempotency_key: format!("sample-{}", uuid::Uuid::new_v4()),
        customer_id: "sample-customer".into(),
        items: vec![
            LineItem {
                product_id: "sku-1".into(),
                quantity: 2,
            },
            LineItem {
                product_id: "sku-3".into(),
                quantity: 1,
            },
        ],
    };
    println!("\nplacing a sample order at {}", stack.gateway_url());
    let placed = match client::channel(&stack.gateway_url()) {
        Ok(channel) => {
            let mut gateway = GatewayClient::new(channel);
            client::place_order(&mut gateway, request, Duration::from_secs(5))
                .await
                .map_err(|s| client::describe_status(&s))
        }
        Err(e) => Err(format!("{e:#}")),
    };
    match placed {
        Ok(placed) => {
            println!("{}", client::describe_order(&placed));
            let confirmed = is_confirmed(&placed);
            if confirmed {
                wait_for_delivery(stack).await;
            }
            confirmed
        }
        Err(e) => {
            eprintln!("error: PlaceOrder failed: {e}");
            false
        }
    }
}

/// The confirmation event is delivered in the background (outbox relay or best-effort
/// call): give it up to 3 s so the printed counters show it.
async fn wait_for_delivery(stack: &LocalStack) {
    let Some(notifications) = stack.endpoint("notifications") else {
        return;
    };
    let url = notifications.grpc_url();
    for _ in 0..30 {
        if let Ok(snapshot) = client::audit_snapshot(&url, Duration::from_secs(1)).await
            && snapshot
                .counters
                .get("deliveries_total")
                .copied()
                .unwrap_or(0)
                > 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn is_confirmed(placed: &Placed) -> bool {
    placed.order.status == OrderStatus::Confirmed as i32
}

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

async fn print_audit(stack: &LocalStack) {
    println!("\naudit counters (lab.v1.Audit/Snapshot)");
    for ep in stack.endpoints() {
        match client::audit_snapshot(&ep.grpc_url(), Duration::from_secs(2)).await {
            Ok(snapshot) => {
                let mut counters: Vec<_> = snapshot.counters.into_iter().collect();
                counters.sort();
                let counters: Vec<String> =
                    counters.iter().map(|(k, v)| format!("{k}={v}")).collect();
                println!("  {:<14} {}", ep.service, counters.join(" "));
            }
            Err(e) => println!("  {:<14} (unavailable: {e:#})", ep.service),
        }
    }
}

/// Prints how each service stopped; true when all stopped cleanly.
fn print_stopped(outcomes: &[StopOutcome]) -> bool {
    for outcome in outcomes {
        println!("  {outcome}");
    }
    outcomes.iter().all(StopOutcome::is_clean)
}

/// SIGINT (ctrl-c) and SIGTERM, registered once so none is missed between waits.
struct Signals {
    interrupt: Signal,
    terminate: Signal,
}

impl Signals {
    fn new() -> Result<Self> {
        Ok(Self {
            interrupt: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            terminate: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Cancel-safe.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "interrupt",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
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
    fn items_parse() {
        let item = parse_item("sku-1:2").unwrap();
        assert_eq!((item.product_id.as_str(), item.quantity), ("sku-1", 2));
        assert_eq!(parse_item("sku-10").unwrap().quantity, 1);
        assert_eq!(parse_item(" sku-3 : 7 ").unwrap().quantity, 7);
    }

    #[test]
    fn bad_items_name_the_value() {
        for bad in [
            "sku-1:0",
            "sku-1:-2",
            "sku-1:two",
            "sku-1:",
            ":3",
            "sku-1:99999999999",
        ] {
            let err = parse_item(bad).unwrap_err();
            assert!(err.contains(&format!("`{bad}`")), "{bad}: {err}");
            assert!(err.contains("PRODUCT:QUANTITY"), "{bad}: {err}");
        }
    }

    #[test]
    fn order_flags_parse() {
        let cli = Cli::try_parse_from([
            "frlab",
            "order",
            "--item",
            "sku-2:3",
            "--item",
            "sku-4",
            "--key",
            "k1",
            "--timeout-ms",
            "500",
        ])
        .unwrap();
        let Command::Order(args) = cli.command else {
            panic!("not an order command");
        };
        assert_eq!(args.items.len(), 2);
        assert_eq!(args.key.as_deref(), Some("k1"));
        assert_eq!(args.gateway, "http://127.0.0.1:50051");
        assert_eq!(args.timeout_ms, 500);
    }

    #[test]
    fn bad_item_flag_is_a_usage_error_naming_it() {
        let err = Cli::try_parse_from(["frlab", "order", "--item", "sku-1:x"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sku-1:x") && msg.contains("--item"), "{msg}");
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

//! `frlab up`: start the stack, write its stack file, serve the console, and stop it all in
//! order on ctrl-c or SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Args;
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{StackArgs, print_endpoints, print_stopped};
use crate::stack::LocalStack;
use crate::stack::file::{STACK_FILE, write_stack};

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

/// Runs `frlab up`.
pub async fn run(args: UpArgs) -> Result<ExitCode> {
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
    let stack_file = args.data_dir.join(STACK_FILE);
    write_stack(&stack_file, stack.endpoints())?;
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

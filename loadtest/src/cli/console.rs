//! `frlab console`: serve the live web console of a running stack until ctrl-c or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

use crate::console::{Console, READY_PREFIX};
use crate::stack::file::read_stack;

#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Address to serve the console on. It can inject faults and has no login of its own:
    /// bind it to a non-loopback address only on a network you trust
    #[arg(
        long,
        value_name = "ADDR",
        default_value = "127.0.0.1:8080",
        env = "FRLAB_CONSOLE_LISTEN"
    )]
    pub listen: SocketAddr,
    /// The running stack's endpoints, as `frlab up` writes them (addresses may be
    /// `host:port` names, e.g. in a cluster)
    #[arg(long, value_name = "FILE", default_value = "./data/stack.json")]
    pub stack: PathBuf,
    #[command(flatten)]
    pub token: super::chaos::AdminToken,
}

/// `frlab console`: serve until ctrl-c or SIGTERM.
pub async fn run(args: ConsoleArgs) -> Result<ExitCode> {
    let services = read_stack(&args.stack)?;
    let console = Console::bind(args.listen, services, args.token.resolve()?).await?;
    let addr = console.local_addr();
    if !addr.ip().is_loopback() {
        eprintln!(
            "warning: the console listens on {addr}, not on loopback; anyone who can reach \
             it can inject faults"
        );
    }
    println!("{READY_PREFIX}http://{addr}");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    console.serve(shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

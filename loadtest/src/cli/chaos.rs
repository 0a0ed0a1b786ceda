//! `frlab chaos apply|clear|ls`: FaultInjection documents applied to a local stack through
//! each service's `lab.v1.Faults` admin port — the same YAML `kubectl apply` takes on a
//! cluster. A running `frlab up` writes where every port is to `<data-dir>/stack.json`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use lab_chaos::spec::{FaultInjection, parse_documents};
use lab_proto::lab::v1::{ApplyFaultRequest, ClearFaultRequest, ListFaultsRequest};

use crate::observe::faults::{AdminClient, faults_client};
use crate::stack::file::{ServiceAddrs, read_stack};

#[derive(Debug, Args)]
pub struct ChaosArgs {
    /// The running stack's endpoints, as `frlab up` writes them
    #[arg(
        long,
        value_name = "FILE",
        default_value = "./data/stack.json",
        global = true
    )]
    pub stack: PathBuf,
    /// Bearer token for the admin ports (not needed for a stack started by `frlab up`)
    #[arg(long, env = "FRLAB_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub command: ChaosCommand,
}

#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Apply the FaultInjection documents of a YAML file (all or nothing: every document
    /// is validated first)
    Apply {
        /// A FaultInjection YAML file (several documents separated by `---` are fine),
        /// e.g. k8s/chaos/payment-errors.yaml
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: PathBuf,
        /// Use this seed instead of each document's own
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Clear the fault NAME on every service (every fault without NAME)
    Clear { name: Option<String> },
    /// List the faults in force on every service
    Ls,
}

pub async fn run(args: ChaosArgs) -> Result<ExitCode> {
    match args.command {
        ChaosCommand::Apply { ref file, seed } => apply(&args, file, seed).await,
        ChaosCommand::Clear { ref name } => clear(&args, name.as_deref()).await,
        ChaosCommand::Ls => list(&args).await,
    }
}

/// Parses and validates every document; an error names the document and the field.
pub fn load_documents(file: &Path) -> Result<Vec<FaultInjection>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let docs =
        parse_documents(&text).with_context(|| format!("{} is not valid", file.display()))?;
    if docs.is_empty() {
        bail!("{} holds no FaultInjection document", file.display());
    }
    for doc in &docs {
        doc.spec.validate().with_context(|| {
            format!("{}: FaultInjection {:?}", file.display(), doc.metadata.name)
        })?;
    }
    Ok(docs)
}

fn admin_client(endpoint: &ServiceAddrs, token: Option<&str>) -> Result<AdminClient> {
    let admin = endpoint
        .admin
        .as_deref()
        .with_context(|| format!("{} has no admin port in the stack file", endpoint.service))?;
    faults_client(admin, token)
}

async fn apply(args: &ChaosArgs, file: &Path, seed: Option<u64>) -> Result<ExitCode> {
    let docs = load_documents(file)?;
    let stack = read_stack(&args.stack)?;
    let mut targets = Vec::new();
    for doc in &docs {
        let service = &doc.spec.selector.service;
        let endpoint = stack
            .iter()
            .find(|e| &e.service == service)
            .with_context(|| {
                format!(
                    "FaultInjection {:?} selects {service}, which is not in the stack",
                    doc.metadata.name
                )
            })?;
        targets.push((doc, endpoint));
    }
    for (doc, endpoint) in targets {
        let fault = doc.spec.to_fault(&doc.metadata.name, seed);
        let answer = admin_client(endpoint, args.token.as_deref())?
            .apply(ApplyFaultRequest { fault: Some(fault) })
            .await
            .map_err(|s| {
                anyhow::anyhow!(
                    "{}: {}: {}",
                    endpoint.service,
                    lab_proto::codes::code_name(s.code()),
                    s.message()
                )
            })?
            .into_inner();
        let left = answer.expires_at_ms - lab_runtime::now_ms();
        println!(
            "applied {:<20} {:?} on {} for {} (expires in {:.1} s)",
            doc.metadata.name,
            doc.spec.action,
            endpoint.service,
            doc.spec.duration,
            left as f64 / 1000.0
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn clear(args: &ChaosArgs, name: Option<&str>) -> Result<ExitCode> {
    let mut total = 0;
    for endpoint in read_stack(&args.stack)? {
        let cleared = admin_client(&endpoint, args.token.as_deref())?
            .clear(ClearFaultRequest {
                name: name.unwrap_or_default().to_string(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", endpoint.service, s.message()))?
            .into_inner()
            .cleared;
        if cleared > 0 {
            println!("{}: cleared {cleared}", endpoint.service);
        }
        total += cleared;
    }
    if total == 0 {
        println!(
            "no fault{} in force",
            name.map_or(String::new(), |n| format!(" named {n:?}"))
        );
    }
    Ok(ExitCode::SUCCESS)
}

async fn list(args: &ChaosArgs) -> Result<ExitCode> {
    println!(
        "{:<14} {:<20} {:<10} {:>10} {:>9}",
        "service", "fault", "kind", "left (s)", "injected"
    );
    let now = lab_runtime::now_ms();
    for endpoint in read_stack(&args.stack)? {
        let faults = admin_client(&endpoint, args.token.as_deref())?
            .list(ListFaultsRequest {})
            .await
            .map_err(|s| anyhow::anyhow!("{}: {}", endpoint.service, s.message()))?
            .into_inner()
            .faults;
        for active in faults {
            let fault = active.fault.unwrap_or_default();
            println!(
                "{:<14} {:<20} {:<10} {:>10.1} {:>9}",
                endpoint.service,
                fault.name,
                fault.kind,
                (active.expires_at_ms - now).max(0) as f64 / 1000.0,
                active.injected
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

//! `frlab chaos apply|clear|ls`: FaultInjection documents applied to a local stack through
//! each service's `lab.v1.Faults` admin port — the same YAML `kubectl apply` takes on a
//! cluster. A running `frlab up` writes where every port is to `<data-dir>/stack.json`.
//!
//! `apply` is all or nothing: every document is validated, and every target's admin port
//! must answer (with the token accepted) before anything is applied; should an apply still
//! fail (a target went away meanwhile), the faults this command applied are cleared again.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

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
    #[command(flatten)]
    pub token: AdminToken,
    #[command(subcommand)]
    pub command: ChaosCommand,
}

/// The bearer token for the services' admin ports, from a file, the environment or (least
/// safely: every user can read a command line) the command line. Not needed for a stack
/// started by `frlab up`.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminToken {
    /// Bearer token for the admin ports. Prefer --token-file or the environment: a command
    /// line is visible to every user
    #[arg(long, env = "FRLAB_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// File holding the bearer token for the admin ports
    #[arg(
        long,
        env = "FRLAB_ADMIN_TOKEN_FILE",
        value_name = "FILE",
        global = true,
        conflicts_with = "token"
    )]
    pub token_file: Option<PathBuf>,
}

impl AdminToken {
    /// The token: read from `--token-file` (trimmed; an empty file is an error naming it),
    /// else `--token`, else none.
    pub fn resolve(&self) -> Result<Option<String>> {
        let Some(path) = &self.token_file else {
            return Ok(self.token.clone());
        };
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("reading --token-file {}", path.display()))?;
        let token = token.trim();
        if token.is_empty() {
            bail!("--token-file {}: the file is empty", path.display());
        }
        Ok(Some(token.to_owned()))
    }
}

#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Apply the FaultInjection documents of a YAML file (all or nothing: every document is
    /// validated and every target reached first; on a failure what was applied is cleared)
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

pub async fn run(mut args: ChaosArgs) -> Result<ExitCode> {
    args.token.token = args.token.resolve()?;
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

/// How long a target's admin port gets to answer the check before anything is applied.
const REACH_TIMEOUT: Duration = Duration::from_secs(3);

fn failed(service: &str, status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!(
        "{service}: {}: {}",
        lab_proto::codes::code_name(status.code()),
        status.message()
    )
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
        targets.push((
            doc,
            endpoint,
            admin_client(endpoint, args.token.token.as_deref())?,
        ));
    }
    // Refuse before applying anything: every target answers, and accepts the token.
    for (doc, endpoint, client) in &mut targets {
        let mut check = tonic::Request::new(ListFaultsRequest {});
        check.set_timeout(REACH_TIMEOUT);
        client.list(check).await.map_err(|s| {
            failed(&endpoint.service, &s).context(format!(
                "FaultInjection {:?} cannot be applied: nothing was applied",
                doc.metadata.name
            ))
        })?;
    }
    let mut applied: Vec<(&str, &ServiceAddrs, &mut AdminClient)> = Vec::new();
    let mut report = Vec::new();
    for (doc, endpoint, client) in &mut targets {
        let fault = doc.spec.to_fault(&doc.metadata.name, seed);
        match client.apply(ApplyFaultRequest { fault: Some(fault) }).await {
            Ok(answer) => {
                let left = answer.into_inner().expires_at_ms - lab_runtime::now_ms();
                report.push(format!(
                    "applied {:<20} {:?} on {} for {} (expires in {:.1} s)",
                    doc.metadata.name,
                    doc.spec.action,
                    endpoint.service,
                    doc.spec.duration,
                    left as f64 / 1000.0
                ));
                applied.push((&doc.metadata.name, endpoint, client));
            }
            Err(status) => {
                let undone = roll_back(applied).await;
                return Err(failed(&endpoint.service, &status).context(format!(
                    "FaultInjection {:?} was refused; {undone}",
                    doc.metadata.name
                )));
            }
        }
    }
    for line in report {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Clears the faults this command applied, last first; says what it did.
async fn roll_back(applied: Vec<(&str, &ServiceAddrs, &mut AdminClient)>) -> String {
    if applied.is_empty() {
        return "nothing was applied".into();
    }
    let mut cleared = Vec::new();
    let mut left = Vec::new();
    for (name, endpoint, client) in applied.into_iter().rev() {
        let request = ClearFaultRequest {
            name: name.to_owned(),
        };
        match client.clear(request).await {
            Ok(_) => cleared.push(format!("{name} on {}", endpoint.service)),
            Err(s) => left.push(format!(
                "{name} on {} ({}), clear it with `frlab chaos clear {name}`",
                endpoint.service,
                s.message()
            )),
        }
    }
    let cleared = if cleared.is_empty() {
        "nothing".to_owned()
    } else {
        cleared.join(", ")
    };
    let mut said = format!("rolled back what was applied: cleared {cleared}");
    if !left.is_empty() {
        said.push_str(&format!("; could NOT clear {}", left.join(", ")));
    }
    said
}

async fn clear(args: &ChaosArgs, name: Option<&str>) -> Result<ExitCode> {
    let mut total = 0;
    for endpoint in read_stack(&args.stack)? {
        let cleared = admin_client(&endpoint, args.token.token.as_deref())?
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
        let faults = admin_client(&endpoint, args.token.token.as_deref())?
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

//! chaos-controller: watches FaultInjections (and the pods they select) and keeps the pods'
//! faults in line with them. Stops on ctrl-c or SIGTERM.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use chaos_controller::clock::SystemClock;
use chaos_controller::pod_faults::GrpcPodFaults;
use chaos_controller::reconcile::controller;
use chaos_controller::{Context, FaultInjection, error_policy, reconcile};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

/// The environment variable that holds the admin token when no file is given.
const TOKEN_ENV: &str = "FRLAB_ADMIN_TOKEN";

#[derive(Debug, Parser)]
#[command(
    version,
    about = "Reconciles FaultInjection resources into the pods' Faults admin API"
)]
struct Args {
    /// Watch only this namespace (default: every namespace).
    #[arg(long)]
    namespace: Option<String>,
    /// Admin port of pods that declare no container port named `admin`.
    #[arg(long, default_value_t = 50061)]
    admin_port: u16,
    /// File holding the admin API's bearer token (else the FRLAB_ADMIN_TOKEN environment
    /// variable).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
}

fn admin_token(args: &Args) -> anyhow::Result<Option<String>> {
    let token = match &args.admin_token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --admin-token-file {}", path.display()))?,
        ),
        None => std::env::var(TOKEN_ENV).ok(),
    };
    Ok(token
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,kube=warn".into()),
        )
        .init();
    let args = Args::parse();
    let token = admin_token(&args)?;
    if token.is_none() {
        tracing::warn!(
            "no admin token (--admin-token-file or {TOKEN_ENV}): calls go out without one"
        );
    }

    let client = Client::try_default()
        .await
        .context("connecting to the Kubernetes API")?;
    let (injections, pods): (Api<FaultInjection>, Api<Pod>) = match &args.namespace {
        Some(ns) => (
            Api::namespaced(client.clone(), ns),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all(client.clone()), Api::all(client.clone())),
    };
    let ctx = Arc::new(Context::new(
        client,
        Arc::new(GrpcPodFaults::default()),
        token,
        Arc::new(SystemClock),
        args.admin_port,
    ));

    tracing::info!(
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        "chaos-controller started"
    );
    controller(injections, pods)
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((object, action)) => tracing::debug!(%object, ?action, "reconciled"),
                Err(error) => tracing::warn!(%error, "reconcile failed"),
            }
        })
        .await;
    tracing::info!("chaos-controller stopped");
    Ok(())
}

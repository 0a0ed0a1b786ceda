//! The body of every service's `main.rs`: parse flags, set up logging (and trace export,
//! see [`crate::telemetry`]), bind, print the ready line, run until ctrl-c or SIGTERM, and
//! exit 0 after draining and flushing the last spans.

use std::future::Future;
use std::process::ExitCode;

use crate::config::ServiceConfig;
use crate::host::Bound;
use crate::shutdown::Shutdown;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on ctrl-c or SIGTERM.
pub async fn termination_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {},
                    _ = term.recv() => {},
                }
            }
            Err(e) => {
                tracing::warn!("cannot listen for SIGTERM ({e}); only ctrl-c stops this process");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Runs a service binary. `run` is the service's `run(bound, config, shutdown)`.
pub fn main<C, F, Fut>(run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(Bound, C, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let config = C::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{}: cannot start the async runtime: {e}", C::NAME);
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Logging, plus trace export when OTEL_EXPORTER_OTLP_ENDPOINT is set (the exporter
        // needs the runtime, so this runs inside it).
        let telemetry = match crate::telemetry::init(C::NAME) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{}: {e}", C::NAME);
                return ExitCode::FAILURE;
            }
        };
        let code = serve::<C, F, Fut>(config, run).await;
        if let Some(telemetry) = telemetry {
            telemetry.shutdown().await;
        }
        code
    })
}

async fn serve<C, F, Fut>(config: C, run: F) -> ExitCode
where
    C: ServiceConfig,
    F: FnOnce(Bound, C, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let common = config.common();
    let grpc = common.grpc_addr(C::GRPC_PORT);
    let http = common.http_addr(C::HTTP_PORT);
    let admin = common.admin_addr(C::GRPC_PORT);
    let mut bound = match Bound::bind(grpc, http, admin).await {
        Ok(b) => b,
        Err(e) => {
            eprintln!(
                "{}: cannot bind gRPC {grpc} / HTTP {http} / admin {admin}: {e}",
                C::NAME
            );
            return ExitCode::FAILURE;
        }
    };
    bound.announce_ready = true;
    let shutdown = Shutdown::new();
    tokio::spawn({
        let shutdown = shutdown.clone();
        async move {
            termination_signal().await;
            tracing::info!("shutdown requested: draining");
            shutdown.trigger();
        }
    });
    match run(bound, config, shutdown).await {
        Ok(()) => {
            tracing::info!("stopped cleanly");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e:#}", C::NAME);
            ExitCode::FAILURE
        }
    }
}

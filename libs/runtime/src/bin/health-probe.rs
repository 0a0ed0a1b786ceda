//! `health-probe ADDRESS [--service NAME] [--timeout-ms MS]`: one gRPC health check
//! (`grpc.health.v1.Health/Check`) of ADDRESS (`127.0.0.1:50051`, or a bare port on
//! 127.0.0.1); exits 0 when the answer is SERVING, 1 otherwise, saying why on stderr.
//!
//! It is the chart's exec probe on clusters older than Kubernetes 1.24, which lack native
//! gRPC probes: the image has no shell and no grpc_health_probe, so the probe is ours.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

#[derive(Debug, Parser)]
#[command(
    version,
    about = "gRPC health check of one address: exit 0 if SERVING, else 1"
)]
struct Args {
    /// The server: HOST:PORT, or a port on 127.0.0.1.
    #[arg(value_parser = parse_address)]
    address: SocketAddr,
    /// The service whose health is asked ("": the server as a whole).
    #[arg(long, default_value = "")]
    service: String,
    /// Time for connecting and answering together.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

fn parse_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| format!("address {text:?}: expected HOST:PORT (an IP) or a port"))
}

async fn check(args: &Args) -> Result<(), String> {
    let channel = Endpoint::from_shared(format!("http://{}", args.address))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let answer = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: args.service.clone(),
        })
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    match answer.into_inner().status() {
        ServingStatus::Serving => Ok(()),
        other => Err(format!("status {}", other.as_str_name())),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("health-probe: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let timeout = Duration::from_millis(args.timeout_ms);
    let result = runtime.block_on(async {
        tokio::time::timeout(timeout, check(&args))
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {} ms", args.timeout_ms)))
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            let service = if args.service.is_empty() {
                String::new()
            } else {
                format!(" service {:?}", args.service)
            };
            eprintln!("health-probe: {}{service}: {why}", args.address);
            ExitCode::FAILURE
        }
    }
}

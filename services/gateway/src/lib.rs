//! Gateway: the public entry point. Validates PlaceOrder and forwards it to Orders with the
//! same idempotency key; GetOrder is forwarded as is. It owns no storage.
//!
//! Layout: [`run`] wires the service; `service` holds the handlers.

mod service;

use clap::Parser;
use lab_proto::lab::v1::audit_server::AuditServer;
use lab_proto::shop::v1::gateway_server::GatewayServer;
use lab_runtime::{Bound, CommonArgs, ServiceConfig, ServiceHost, Shutdown};

pub use service::GatewayService;

/// The gateway service. Flags can also be set by environment variable.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "gateway",
    version,
    about = "Gateway of the Failure Recovery Lab: the public PlaceOrder API"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Orders' gRPC URL.
    #[arg(
        long,
        env = "GATEWAY_ORDERS_URL",
        default_value = "http://127.0.0.1:50052"
    )]
    pub orders_url: String,
}

impl Default for Config {
    fn default() -> Self {
        Self::parse_from(["gateway"])
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "gateway";
    const GRPC_PORT: u16 = 50051;
    const HTTP_PORT: u16 = 9101;
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs the gateway on `bound` until `shutdown` fires.
pub async fn run(bound: Bound, config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut host = ServiceHost::from_args(Config::NAME, &config.common)?;
    let orders = host.client("orders", "--orders-url", &config.orders_url)?;
    let svc = GatewayService::new(orders, host.registry_mut());
    host.add_service(
        GatewayServer::new(svc.clone())
            .max_decoding_message_size(lab_runtime::host::MAX_MESSAGE_BYTES),
    )
    .add_lab_service(AuditServer::new(svc));
    host.serve(bound, shutdown).await?;
    Ok(())
}

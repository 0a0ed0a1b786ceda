//! Inventory: stock per product, reserved and released per order.
//!
//! A reservation takes the row lock of each product it touches (an `UPDATE … WHERE
//! available >= n`, products in id order so two reservations never deadlock) and holds it
//! until commit. Reservations are keyed by order id, so a retried Reserve for the same order
//! returns the first reservation instead of taking stock twice. Release of an order with no
//! reservation yet leaves a CANCELLED one behind, so a Reserve that arrives after its
//! Release (a slow attempt, a retry) is refused instead of taking stock nobody releases.
//!
//! Layout: [`run`] wires the service; `service` holds the gRPC handlers; [`sql`] every
//! statement (one dialect for SQLite and Postgres).

mod service;
pub mod sql;

use clap::Parser;
use lab_proto::lab::v1::audit_server::AuditServer;
use lab_proto::shop::v1::inventory_server::InventoryServer;
use lab_runtime::{Bound, CommonArgs, ServiceConfig, ServiceHost, Shutdown};

pub use service::InventoryService;

/// The inventory service. Flags can also be set by environment variable.
#[derive(Parser, Clone, Debug, Default)]
#[command(
    name = "inventory",
    version,
    about = "Inventory service of the Failure Recovery Lab"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
}

impl ServiceConfig for Config {
    const NAME: &'static str = "inventory";
    const GRPC_PORT: u16 = 50053;
    const HTTP_PORT: u16 = 9103;
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs inventory on `bound` until `shutdown` fires.
pub async fn run(bound: Bound, config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let db =
        lab_store::Db::connect(&config.common.db_config(Config::NAME), sql::MIGRATIONS).await?;
    let mut host = ServiceHost::from_args(Config::NAME, &config.common)?;
    let svc = InventoryService::new(db.clone(), host.faults(false));
    host.add_service(
        InventoryServer::new(svc.clone())
            .max_decoding_message_size(lab_runtime::host::MAX_MESSAGE_BYTES),
    )
    .add_lab_service(AuditServer::new(svc));
    host.serve(bound, shutdown).await?;
    db.close().await;
    Ok(())
}

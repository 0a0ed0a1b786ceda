//! Notifications: delivers order events, deduplicated by event id.
//!
//! The side effect of a delivery (a row in `deliveries`) happens once per event; every
//! further Deliver call for the same event only bumps its `receipts` count and answers
//! `duplicate = true`. Audit reports both, so an experiment sees duplicate *sends* (retries,
//! at-least-once relays) without them becoming duplicate side effects.
//!
//! Layout: [`run`] wires the service; `service` holds the gRPC handlers; [`sql`] every
//! statement.

mod service;
pub mod sql;

use clap::Parser;
use lab_proto::lab::v1::audit_server::AuditServer;
use lab_proto::shop::v1::notifications_server::NotificationsServer;
use lab_runtime::{Bound, CommonArgs, ServiceConfig, ServiceHost, Shutdown};

pub use service::NotificationsService;

/// The notifications service. Flags can also be set by environment variable.
#[derive(Parser, Clone, Debug, Default)]
#[command(
    name = "notifications",
    version,
    about = "Notifications service of the Failure Recovery Lab"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
}

impl ServiceConfig for Config {
    const NAME: &'static str = "notifications";
    const GRPC_PORT: u16 = 50055;
    const HTTP_PORT: u16 = 9105;
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs notifications on `bound` until `shutdown` fires.
pub async fn run(bound: Bound, config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let db =
        lab_store::Db::connect(&config.common.db_config(Config::NAME), sql::MIGRATIONS).await?;
    let mut host = ServiceHost::from_args(Config::NAME, &config.common)?;
    let svc = NotificationsService::new(db.clone(), host.registry_mut());
    host.add_service(
        NotificationsServer::new(svc.clone())
            .max_decoding_message_size(lab_runtime::host::MAX_MESSAGE_BYTES),
    )
    .add_service(AuditServer::new(svc));
    host.serve(bound, shutdown).await?;
    db.close().await;
    Ok(())
}

//! Orders: owns the order lifecycle.
//!
//! CreateOrder: (idempotency claim on the request key) -> insert the order PENDING ->
//! Inventory.Reserve -> Payments.Charge -> in one transaction the order CONFIRMED plus an
//! outbox row; or the order FAILED plus Inventory.Release. The [`outbox`] relay delivers
//! outbox rows to Notifications at least once, surviving crashes; with the outbox off,
//! Notifications.Deliver is called directly after commit, best effort, so lost events
//! become measurable.
//!
//! Layout: [`run`] wires the service; `service` holds the handlers; [`outbox`] the relay;
//! `sql` every statement.

pub mod outbox;
mod service;
mod sql;

use std::time::Duration;

use clap::Parser;
use lab_proto::lab::v1::audit_server::AuditServer;
use lab_proto::shop::v1::orders_server::OrdersServer;
use lab_runtime::{Bound, CommonArgs, ServiceConfig, ServiceHost, Shutdown};

pub use service::{Downstreams, OrdersService};

/// The orders service. Flags can also be set by environment variable.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "orders",
    version,
    about = "Orders service of the Failure Recovery Lab"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Inventory's gRPC URL.
    #[arg(
        long,
        env = "ORDERS_INVENTORY_URL",
        default_value = "http://127.0.0.1:50053"
    )]
    pub inventory_url: String,
    /// Payments' gRPC URL.
    #[arg(
        long,
        env = "ORDERS_PAYMENTS_URL",
        default_value = "http://127.0.0.1:50054"
    )]
    pub payments_url: String,
    /// Notifications' gRPC URL.
    #[arg(
        long,
        env = "ORDERS_NOTIFICATIONS_URL",
        default_value = "http://127.0.0.1:50055"
    )]
    pub notifications_url: String,
    /// How often the outbox relay looks for undelivered events.
    #[arg(long, env = "ORDERS_OUTBOX_POLL_MS", default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub outbox_poll_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self::parse_from(["orders"])
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "orders";
    const GRPC_PORT: u16 = 50052;
    const HTTP_PORT: u16 = 9102;
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

/// Runs orders on `bound` until `shutdown` fires; the outbox relay stops with it.
pub async fn run(bound: Bound, config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let mut host = ServiceHost::from_args(Config::NAME, &config.common)?;
    let downstreams = Downstreams::connect(&mut host, &config)?;
    let db =
        lab_store::Db::connect(&config.common.db_config(Config::NAME), sql::MIGRATIONS).await?;
    // Idempotency keys and the outbox are resilience patterns: the profile switches them on.
    let profile = host.profile().clone();
    let idempotency = if profile.idempotency.enabled {
        let store = config.common.idempotency_store(Config::NAME).await?;
        Some((store, Duration::from_secs(profile.idempotency.ttl_s)))
    } else {
        None
    };
    let relay = profile.outbox.then(|| {
        outbox::Relay::new(
            db.clone(),
            downstreams.notifications.clone(),
            Duration::from_millis(config.outbox_poll_ms),
            host.registry_mut(),
        )
    });
    let svc = OrdersService::new(
        db.clone(),
        downstreams,
        idempotency,
        profile.outbox,
        host.registry_mut(),
    );
    host.add_service(
        OrdersServer::new(svc.clone())
            .max_decoding_message_size(lab_runtime::host::MAX_MESSAGE_BYTES),
    )
    .add_service(AuditServer::new(svc));
    let relay_task = relay.map(|relay| tokio::spawn(relay.run(shutdown.clone())));
    host.serve(bound, shutdown).await?;
    if let Some(task) = relay_task {
        task.await?;
    }
    db.close().await;
    Ok(())
}

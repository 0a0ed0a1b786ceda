//! Orders: owns the order lifecycle, as a saga stored in its database.
//!
//! CreateOrder starts a saga — PENDING -> Inventory.Reserve -> RESERVED -> Payments.Charge
//! -> CONFIRMED plus an outbox row in one transaction; on a failure COMPENSATING ->
//! Payments.Refund (void) and Inventory.Release -> FAILED — on a task of its own, and waits
//! for its answer. Each step's outcome is written as it happens, so a saga cut short (the
//! caller's deadline, a crash) is found and finished: by its own driver, or by the
//! [`recovery`] worker once that driver is gone. With idempotency on, a key has exactly one
//! saga: a retry replays its answer, or waits for it while it runs, and a reuse of the key
//! with another customer or other items is refused (FAILED_PRECONDITION). With idempotency
//! off, every attempt is a saga of its own, so the duplicates retries cause stay
//! measurable.
//!
//! The [`outbox`] relay delivers outbox rows to Notifications at least once, surviving
//! crashes; with the outbox off, Notifications.Deliver is called directly after commit,
//! best effort, so lost events become measurable.
//!
//! Layout: [`run`] wires the service; `service` holds the handlers; [`saga`] the saga and
//! its driver; [`recovery`] the recovery worker; [`outbox`] the relay; `sql` every
//! statement.

pub mod outbox;
pub mod recovery;
pub mod saga;
mod service;
pub mod sql;

use std::time::Duration;

use clap::Parser;
use lab_proto::lab::v1::audit_server::AuditServer;
use lab_proto::shop::v1::orders_server::OrdersServer;
use lab_runtime::{Bound, CommonArgs, ServiceConfig, ServiceHost, Shutdown};

pub use service::{Downstreams, OrdersService};

/// How long a clean shutdown waits for the sagas still being driven.
const SAGA_DRAIN: Duration = Duration::from_secs(10);

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
    /// Longest wait for one step of a saga (a Reserve, a Charge, a Refund, a Release);
    /// with no answer by then the step counts as failed and the saga is compensated.
    #[arg(long, env = "ORDERS_SAGA_STEP_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub saga_step_timeout_ms: u64,
    /// How often the recovery worker looks for sagas whose driver is gone.
    #[arg(long, env = "ORDERS_SAGA_RECOVERY_POLL_MS", default_value_t = 500, value_parser = clap::value_parser!(u64).range(1..))]
    pub saga_recovery_poll_ms: u64,
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
        Some(lab_store::Idempotency::new(
            store,
            Duration::from_secs(profile.idempotency.ttl_s),
        ))
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
    let step_timeout = Duration::from_millis(config.saga_step_timeout_ms);
    let driver = saga::Driver::new(
        db.clone(),
        downstreams,
        idempotency,
        profile.outbox,
        step_timeout,
        host.registry_mut(),
    );
    let recovery = recovery::Recovery::new(
        driver.clone(),
        Duration::from_millis(config.saga_recovery_poll_ms),
        host.registry_mut(),
    );
    // Alive before the first saga exists, so no other process takes this one's sagas.
    recovery.start().await?;
    // A healthy saga finishes within a few step timeouts; older unfinished ones are overdue.
    let overdue_after = step_timeout * 3 + recovery::ALIVE_FOR;
    let svc = OrdersService::new(driver.clone(), overdue_after, host.registry_mut());
    host.add_service(
        OrdersServer::new(svc.clone())
            .max_decoding_message_size(lab_runtime::host::MAX_MESSAGE_BYTES),
    )
    .add_lab_service(AuditServer::new(svc));
    let relay_task = relay.map(|relay| tokio::spawn(relay.run(shutdown.clone())));
    let recovery_task = tokio::spawn(recovery.run(shutdown.clone()));
    host.serve(bound, shutdown).await?;
    let recovery = recovery_task.await?;
    // Sagas the drained requests started keep running: let them finish, then hand what is
    // left to the next process at once.
    let left = driver.wait_idle(SAGA_DRAIN).await;
    if left == 0 {
        recovery.retire().await;
    } else {
        tracing::warn!(
            left,
            "stopping with sagas in flight: the next process recovers them"
        );
    }
    if let Some(task) = relay_task {
        task.await?;
    }
    db.close().await;
    Ok(())
}

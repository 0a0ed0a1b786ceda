//! Payments: a payment processor with finite capacity and a ledger.
//!
//! A charge is admitted by the capacity model ([`capacity`]: slots, bounded queue, queue
//! timeout, lognormal service time), holds its slot for the service time, then is written
//! to the ledger. With idempotency on, a key is charged at most once: the lab-store protocol
//! (claim / replay / wait for the attempt in flight; the key refused with another order or
//! amount) and, behind it, a unique index on the key in the ledger. A charge that completes
//! after the caller's deadline is counted as wasted work. Refund by order id voids the
//! order: its charges are refunded and any charge of it still in flight is refused when it
//! reaches the ledger, so an order given up is never left charged.
//!
//! Layout: [`run`] wires the service; `service` holds the gRPC handlers; [`sql`] every
//! statement.

pub mod capacity;
mod service;
pub mod sql;

use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use lab_proto::lab::v1::audit_server::AuditServer;
use lab_proto::shop::v1::payments_server::PaymentsServer;
use lab_runtime::{Bound, CommonArgs, ServiceConfig, ServiceHost, Shutdown};

pub use capacity::{Capacity, CapacityConfig};
pub use service::PaymentsService;

/// The payments service. Flags can also be set by environment variable.
#[derive(Parser, Clone, Debug)]
#[command(
    name = "payments",
    version,
    args_override_self = true,
    about = "Payments service of the Failure Recovery Lab: a processor with finite capacity"
)]
pub struct Config {
    #[command(flatten)]
    pub common: CommonArgs,
    /// Charges processed at the same time.
    #[arg(long, env = "PAYMENTS_SLOTS", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub slots: u32,
    /// Charges that may wait for a slot; more are refused with RESOURCE_EXHAUSTED.
    #[arg(long, env = "PAYMENTS_QUEUE", default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub queue: u32,
    /// Longest wait for a slot before RESOURCE_EXHAUSTED.
    #[arg(long, env = "PAYMENTS_QUEUE_TIMEOUT_MS", default_value_t = 500)]
    pub queue_timeout_ms: u64,
    /// Median service time of one charge (lognormal); 0 = no modelled service time.
    #[arg(long, env = "PAYMENTS_SERVICE_TIME_P50_MS", default_value_t = 20)]
    pub service_time_p50_ms: u64,
    /// 95th percentile of the service time; at least the median.
    #[arg(long, env = "PAYMENTS_SERVICE_TIME_P95_MS", default_value_t = 60)]
    pub service_time_p95_ms: u64,
    /// Seed of the service-time draws.
    #[arg(long, env = "PAYMENTS_SEED", default_value_t = 1)]
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self::parse_from(["payments"])
    }
}

impl ServiceConfig for Config {
    const NAME: &'static str = "payments";
    const GRPC_PORT: u16 = 50054;
    const HTTP_PORT: u16 = 9104;
    fn common(&self) -> &CommonArgs {
        &self.common
    }
}

impl Config {
    /// The capacity model this config describes, or an error naming the bad flag.
    pub fn capacity(&self) -> anyhow::Result<CapacityConfig> {
        if self.service_time_p95_ms < self.service_time_p50_ms {
            anyhow::bail!(
                "--service-time-p95-ms ({}) must be at least --service-time-p50-ms ({})",
                self.service_time_p95_ms,
                self.service_time_p50_ms
            );
        }
        Ok(CapacityConfig {
            slots: self.slots as usize,
            queue: self.queue as usize,
            queue_timeout: Duration::from_millis(self.queue_timeout_ms),
            service_p50: Duration::from_millis(self.service_time_p50_ms),
            service_p95: Duration::from_millis(self.service_time_p95_ms),
            seed: self.seed,
        })
    }
}

/// Runs payments on `bound` until `shutdown` fires.
pub async fn run(bound: Bound, config: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let capacity = Arc::new(Capacity::new(config.capacity()?));
    let mut host = ServiceHost::from_args(Config::NAME, &config.common)?;
    let db =
        lab_store::Db::connect(&config.common.db_config(Config::NAME), sql::MIGRATIONS).await?;
    // Deduplication by key is a resilience pattern: the profile switches it on (f, g).
    let keys = host.profile().idempotency.clone();
    let idempotency = if keys.enabled {
        let store = config.common.idempotency_store(Config::NAME).await?;
        Some(lab_store::Idempotency::new(
            store,
            Duration::from_secs(keys.ttl_s),
        ))
    } else {
        None
    };
    // Payments applies latency faults itself, inside its capacity slot.
    let faults = host.faults(true);
    let svc = PaymentsService::new(
        db.clone(),
        capacity.clone(),
        idempotency,
        faults,
        host.profile().server_for(Config::NAME).deadline.enforce,
        host.registry_mut(),
    );
    host.state()
        .register("capacity", move || capacity.snapshot());
    host.add_service(
        PaymentsServer::new(svc.clone())
            .max_decoding_message_size(lab_runtime::host::MAX_MESSAGE_BYTES),
    )
    .add_lab_service(AuditServer::new(svc));
    host.serve(bound, shutdown).await?;
    db.close().await;
    Ok(())
}

//! The recovery worker: finishes every saga its driver left unfinished.
//!
//! Like the outbox relay it polls, and it needs no request to act. A saga is recovered when
//! its driver is gone — its process stopped renewing its heartbeat in `saga_drivers` (a
//! SIGKILL, a crash, a restart: a new process is a new driver) — or when its driver is
//! this process but no task of it drives the saga any more (the drive stopped on an error
//! and deferred it). It takes the saga over with one fenced update (so two processes
//! never both drive it) and drives it from its stored state: a PENDING or RESERVED saga is
//! compensated (its reservation released; a RESERVED one also voided at payments, which
//! refunds a charge that landed and refuses one still in flight), a COMPENSATING one is
//! compensated to the end. It never sends a charge, so it cannot charge twice, with or
//! without idempotency.
//!
//! Every process renews its heartbeat every [`HEARTBEAT_EVERY`]; a driver whose heartbeat
//! is older than [`ALIVE_FOR`] is presumed dead. The first heartbeat is written before the
//! service accepts requests, and a clean shutdown deletes it, so a restart recovers at
//! once; after a SIGKILL recovery starts within `ALIVE_FOR` plus one poll.

use std::time::Duration;

use lab_runtime::Shutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::time::Instant;

use crate::saga::{Driver, Saga, Start};
use crate::sql;

/// How often a process renews its heartbeat.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a heartbeat vouches for its driver.
pub const ALIVE_FOR: Duration = Duration::from_secs(5);
/// Sagas taken over per poll at most.
const BATCH: i64 = 100;
/// Heartbeat rows of drivers dead this long are deleted at start.
const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);

pub struct Recovery {
    driver: Driver,
    poll: Duration,
    recovered: Counter,
}

impl Recovery {
    pub fn new(driver: Driver, poll: Duration, registry: &mut Registry) -> Self {
        let recovered = Counter::default();
        registry.register(
            "orders_sagas_recovered",
            "Sagas taken over by the recovery worker (their driver died or gave up)",
            recovered.clone(),
        );
        Self {
            driver,
            poll,
            recovered,
        }
    }

    /// Writes this process's first heartbeat (before it accepts requests) and forgets
    /// drivers dead for a day.
    pub async fn start(&self) -> Result<(), lab_store::DbError> {
        let now = lab_runtime::now_ms();
        lab_store::query(sql::FORGET_DEAD_DRIVERS)
            .bind(now - FORGET_AFTER.as_millis() as i64)
            .execute(self.driver.db())
            .await?;
        self.heartbeat().await
    }

    async fn heartbeat(&self) -> Result<(), lab_store::DbError> {
        lab_store::query(sql::HEARTBEAT)
            .bind(self.driver.id())
            .bind(lab_runtime::now_ms() + ALIVE_FOR.as_millis() as i64)
            .execute(self.driver.db())
            .await
            .map(|_| ())
    }

    /// Heartbeats and recovers until `shutdown`; returns itself, to [`Recovery::retire`]
    /// once the sagas in flight are done.
    pub async fn run(self, shutdown: Shutdown) -> Self {
        let mut next_heartbeat = Instant::now() + HEARTBEAT_EVERY;
        loop {
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(self.poll.min(HEARTBEAT_EVERY)) => {}
            }
            if Instant::now() >= next_heartbeat {
                next_heartbeat = Instant::now() + HEARTBEAT_EVERY;
                if let Err(e) = self.heartbeat().await {
                    tracing::warn!("saga heartbeat: {e}");
                }
            }
            if let Err(e) = self.recover_once().await {
                tracing::warn!("saga recovery: {e}");
            }
        }
        self
    }

    /// Deletes this process's heartbeat, so the next process recovers what is left at
    /// once: call when nothing is driven here any more.
    pub async fn retire(&self) {
        if let Err(e) = lab_store::query(sql::RETIRE_DRIVER)
            .bind(self.driver.id())
            .execute(self.driver.db())
            .await
        {
            tracing::warn!("could not retire the saga driver: {e}");
        }
    }

    /// Takes over the recoverable sagas due now and drives each on a task of its own.
    /// Returns how many it took.
    pub async fn recover_once(&self) -> Result<usize, lab_store::DbError> {
        let now = lab_runtime::now_ms();
        let db = self.driver.db();
        let candidates = lab_store::query(sql::RECOVERABLE)
            .bind(now)
            .bind(self.driver.id())
            .bind(BATCH)
            .fetch_all(db)
            .await?;
        let mut taken = 0;
        for row in candidates {
            let order_id: String = row.try_get("order_id")?;
            let previous: String = row.try_get("driver")?;
            // Driven here right now (the registration comes before the row exists).
            let Some(registration) = self.driver.register(&order_id) else {
                continue;
            };
            let took = lab_store::query(sql::TAKE_OVER)
                .bind(&order_id)
                .bind(self.driver.id())
                .bind(&previous)
                .bind(lab_runtime::now_ms())
                .execute(db)
                .await?;
            if took == 0 {
                continue; // another process took it first, or it finished
            }
            let Some(row) = lab_store::query(sql::GET_ORDER)
                .bind(&order_id)
                .fetch_optional(db)
                .await?
            else {
                continue;
            };
            match Saga::from_row(&row) {
                Ok(saga) => {
                    tracing::info!(
                        order_id,
                        state = saga.state.as_str(),
                        previous_driver = previous,
                        "recovering saga"
                    );
                    self.recovered.inc();
                    self.driver.spawn(registration, saga, Start::Recovery);
                    taken += 1;
                }
                Err(status) => {
                    tracing::error!(order_id, "unreadable saga: {}", status.message());
                }
            }
        }
        Ok(taken)
    }
}

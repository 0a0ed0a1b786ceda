//! The gRPC handlers of payments and its audit counters.

use std::sync::Arc;
use std::time::Duration;

use lab_chaos::FaultSet;
use lab_proto::lab::v1::{SnapshotRequest, SnapshotResponse, audit_server::Audit};
use lab_proto::shop::v1::payments_server::Payments;
use lab_proto::shop::v1::{
    ChargeRecord, ChargeRequest, ChargeResponse, GetChargeRequest, Money, RefundRequest,
    RefundResponse,
};
use lab_runtime::{audit, deadline, errors, validate};
use lab_store::{Claim, Db, IdempotencyStore};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use sqlx::Row;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::capacity::{Capacity, Rejected};
use crate::sql;

/// The method faults are matched against.
const CHARGE: &str = "/shop.v1.Payments/Charge";

/// How long a charge holds its idempotency key before another request may take over.
const KEY_LEASE: Duration = Duration::from_secs(30);
/// How long a duplicate waits for the first request with its key before ABORTED.
const KEY_WAIT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug)]
struct Metrics {
    charges: Counter,
    replays: Counter,
    after_deadline: Counter,
    rejected: Family<ReasonLabels, Counter>,
}

#[derive(Clone, Debug)]
pub struct PaymentsService {
    db: Db,
    capacity: Arc<Capacity>,
    idempotency: Option<(IdempotencyStore, Duration)>,
    faults: FaultSet,
    metrics: Metrics,
}

impl PaymentsService {
    pub fn new(
        db: Db,
        capacity: Arc<Capacity>,
        idempotency: Option<(IdempotencyStore, Duration)>,
        faults: FaultSet,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics {
            charges: Counter::default(),
            replays: Counter::default(),
            after_deadline: Counter::default(),
            rejected: Family::default(),
        };
        registry.register(
            "payments_charges",
            "Charges written to the ledger",
            metrics.charges.clone(),
        );
        registry.register(
            "payments_replays",
            "Charges answered from the idempotency store",
            metrics.replays.clone(),
        );
        registry.register(
            "payments_charges_after_deadline",
            "Charges completed after the caller's deadline had passed (wasted work)",
            metrics.after_deadline.clone(),
        );
        registry.register(
            "payments_rejected",
            "Charges refused by the capacity model",
            metrics.rejected.clone(),
        );
        Self {
            db,
            capacity,
            idempotency,
            faults,
            metrics,
        }
    }

    /// Admits, processes and records one charge. Returns the charge id.
    async fn process(
        &self,
        req: &ChargeRequest,
        amount: &Money,
        deadline: Option<Instant>,
    ) -> Result<String, Status> {
        let brownout = self.faults.brownout_factor();
        let _slot = self.capacity.admit(deadline, brownout).await.map_err(|r| {
            let reason = match r {
                Rejected::QueueFull { .. } => "queue_full",
                Rejected::QueueTimeout { .. } => "queue_timeout",
                Rejected::DeadlinePassed => "deadline_passed",
            };
            self.metrics
                .rejected
                .get_or_create(&ReasonLabels { reason })
                .inc();
            match r {
                Rejected::DeadlinePassed => Status::deadline_exceeded(r.to_string()),
                _ => Status::resource_exhausted(r.to_string()),
            }
        })?;
        // An injected latency fault holds the slot, like a slow processor would.
        let service_time =
            self.capacity.service_time() + self.faults.extra_latency(CHARGE).unwrap_or_default();
        if !service_time.is_zero() {
            tokio::time::sleep(service_time).await;
        }
        let after_deadline = deadline.is_some_and(|d| Instant::now() > d);
        if after_deadline {
            self.metrics.after_deadline.inc();
        }
        let charge_id = uuid::Uuid::now_v7().to_string();
        sqlx::query(sql::INSERT_CHARGE)
            .bind(&charge_id)
            .bind(&req.order_id)
            .bind(&req.idempotency_key)
            .bind(amount.minor_units)
            .bind(&amount.currency)
            .bind(i64::from(after_deadline))
            .bind(lab_runtime::now_ms())
            .execute(self.db.pool())
            .await
            .map_err(errors::db)?;
        self.metrics.charges.inc();
        Ok(charge_id)
    }
}

fn validate_amount(amount: Option<&Money>) -> Result<&Money, Status> {
    let amount = amount.ok_or_else(|| validate::invalid("amount", "is required"))?;
    if amount.currency.len() != 3 || !amount.currency.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(validate::invalid(
            "amount.currency",
            format!(
                "must be a 3-letter ISO 4217 code, got {:?}",
                amount.currency
            ),
        ));
    }
    if amount.minor_units <= 0 {
        return Err(validate::invalid(
            "amount.minor_units",
            format!("must be positive, got {}", amount.minor_units),
        ));
    }
    Ok(amount)
}

impl PaymentsService {
    /// One charge, start to finish: idempotency claim, capacity, ledger. Runs as a task of
    /// its own, so a caller that gives up (deadline, cancellation) does not stop a charge the
    /// processor already started: like a real processor, the work completes and is counted
    /// as wasted if the deadline had passed.
    async fn charge_detached(
        self,
        req: ChargeRequest,
        amount: Money,
        deadline: Option<Instant>,
    ) -> Result<ChargeResponse, Status> {
        let Some((store, ttl)) = self.idempotency.clone() else {
            let charge_id = self.process(&req, &amount, deadline).await?;
            return Ok(ChargeResponse {
                charge_id,
                replayed: false,
            });
        };
        let wait = deadline.map_or(KEY_WAIT, |d| {
            d.saturating_duration_since(Instant::now()).min(KEY_WAIT)
        });
        match store
            .claim_or_wait(
                &req.idempotency_key,
                KEY_LEASE,
                wait,
                Duration::from_millis(5),
            )
            .await
            .map_err(errors::idempotency)?
        {
            Claim::Completed(bytes) => {
                self.metrics.replays.inc();
                let charge_id = String::from_utf8(bytes).map_err(|_| {
                    Status::internal("idempotency store holds a malformed charge id")
                })?;
                Ok(ChargeResponse {
                    charge_id,
                    replayed: true,
                })
            }
            Claim::InFlight => Err(Status::aborted(format!(
                "idempotency_key: a charge with key {:?} is still in flight",
                req.idempotency_key
            ))),
            Claim::Acquired => match self.process(&req, &amount, deadline).await {
                Ok(charge_id) => {
                    store
                        .complete(&req.idempotency_key, charge_id.as_bytes(), ttl)
                        .await
                        .map_err(errors::idempotency)?;
                    Ok(ChargeResponse {
                        charge_id,
                        replayed: false,
                    })
                }
                Err(status) => {
                    if let Err(e) = store.abandon(&req.idempotency_key).await {
                        tracing::warn!(
                            "could not release idempotency key {:?}: {e}",
                            req.idempotency_key
                        );
                    }
                    Err(status)
                }
            },
        }
    }
}

#[tonic::async_trait]
impl Payments for PaymentsService {
    async fn charge(
        &self,
        request: Request<ChargeRequest>,
    ) -> Result<Response<ChargeResponse>, Status> {
        let deadline = deadline::remaining(request.metadata()).map(|d| Instant::now() + d);
        let req = request.into_inner();
        validate::id("order_id", &req.order_id, validate::MAX_KEY_LEN)?;
        validate::idempotency_key("idempotency_key", &req.idempotency_key)?;
        let amount = validate_amount(req.amount.as_ref())?.clone();
        tokio::spawn(self.clone().charge_detached(req, amount, deadline))
            .await
            .map_err(|e| Status::internal(format!("charge task failed: {e}")))?
            .map(Response::new)
    }

    async fn refund(
        &self,
        request: Request<RefundRequest>,
    ) -> Result<Response<RefundResponse>, Status> {
        let req = request.into_inner();
        validate::id("charge_id", &req.charge_id, validate::MAX_KEY_LEN)?;
        let done = sqlx::query(sql::REFUND)
            .bind(&req.charge_id)
            .execute(self.db.pool())
            .await
            .map_err(errors::db)?;
        if done.rows_affected() == 0 {
            // Either unknown, or already refunded.
            self.get_charge(Request::new(GetChargeRequest {
                charge_id: req.charge_id,
            }))
            .await?;
        }
        Ok(Response::new(RefundResponse {
            refunded: done.rows_affected() == 1,
        }))
    }

    async fn get_charge(
        &self,
        request: Request<GetChargeRequest>,
    ) -> Result<Response<ChargeRecord>, Status> {
        let req = request.into_inner();
        validate::id("charge_id", &req.charge_id, validate::MAX_KEY_LEN)?;
        let row = sqlx::query(sql::GET_CHARGE)
            .bind(&req.charge_id)
            .fetch_optional(self.db.pool())
            .await
            .map_err(errors::db)?
            .ok_or_else(|| {
                Status::not_found(format!("charge_id: unknown charge {:?}", req.charge_id))
            })?;
        Ok(Response::new(ChargeRecord {
            charge_id: row.try_get("charge_id").map_err(errors::db)?,
            order_id: row.try_get("order_id").map_err(errors::db)?,
            amount: Some(Money {
                currency: row.try_get("currency").map_err(errors::db)?,
                minor_units: row.try_get("amount_minor").map_err(errors::db)?,
            }),
            refunded: row.try_get::<i64, _>("refunded").map_err(errors::db)? != 0,
            created_at_ms: row.try_get("created_at_ms").map_err(errors::db)?,
        }))
    }
}

#[tonic::async_trait]
impl Audit for PaymentsService {
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let mut snap = audit::Snapshot::new(self.db.pool(), request.get_ref().include_ids);
        snap.columns(
            sql::COUNTERS,
            &[
                "charges_total",
                "orders_charged",
                "charges_after_deadline",
                "refunds",
            ],
        )
        .await?
        .columns(
            sql::ORDERS_CHARGED_MORE_THAN_ONCE,
            &["orders_charged_more_than_once"],
        )
        .await?
        .ids("charged_order_ids", sql::CHARGED_ORDER_IDS)
        .await?;
        let duplicates = snap.get("charges_total") - snap.get("orders_charged");
        snap.set("duplicate_charges", duplicates);
        Ok(Response::new(snap.finish("payments")))
    }
}

//! The gRPC handlers of payments and its audit counters.

use std::sync::Arc;

use lab_chaos::FaultSet;
use lab_proto::lab::v1::{SnapshotRequest, SnapshotResponse, audit_server::Audit};
use lab_proto::shop::v1::payments_server::Payments;
use lab_proto::shop::v1::{
    ChargeRecord, ChargeRequest, ChargeResponse, GetChargeRequest, Money, RefundRequest,
    RefundResponse,
};
use lab_runtime::{audit, deadline, errors, validate};
use lab_store::{Begin, Claimed, Db, Fingerprint, Idempotency, IdempotencyError};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::capacity::{Capacity, Rejected};
use crate::sql;

/// The method faults are matched against.
const CHARGE: &str = "/shop.v1.Payments/Charge";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Default)]
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
    idempotency: Option<Idempotency>,
    faults: FaultSet,
    metrics: Metrics,
    /// Whether a queued charge gives up when its caller's deadline passes (the profile's
    /// server deadline enforcement). Without it the charge keeps its place in the queue and
    /// its slot after the caller has gone: wasted work, as in a server that ignores deadlines.
    enforce_deadline: bool,
}

/// What the ledger holds for a charge request.
enum Ledger {
    /// This request's charge, just written.
    Charged(String),
    /// The charge of an earlier request with the key (the idempotency store had lost it).
    Existing {
        charge_id: String,
        first: Fingerprint,
        refunded: bool,
    },
}

/// A key whose charge was refunded (its order voided) is not charged again, nor replayed
/// as if it stood.
fn refunded(key: &str, charge_id: &str) -> Status {
    Status::failed_precondition(format!(
        "idempotency_key: the charge of key {key:?} ({charge_id}) was refunded; it is not \
         charged again"
    ))
}

/// What a reuse of a charge's idempotency key must repeat.
fn fingerprint(order_id: &str, amount: &Money) -> Fingerprint {
    Fingerprint::new().with("order_id", order_id).with(
        "amount",
        format!("{} {}", amount.minor_units, amount.currency),
    )
}

impl PaymentsService {
    pub fn new(
        db: Db,
        capacity: Arc<Capacity>,
        idempotency: Option<Idempotency>,
        faults: FaultSet,
        enforce_deadline: bool,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics::default();
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
            "Charges refused: by the capacity model (queue_full, queue_timeout, \
             deadline_passed), or because their order had been voided (voided)",
            metrics.rejected.clone(),
        );
        Self {
            db,
            capacity,
            idempotency,
            faults,
            metrics,
            enforce_deadline,
        }
    }

    fn reject(&self, reason: &'static str) {
        self.metrics
            .rejected
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// Admits, processes and records one charge, under `dedup_key` when given (a key
    /// already in the ledger writes nothing and returns that charge).
    async fn process(
        &self,
        req: &ChargeRequest,
        amount: &Money,
        deadline: Option<Instant>,
        dedup_key: Option<&str>,
    ) -> Result<Ledger, Status> {
        let brownout = self.faults.brownout_factor();
        let queue_deadline = deadline.filter(|_| self.enforce_deadline);
        let _slot = self
            .capacity
            .admit(queue_deadline, brownout)
            .await
            .map_err(|r| {
                self.reject(match r {
                    Rejected::QueueFull { .. } => "queue_full",
                    Rejected::QueueTimeout { .. } => "queue_timeout",
                    Rejected::DeadlinePassed => "deadline_passed",
                });
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
        let charge_id = uuid::Uuid::now_v7().to_string();
        let mut tx = self.db.begin().await.map_err(errors::db)?;
        // The order's row lock: a void of this order waits for this charge, or this charge
        // sees the void.
        let voided: Option<i64> = lab_store::query(sql::LOCK_ORDER)
            .bind(&req.order_id)
            .fetch_one(&mut tx)
            .await
            .and_then(|row| row.try_get("voided_at_ms"))
            .map_err(errors::db)?;
        if voided.is_some() {
            self.reject("voided");
            return Err(Status::failed_precondition(format!(
                "order_id: order {:?} was voided (its charges refunded) before this charge \
                 could be made; nothing was charged",
                req.order_id
            )));
        }
        let written = lab_store::query(sql::INSERT_CHARGE)
            .bind(&charge_id)
            .bind(&req.order_id)
            .bind(&req.idempotency_key)
            .bind(dedup_key)
            .bind(amount.minor_units)
            .bind(&amount.currency)
            .bind(i64::from(after_deadline))
            .bind(lab_runtime::now_ms())
            .execute(&mut tx)
            .await
            .map_err(errors::db)?;
        if written == 1 {
            tx.commit().await.map_err(errors::db)?;
            self.metrics.charges.inc();
            if after_deadline {
                self.metrics.after_deadline.inc();
            }
            return Ok(Ledger::Charged(charge_id));
        }
        let row = lab_store::query(sql::CHARGE_BY_KEY)
            .bind(dedup_key)
            .fetch_one(&mut tx)
            .await
            .map_err(errors::db)?;
        let first = fingerprint(
            &row.try_get::<String, _>("order_id").map_err(errors::db)?,
            &Money {
                currency: row.try_get("currency").map_err(errors::db)?,
                minor_units: row.try_get("amount_minor").map_err(errors::db)?,
            },
        );
        Ok(Ledger::Existing {
            charge_id: row.try_get("charge_id").map_err(errors::db)?,
            first,
            refunded: row.try_get::<i64, _>("refunded").map_err(errors::db)? != 0,
        })
    }

    /// Whether the ledger holds `charge_id` (refunded: an error).
    async fn ledger_has(&self, key: &str, charge_id: &str) -> Result<bool, Status> {
        let row = lab_store::query(sql::GET_CHARGE)
            .bind(charge_id)
            .fetch_optional(&self.db)
            .await
            .map_err(errors::db)?;
        match row {
            None => Ok(false),
            Some(row) if row.try_get::<i64, _>("refunded").map_err(errors::db)? != 0 => {
                Err(refunded(key, charge_id))
            }
            Some(_) => Ok(true),
        }
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
        let Some(idempotency) = self.idempotency.clone() else {
            // Without idempotency every call charges: duplicates stay measurable.
            return match self.process(&req, &amount, deadline, None).await? {
                Ledger::Charged(charge_id) | Ledger::Existing { charge_id, .. } => {
                    Ok(ChargeResponse {
                        charge_id,
                        replayed: false,
                    })
                }
            };
        };
        let fp = fingerprint(&req.order_id, &amount);
        let claim = match idempotency
            .begin(&req.idempotency_key, &fp, deadline)
            .await
            .map_err(errors::idempotency)?
        {
            Begin::Run(claim) => Some(claim),
            Begin::Replay(charge_id) => {
                let charge_id = String::from_utf8_lossy(&charge_id).into_owned();
                if self.ledger_has(&req.idempotency_key, &charge_id).await? {
                    self.metrics.replays.inc();
                    return Ok(ChargeResponse {
                        charge_id,
                        replayed: true,
                    });
                }
                // The store names a charge this ledger does not hold (it was reset): the
                // ledger decides, by the key's unique index.
                None
            }
        };
        self.charge_once(&idempotency, &req, &amount, &fp, deadline, claim)
            .await
    }

    /// Charges the key unless the ledger already holds its charge; records the answer in
    /// the idempotency store (or drops the claim when the charge failed).
    async fn charge_once(
        &self,
        idempotency: &Idempotency,
        req: &ChargeRequest,
        amount: &Money,
        fp: &Fingerprint,
        deadline: Option<Instant>,
        claim: Option<Claimed>,
    ) -> Result<ChargeResponse, Status> {
        let charged = self
            .process(req, amount, deadline, Some(&req.idempotency_key))
            .await
            .and_then(|ledger| match ledger {
                Ledger::Charged(charge_id) => Ok((charge_id, false, fp.clone())),
                Ledger::Existing {
                    charge_id,
                    first,
                    refunded: was_refunded,
                } => {
                    let differences = first.differences(fp);
                    if !differences.is_empty() {
                        Err(errors::idempotency(IdempotencyError::Mismatch {
                            key: req.idempotency_key.clone(),
                            differences,
                        }))
                    } else if was_refunded {
                        Err(refunded(&req.idempotency_key, &charge_id))
                    } else {
                        Ok((charge_id, true, first))
                    }
                }
            });
        let recorded = match (&charged, claim) {
            (Ok((charge_id, _, first)), _) => {
                idempotency
                    .complete(&req.idempotency_key, first, charge_id.as_bytes())
                    .await
            }
            (Err(_), Some(claim)) => idempotency.abandon(claim).await,
            (Err(_), None) => Ok(()),
        };
        if let Err(e) = recorded {
            tracing::warn!(key = req.idempotency_key, "idempotency store: {e}");
        }
        let (charge_id, replayed, _) = charged?;
        if replayed {
            self.metrics.replays.inc();
        }
        Ok(ChargeResponse {
            charge_id,
            replayed,
        })
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
        match (req.charge_id.is_empty(), req.order_id.is_empty()) {
            (false, true) => self.refund_charge(req.charge_id).await,
            (true, false) => self.void_order(&req.order_id).await,
            _ => Err(validate::invalid(
                "charge_id",
                "give exactly one of charge_id (refund one charge) and order_id (void the order)",
            )),
        }
        .map(Response::new)
    }

    async fn get_charge(
        &self,
        request: Request<GetChargeRequest>,
    ) -> Result<Response<ChargeRecord>, Status> {
        let req = request.into_inner();
        validate::id("charge_id", &req.charge_id, validate::MAX_KEY_LEN)?;
        let row = lab_store::query(sql::GET_CHARGE)
            .bind(&req.charge_id)
            .fetch_optional(&self.db)
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

impl PaymentsService {
    async fn refund_charge(&self, charge_id: String) -> Result<RefundResponse, Status> {
        validate::id("charge_id", &charge_id, validate::MAX_KEY_LEN)?;
        let done = lab_store::query(sql::REFUND)
            .bind(&charge_id)
            .execute(&self.db)
            .await
            .map_err(errors::db)?;
        if done == 0 {
            // Either unknown, or already refunded.
            self.get_charge(Request::new(GetChargeRequest { charge_id }))
                .await?;
        }
        Ok(RefundResponse {
            refunded: done == 1,
            charges_refunded: done as i64,
        })
    }

    /// Refunds every charge of the order and refuses later ones, in one transaction that
    /// holds the order's row lock (a charge being written waits, or is seen).
    async fn void_order(&self, order_id: &str) -> Result<RefundResponse, Status> {
        validate::id("order_id", order_id, validate::MAX_KEY_LEN)?;
        let mut tx = self.db.begin().await.map_err(errors::db)?;
        lab_store::query(sql::VOID_ORDER)
            .bind(order_id)
            .bind(lab_runtime::now_ms())
            .execute(&mut tx)
            .await
            .map_err(errors::db)?;
        let refunded = lab_store::query(sql::REFUND_ORDER)
            .bind(order_id)
            .execute(&mut tx)
            .await
            .map_err(errors::db)?;
        tx.commit().await.map_err(errors::db)?;
        Ok(RefundResponse {
            refunded: refunded > 0,
            charges_refunded: refunded as i64,
        })
    }
}

#[tonic::async_trait]
impl Audit for PaymentsService {
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let mut snap = audit::Snapshot::new(&self.db, request.get_ref().include_ids);
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
        .columns(
            sql::PER_KEY,
            &[
                "keys_charged_more_than_once",
                "duplicate_key_charges",
                "keys_with_unrefunded_duplicates",
            ],
        )
        .await?
        .columns(sql::VOIDS, &["voided_orders"])
        .await?
        .ids("charged_order_ids", sql::CHARGED_ORDER_IDS)
        .await?;
        let duplicates = snap.get("charges_total") - snap.get("orders_charged");
        snap.set("duplicate_charges", duplicates);
        let unrefunded = snap.get("charges_total") - snap.get("refunds");
        snap.set("unrefunded_charges", unrefunded);
        Ok(Response::new(snap.finish("payments")))
    }
}

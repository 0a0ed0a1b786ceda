//! The order saga: durable state in the `orders` table, driven forward or back by whoever
//! holds it — the request that created it, or the recovery worker once its driver is gone.
//!
//! ```text
//! PENDING ──Reserve ok──► RESERVED ──Charge ok──► CONFIRMED   (+ outbox row, same tx)
//!    │                        │
//!    └──Reserve failed──┐     └──Charge failed (or unknown)──┐
//!                       ▼                                    ▼
//!                 COMPENSATING ──(Refund(order) if a charge may exist) + Release──► FAILED
//! ```
//!
//! Each transition is one short statement that records the step's outcome, written only
//! if the saga is still in the state it leaves *and* still held by this driver (`driver =
//! $me`): a driver that lost the saga to another process changes nothing. A charge is sent
//! only after RESERVED is recorded, so a saga found in PENDING was never charged; one
//! found in RESERVED may have been, so its compensation voids the order at payments
//! (refunds every charge of it and refuses any charge still in flight). The charge's
//! outcome is recorded in the same transaction that confirms the order: nothing happens
//! between the two, so a separate CHARGED write would only add a round trip.
//!
//! The driver runs on a task of its own: a request that gave up (its deadline, a dropped
//! connection) does not stop it. It bounds every step by the step timeout; a driver that
//! cannot finish (a database error, compensation refused) leaves the saga, after a backoff,
//! to the recovery worker ([`crate::recovery`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lab_proto::shop::v1::{
    ChargeRequest, DeliverRequest, LineItem, Money, Order, OrderStatus, RefundRequest,
    ReleaseRequest, ReserveRequest,
};
use lab_runtime::{deadline, errors};
use lab_store::{Backend, Claimed, Db, Fingerprint, Idempotency, Row};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;
use tonic::{Code, Status};
use tracing::Instrument;

use crate::service::Downstreams;
use crate::sql;

/// A saga's state, stored as the order's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Reserved,
    Confirmed,
    Compensating,
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Pending => "PENDING",
            State::Reserved => "RESERVED",
            State::Confirmed => "CONFIRMED",
            State::Compensating => "COMPENSATING",
            State::Failed => "FAILED",
        }
    }

    fn parse(s: &str) -> Option<State> {
        Some(match s {
            "PENDING" => State::Pending,
            "RESERVED" => State::Reserved,
            "CONFIRMED" => State::Confirmed,
            "COMPENSATING" => State::Compensating,
            "FAILED" => State::Failed,
            _ => return None,
        })
    }

    fn proto(self) -> OrderStatus {
        match self {
            State::Pending => OrderStatus::Pending,
            State::Reserved => OrderStatus::Reserved,
            State::Confirmed => OrderStatus::Confirmed,
            State::Compensating => OrderStatus::Compensating,
            State::Failed => OrderStatus::Failed,
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(self, State::Confirmed | State::Failed)
    }
}

/// The answer of a finished saga: the confirmed order, or why it failed.
pub type Outcome = Result<Order, Status>;

/// One line item as stored in `items_json`.
#[derive(Serialize, Deserialize)]
struct StoredItem {
    product_id: String,
    quantity: i32,
}

/// One saga, as stored.
#[derive(Clone, Debug)]
pub struct Saga {
    pub order_id: String,
    pub key: String,
    /// Whether the saga is the only one of its key (idempotency on).
    pub deduplicated: bool,
    pub customer_id: String,
    /// Merged and sorted ([`lab_runtime::validate::merged_items`]).
    pub items: Vec<LineItem>,
    pub created_at_ms: i64,
    pub state: State,
    /// Known from RESERVED on.
    pub total: Money,
    pub charge_id: String,
    /// Why it is being (or was) compensated.
    pub failure: Option<Status>,
    /// Whether compensation must void the order at payments (a charge may exist).
    pub refund_needed: bool,
    /// How often a drive of it stopped unfinished before.
    pub recovery_attempts: i64,
}

impl Saga {
    /// A new saga for a request, not stored yet.
    pub fn new(key: &str, deduplicated: bool, customer_id: &str, items: Vec<LineItem>) -> Saga {
        Saga {
            order_id: uuid::Uuid::now_v7().to_string(),
            key: key.to_owned(),
            deduplicated,
            customer_id: customer_id.to_owned(),
            items,
            created_at_ms: lab_runtime::now_ms(),
            state: State::Pending,
            total: Money {
                currency: "USD".into(),
                minor_units: 0,
            },
            charge_id: String::new(),
            failure: None,
            refund_needed: false,
            recovery_attempts: 0,
        }
    }

    pub fn items_json(&self) -> String {
        let stored: Vec<StoredItem> = self
            .items
            .iter()
            .map(|i| StoredItem {
                product_id: i.product_id.clone(),
                quantity: i.quantity,
            })
            .collect();
        serde_json::to_string(&stored).unwrap_or_default()
    }

    /// Reads a row selected with the saga columns (`sql::GET_ORDER`, `sql::SAGA_BY_KEY`).
    pub fn from_row(row: &Row) -> Result<Saga, Status> {
        let items: Vec<StoredItem> =
            serde_json::from_str(&row.try_get::<String, _>("items_json").map_err(errors::db)?)
                .map_err(|e| Status::internal(format!("stored items are malformed: {e}")))?;
        let status: String = row.try_get("status").map_err(errors::db)?;
        let state = State::parse(&status)
            .ok_or_else(|| Status::internal(format!("unknown stored order status {status:?}")))?;
        let code: i64 = row.try_get("failure_code").map_err(errors::db)?;
        let reason: String = row.try_get("failure_reason").map_err(errors::db)?;
        let failure = matches!(state, State::Compensating | State::Failed).then(|| {
            let code = Code::from_i32(i32::try_from(code).unwrap_or(Code::Unknown as i32));
            Status::new(code, reason)
        });
        Ok(Saga {
            order_id: row.try_get("order_id").map_err(errors::db)?,
            key: row.try_get("idempotency_key").map_err(errors::db)?,
            deduplicated: row
                .try_get::<Option<String>, _>("dedup_key")
                .map_err(errors::db)?
                .is_some(),
            customer_id: row.try_get("customer_id").map_err(errors::db)?,
            items: items
                .into_iter()
                .map(|i| LineItem {
                    product_id: i.product_id,
                    quantity: i.quantity,
                })
                .collect(),
            created_at_ms: row.try_get("created_at_ms").map_err(errors::db)?,
            state,
            total: Money {
                currency: row.try_get("currency").map_err(errors::db)?,
                minor_units: row.try_get("total_minor").map_err(errors::db)?,
            },
            charge_id: row.try_get("charge_id").map_err(errors::db)?,
            failure,
            refund_needed: row.try_get::<i64, _>("refund_needed").map_err(errors::db)? != 0,
            recovery_attempts: row.try_get("recovery_attempts").map_err(errors::db)?,
        })
    }

    /// The order as the API shows it.
    pub fn order(&self) -> Order {
        Order {
            order_id: self.order_id.clone(),
            idempotency_key: self.key.clone(),
            customer_id: self.customer_id.clone(),
            items: self.items.clone(),
            total: Some(self.total.clone()),
            status: self.state.proto() as i32,
            failure_reason: self
                .failure
                .as_ref()
                .map(|f| f.message().to_owned())
                .unwrap_or_default(),
            charge_id: self.charge_id.clone(),
            created_at_ms: self.created_at_ms,
        }
    }

    /// The answer, once the saga finished.
    pub fn outcome(&self) -> Option<Outcome> {
        match self.state {
            State::Confirmed => Some(Ok(self.order())),
            State::Failed => Some(Err(self.failure.clone().unwrap_or_else(|| {
                Status::unknown(format!("order {} failed", self.order_id))
            }))),
            _ => None,
        }
    }

    /// The answer a request for this saga gets now: its outcome once finished, and its
    /// failure already while it is being compensated (it can only end FAILED with it).
    pub fn answer(&self) -> Option<Outcome> {
        match (self.state, &self.failure) {
            (State::Compensating, Some(failure)) => Some(Err(failure.clone())),
            _ => self.outcome(),
        }
    }

    pub fn fingerprint(&self) -> Fingerprint {
        fingerprint(&self.customer_id, &self.items)
    }
}

/// What a reuse of an idempotency key must repeat: the customer and the (merged) items.
pub fn fingerprint(customer_id: &str, items: &[LineItem]) -> Fingerprint {
    let items: Vec<String> = items
        .iter()
        .map(|i| format!("{}x{}", i.product_id, i.quantity))
        .collect();
    Fingerprint::new()
        .with("customer_id", customer_id)
        .with("items", items.join(","))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug, Default)]
struct Metrics {
    finished: Family<StatusLabels, Counter>,
    deferred: Counter,
    direct_notify_failures: Counter,
}

/// Drives sagas, for the handlers and the recovery worker alike. Clones share everything.
#[derive(Clone, Debug)]
pub struct Driver {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    downstreams: Downstreams,
    idempotency: Option<Idempotency>,
    outbox: bool,
    /// This process, in `orders.driver` and `saga_drivers`.
    id: String,
    step_timeout: Duration,
    /// The sagas driven in this process, by order id: their outcome, once known.
    running: Mutex<HashMap<String, watch::Receiver<Option<Outcome>>>>,
    /// Signalled when `running` becomes empty.
    idle: Notify,
    metrics: Metrics,
}

/// Who starts a drive.
pub enum Start {
    /// The request that created the saga. `budget`: a deadline for the forward steps (the
    /// caller's, when no retry can ever join this saga); compensation never inherits it.
    /// `claim`: the idempotency key the request holds, completed (or abandoned) at the end.
    Request {
        budget: Option<Instant>,
        claim: Option<Claimed>,
    },
    /// The recovery worker, for a saga whose driver stopped: compensated, never forward.
    Recovery,
}

/// A saga registered as driven in this process; dropping it (once the driver task ends, or
/// when the saga turned out not to be ours) unregisters it.
pub struct Registration {
    driver: Driver,
    order_id: String,
    outcome: watch::Sender<Option<Outcome>>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut running = self.driver.lock_running();
        running.remove(&self.order_id);
        if running.is_empty() {
            self.driver.inner.idle.notify_waiters();
        }
    }
}

impl Registration {
    pub fn outcome(&self) -> watch::Receiver<Option<Outcome>> {
        self.outcome.subscribe()
    }
}

impl Driver {
    pub fn new(
        db: Db,
        downstreams: Downstreams,
        idempotency: Option<Idempotency>,
        outbox: bool,
        step_timeout: Duration,
        registry: &mut Registry,
    ) -> Driver {
        let metrics = Metrics::default();
        registry.register(
            "orders_finished",
            "Sagas finished, by final status",
            metrics.finished.clone(),
        );
        registry.register(
            "orders_sagas_deferred",
            "Saga drives that stopped unfinished (a database error, a compensation refused) \
             and were left to the recovery worker",
            metrics.deferred.clone(),
        );
        registry.register(
            "orders_direct_notify_failures",
            "Direct (outbox off) notifications that failed: lost events",
            metrics.direct_notify_failures.clone(),
        );
        Driver {
            inner: Arc::new(Inner {
                db,
                downstreams,
                idempotency,
                outbox,
                id: uuid::Uuid::now_v7().to_string(),
                step_timeout,
                running: Mutex::default(),
                idle: Notify::new(),
                metrics,
            }),
        }
    }

    /// This process's driver id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    pub fn idempotency(&self) -> Option<&Idempotency> {
        self.inner.idempotency.as_ref()
    }

    fn lock_running(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<Option<Outcome>>>> {
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers `order_id` as driven here; `None` when it already is.
    pub fn register(&self, order_id: &str) -> Option<Registration> {
        let mut running = self.lock_running();
        if running.contains_key(order_id) {
            return None;
        }
        let (outcome, receiver) = watch::channel(None);
        running.insert(order_id.to_owned(), receiver);
        Some(Registration {
            driver: self.clone(),
            order_id: order_id.to_owned(),
            outcome,
        })
    }

    /// The outcome channel of a saga driven in this process.
    pub fn running(&self, order_id: &str) -> Option<watch::Receiver<Option<Outcome>>> {
        self.lock_running().get(order_id).cloned()
    }

    /// Waits until no saga is driven here, at most `timeout`; returns how many still are.
    pub async fn wait_idle(&self, timeout: Duration) -> usize {
        let until = Instant::now() + timeout;
        loop {
            let idle = self.inner.idle.notified();
            let left = self.lock_running().len();
            if left == 0 || Instant::now() >= until {
                return left;
            }
            let _ = tokio::time::timeout_at(until, idle).await;
        }
    }

    /// Drives `saga` on a task of its own, as [`Start`] says.
    pub fn spawn(&self, registration: Registration, mut saga: Saga, start: Start) {
        let driver = self.clone();
        let recovering = matches!(start, Start::Recovery);
        let (budget, claim) = match start {
            Start::Request { budget, claim } => (budget, claim),
            Start::Recovery => (None, None),
        };
        tokio::spawn(
            async move {
                let outcome = if recovering {
                    driver.recover(&mut saga).await
                } else {
                    driver.run(&mut saga, budget).await
                };
                registration.outcome.send_replace(Some(outcome));
                driver.settle_key(&saga, claim).await;
                if saga.state == State::Confirmed && !driver.inner.outbox {
                    driver.notify_directly(&saga).await;
                }
                drop(registration);
            }
            .instrument(tracing::Span::current()),
        );
    }

    /// A saga whose driver stopped: never forward (that could charge a second time), back.
    async fn recover(&self, saga: &mut Saga) -> Outcome {
        if matches!(saga.state, State::Pending | State::Reserved) {
            // Not ABORTED ("in flight, retry"): this key's order can never complete now.
            let failure = Status::failed_precondition(format!(
                "the order was interrupted before it completed (its driver stopped) and was \
                 undone; place it again with a new idempotency key (order {})",
                saga.order_id
            ));
            // A charge is sent only once RESERVED is recorded (`refund_needed` is also set
            // on orders a version before the saga left PENDING).
            let refund_needed = saga.state == State::Reserved || saga.refund_needed;
            if let Err(stopped) = self.start_compensation(saga, failure, refund_needed).await {
                return self.stopped(saga, stopped).await;
            }
        }
        self.run(saga, None).await
    }

    /// Drives the saga as far as it goes; the outcome, or the error that stopped it.
    async fn run(&self, saga: &mut Saga, budget: Option<Instant>) -> Outcome {
        match self.drive(saga, budget).await {
            Ok(()) => {
                self.inner
                    .metrics
                    .finished
                    .get_or_create(&StatusLabels {
                        status: saga.state.as_str(),
                    })
                    .inc();
                saga.outcome()
                    .unwrap_or_else(|| Err(Status::internal("the saga stopped unfinished")))
            }
            Err(stopped) => self.stopped(saga, stopped).await,
        }
    }

    /// A drive stopped before the saga finished: left to the recovery worker.
    async fn stopped(&self, saga: &Saga, stopped: Status) -> Outcome {
        self.inner.metrics.deferred.inc();
        tracing::warn!(
            order_id = saga.order_id,
            state = saga.state.as_str(),
            "saga left to the recovery worker: {}",
            stopped.message()
        );
        self.defer(saga).await;
        // Being compensated: its failure is the answer it will end with.
        Err(saga.failure.clone().unwrap_or(stopped))
    }

    async fn drive(&self, saga: &mut Saga, budget: Option<Instant>) -> Result<(), Status> {
        let downstreams = &self.inner.downstreams;
        loop {
            match saga.state {
                State::Pending => {
                    let reserve = ReserveRequest {
                        order_id: saga.order_id.clone(),
                        items: saga.items.clone(),
                    };
                    let reserved = self
                        .step(budget, downstreams.inventory.clone().reserve(reserve))
                        .await;
                    match reserved {
                        Ok(answer) => {
                            let total = answer.into_inner().total.unwrap_or_default();
                            self.transition(
                                lab_store::query(sql::MARK_RESERVED)
                                    .bind(&saga.order_id)
                                    .bind(&self.inner.id)
                                    .bind(total.minor_units)
                                    .bind(&total.currency)
                                    .bind(lab_runtime::now_ms()),
                                saga,
                            )
                            .await?;
                            saga.total = total;
                            saga.state = State::Reserved;
                        }
                        Err(status) => {
                            let failure = errors::downstream("inventory", &status);
                            self.start_compensation(saga, failure, false).await?;
                        }
                    }
                }
                State::Reserved => {
                    let charge = ChargeRequest {
                        order_id: saga.order_id.clone(),
                        amount: Some(saga.total.clone()),
                        idempotency_key: saga.key.clone(),
                    };
                    match self
                        .step(budget, downstreams.payments.clone().charge(charge))
                        .await
                    {
                        Ok(answer) => {
                            let charge_id = answer.into_inner().charge_id;
                            self.confirm(saga, &charge_id).await?;
                            saga.charge_id = charge_id;
                            saga.state = State::Confirmed;
                        }
                        // Failed or unknown (a timeout): a charge may exist either way.
                        Err(status) => {
                            let failure = errors::downstream("payments", &status);
                            self.start_compensation(saga, failure, true).await?;
                        }
                    }
                }
                State::Compensating => {
                    if saga.refund_needed {
                        let void = RefundRequest {
                            order_id: saga.order_id.clone(),
                            ..RefundRequest::default()
                        };
                        self.step(None, downstreams.payments.clone().refund(void))
                            .await
                            .map_err(|s| errors::downstream("payments refund", &s))?;
                    }
                    let release = ReleaseRequest {
                        order_id: saga.order_id.clone(),
                    };
                    self.step(None, downstreams.inventory.clone().release(release))
                        .await
                        .map_err(|s| errors::downstream("inventory release", &s))?;
                    self.transition(
                        lab_store::query(sql::MARK_FAILED)
                            .bind(&saga.order_id)
                            .bind(&self.inner.id)
                            .bind(lab_runtime::now_ms()),
                        saga,
                    )
                    .await?;
                    saga.state = State::Failed;
                }
                State::Confirmed | State::Failed => return Ok(()),
            }
        }
    }

    /// One downstream call, bounded by the step timeout; within `budget` when given.
    async fn step<T>(
        &self,
        budget: Option<Instant>,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<tonic::Response<T>, Status> {
        let timeout = self.inner.step_timeout;
        match tokio::time::timeout(timeout, deadline::scope(budget, call)).await {
            Ok(answer) => answer,
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no answer within the saga's step timeout ({} ms)",
                timeout.as_millis()
            ))),
        }
    }

    /// Runs one fenced transition; an error when the saga is no longer this driver's.
    async fn transition(&self, query: lab_store::query::Query, saga: &Saga) -> Result<(), Status> {
        let done = query.execute(&self.inner.db).await.map_err(errors::db)?;
        fenced(done, saga)
    }

    async fn start_compensation(
        &self,
        saga: &mut Saga,
        failure: Status,
        refund_needed: bool,
    ) -> Result<(), Status> {
        self.transition(
            lab_store::query(sql::START_COMPENSATION)
                .bind(&saga.order_id)
                .bind(&self.inner.id)
                .bind(failure.message())
                .bind(failure.code() as i64)
                .bind(i64::from(refund_needed))
                .bind(lab_runtime::now_ms()),
            saga,
        )
        .await?;
        saga.failure = Some(failure);
        saga.refund_needed = refund_needed;
        saga.state = State::Compensating;
        Ok(())
    }

    /// RESERVED -> CONFIRMED with the charge id, and the outbox row, atomically.
    async fn confirm(&self, saga: &Saga, charge_id: &str) -> Result<(), Status> {
        let now = lab_runtime::now_ms();
        let db = &self.inner.db;
        let confirm = |sql| {
            lab_store::query(sql)
                .bind(&saga.order_id)
                .bind(&self.inner.id)
                .bind(charge_id)
                .bind(now)
        };
        if !self.inner.outbox {
            return self.transition(confirm(sql::CONFIRM), saga).await;
        }
        let event = confirmed_event(saga);
        // The request's span: the relay's delivery becomes its child.
        let traceparent = lab_runtime::telemetry::current_traceparent();
        if db.backend() == Backend::Postgres {
            let confirmed = confirm(sql::CONFIRM_WITH_EVENT_PG)
                .bind(event.event_id)
                .bind(event.kind)
                .bind(event.payload_json)
                .bind(traceparent);
            return self.transition(confirmed, saga).await;
        }
        let mut tx = db.begin().await.map_err(errors::db)?;
        let done = confirm(sql::CONFIRM)
            .execute(&mut tx)
            .await
            .map_err(errors::db)?;
        fenced(done, saga)?;
        lab_store::query(sql::INSERT_OUTBOX)
            .bind(event.event_id)
            .bind(event.order_id)
            .bind(event.kind)
            .bind(event.payload_json)
            .bind(now)
            .bind(traceparent)
            .execute(&mut tx)
            .await
            .map_err(errors::db)?;
        tx.commit().await.map_err(errors::db)
    }

    /// Best effort, once: if this fails the event is lost, which is what the experiment
    /// measures for profiles without the outbox.
    async fn notify_directly(&self, saga: &Saga) {
        let event = confirmed_event(saga);
        let delivered = self
            .step(
                None,
                self.inner.downstreams.notifications.clone().deliver(event),
            )
            .await;
        if let Err(status) = delivered {
            self.inner.metrics.direct_notify_failures.inc();
            tracing::warn!(
                order_id = saga.order_id,
                "direct notification failed: {}",
                status.message()
            );
        }
    }

    /// Lets the recovery worker retry later, with a backoff that grows with the attempts.
    async fn defer(&self, saga: &Saga) {
        let next = lab_runtime::now_ms() + backoff(saga.recovery_attempts).as_millis() as i64;
        if let Err(e) = lab_store::query(sql::DEFER)
            .bind(&saga.order_id)
            .bind(&self.inner.id)
            .bind(next)
            .execute(&self.inner.db)
            .await
        {
            tracing::warn!(order_id = saga.order_id, "could not defer the saga: {e}");
        }
    }

    /// Records a finished saga's answer under its key (duplicates waiting for it wake up),
    /// or drops the claim of an unfinished one (its retries then join it in the database).
    async fn settle_key(&self, saga: &Saga, claim: Option<Claimed>) {
        let Some(idempotency) = self
            .inner
            .idempotency
            .as_ref()
            .filter(|_| saga.deduplicated)
        else {
            return;
        };
        let settled = if saga.state.is_finished() {
            idempotency
                .complete(&saga.key, &saga.fingerprint(), saga.order_id.as_bytes())
                .await
        } else if let Some(claim) = claim {
            idempotency.abandon(claim).await
        } else {
            Ok(())
        };
        if let Err(e) = settled {
            tracing::warn!(key = saga.key, "idempotency store: {e}");
        }
    }
}

/// Pause before the recovery worker retries a saga that stopped `attempts` times before:
/// 1 s, doubling, at most 30 s.
fn backoff(attempts: i64) -> Duration {
    Duration::from_secs(1 << attempts.clamp(0, 5)).min(Duration::from_secs(30))
}

fn fenced(rows: u64, saga: &Saga) -> Result<(), Status> {
    if rows == 1 {
        Ok(())
    } else {
        Err(Status::aborted(format!(
            "the saga of order {} is no longer driven by this process (it was {})",
            saga.order_id,
            saga.state.as_str()
        )))
    }
}

/// The event a confirmed saga writes to the outbox (public: the chain bench writes the same).
pub fn confirmed_event(saga: &Saga) -> DeliverRequest {
    DeliverRequest {
        event_id: uuid::Uuid::now_v7().to_string(),
        order_id: saga.order_id.clone(),
        kind: "order.confirmed".into(),
        payload_json: serde_json::json!({
            "order_id": saga.order_id,
            "customer_id": saga.customer_id,
            "total_minor": saga.total.minor_units,
            "currency": saga.total.currency,
        })
        .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_map_to_the_api() {
        for state in [
            State::Pending,
            State::Reserved,
            State::Confirmed,
            State::Compensating,
            State::Failed,
        ] {
            assert_eq!(State::parse(state.as_str()), Some(state));
            assert_eq!(
                state.proto().as_str_name(),
                format!("ORDER_STATUS_{}", state.as_str())
            );
        }
        assert_eq!(State::parse("CHARGED"), None);
    }

    #[test]
    fn recovery_backs_off_to_thirty_seconds() {
        assert_eq!(backoff(0), Duration::from_secs(1));
        assert_eq!(backoff(3), Duration::from_secs(8));
        assert_eq!(backoff(40), Duration::from_secs(30));
    }

    #[test]
    fn the_fingerprint_is_the_customer_and_the_merged_items() {
        let items = lab_runtime::validate::merged_items(&[
            LineItem {
                product_id: "sku-2".into(),
                quantity: 1,
            },
            LineItem {
                product_id: "sku-1".into(),
                quantity: 2,
            },
            LineItem {
                product_id: "sku-2".into(),
                quantity: 3,
            },
        ]);
        let fp = fingerprint("c1", &items);
        assert_eq!(
            fp,
            Fingerprint::new()
                .with("customer_id", "c1")
                .with("items", "sku-1x2,sku-2x4")
        );
    }
}

//! The gRPC handlers of orders and its audit counters. The saga itself is in `saga`.

use std::time::Duration;

use lab_proto::lab::v1::{SnapshotRequest, SnapshotResponse, audit_server::Audit};
use lab_proto::shop::v1::inventory_client::InventoryClient;
use lab_proto::shop::v1::notifications_client::NotificationsClient;
use lab_proto::shop::v1::orders_server::Orders;
use lab_proto::shop::v1::payments_client::PaymentsClient;
use lab_proto::shop::v1::{
    CreateOrderRequest, CreateOrderResponse, GetOrderRequest, LineItem, Order,
};
use lab_runtime::client::HopService;
use lab_runtime::{ServiceHost, audit, client, deadline, errors, validate};
use lab_store::idempotency::protocol::MAX_WAIT;
use lab_store::{Begin, Db, Idempotency, IdempotencyError};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::saga::{self, Driver, Outcome, Registration, Saga, Start};
use crate::{Config, sql};

/// gRPC clients of the three downstreams.
#[derive(Clone, Debug)]
pub struct Downstreams {
    pub inventory: InventoryClient<HopService>,
    pub payments: PaymentsClient<HopService>,
    pub notifications: NotificationsClient<HopService>,
}

impl Downstreams {
    /// Clients of the three downstreams, each wrapped in the profile's stack for its hop.
    pub fn connect(host: &mut ServiceHost, config: &Config) -> Result<Self, client::BadUrl> {
        Ok(Self {
            inventory: InventoryClient::new(host.client(
                "inventory",
                "--inventory-url",
                &config.inventory_url,
            )?),
            payments: PaymentsClient::new(host.client(
                "payments",
                "--payments-url",
                &config.payments_url,
            )?),
            notifications: NotificationsClient::new(host.client(
                "notifications",
                "--notifications-url",
                &config.notifications_url,
            )?),
        })
    }
}

#[derive(Clone, Debug)]
pub struct OrdersService {
    driver: Driver,
    replays: Counter,
    /// Unfinished sagas older than this count as overdue in the audit.
    overdue_after: Duration,
}

impl OrdersService {
    pub fn new(driver: Driver, overdue_after: Duration, registry: &mut Registry) -> Self {
        let replays = Counter::default();
        registry.register(
            "orders_replays",
            "CreateOrder answered with the saga of an earlier attempt with the same key",
            replays.clone(),
        );
        Self {
            driver,
            replays,
            overdue_after,
        }
    }

    fn db(&self) -> &Db {
        self.driver.db()
    }

    async fn load(&self, sql: &'static str, id: &str) -> Result<Option<Saga>, Status> {
        lab_store::query(sql)
            .bind(id)
            .fetch_optional(self.db())
            .await
            .map_err(errors::db)?
            .map(|row| Saga::from_row(&row))
            .transpose()
    }

    /// Stores a new saga; false when its key already has one.
    async fn insert(&self, saga: &Saga) -> Result<bool, Status> {
        let done = lab_store::query(sql::INSERT_SAGA)
            .bind(&saga.order_id)
            .bind(&saga.key)
            .bind(saga.deduplicated.then_some(saga.key.as_str()))
            .bind(&saga.customer_id)
            .bind(saga.items_json())
            .bind(self.driver.id())
            .bind(saga.created_at_ms)
            .execute(self.db())
            .await
            .map_err(errors::db)?;
        Ok(done == 1)
    }

    /// Places a validated order and waits for its answer. `budget`: the incoming deadline
    /// the client stacks propagate; `deadline`: the caller's, for waiting on another attempt.
    async fn place(
        self,
        req: CreateOrderRequest,
        budget: Option<Instant>,
        deadline: Option<Instant>,
    ) -> Outcome {
        let items = validate::merged_items(&req.items);
        match self.driver.idempotency() {
            None => self.place_new(&req, items, budget).await,
            Some(idempotency) => self.place_once(idempotency, &req, items, deadline).await,
        }
    }

    /// Idempotency off: every attempt is a saga of its own, whose forward steps keep the
    /// caller's deadline (nobody can join it once the caller has given up).
    async fn place_new(
        &self,
        req: &CreateOrderRequest,
        items: Vec<LineItem>,
        budget: Option<Instant>,
    ) -> Outcome {
        let saga = Saga::new(&req.idempotency_key, false, &req.customer_id, items);
        let registration = self.register(&saga)?;
        if !self.insert(&saga).await? {
            return Err(Status::internal(
                "a saga without a key conflicted on insert",
            ));
        }
        let outcome = registration.outcome();
        self.driver.spawn(
            registration,
            saga,
            Start::Request {
                budget,
                claim: None,
            },
        );
        answer(outcome).await
    }

    /// Idempotency on: one saga per key. A retry replays the saga's answer, or joins it
    /// while it runs; a reuse of the key with another customer or other items is refused.
    async fn place_once(
        &self,
        idempotency: &Idempotency,
        req: &CreateOrderRequest,
        items: Vec<LineItem>,
        deadline: Option<Instant>,
    ) -> Outcome {
        let fingerprint = saga::fingerprint(&req.customer_id, &items);
        let claim = match idempotency
            .begin(&req.idempotency_key, &fingerprint, deadline)
            .await
            .map_err(errors::idempotency)?
        {
            Begin::Run(claim) => Some(claim),
            Begin::Replay(order_id) => {
                let order_id = String::from_utf8_lossy(&order_id);
                match self.load(sql::GET_ORDER, &order_id).await? {
                    Some(saga) => {
                        self.replays.inc();
                        return match saga.answer() {
                            Some(outcome) => outcome,
                            None => self.join(&saga, deadline).await,
                        };
                    }
                    // The store names an order this database does not hold (it was reset):
                    // the database decides.
                    None => None,
                }
            }
        };
        let saga = Saga::new(&req.idempotency_key, true, &req.customer_id, items);
        let registration = self.register(&saga)?;
        if self.insert(&saga).await? {
            let outcome = registration.outcome();
            self.driver.spawn(
                registration,
                saga,
                // The saga outlives the caller's deadline: its retries join it.
                Start::Request {
                    budget: None,
                    claim,
                },
            );
            return answer(outcome).await;
        }
        drop(registration);
        // The key has a saga the store did not know of (its claim lapsed, or an in-memory
        // store restarted): the database row is the truth.
        let existing = self
            .load(sql::SAGA_BY_KEY, &req.idempotency_key)
            .await?
            .ok_or_else(|| Status::internal("a saga conflicted on its key but is not stored"))?;
        let differences = existing.fingerprint().differences(&fingerprint);
        let mismatch = !differences.is_empty();
        if let Some(claim) = claim {
            // A finished saga's answer goes back into the store; an unfinished one's
            // driver records it when it finishes.
            let released = if existing.state.is_finished() && !mismatch {
                idempotency
                    .complete(&existing.key, &fingerprint, existing.order_id.as_bytes())
                    .await
            } else {
                idempotency.abandon(claim).await
            };
            if let Err(e) = released {
                tracing::warn!(key = req.idempotency_key, "idempotency store: {e}");
            }
        }
        if mismatch {
            return Err(errors::idempotency(IdempotencyError::Mismatch {
                key: req.idempotency_key.clone(),
                differences,
            }));
        }
        let settled = existing.answer();
        self.replays.inc();
        match settled {
            Some(outcome) => outcome,
            None => self.join(&existing, deadline).await,
        }
    }

    fn register(&self, saga: &Saga) -> Result<Registration, Status> {
        self.driver
            .register(&saga.order_id)
            .ok_or_else(|| Status::internal("a fresh order id is already being driven"))
    }

    /// Waits for an unfinished saga (until `deadline`, at most the protocol's longest
    /// wait): on its outcome channel when it is driven in this process, else by reading it
    /// again with a backoff (another process drives it, or the recovery worker will).
    async fn join(&self, saga: &Saga, deadline: Option<Instant>) -> Outcome {
        let now = Instant::now();
        let until = deadline.map_or(now + MAX_WAIT, |d| d.min(now + MAX_WAIT));
        let still_running = |state: &str| {
            Status::aborted(format!(
                "idempotency_key: the order with key {:?} (order {}) is still being placed \
                 ({state}); retry later with the same key",
                saga.key, saga.order_id
            ))
        };
        if let Some(outcome) = self.driver.running(&saga.order_id) {
            return match tokio::time::timeout_at(until, answer(outcome)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(still_running(saga.state.as_str())),
            };
        }
        let mut pause = Duration::from_millis(5);
        let mut last = saga.state;
        loop {
            let now = Instant::now();
            if now >= until {
                return Err(still_running(last.as_str()));
            }
            tokio::time::sleep(pause.min(until - now)).await;
            pause = (pause * 2).min(Duration::from_millis(200));
            if let Some(current) = self.load(sql::GET_ORDER, &saga.order_id).await? {
                if let Some(outcome) = current.answer() {
                    return outcome;
                }
                last = current.state;
            }
        }
    }
}

/// The outcome a saga's driver publishes.
async fn answer(mut outcome: watch::Receiver<Option<Outcome>>) -> Outcome {
    match outcome.wait_for(Option::is_some).await {
        Ok(published) => published
            .clone()
            .unwrap_or_else(|| Err(Status::internal("no outcome"))),
        Err(_) => Err(Status::internal(
            "the saga's driver stopped without an answer",
        )),
    }
}

#[tonic::async_trait]
impl Orders for OrdersService {
    async fn create_order(
        &self,
        request: Request<CreateOrderRequest>,
    ) -> Result<Response<CreateOrderResponse>, Status> {
        let deadline = deadline::remaining(request.metadata()).map(|d| Instant::now() + d);
        let req = request.into_inner();
        validate::idempotency_key("idempotency_key", &req.idempotency_key)?;
        validate::id("customer_id", &req.customer_id, validate::MAX_ID_LEN)?;
        validate::line_items("items", &req.items)?;
        // On a task of its own: a caller that gives up between claiming the key, storing
        // the saga and starting its driver must not leave the key claimed by nobody, nor
        // the saga stored but not driven.
        let service = self.clone();
        let budget = deadline::current();
        let order = tokio::spawn(
            async move { service.place(req, budget, deadline).await }
                .instrument(tracing::Span::current()),
        )
        .await
        .map_err(|e| Status::internal(format!("the order task failed: {e}")))??;
        Ok(Response::new(CreateOrderResponse { order: Some(order) }))
    }

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let req = request.into_inner();
        validate::id("order_id", &req.order_id, validate::MAX_KEY_LEN)?;
        let saga = self
            .load(sql::GET_ORDER, &req.order_id)
            .await?
            .ok_or_else(|| {
                Status::not_found(format!("order_id: unknown order {:?}", req.order_id))
            })?;
        Ok(Response::new(saga.order()))
    }
}

#[tonic::async_trait]
impl Audit for OrdersService {
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let mut snap = audit::Snapshot::new(self.db(), request.get_ref().include_ids);
        let overdue_before = lab_runtime::now_ms() - self.overdue_after.as_millis() as i64;
        snap.by_status(
            sql::COUNT_BY_STATUS,
            "orders",
            &["PENDING", "RESERVED", "CONFIRMED", "COMPENSATING", "FAILED"],
        )
        .await?
        .columns(
            sql::DUPLICATE_CONFIRMED,
            &["keys_with_duplicate_orders", "duplicate_orders"],
        )
        .await?
        .columns(
            sql::KEYS_WITH_MULTIPLE_ORDERS,
            &["keys_with_multiple_orders"],
        )
        .await?
        .columns_with(
            sql::UNFINISHED,
            &[overdue_before],
            &["sagas_unfinished", "sagas_overdue"],
        )
        .await?
        .columns(
            sql::OUTBOX_COUNTERS,
            &["outbox_backlog", "outbox_delivered"],
        )
        .await?
        .ids("confirmed_order_ids", sql::CONFIRMED_IDS)
        .await?
        .ids("unfinished_order_ids", sql::UNFINISHED_IDS)
        .await?;
        Ok(Response::new(snap.finish("orders")))
    }
}

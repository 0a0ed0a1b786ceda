//! The gRPC handlers of orders and its audit counters.

use std::time::Duration;

use lab_proto::lab::v1::{SnapshotRequest, SnapshotResponse, audit_server::Audit};
use lab_proto::shop::v1::inventory_client::InventoryClient;
use lab_proto::shop::v1::notifications_client::NotificationsClient;
use lab_proto::shop::v1::orders_server::Orders;
use lab_proto::shop::v1::payments_client::PaymentsClient;
use lab_proto::shop::v1::{
    ChargeRequest, CreateOrderRequest, CreateOrderResponse, DeliverRequest, GetOrderRequest,
    LineItem, Money, Order, OrderStatus, ReleaseRequest, ReserveRequest,
};
use lab_runtime::client::HopService;
use lab_runtime::{ServiceHost, audit, client, deadline, errors, validate};
use lab_store::{Claim, Db, IdempotencyStore};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use crate::{Config, sql};

/// How long a request holds its idempotency key before another may take over.
const KEY_LEASE: Duration = Duration::from_secs(30);
/// How long a duplicate waits for the first request with its key before ABORTED.
const KEY_WAIT: Duration = Duration::from_secs(10);

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

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Clone, Debug)]
struct Metrics {
    orders: Family<StatusLabels, Counter>,
    replays: Counter,
    direct_notify_failures: Counter,
    release_failures: Counter,
}

#[derive(Clone, Debug)]
pub struct OrdersService {
    db: Db,
    downstreams: Downstreams,
    idempotency: Option<(IdempotencyStore, Duration)>,
    outbox: bool,
    metrics: Metrics,
}

#[derive(Serialize, Deserialize)]
struct StoredItem {
    product_id: String,
    quantity: i32,
}

impl OrdersService {
    pub fn new(
        db: Db,
        downstreams: Downstreams,
        idempotency: Option<(IdempotencyStore, Duration)>,
        outbox: bool,
        registry: &mut Registry,
    ) -> Self {
        let metrics = Metrics {
            orders: Family::default(),
            replays: Counter::default(),
            direct_notify_failures: Counter::default(),
            release_failures: Counter::default(),
        };
        registry.register(
            "orders_finished",
            "Orders by final status",
            metrics.orders.clone(),
        );
        registry.register(
            "orders_replays",
            "CreateOrder answered from the idempotency store",
            metrics.replays.clone(),
        );
        registry.register(
            "orders_direct_notify_failures",
            "Direct (outbox off) notifications that failed: lost events",
            metrics.direct_notify_failures.clone(),
        );
        registry.register(
            "orders_release_failures",
            "Reservations of failed orders that could not be released (orphans)",
            metrics.release_failures.clone(),
        );
        Self {
            db,
            downstreams,
            idempotency,
            outbox,
            metrics,
        }
    }

    async fn fail(&self, order_id: &str, reason: &str, total: i64) {
        self.metrics
            .orders
            .get_or_create(&StatusLabels { status: "FAILED" })
            .inc();
        if let Err(e) = sqlx::query(sql::FAIL_ORDER)
            .bind(order_id)
            .bind(reason)
            .bind(total)
            .bind(lab_runtime::now_ms())
            .execute(self.db.pool())
            .await
        {
            tracing::error!(order_id, "could not mark the order FAILED: {e}");
        }
    }

    /// Creates one order: the whole saga, once.
    async fn execute(&self, req: &CreateOrderRequest) -> Result<CreateOrderResponse, Status> {
        let order_id = uuid::Uuid::now_v7().to_string();
        let now = lab_runtime::now_ms();
        let items_json = serde_json::to_string(
            &req.items
                .iter()
                .map(|i| StoredItem {
                    product_id: i.product_id.clone(),
                    quantity: i.quantity,
                })
                .collect::<Vec<_>>(),
        )
        .map_err(|e| Status::internal(e.to_string()))?;
        sqlx::query(sql::INSERT_ORDER)
            .bind(&order_id)
            .bind(&req.idempotency_key)
            .bind(&req.customer_id)
            .bind(&items_json)
            .bind(now)
            .execute(self.db.pool())
            .await
            .map_err(errors::db)?;

        let reserve = ReserveRequest {
            order_id: order_id.clone(),
            items: req.items.clone(),
        };
        let total = match self.downstreams.inventory.clone().reserve(reserve).await {
            Ok(r) => r.into_inner().total.unwrap_or_default(),
            Err(status) => {
                self.fail(&order_id, &format!("inventory: {}", status.message()), 0)
                    .await;
                // The reservation may have been made before the answer was lost.
                self.release(&order_id).await;
                return Err(errors::downstream("inventory", &status));
            }
        };

        let charge = ChargeRequest {
            order_id: order_id.clone(),
            amount: Some(total.clone()),
            idempotency_key: order_id.clone(),
        };
        let charge_id = match self.downstreams.payments.clone().charge(charge).await {
            Ok(r) => r.into_inner().charge_id,
            Err(status) => {
                self.fail(
                    &order_id,
                    &format!("payments: {}", status.message()),
                    total.minor_units,
                )
                .await;
                self.release(&order_id).await;
                return Err(errors::downstream("payments", &status));
            }
        };

        let event = DeliverRequest {
            event_id: uuid::Uuid::now_v7().to_string(),
            order_id: order_id.clone(),
            kind: "order.confirmed".into(),
            payload_json: serde_json::json!({
                "order_id": order_id,
                "customer_id": req.customer_id,
                "total_minor": total.minor_units,
                "currency": total.currency,
            })
            .to_string(),
        };
        let confirmed_at = lab_runtime::now_ms();
        let mut tx = self.db.pool().begin().await.map_err(errors::db)?;
        sqlx::query(sql::CONFIRM_ORDER)
            .bind(&order_id)
            .bind(total.minor_units)
            .bind(&total.currency)
            .bind(&charge_id)
            .bind(confirmed_at)
            .execute(&mut *tx)
            .await
            .map_err(errors::db)?;
        if self.outbox {
            sqlx::query(sql::INSERT_OUTBOX)
                .bind(&event.event_id)
                .bind(&event.order_id)
                .bind(&event.kind)
                .bind(&event.payload_json)
                .bind(confirmed_at)
                // This handler's span: the relay's delivery becomes its child.
                .bind(lab_runtime::telemetry::current_traceparent())
                .execute(&mut *tx)
                .await
                .map_err(errors::db)?;
        }
        tx.commit().await.map_err(errors::db)?;
        self.metrics
            .orders
            .get_or_create(&StatusLabels {
                status: "CONFIRMED",
            })
            .inc();
        if !self.outbox {
            // Best effort, once: if this fails the event is lost, which is what the
            // experiment measures for profiles without the outbox.
            if let Err(status) = self.downstreams.notifications.clone().deliver(event).await {
                self.metrics.direct_notify_failures.inc();
                tracing::warn!(order_id, "direct notification failed: {}", status.message());
            }
        }
        Ok(CreateOrderResponse {
            order: Some(Order {
                order_id,
                idempotency_key: req.idempotency_key.clone(),
                customer_id: req.customer_id.clone(),
                items: req.items.clone(),
                total: Some(total),
                status: OrderStatus::Confirmed as i32,
                failure_reason: String::new(),
                charge_id,
                created_at_ms: now,
            }),
        })
    }

    async fn release(&self, order_id: &str) {
        let release = ReleaseRequest {
            order_id: order_id.to_string(),
        };
        if let Err(status) = self.downstreams.inventory.clone().release(release).await {
            self.metrics.release_failures.inc();
            tracing::warn!(order_id, "release failed: {}", status.message());
        }
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
        let Some((store, ttl)) = self.idempotency.clone() else {
            return self.execute(&req).await.map(Response::new);
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
                let response = CreateOrderResponse::decode(bytes.as_slice()).map_err(|e| {
                    Status::internal(format!("idempotency store holds a malformed answer: {e}"))
                })?;
                Ok(Response::new(response))
            }
            Claim::InFlight => Err(Status::aborted(format!(
                "idempotency_key: an order with key {:?} is still being placed",
                req.idempotency_key
            ))),
            Claim::Acquired => match self.execute(&req).await {
                Ok(response) => {
                    store
                        .complete(&req.idempotency_key, &response.encode_to_vec(), ttl)
                        .await
                        .map_err(errors::idempotency)?;
                    Ok(Response::new(response))
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

    async fn get_order(
        &self,
        request: Request<GetOrderRequest>,
    ) -> Result<Response<Order>, Status> {
        let req = request.into_inner();
        validate::id("order_id", &req.order_id, validate::MAX_KEY_LEN)?;
        let row = sqlx::query(sql::GET_ORDER)
            .bind(&req.order_id)
            .fetch_optional(self.db.pool())
            .await
            .map_err(errors::db)?
            .ok_or_else(|| {
                Status::not_found(format!("order_id: unknown order {:?}", req.order_id))
            })?;
        let items: Vec<StoredItem> =
            serde_json::from_str(&row.try_get::<String, _>("items_json").map_err(errors::db)?)
                .map_err(|e| Status::internal(format!("stored items are malformed: {e}")))?;
        let status: String = row.try_get("status").map_err(errors::db)?;
        Ok(Response::new(Order {
            order_id: row.try_get("order_id").map_err(errors::db)?,
            idempotency_key: row.try_get("idempotency_key").map_err(errors::db)?,
            customer_id: row.try_get("customer_id").map_err(errors::db)?,
            items: items
                .into_iter()
                .map(|i| LineItem {
                    product_id: i.product_id,
                    quantity: i.quantity,
                })
                .collect(),
            total: Some(Money {
                currency: row.try_get("currency").map_err(errors::db)?,
                minor_units: row.try_get("total_minor").map_err(errors::db)?,
            }),
            status: OrderStatus::from_str_name(&format!("ORDER_STATUS_{status}"))
                .unwrap_or(OrderStatus::Unspecified) as i32,
            failure_reason: row.try_get("failure_reason").map_err(errors::db)?,
            charge_id: row.try_get("charge_id").map_err(errors::db)?,
            created_at_ms: row.try_get("created_at_ms").map_err(errors::db)?,
        }))
    }
}

#[tonic::async_trait]
impl Audit for OrdersService {
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let mut snap = audit::Snapshot::new(self.db.pool(), request.get_ref().include_ids);
        snap.by_status(
            sql::COUNT_BY_STATUS,
            "orders",
            &["PENDING", "CONFIRMED", "FAILED"],
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
        .columns(
            sql::OUTBOX_COUNTERS,
            &["outbox_backlog", "outbox_delivered"],
        )
        .await?
        .ids("confirmed_order_ids", sql::CONFIRMED_IDS)
        .await?;
        Ok(Response::new(snap.finish("orders")))
    }
}

//! The gRPC handlers of notifications and its audit counters.

use lab_proto::lab::v1::{SnapshotRequest, SnapshotResponse, audit_server::Audit};
use lab_proto::shop::v1::notifications_server::Notifications;
use lab_proto::shop::v1::{
    DeliverRequest, DeliverResponse, Delivery, ListDeliveriesRequest, ListDeliveriesResponse,
};
use lab_runtime::{audit, errors, validate};
use lab_store::Db;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tonic::{Request, Response, Status};

use crate::sql;

/// Largest payload accepted, in bytes.
const MAX_PAYLOAD: usize = 16 * 1024;

#[derive(Clone, Debug)]
pub struct NotificationsService {
    db: Db,
    delivered: Counter,
    duplicates: Counter,
}

impl NotificationsService {
    pub fn new(db: Db, registry: &mut Registry) -> Self {
        let svc = Self {
            db,
            delivered: Counter::default(),
            duplicates: Counter::default(),
        };
        registry.register(
            "notifications_delivered",
            "Events delivered (the side effect, once per event)",
            svc.delivered.clone(),
        );
        registry.register(
            "notifications_duplicates",
            "Deliver calls for an event already delivered (deduplicated)",
            svc.duplicates.clone(),
        );
        svc
    }
}

#[tonic::async_trait]
impl Notifications for NotificationsService {
    async fn deliver(
        &self,
        request: Request<DeliverRequest>,
    ) -> Result<Response<DeliverResponse>, Status> {
        let req = request.into_inner();
        validate::id("event_id", &req.event_id, validate::MAX_KEY_LEN)?;
        validate::id("order_id", &req.order_id, validate::MAX_KEY_LEN)?;
        validate::id("kind", &req.kind, validate::MAX_ID_LEN)?;
        if req.payload_json.len() > MAX_PAYLOAD {
            return Err(validate::invalid(
                "payload_json",
                format!(
                    "must be at most {MAX_PAYLOAD} bytes, got {}",
                    req.payload_json.len()
                ),
            ));
        }
        if !req.payload_json.is_empty()
            && serde_json::from_str::<serde_json::Value>(&req.payload_json).is_err()
        {
            return Err(validate::invalid("payload_json", "is not valid JSON"));
        }
        let row = lab_store::query(sql::DELIVER)
            .bind(&req.event_id)
            .bind(&req.order_id)
            .bind(&req.kind)
            .bind(&req.payload_json)
            .bind(lab_runtime::now_ms())
            .fetch_one(&self.db)
            .await
            .map_err(errors::db)?;
        let receipts: i64 = row.try_get("receipts").map_err(errors::db)?;
        let duplicate = receipts > 1;
        if duplicate {
            self.duplicates.inc();
        } else {
            self.delivered.inc();
        }
        Ok(Response::new(DeliverResponse { duplicate }))
    }

    async fn list_deliveries(
        &self,
        request: Request<ListDeliveriesRequest>,
    ) -> Result<Response<ListDeliveriesResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 100,
            n @ 1..=1000 => i64::from(n),
            n => {
                return Err(validate::invalid(
                    "limit",
                    format!("must be between 0 and 1000, got {n}"),
                ));
            }
        };
        let rows = if req.order_id.is_empty() {
            lab_store::query(sql::LIST_ALL)
                .bind(limit)
                .fetch_all(&self.db)
                .await
        } else {
            validate::id("order_id", &req.order_id, validate::MAX_KEY_LEN)?;
            lab_store::query(sql::LIST_FOR_ORDER)
                .bind(&req.order_id)
                .bind(limit)
                .fetch_all(&self.db)
                .await
        }
        .map_err(errors::db)?;
        let deliveries = rows
            .iter()
            .map(|r| {
                Ok(Delivery {
                    event_id: r.try_get("event_id")?,
                    order_id: r.try_get("order_id")?,
                    kind: r.try_get("kind")?,
                    receipts: r.try_get("receipts")?,
                    delivered_at_ms: r.try_get("delivered_at_ms")?,
                })
            })
            .collect::<Result<Vec<_>, lab_store::DbError>>()
            .map_err(errors::db)?;
        Ok(Response::new(ListDeliveriesResponse { deliveries }))
    }
}

#[tonic::async_trait]
impl Audit for NotificationsService {
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let mut snap = audit::Snapshot::new(&self.db, request.get_ref().include_ids);
        snap.columns(
            sql::COUNTERS,
            &[
                "deliveries_total",
                "receipts_total",
                "events_received_more_than_once",
            ],
        )
        .await?
        .columns(
            sql::ORDERS_WITH_MORE_THAN_ONE_EVENT,
            &["orders_notified_more_than_once"],
        )
        .await?
        .ids("delivered_order_ids", sql::DELIVERED_ORDER_IDS)
        .await?;
        Ok(Response::new(snap.finish("notifications")))
    }
}

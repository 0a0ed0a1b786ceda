//! The gRPC handlers of inventory and its audit counters.

use std::collections::BTreeMap;

use lab_chaos::FaultSet;
use lab_proto::lab::v1::{SnapshotRequest, SnapshotResponse, audit_server::Audit};
use lab_proto::shop::v1::inventory_server::Inventory;
use lab_proto::shop::v1::{
    GetStockRequest, GetStockResponse, Money, ReleaseRequest, ReleaseResponse, ReserveRequest,
    ReserveResponse,
};
use lab_runtime::{audit, errors, validate};
use lab_store::Db;
use tonic::{Request, Response, Status};

use crate::sql;

#[derive(Clone, Debug)]
pub struct InventoryService {
    db: Db,
    faults: FaultSet,
}

impl InventoryService {
    pub fn new(db: Db, faults: FaultSet) -> Self {
        Self { db, faults }
    }
}

/// `items[i]` of the first item naming `product_id`, for error messages.
fn item_field(req: &ReserveRequest, product_id: &str) -> String {
    req.items
        .iter()
        .position(|i| i.product_id == product_id)
        .map(|i| format!("items[{i}]"))
        .unwrap_or_else(|| "items".into())
}

/// Quantities per product, duplicates merged, in product id order (the lock order).
fn merged_items(req: &ReserveRequest) -> BTreeMap<&str, i64> {
    let mut merged = BTreeMap::new();
    for item in &req.items {
        *merged.entry(item.product_id.as_str()).or_insert(0) += i64::from(item.quantity);
    }
    merged
}

#[tonic::async_trait]
impl Inventory for InventoryService {
    async fn reserve(
        &self,
        request: Request<ReserveRequest>,
    ) -> Result<Response<ReserveResponse>, Status> {
        let req = request.into_inner();
        validate::id("order_id", &req.order_id, validate::MAX_KEY_LEN)?;
        validate::line_items("items", &req.items)?;
        let now = lab_runtime::now_ms();
        let mut tx = self.db.begin().await.map_err(errors::db)?;
        // Prices first, without locks; then the reservation with its total, and its items;
        // the products' row locks (TAKE_STOCK) come last, so each is held for one statement
        // and the commit rather than for the whole transaction: every order of a product
        // queues on its row, and on Postgres each statement is a round trip.
        let items = merged_items(&req);
        let mut priced = Vec::with_capacity(items.len());
        let mut total: i64 = 0;
        let mut currency = String::from("USD");
        for (product_id, quantity) in &items {
            let row = lab_store::query(sql::PRICE)
                .bind(*product_id)
                .fetch_optional(&mut tx)
                .await
                .map_err(errors::db)?
                .ok_or_else(|| {
                    Status::not_found(format!(
                        "{}.product_id: unknown product {product_id:?}",
                        item_field(&req, product_id)
                    ))
                })?;
            let price: i64 = row.try_get("price_minor").map_err(errors::db)?;
            currency = row.try_get("currency").map_err(errors::db)?;
            total = total
                .checked_add(price.checked_mul(*quantity).unwrap_or(i64::MAX))
                .ok_or_else(|| Status::invalid_argument("items: order total overflows"))?;
            priced.push((*product_id, *quantity, price));
        }
        let reservation_id = uuid::Uuid::now_v7().to_string();
        let inserted = lab_store::query(sql::INSERT_RESERVATION)
            .bind(&req.order_id)
            .bind(&reservation_id)
            .bind(now)
            .bind(total)
            .execute(&mut tx)
            .await
            .map_err(errors::db)?;
        if inserted == 0 {
            // A retry for an order we already reserved: answer with the first reservation.
            let row = lab_store::query(sql::SELECT_RESERVATION)
                .bind(&req.order_id)
                .fetch_one(&mut tx)
                .await
                .map_err(errors::db)?;
            let status: String = row.try_get("status").map_err(errors::db)?;
            if status != "OPEN" {
                return Err(Status::failed_precondition(format!(
                    "order_id: order {:?} was already released (or cancelled before it was \
                     reserved)",
                    req.order_id
                )));
            }
            return Ok(Response::new(ReserveResponse {
                reservation_id: row.try_get("reservation_id").map_err(errors::db)?,
                total: Some(Money {
                    currency: "USD".into(),
                    minor_units: row.try_get("total_minor").map_err(errors::db)?,
                }),
                replayed: true,
            }));
        }
        for (product_id, quantity, _) in &priced {
            lab_store::query(sql::INSERT_ITEM)
                .bind(&req.order_id)
                .bind(*product_id)
                .bind(*quantity)
                .execute(&mut tx)
                .await
                .map_err(errors::db)?;
        }
        for (product_id, quantity, price) in priced {
            let taken = lab_store::query(sql::TAKE_STOCK)
                .bind(quantity)
                .bind(product_id)
                .bind(price)
                .execute(&mut tx)
                .await
                .map_err(errors::db)?;
            if taken == 0 {
                let field = item_field(&req, product_id);
                let row = lab_store::query(sql::PRODUCT_EXISTS)
                    .bind(product_id)
                    .fetch_one(&mut tx)
                    .await
                    .map_err(errors::db)?;
                let available: i64 = row.try_get("available").map_err(errors::db)?;
                return Err(if available < quantity {
                    Status::failed_precondition(format!(
                        "{field}.quantity: only {available} of {product_id:?} available, asked for {quantity}"
                    ))
                } else {
                    // Its price changed since it was read: nothing was taken; a retry reads
                    // the new one.
                    Status::aborted(format!(
                        "{field}: the price of {product_id:?} changed during the reservation; retry"
                    ))
                });
            }
        }
        // An injected lock-hold fault: keep the product rows locked a while, as a slow
        // transaction would; concurrent reservations of the same products wait behind it.
        if let Some(hold) = self.faults.lock_hold("/shop.v1.Inventory/Reserve") {
            tokio::time::sleep(hold).await;
        }
        tx.commit().await.map_err(errors::db)?;
        Ok(Response::new(ReserveResponse {
            reservation_id,
            total: Some(Money {
                currency,
                minor_units: total,
            }),
            replayed: false,
        }))
    }

    async fn release(
        &self,
        request: Request<ReleaseRequest>,
    ) -> Result<Response<ReleaseResponse>, Status> {
        let req = request.into_inner();
        validate::id("order_id", &req.order_id, validate::MAX_KEY_LEN)?;
        let now = lab_runtime::now_ms();
        let mut tx = self.db.begin().await.map_err(errors::db)?;
        let status: String = lab_store::query(sql::LOCK_RESERVATION)
            .bind(&req.order_id)
            .bind(now)
            .fetch_one(&mut tx)
            .await
            .and_then(|row| row.try_get("status"))
            .map_err(errors::db)?;
        if status != "OPEN" {
            // Released before, or cancelled (just now, or by an earlier Release).
            tx.commit().await.map_err(errors::db)?;
            return Ok(Response::new(ReleaseResponse { released: false }));
        }
        lab_store::query(sql::RELEASE)
            .bind(&req.order_id)
            .bind(now)
            .execute(&mut tx)
            .await
            .map_err(errors::db)?;
        let items = lab_store::query(sql::RESERVATION_ITEMS)
            .bind(&req.order_id)
            .fetch_all(&mut tx)
            .await
            .map_err(errors::db)?;
        for row in items {
            let product_id: String = row.try_get("product_id").map_err(errors::db)?;
            let quantity: i64 = row.try_get("quantity").map_err(errors::db)?;
            lab_store::query(sql::RETURN_STOCK)
                .bind(quantity)
                .bind(product_id)
                .execute(&mut tx)
                .await
                .map_err(errors::db)?;
        }
        tx.commit().await.map_err(errors::db)?;
        Ok(Response::new(ReleaseResponse { released: true }))
    }

    async fn get_stock(
        &self,
        request: Request<GetStockRequest>,
    ) -> Result<Response<GetStockResponse>, Status> {
        let req = request.into_inner();
        validate::id("product_id", &req.product_id, validate::MAX_ID_LEN)?;
        let row = lab_store::query(sql::GET_STOCK)
            .bind(&req.product_id)
            .fetch_optional(&self.db)
            .await
            .map_err(errors::db)?
            .ok_or_else(|| {
                Status::not_found(format!("product_id: unknown product {:?}", req.product_id))
            })?;
        Ok(Response::new(GetStockResponse {
            product_id: row.try_get("product_id").map_err(errors::db)?,
            available: row.try_get("available").map_err(errors::db)?,
            reserved: row.try_get("reserved").map_err(errors::db)?,
            unit_price: Some(Money {
                currency: row.try_get("currency").map_err(errors::db)?,
                minor_units: row.try_get("price_minor").map_err(errors::db)?,
            }),
        }))
    }
}

#[tonic::async_trait]
impl Audit for InventoryService {
    async fn snapshot(
        &self,
        request: Request<SnapshotRequest>,
    ) -> Result<Response<SnapshotResponse>, Status> {
        let mut snap = audit::Snapshot::new(&self.db, request.get_ref().include_ids);
        snap.by_status(
            sql::COUNT_BY_STATUS,
            "reservations",
            &["OPEN", "RELEASED", "CANCELLED"],
        )
        .await?
        .ids("open_reservation_order_ids", sql::OPEN_ORDER_IDS)
        .await?;
        Ok(Response::new(snap.finish("inventory")))
    }
}

//! All five services end to end, on the embedded backend (SQLite + in-memory keys) and on
//! Postgres + Redis: the saga, idempotency under concurrency, and errors through the chain.

mod support;

use std::time::Duration;

use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::inventory_client::InventoryClient;
use lab_proto::shop::v1::{
    GetOrderRequest, GetStockRequest, LineItem, OrderStatus, PlaceOrderRequest,
};
use support::{Backend, Stack, unique_key};
use tonic::Code;

fn place(key: &str, items: &[(&str, i32)]) -> PlaceOrderRequest {
    PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: "customer-1".into(),
        items: items
            .iter()
            .map(|(p, q)| LineItem {
                product_id: p.to_string(),
                quantity: *q,
            })
            .collect(),
    }
}

async fn stock(stack: &Stack, product: &str) -> i64 {
    InventoryClient::new(stack.inventory.channel())
        .get_stock(GetStockRequest {
            product_id: product.into(),
        })
        .await
        .unwrap()
        .into_inner()
        .available
}

/// Waits until the outbox relay has delivered everything (bounded).
async fn drained(stack: &Stack) {
    for _ in 0..250 {
        if Stack::audit(&stack.orders).await.counters["outbox_backlog"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the outbox did not drain within 5 s");
}

async fn place_order_end_to_end(backend: Backend) {
    let stack = Stack::start(backend).await;
    let before = stock(&stack, "sku-3").await;
    let mut gateway = GatewayClient::new(stack.gateway.channel());
    let order = gateway
        .place_order(place(&unique_key("e2e"), &[("sku-3", 2)]))
        .await
        .expect("PlaceOrder succeeds")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.status, OrderStatus::Confirmed as i32);
    assert_eq!(order.total.as_ref().unwrap().minor_units, 2 * 399);
    let fetched = gateway
        .get_order(GetOrderRequest {
            order_id: order.order_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        fetched.status,
        OrderStatus::Confirmed as i32,
        "stored CONFIRMED"
    );
    assert_eq!(fetched.charge_id, order.charge_id);
    assert_eq!(stock(&stack, "sku-3").await, before - 2, "stock went down");

    let charges = Stack::audit(&stack.payments).await;
    assert_eq!(charges.counters["charges_total"], 1, "exactly one charge");
    assert_eq!(
        charges.ids["charged_order_ids"].ids,
        vec![order.order_id.clone()]
    );
    drained(&stack).await;
    let deliveries = Stack::audit(&stack.notifications).await;
    assert_eq!(
        deliveries.counters["deliveries_total"], 1,
        "exactly one delivery"
    );
    assert_eq!(
        deliveries.ids["delivered_order_ids"].ids,
        vec![order.order_id.clone()]
    );
    let reservations = Stack::audit(&stack.inventory).await;
    assert_eq!(
        reservations.ids["open_reservation_order_ids"].ids,
        vec![order.order_id]
    );
    stack.stop().await;
}

#[tokio::test]
async fn place_order_end_to_end_embedded() {
    place_order_end_to_end(Backend::Embedded).await;
}

#[tokio::test]
async fn place_order_end_to_end_postgres_redis() {
    place_order_end_to_end(Backend::PostgresRedis).await;
}

async fn concurrent_same_key(backend: Backend) {
    let stack = Stack::start(backend).await;
    let key = unique_key("same");
    let gateway = GatewayClient::new(stack.gateway.channel());
    let calls = (0..50).map(|_| {
        let mut gateway = gateway.clone();
        let req = place(&key, &[("sku-1", 1)]);
        async move { gateway.place_order(req).await }
    });
    let results = futures::future::join_all(calls).await;
    let order_ids: std::collections::HashSet<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|r| r.get_ref().order.as_ref().unwrap().order_id.clone())
        .collect();
    let errors: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        errors.iter().all(|s| s.code() == Code::Aborted),
        "only in-flight conflicts may fail: {errors:?}"
    );
    assert_eq!(order_ids.len(), 1, "every success replays the same order");
    let orders = Stack::audit(&stack.orders).await;
    assert_eq!(orders.counters["orders_total"], 1, "one order");
    let payments = Stack::audit(&stack.payments).await;
    assert_eq!(payments.counters["charges_total"], 1, "one charge");
    stack.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_calls_with_one_key_make_one_order_embedded() {
    concurrent_same_key(Backend::Embedded).await;
}

#[tokio::test]
async fn fifty_concurrent_calls_with_one_key_make_one_order_postgres_redis() {
    concurrent_same_key(Backend::PostgresRedis).await;
}

#[tokio::test]
async fn downstream_errors_keep_their_code_and_name_the_hop() {
    let stack = Stack::start(Backend::Embedded).await;
    let mut gateway = GatewayClient::new(stack.gateway.channel());
    let err = gateway
        .place_order(place(
            &unique_key("unknown"),
            &[("sku-1", 1), ("sku-999", 1)],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(
        err.message(),
        "orders: inventory: items[1].product_id: unknown product \"sku-999\""
    );
    // A failed order leaves no reservation and no charge behind.
    let reservations = Stack::audit(&stack.inventory).await;
    assert_eq!(reservations.counters["open_reservations"], 0);
    let orders = Stack::audit(&stack.orders).await;
    assert_eq!(orders.counters["failed_orders"], 1);
    assert_eq!(
        Stack::audit(&stack.payments).await.counters["charges_total"],
        0
    );
    stack.stop().await;
}

/// Payments at capacity: the order fails with RESOURCE_EXHAUSTED, its reservation is
/// released (no orphan), and the failure reaches the client with its code intact.
#[tokio::test]
async fn payments_refusal_releases_the_reservation() {
    let stack = Stack::start_with(
        Backend::Embedded,
        &[
            "--slots",
            "1",
            "--queue",
            "0",
            "--service-time-p50-ms",
            "300",
            "--service-time-p95-ms",
            "300",
        ],
    )
    .await;
    let gateway = GatewayClient::new(stack.gateway.channel());
    let before = stock(&stack, "sku-2").await;
    let calls = (0..3).map(|i| {
        let mut gateway = gateway.clone();
        let req = place(&unique_key(&format!("cap{i}")), &[("sku-2", 1)]);
        async move {
            gateway
                .place_order(req)
                .await
                .map(|_| ())
                .map_err(|s| s.code())
        }
    });
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|r| r.is_ok()).count();
    assert!(ok >= 1, "{results:?}");
    assert!(
        results.contains(&Err(Code::ResourceExhausted)),
        "{results:?}"
    );
    assert_eq!(
        stock(&stack, "sku-2").await,
        before - ok as i64,
        "refused orders gave their stock back"
    );
    let inv = Stack::audit(&stack.inventory).await;
    assert_eq!(inv.counters["open_reservations"], ok as i64);
    stack.stop().await;
}

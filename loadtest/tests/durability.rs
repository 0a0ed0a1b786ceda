//! Crash safety of the outbox, with real processes: orders is SIGKILLed after it committed
//! an order and before the event was delivered; after a restart the relay delivers it, and a
//! redelivery (a crash between delivering and marking delivered) does not repeat the side
//! effect.

use std::time::Duration;

use frlab::stack::{LocalStack, StackOptions};
use lab_proto::lab::v1::SnapshotRequest;
use lab_proto::lab::v1::audit_client::AuditClient;
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, OrderStatus, PlaceOrderRequest};

async fn counters(stack: &LocalStack, service: &str) -> std::collections::HashMap<String, i64> {
    let url = stack
        .endpoint(service)
        .expect("service endpoint")
        .grpc_url();
    let channel = lab_runtime::client::lazy_channel("test", &url).unwrap();
    AuditClient::new(channel)
        .snapshot(SnapshotRequest::default())
        .await
        .expect("Audit/Snapshot")
        .into_inner()
        .counters
}

/// Polls `service`'s counter `name` until it equals `want` (bounded: 10 s).
async fn wait_for(stack: &LocalStack, service: &str, name: &str, want: i64) {
    let mut last = None;
    for _ in 0..200 {
        let now = counters(stack, service).await.get(name).copied();
        if now == Some(want) {
            return;
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{service} {name} stayed {last:?}, expected {want}");
}

#[tokio::test]
async fn outbox_survives_sigkill_and_redelivery_is_deduplicated() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::new(dir.path().join("data"));
    opts.ephemeral_ports = true;
    opts.log_dir = Some(dir.path().join("logs"));
    opts.extra_args.insert(
        "orders".into(),
        vec!["--outbox-poll-ms".into(), "50".into()],
    );
    let mut stack = LocalStack::start(opts).await.expect("stack starts");

    // Notifications down: the event can only wait in the outbox.
    stack.kill("notifications").await.unwrap();
    let channel = lab_runtime::client::lazy_channel("test", &stack.gateway_url()).unwrap();
    let order = GatewayClient::new(channel)
        .place_order(PlaceOrderRequest {
            idempotency_key: format!("durable-{}", uuid::Uuid::new_v4()),
            customer_id: "c1".into(),
            items: vec![LineItem {
                product_id: "sku-1".into(),
                quantity: 1,
            }],
        })
        .await
        .expect("the order commits without notifications")
        .into_inner()
        .order
        .unwrap();
    assert_eq!(order.status, OrderStatus::Confirmed as i32);
    assert_eq!(counters(&stack, "orders").await["outbox_backlog"], 1);

    // Crash after commit, before delivery; then everything comes back.
    stack.kill("orders").await.unwrap();
    stack.restart("notifications").await.unwrap();
    stack.restart("orders").await.unwrap();
    wait_for(&stack, "orders", "outbox_backlog", 0).await;
    let delivered = counters(&stack, "notifications").await;
    assert_eq!(
        delivered["deliveries_total"], 1,
        "the event was delivered after the crash"
    );

    // A crash between delivering and marking delivered looks like this: the row is pending
    // again. The relay sends it a second time; the side effect must not repeat.
    let db = lab_store::Db::connect(
        &lab_store::DbConfig {
            url: lab_store::sqlite_url_for(&dir.path().join("data"), "orders"),
            schema: None,
            max_connections: 1,
        },
        &[],
    )
    .await
    .unwrap();
    let reset = sqlx::query("UPDATE outbox SET delivered_at_ms = NULL")
        .execute(db.pool())
        .await
        .unwrap();
    assert_eq!(reset.rows_affected(), 1);
    db.close().await;
    wait_for(&stack, "notifications", "receipts_total", 2).await;
    wait_for(&stack, "orders", "outbox_backlog", 0).await;
    let after = counters(&stack, "notifications").await;
    assert_eq!(
        after["deliveries_total"], 1,
        "delivered to the side effect once"
    );
    assert_eq!(after["events_received_more_than_once"], 1);
    stack.stop().await.expect("clean stop");
}

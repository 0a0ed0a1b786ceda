//! Orders alone through a real server on 127.0.0.1:0, its downstreams unreachable: failures
//! are recorded and surfaced with the hop named and a retryable code. The full saga is
//! tested end to end in loadtest/tests.

use clap::Parser;
use lab_proto::lab::v1::SnapshotRequest;
use lab_proto::lab::v1::audit_client::AuditClient;
use lab_proto::shop::v1::orders_client::OrdersClient;
use lab_proto::shop::v1::{CreateOrderRequest, GetOrderRequest, LineItem};
use lab_runtime::testing::TestApp;
use tonic::Code;

fn order(key: &str) -> CreateOrderRequest {
    CreateOrderRequest {
        idempotency_key: key.into(),
        customer_id: "c1".into(),
        items: vec![LineItem {
            product_id: "sku-1".into(),
            quantity: 1,
        }],
    }
}

async fn spawn_without_downstreams(dir: &tempfile::TempDir, profile: &str) -> TestApp {
    let nowhere = "http://127.0.0.1:1";
    let config = orders::Config::parse_from([
        "orders",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--profile",
        profile,
        "--inventory-url",
        nowhere,
        "--payments-url",
        nowhere,
        "--notifications-url",
        nowhere,
    ]);
    TestApp::spawn(config, orders::run).await
}

async fn counters(app: &TestApp) -> std::collections::HashMap<String, i64> {
    AuditClient::new(app.channel())
        .snapshot(SnapshotRequest::default())
        .await
        .unwrap()
        .into_inner()
        .counters
}

/// With idempotency (f-full), the key has one saga: its retry gets that saga's failure, and
/// the saga waits, COMPENSATING, for inventory to release what it may have reserved.
#[tokio::test]
async fn unreachable_inventory_fails_the_order_once_per_key() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_without_downstreams(&dir, "f-full").await;
    let mut client = OrdersClient::new(app.channel());
    let err = client.create_order(order("k1")).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().starts_with("inventory: "),
        "{}",
        err.message()
    );
    let again = client.create_order(order("k1")).await.unwrap_err();
    assert_eq!(again.code(), Code::Unavailable, "{again:?}");
    assert_eq!(again.message(), err.message(), "the same saga's failure");

    let snap = counters(&app).await;
    assert_eq!(snap["orders_total"], 1, "{snap:?}");
    assert_eq!(snap["compensating_orders"], 1, "{snap:?}");
    assert_eq!(snap["sagas_unfinished"], 1, "{snap:?}");
    assert_eq!(snap["sagas_overdue"], 0, "{snap:?}");
    assert_eq!(snap["keys_with_multiple_orders"], 0, "{snap:?}");

    let err = client
        .get_order(GetOrderRequest {
            order_id: "nope".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = client
        .create_order(CreateOrderRequest {
            customer_id: String::new(),
            ..order("k2")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "customer_id: is required");
    app.stop().await.unwrap();
}

/// Without idempotency (a-baseline), every attempt is a saga of its own: the duplicates
/// retries cause stay measurable.
#[tokio::test]
async fn without_idempotency_every_attempt_is_its_own_saga() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_without_downstreams(&dir, "a-baseline").await;
    let mut client = OrdersClient::new(app.channel());
    for _ in 0..2 {
        let err = client.create_order(order("k1")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    let snap = counters(&app).await;
    assert_eq!(snap["orders_total"], 2, "{snap:?}");
    assert_eq!(snap["keys_with_multiple_orders"], 1, "{snap:?}");
    assert_eq!(
        snap["keys_with_duplicate_orders"], 0,
        "only confirmed orders count as duplicates"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn bad_downstream_urls_are_refused_at_start_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let config = orders::Config::parse_from([
        "orders",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--payments-url",
        "127.0.0.1:50054",
    ]);
    let bound = lab_runtime::Bound::ephemeral().await.unwrap();
    let err = orders::run(bound, config, lab_runtime::Shutdown::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("--payments-url"), "{err}");
}

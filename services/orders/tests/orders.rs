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

/// An order left PENDING by orders before the saga (its charge sent before anything was
/// recorded) is recovered as one that may have been charged: compensated with a void at
/// payments, not only a release.
#[tokio::test]
async fn pending_orders_from_before_the_saga_are_recovered_as_maybe_charged() {
    let dir = tempfile::tempdir().unwrap();
    let config = lab_store::DbConfig {
        url: lab_store::sqlite_url_for(dir.path(), "orders"),
        schema: None,
        max_connections: 1,
    };
    let before_the_saga = &orders::sql::MIGRATIONS[..2];
    let db = lab_store::Db::connect(&config, before_the_saga)
        .await
        .unwrap();
    lab_store::query(
        "INSERT INTO orders (order_id, idempotency_key, customer_id, items_json, status,
         created_at_ms, updated_at_ms)
         VALUES ('legacy-1', 'legacy-key', 'c1', '[{\"product_id\":\"sku-1\",\"quantity\":1}]',
         'PENDING', 1, 1)",
    )
    .execute(&db)
    .await
    .unwrap();
    db.close().await;

    // Downstreams unreachable: the recovered saga stays COMPENSATING, showing its plan.
    let app = spawn_without_downstreams(&dir, "f-full").await;
    let db = lab_store::Db::connect(&config, &[]).await.unwrap();
    let mut state = (String::new(), 0, String::new());
    for _ in 0..100 {
        let row = lab_store::query(
            "SELECT status, refund_needed, failure_reason FROM orders WHERE order_id = 'legacy-1'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
        state = (
            row.try_get("status").unwrap(),
            row.try_get::<i64, _>("refund_needed").unwrap(),
            row.try_get("failure_reason").unwrap(),
        );
        if state.0 == "COMPENSATING" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(state.0, "COMPENSATING", "{state:?}");
    assert_eq!(state.1, 1, "voided at payments too: {state:?}");
    assert!(state.2.contains("interrupted"), "{state:?}");
    db.close().await;
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

/// The saga's writes build no temporary table. SQLite codes an IN of three or more
/// constants as one, built and dropped on every run, and evaluates a partial index's
/// condition for every row written: with `orders_unfinished` on `status IN (three values)`
/// each transition built two (7 % of the SQLite chain's CPU, `cargo bench --bench chain`).
#[tokio::test]
async fn saga_writes_build_no_temporary_table() {
    use orders::sql;
    let config = lab_store::DbConfig {
        url: "sqlite::memory:".into(),
        schema: None,
        max_connections: 1,
    };
    let db = lab_store::Db::connect(&config, sql::MIGRATIONS)
        .await
        .unwrap();
    for (name, statement) in [
        ("INSERT_SAGA", sql::INSERT_SAGA),
        ("MARK_RESERVED", sql::MARK_RESERVED),
        ("CONFIRM", sql::CONFIRM),
        ("INSERT_OUTBOX", sql::INSERT_OUTBOX),
        ("START_COMPENSATION", sql::START_COMPENSATION),
        ("MARK_FAILED", sql::MARK_FAILED),
        ("DEFER", sql::DEFER),
        ("TAKE_OVER", sql::TAKE_OVER),
    ] {
        let explain: &'static str = Box::leak(format!("EXPLAIN {statement}").into_boxed_str());
        let mut query = lab_store::query(explain);
        for _ in 0..8 {
            query = query.bind(None::<i64>);
        }
        let temporary = query
            .fetch_all(&db)
            .await
            .unwrap()
            .iter()
            .filter(|op| op.try_get::<String, _>("opcode").unwrap() == "OpenEphemeral")
            .count();
        assert_eq!(temporary, 0, "{name} builds {temporary} temporary table(s)");
    }
}

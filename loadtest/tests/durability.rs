//! Crash safety with real processes.
//!
//! - The outbox: orders is SIGKILLed after it committed an order and before the event was
//!   delivered; after a restart the relay delivers it, and a redelivery (a crash between
//!   delivering and marking delivered) does not repeat the side effect.
//! - The saga, on SQLite + memory and on Postgres + Redis: orders is SIGKILLed while its
//!   charges are being made; they land with nobody to record them. After a restart every
//!   saga is finished (confirmed, or failed with its charge refunded and its stock
//!   released) and every key is charged at most once — counted in the databases.

use std::collections::BTreeSet;
use std::time::Duration;

use frlab::stack::{LocalStack, StackOptions};
use lab_proto::lab::v1::audit_client::AuditClient;
use lab_proto::lab::v1::faults_client::FaultsClient;
use lab_proto::lab::v1::{ApplyFaultRequest, SnapshotRequest};
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::orders_client::OrdersClient;
use lab_proto::shop::v1::{CreateOrderRequest, LineItem, OrderStatus, PlaceOrderRequest};

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
    let reset = lab_store::query("UPDATE outbox SET delivered_at_ms = NULL")
        .execute(&db)
        .await
        .unwrap();
    assert_eq!(reset, 1);
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

fn order(key: &str) -> PlaceOrderRequest {
    PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: "c1".into(),
        items: vec![LineItem {
            product_id: "sku-2".into(),
            quantity: 1,
        }],
    }
}

/// One column of strings from a service's database.
async fn strings(db: &lab_store::Db, sql: &'static str) -> Vec<String> {
    lab_store::query(sql)
        .fetch_all(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|r| r.try_get::<String, _>(0usize).unwrap())
        .collect()
}

/// Where the stack keeps its tables: SQLite files under the data dir, or one Postgres schema
/// per service with a common prefix.
struct Storage {
    data_dir: std::path::PathBuf,
    postgres: Option<(String, String)>,
}

impl Storage {
    async fn db(&self, service: &str) -> lab_store::Db {
        let config = match &self.postgres {
            Some((url, prefix)) => lab_store::DbConfig {
                url: url.clone(),
                schema: Some(format!("{prefix}{service}")),
                max_connections: 2,
            },
            None => lab_store::DbConfig {
                url: lab_store::sqlite_url_for(&self.data_dir, service),
                schema: None,
                max_connections: 2,
            },
        };
        lab_store::Db::connect(&config, &[]).await.unwrap()
    }

    async fn drop(&self) {
        if let Some((url, prefix)) = &self.postgres {
            for service in ["inventory", "payments", "notifications", "orders"] {
                lab_store::testing::drop_schema(&lab_store::DbConfig {
                    url: url.clone(),
                    schema: Some(format!("{prefix}{service}")),
                    max_connections: 1,
                })
                .await;
            }
        }
    }
}

/// f-full, except that orders waits up to the call's 3 s deadline for a charge (not the
/// 500 ms per-try timeout), so the crash finds it waiting for charges that will land.
fn patient_profile(dir: &std::path::Path) -> String {
    let full = include_str!("../../helm/profiles/f-full.yaml");
    let patient = full.replacen(
        "    payments:\n      bulkhead:",
        "    payments:\n      timeout: { per_try_ms: 10000 }\n      bulkhead:",
        1,
    );
    assert_ne!(patient, full, "the f-full profile changed shape");
    let path = dir.join("patient.yaml");
    std::fs::write(&path, patient).unwrap();
    path.display().to_string()
}

async fn sigkill_between_charge_and_commit(postgres_redis: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::new(dir.path().join("data"));
    opts.ephemeral_ports = true;
    opts.log_dir = Some(dir.path().join("logs"));
    opts.profile = Some(patient_profile(dir.path()));
    opts.extra_args.insert(
        "orders".into(),
        vec!["--saga-recovery-poll-ms".into(), "100".into()],
    );
    let mut storage = Storage {
        data_dir: dir.path().join("data"),
        postgres: None,
    };
    if postgres_redis {
        let cfg = lab_store::testing::postgres_test_config("sigkill").await;
        let prefix = format!("{}_", cfg.schema.unwrap());
        opts.database_url = Some(cfg.url.clone());
        opts.schema_prefix = Some(prefix.clone());
        opts.redis_url = Some(lab_store::testing::redis_test_url());
        storage.postgres = Some((cfg.url, prefix));
    }
    let mut stack = LocalStack::start(opts).await.expect("stack starts");
    let channel = lab_runtime::client::lazy_channel("test", &stack.gateway_url()).unwrap();
    let gateway = GatewayClient::new(channel);
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let key = |i: usize| format!("crash-{tag}-{i}");

    // Two orders before the fault: confirmed, and they must stay so.
    for i in 0..2 {
        let placed = gateway.clone().place_order(order(&key(i))).await.unwrap();
        assert_eq!(
            placed.into_inner().order.unwrap().status,
            OrderStatus::Confirmed as i32
        );
    }
    // Every charge now takes 1.5 s; ten orders reserve their stock and wait for it.
    let admin = stack.endpoint("payments").unwrap().admin.unwrap();
    let slow = lab_chaos::spec::parse_documents(
        "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: slow}\nspec:\n  selector: {service: payments}\n  action: latency\n  latency: {distribution: fixed, fixedMs: 1500}\n  methods: [/shop.v1.Payments/Charge]\n  duration: 60s\n",
    )
    .unwrap();
    let fault = slow[0].spec.to_fault(&slow[0].metadata.name, None);
    let admin_channel =
        lab_runtime::client::lazy_channel("test", &format!("http://{admin}")).unwrap();
    FaultsClient::new(admin_channel)
        .apply(ApplyFaultRequest { fault: Some(fault) })
        .await
        .unwrap();
    let in_flight: Vec<_> = (2..12)
        .map(|i| {
            let mut gateway = gateway.clone();
            let req = order(&key(i));
            tokio::spawn(async move { gateway.place_order(req).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stack.kill("orders").await.unwrap();
    for call in in_flight {
        assert!(call.await.unwrap().is_err(), "orders died mid-call");
    }
    // The charges land with nobody to record them: charged, never committed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let payments = storage.db("payments").await;
    let charged = strings(&payments, "SELECT order_id FROM charges WHERE refunded = 0").await;
    assert!(
        charged.len() > 2,
        "the crash must find charges orders never recorded: {charged:?}"
    );
    let orders = storage.db("orders").await;
    let unfinished = "SELECT order_id FROM orders WHERE status NOT IN ('CONFIRMED', 'FAILED')";
    assert!(!strings(&orders, unfinished).await.is_empty());

    stack.restart("orders").await.unwrap();
    wait_for(&stack, "orders", "sagas_unfinished", 0).await;

    assert_eq!(strings(&orders, unfinished).await, Vec::<String>::new());
    let confirmed: BTreeSet<String> = strings(
        &orders,
        "SELECT order_id FROM orders WHERE status = 'CONFIRMED'",
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(
        confirmed.len(),
        2,
        "the orders before the crash stay confirmed"
    );
    let per_key = "SELECT idempotency_key FROM orders GROUP BY idempotency_key HAVING COUNT(*) > 1";
    assert_eq!(strings(&orders, per_key).await, Vec::<String>::new());
    let unrefunded: BTreeSet<String> =
        strings(&payments, "SELECT order_id FROM charges WHERE refunded = 0")
            .await
            .into_iter()
            .collect();
    assert_eq!(
        unrefunded, confirmed,
        "every charge of an order not confirmed is refunded"
    );
    let twice = "SELECT idempotency_key FROM charges GROUP BY idempotency_key HAVING COUNT(*) > 1";
    assert_eq!(strings(&payments, twice).await, Vec::<String>::new());
    let inventory = storage.db("inventory").await;
    let open: BTreeSet<String> = strings(
        &inventory,
        "SELECT order_id FROM reservations WHERE status = 'OPEN'",
    )
    .await
    .into_iter()
    .collect();
    assert_eq!(open, confirmed, "only confirmed orders keep their stock");

    // A retry of an interrupted key gets its saga's answer: no new order, no new charge.
    // (Straight to orders: the gateway's breaker opened while orders was down.)
    let charges_before = strings(&payments, "SELECT charge_id FROM charges")
        .await
        .len();
    let orders_url = stack.endpoint("orders").unwrap().grpc_url();
    let retry = order(&key(5));
    let retried =
        OrdersClient::new(lab_runtime::client::lazy_channel("test", &orders_url).unwrap())
            .create_order(CreateOrderRequest {
                idempotency_key: retry.idempotency_key,
                customer_id: retry.customer_id,
                items: retry.items,
            })
            .await
            .unwrap_err();
    assert_eq!(
        retried.code(),
        tonic::Code::FailedPrecondition,
        "{retried:?}"
    );
    assert!(
        retried.message().contains("interrupted"),
        "{}",
        retried.message()
    );
    assert_eq!(
        strings(&payments, "SELECT charge_id FROM charges")
            .await
            .len(),
        charges_before
    );
    assert_eq!(strings(&orders, per_key).await, Vec::<String>::new());

    for db in [orders, payments, inventory] {
        db.close().await;
    }
    stack.stop().await.expect("clean stop");
    storage.drop().await;
}

#[tokio::test]
async fn sigkill_between_charge_and_commit_finishes_every_saga_embedded() {
    sigkill_between_charge_and_commit(false).await;
}

#[tokio::test]
async fn sigkill_between_charge_and_commit_finishes_every_saga_postgres_redis() {
    sigkill_between_charge_and_commit(true).await;
}

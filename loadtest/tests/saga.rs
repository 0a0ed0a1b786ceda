//! The order saga end to end, on SQLite + in-memory keys and on Postgres + Redis: one
//! charge per idempotency key whatever the caller does (gives up after 10 ms, retries while
//! payments is slow, sends 200 copies at once, reuses the key for another order), and,
//! without idempotency, duplicates that stay measurable. Every check counts rows in the
//! services' own databases, not only through their audits.

mod support;

use std::collections::HashSet;
use std::time::Duration;

use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::orders_client::OrdersClient;
use lab_proto::shop::v1::{CreateOrderRequest, LineItem, Order, OrderStatus, PlaceOrderRequest};
use support::{Backend, Options, Stack, count, unique_key};
use tonic::Code;

const ORDERS_OF_KEY: &str = "SELECT COUNT(*) FROM orders WHERE idempotency_key = $1";
const CONFIRMED_OF_KEY: &str =
    "SELECT COUNT(*) FROM orders WHERE idempotency_key = $1 AND status = 'CONFIRMED'";
const CHARGES_OF_KEY: &str = "SELECT COUNT(*) FROM charges WHERE idempotency_key = $1";
const UNREFUNDED_OF_KEY: &str =
    "SELECT COUNT(*) FROM charges WHERE idempotency_key = $1 AND refunded = 0";
const OPEN_RESERVATIONS_OF_ORDER: &str =
    "SELECT COUNT(*) FROM reservations WHERE order_id = $1 AND status = 'OPEN'";

fn place(key: &str, customer: &str, items: &[(&str, i32)]) -> PlaceOrderRequest {
    PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: customer.into(),
        items: items
            .iter()
            .map(|(p, q)| LineItem {
                product_id: p.to_string(),
                quantity: *q,
            })
            .collect(),
    }
}

fn slow_payments(ms: &'static str) -> [&'static str; 4] {
    ["--service-time-p50-ms", ms, "--service-time-p95-ms", ms]
}

/// Waits (at most 20 s) until orders has no unfinished saga.
async fn settled(stack: &Stack) {
    for _ in 0..400 {
        if Stack::audit(&stack.orders).await.counters["sagas_unfinished"] == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("sagas still unfinished after 20 s");
}

/// What the databases hold for one key: its orders, their charges, their reservations.
struct Rows {
    orders: i64,
    confirmed: i64,
    charges: i64,
    unrefunded: i64,
}

async fn rows_of(stack: &Stack, key: &str) -> Rows {
    let (orders, payments) = (stack.db("orders").await, stack.db("payments").await);
    let rows = Rows {
        orders: count(&orders, ORDERS_OF_KEY, key).await,
        confirmed: count(&orders, CONFIRMED_OF_KEY, key).await,
        charges: count(&payments, CHARGES_OF_KEY, key).await,
        unrefunded: count(&payments, UNREFUNDED_OF_KEY, key).await,
    };
    orders.close().await;
    payments.close().await;
    rows
}

async fn open_reservations(stack: &Stack, order_id: &str) -> i64 {
    let db = stack.db("inventory").await;
    let n = count(&db, OPEN_RESERVATIONS_OF_ORDER, order_id).await;
    db.close().await;
    n
}

/// Places `req` until it is answered with an order (ABORTED: the saga is still running).
async fn place_until_answered(
    gateway: &mut GatewayClient<tonic::transport::Channel>,
    req: &PlaceOrderRequest,
) -> Order {
    for _ in 0..50 {
        match gateway.place_order(req.clone()).await {
            Ok(answer) => return answer.into_inner().order.unwrap(),
            Err(status) if status.code() == Code::Aborted => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("unexpected answer: {status:?}"),
        }
    }
    panic!("no answer for {:?}", req.idempotency_key);
}

async fn ten_ms_deadline_then_retries_confirm_once(backend: Backend) {
    let stack = Stack::start_custom(
        backend,
        Options {
            payments: &slow_payments("200"),
            ..Options::default()
        },
    )
    .await;
    let key = unique_key("deadline");
    let req = place(&key, "customer-1", &[("sku-1", 2)]);
    let mut gateway = GatewayClient::new(stack.gateway.channel());
    let mut cut_short = tonic::Request::new(req.clone());
    cut_short.set_timeout(Duration::from_millis(10));
    let err = gateway.place_order(cut_short).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    // The saga did not stop with the request: retries of the key join it, then replay it.
    let order = place_until_answered(&mut gateway, &req).await;
    assert_eq!(order.status, OrderStatus::Confirmed as i32, "{order:?}");
    let again = place_until_answered(&mut gateway, &req).await;
    assert_eq!(again.order_id, order.order_id, "the same saga");

    let rows = rows_of(&stack, &key).await;
    assert_eq!(
        (rows.orders, rows.confirmed, rows.charges, rows.unrefunded),
        (1, 1, 1, 1),
        "one order, confirmed, charged once"
    );
    assert_eq!(open_reservations(&stack, &order.order_id).await, 1);
    let audit = Stack::audit(&stack.payments).await;
    assert_eq!(audit.counters["keys_charged_more_than_once"], 0);

    // Cut short anywhere between claiming the key and starting the saga (deadlines of 1 to
    // 20 ms, straight to orders: through the gateway they would open its breaker), every
    // key still has one saga, driven to its end: confirmed and charged once — or, should
    // this busy machine let a step time out, failed with nothing charged. Never abandoned
    // (the recovery worker's "interrupted"), never a key left claimed by nobody.
    let orders = OrdersClient::new(stack.orders.channel());
    // Products spread out, so that the reservations do not queue on one row lock.
    let create = |i: usize, key: &str| CreateOrderRequest {
        idempotency_key: key.into(),
        customer_id: "customer-1".into(),
        items: vec![LineItem {
            product_id: format!("sku-{}", i % 9 + 1),
            quantity: 1,
        }],
    };
    let keys: Vec<String> = (1..=20).map(|ms| unique_key(&format!("cut{ms}"))).collect();
    let cut = keys.iter().enumerate().map(|(i, key)| {
        let mut orders = orders.clone();
        let mut req = tonic::Request::new(create(i, key));
        req.set_timeout(Duration::from_millis(i as u64 + 1));
        async move { orders.create_order(req).await }
    });
    futures::future::join_all(cut).await;
    let retried = keys.iter().enumerate().map(|(i, key)| {
        let mut orders = orders.clone();
        let req = create(i, key);
        async move {
            for _ in 0..10 {
                let mut attempt = tonic::Request::new(req.clone());
                attempt.set_timeout(Duration::from_secs(2));
                match orders.create_order(attempt).await {
                    Err(status) if status.code() == Code::Aborted => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    answer => return answer.map(|a| a.into_inner().order.unwrap()),
                }
            }
            panic!("{}: still in flight after 10 tries", req.idempotency_key);
        }
    });
    let answers = futures::future::join_all(retried).await;
    for (key, answer) in keys.iter().zip(answers) {
        let found = rows_of(&stack, key).await;
        match answer {
            Ok(order) => {
                assert_eq!(order.status, OrderStatus::Confirmed as i32, "{order:?}");
                assert_eq!(
                    (found.orders, found.confirmed, found.charges),
                    (1, 1, 1),
                    "{key}"
                );
            }
            Err(status) => {
                assert_eq!(status.code(), Code::DeadlineExceeded, "{key}: {status:?}");
                assert_eq!((found.orders, found.unrefunded), (1, 0), "{key}");
            }
        }
    }
    stack.stop().await;
}

#[tokio::test]
async fn ten_ms_deadline_then_retries_confirm_once_embedded() {
    ten_ms_deadline_then_retries_confirm_once(Backend::Embedded).await;
}

#[tokio::test]
async fn ten_ms_deadline_then_retries_confirm_once_postgres_redis() {
    ten_ms_deadline_then_retries_confirm_once(Backend::PostgresRedis).await;
}

/// Payments takes 800 ms, the per-try timeout of the orders -> payments hop is 500 ms: the
/// charge's answer is never seen in time, yet the charge lands. The saga compensates (voids
/// the order at payments), and the client's three retries of the key get that saga's
/// answer: no charge is left unrefunded. Without idempotency (`profile`: c) every retry is
/// a saga of its own, and each one's charge is voided the same way.
async fn slow_payments_and_three_client_retries(backend: Backend, profile: &str) {
    let stack = Stack::start_custom(
        backend,
        Options {
            profile: Some(profile),
            payments: &slow_payments("800"),
            ..Options::default()
        },
    )
    .await;
    let key = unique_key("slow");
    let req = place(&key, "customer-1", &[("sku-2", 1)]);
    let mut gateway = GatewayClient::new(stack.gateway.channel());
    let mut order_ids = HashSet::new();
    for _ in 0..3 {
        let mut attempt = tonic::Request::new(req.clone());
        attempt.set_timeout(Duration::from_secs(5));
        match gateway.place_order(attempt).await {
            Ok(answer) => {
                order_ids.insert(answer.into_inner().order.unwrap().order_id);
            }
            Err(status) => assert_ne!(status.code(), Code::Ok),
        }
    }
    settled(&stack).await;
    // The charges sent before the compensation land 800 ms after they started.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rows = rows_of(&stack, &key).await;
    assert!(
        rows.unrefunded <= rows.confirmed && rows.confirmed <= 1,
        "{profile}: {} unrefunded charges, {} confirmed orders, {} charges",
        rows.unrefunded,
        rows.confirmed,
        rows.charges
    );
    let expected_sagas = if profile == "f-full" { 1 } else { 3 };
    assert_eq!(rows.orders, expected_sagas, "{profile}: sagas of the key");
    // No reservation of an order that did not go through stays open.
    let inventory = stack.db("inventory").await;
    let open = count(
        &inventory,
        "SELECT COUNT(*) FROM reservations WHERE status = 'OPEN' AND order_id <> $1",
        order_ids.iter().next().map_or("", String::as_str),
    )
    .await;
    assert_eq!(open, 0, "{profile}: orphaned reservations");
    inventory.close().await;
    stack.stop().await;
}

#[tokio::test]
async fn slow_payments_and_three_client_retries_leave_no_unrefunded_charge_embedded() {
    slow_payments_and_three_client_retries(Backend::Embedded, "f-full").await;
}

#[tokio::test]
async fn slow_payments_and_three_client_retries_leave_no_unrefunded_charge_postgres_redis() {
    slow_payments_and_three_client_retries(Backend::PostgresRedis, "f-full").await;
}

#[tokio::test]
async fn without_idempotency_each_retry_is_a_saga_and_each_is_undone() {
    slow_payments_and_three_client_retries(Backend::Embedded, "c-backoff-timeouts").await;
}

async fn two_hundred_calls_with_one_key_make_one_saga(backend: Backend) {
    let stack = Stack::start_custom(
        backend,
        Options {
            payments: &slow_payments("300"),
            ..Options::default()
        },
    )
    .await;
    let key = unique_key("crowd");
    let gateway = GatewayClient::new(stack.gateway.channel());
    let calls = (0..200).map(|_| {
        let mut gateway = gateway.clone();
        let req = place(&key, "customer-1", &[("sku-3", 1)]);
        async move { gateway.place_order(req).await }
    });
    let answers = futures::future::join_all(calls).await;
    let orders: HashSet<String> = answers
        .iter()
        .filter_map(|a| a.as_ref().ok())
        .map(|a| a.get_ref().order.as_ref().unwrap().order_id.clone())
        .collect();
    let errors: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert_eq!(
        orders.len(),
        1,
        "every success is the same order: {errors:?}"
    );
    // They wait for the one saga and get its answer (on this machine all 200 do; a slow
    // run may see a deadline pass first, never a second order).
    assert!(
        errors.len() <= 100,
        "{} of 200 failed: {errors:?}",
        errors.len()
    );
    assert!(
        errors.iter().all(|s| matches!(
            s.code(),
            Code::Aborted | Code::DeadlineExceeded | Code::ResourceExhausted
        )),
        "{errors:?}"
    );
    settled(&stack).await;
    let rows = rows_of(&stack, &key).await;
    assert_eq!(
        (rows.orders, rows.confirmed, rows.charges),
        (1, 1, 1),
        "one saga, one charge"
    );
    stack.stop().await;
}

#[tokio::test]
async fn two_hundred_calls_with_one_key_make_one_saga_embedded() {
    two_hundred_calls_with_one_key_make_one_saga(Backend::Embedded).await;
}

#[tokio::test]
async fn two_hundred_calls_with_one_key_make_one_saga_postgres_redis() {
    two_hundred_calls_with_one_key_make_one_saga(Backend::PostgresRedis).await;
}

/// A key names one order: reusing it for another customer or other items is refused,
/// naming the key and what differs — also after orders restarted with an empty in-memory
/// store (then the saga's row in the database decides).
async fn key_reuse_with_other_parameters_is_refused(backend: Backend) {
    let mut stack = Stack::start(backend).await;
    let key = unique_key("reuse");
    let mut gateway = GatewayClient::new(stack.gateway.channel());
    let first = gateway
        .place_order(place(&key, "customer-1", &[("sku-1", 1), ("sku-2", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    // The same request with its lines in another order is the same request.
    let same = gateway
        .place_order(place(&key, "customer-1", &[("sku-2", 1), ("sku-1", 1)]))
        .await
        .unwrap()
        .into_inner()
        .order
        .unwrap();
    assert_eq!(same.order_id, first.order_id);
    for round in 0..2 {
        let err = gateway
            .place_order(place(&key, "customer-2", &[("sku-1", 1), ("sku-2", 1)]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert_eq!(
            err.message(),
            format!(
                "orders: idempotency_key: {key:?} was first used with customer_id \
                 \"customer-1\" (this request: \"customer-2\")"
            ),
            "round {round}"
        );
        let err = gateway
            .place_order(place(&key, "customer-1", &[("sku-1", 3)]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(
            err.message()
                .contains("items \"sku-1x1,sku-2x1\" (this request: \"sku-1x3\")"),
            "round {round}: {}",
            err.message()
        );
        stack.restart_orders().await;
        gateway = GatewayClient::new(stack.gateway.channel());
    }
    let rows = rows_of(&stack, &key).await;
    assert_eq!((rows.orders, rows.charges), (1, 1));
    stack.stop().await;
}

#[tokio::test]
async fn key_reuse_with_other_parameters_is_refused_embedded() {
    key_reuse_with_other_parameters_is_refused(Backend::Embedded).await;
}

#[tokio::test]
async fn key_reuse_with_other_parameters_is_refused_postgres_redis() {
    key_reuse_with_other_parameters_is_refused(Backend::PostgresRedis).await;
}

/// Without idempotency, a saga whose caller gave up keeps the caller's deadline (it is
/// propagated, profile c): it fails and is undone, nothing stays charged or reserved.
#[tokio::test]
async fn without_idempotency_a_ten_ms_deadline_leaves_nothing_charged_or_reserved() {
    let stack = Stack::start_custom(
        Backend::Embedded,
        Options {
            profile: Some("c-backoff-timeouts"),
            payments: &slow_payments("200"),
            ..Options::default()
        },
    )
    .await;
    let key = unique_key("gave-up");
    let mut gateway = GatewayClient::new(stack.gateway.channel());
    let mut cut_short = tonic::Request::new(place(&key, "customer-1", &[("sku-4", 1)]));
    cut_short.set_timeout(Duration::from_millis(10));
    assert!(gateway.place_order(cut_short).await.is_err());
    settled(&stack).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let rows = rows_of(&stack, &key).await;
    assert_eq!((rows.orders, rows.confirmed, rows.unrefunded), (1, 0, 0));
    let inventory = Stack::audit(&stack.inventory).await;
    assert_eq!(inventory.counters["open_reservations"], 0);
    stack.stop().await;
}

/// a-baseline has no idempotency and no deadline propagation: the first saga goes on after
/// its caller gave up, and the retry of the key is a second order, charged too. The lab
/// must see that duplicate, in the database and in the audits.
#[tokio::test]
async fn the_baseline_duplicates_and_the_audits_count_it() {
    let stack = Stack::start_custom(
        Backend::Embedded,
        Options {
            profile: Some("a-baseline"),
            payments: &slow_payments("200"),
            ..Options::default()
        },
    )
    .await;
    let key = unique_key("baseline");
    let req = place(&key, "customer-1", &[("sku-5", 1)]);
    let mut gateway = GatewayClient::new(stack.gateway.channel());
    let mut cut_short = tonic::Request::new(req.clone());
    cut_short.set_timeout(Duration::from_millis(10));
    assert!(gateway.place_order(cut_short).await.is_err());
    let retry = place_until_answered(&mut gateway, &req).await;
    assert_eq!(retry.status, OrderStatus::Confirmed as i32);
    settled(&stack).await;
    let rows = rows_of(&stack, &key).await;
    assert_eq!(
        (rows.orders, rows.confirmed, rows.charges, rows.unrefunded),
        (2, 2, 2, 2),
        "two orders for one logical request, both charged"
    );
    let orders = Stack::audit(&stack.orders).await;
    assert_eq!(orders.counters["keys_with_duplicate_orders"], 1);
    let payments = Stack::audit(&stack.payments).await;
    assert_eq!(payments.counters["keys_charged_more_than_once"], 1);
    assert_eq!(payments.counters["keys_with_unrefunded_duplicates"], 1);
    stack.stop().await;
}

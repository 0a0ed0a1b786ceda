//! The gateway through a real server on 127.0.0.1:0: every malformed PlaceOrder is refused
//! before it reaches orders, with the field named; an unreachable orders is UNAVAILABLE.

use clap::Parser;
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, PlaceOrderRequest};
use lab_runtime::testing::TestApp;
use tonic::Code;

fn valid() -> PlaceOrderRequest {
    PlaceOrderRequest {
        idempotency_key: "k1".into(),
        customer_id: "c1".into(),
        items: vec![LineItem {
            product_id: "sku-1".into(),
            quantity: 1,
        }],
    }
}

#[tokio::test]
async fn malformed_orders_name_the_field_and_unreachable_orders_is_unavailable() {
    let config = gateway::Config::parse_from(["gateway", "--orders-url", "http://127.0.0.1:1"]);
    let app = TestApp::spawn(config, gateway::run).await;
    let mut client = GatewayClient::new(app.channel());
    let item = |p: &str, q: i32| LineItem {
        product_id: p.into(),
        quantity: q,
    };
    let cases = [
        (
            PlaceOrderRequest {
                idempotency_key: String::new(),
                ..valid()
            },
            "idempotency_key: is required",
        ),
        (
            PlaceOrderRequest {
                idempotency_key: "k".repeat(129),
                ..valid()
            },
            "idempotency_key: must be at most 128",
        ),
        (
            PlaceOrderRequest {
                idempotency_key: "a key".into(),
                ..valid()
            },
            "idempotency_key: may hold only",
        ),
        (
            PlaceOrderRequest {
                items: vec![],
                ..valid()
            },
            "items: at least one item",
        ),
        (
            PlaceOrderRequest {
                items: vec![item("sku-1", 1), item("sku-2", -1)],
                ..valid()
            },
            "items[1].quantity: must be between 1 and 1000, got -1",
        ),
        (
            PlaceOrderRequest {
                items: vec![item("", 1)],
                ..valid()
            },
            "items[0].product_id: is required",
        ),
        (
            PlaceOrderRequest {
                customer_id: "c".repeat(65),
                ..valid()
            },
            "customer_id: must be at most 64",
        ),
    ];
    for (req, expected) in cases {
        let err = client.place_order(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{expected}: {err:?}");
        assert!(
            err.message().starts_with(expected),
            "expected {expected:?}, got {:?}",
            err.message()
        );
    }
    // A payload over the 1 MiB limit is refused by the codec, before any handler runs.
    let huge = PlaceOrderRequest {
        customer_id: "c".repeat(2 << 20),
        ..valid()
    };
    let err = client.place_order(huge).await.unwrap_err();
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");

    let err = client.place_order(valid()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().starts_with("orders: "), "{}", err.message());
    let (_, metrics) = app.http_get("/metrics").await;
    assert!(
        metrics.contains("gateway_place_order_total{service=\"gateway\",outcome=\"error\"} 1"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

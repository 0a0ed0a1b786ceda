//! The gateway through a real server on 127.0.0.1:0: every malformed PlaceOrder is refused
//! before it reaches orders, with the field named (a body that is not protobuf too); an
//! unreachable orders is UNAVAILABLE; reflection describes only the public API.

use bytes::{Buf, BufMut};
use clap::Parser;
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, PlaceOrderRequest};
use lab_runtime::testing::TestApp;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

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
        (
            PlaceOrderRequest {
                items: vec![item("sku-1", 1000), item("sku-2", 1), item("sku-1", 1)],
                ..valid()
            },
            "items: at most 1000 of one product, got 1001 of \"sku-1\" over items[0], items[2]",
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

/// Sends bytes as they are: a request body no protobuf decoder accepts.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining()).to_vec()))
    }
}

#[tokio::test]
async fn a_body_that_is_not_protobuf_is_invalid_argument() {
    let config = gateway::Config::parse_from(["gateway", "--orders-url", "http://127.0.0.1:1"]);
    let app = TestApp::spawn(config, gateway::run).await;
    let mut grpc = tonic::client::Grpc::new(app.channel());
    grpc.ready().await.unwrap();
    // Field 1 (a string) claims 5 bytes; 1 follows.
    let truncated = vec![0x0a, 0x05, b'k'];
    let err = grpc
        .unary(
            tonic::Request::new(truncated),
            http::uri::PathAndQuery::from_static("/shop.v1.Gateway/PlaceOrder"),
            Raw,
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().starts_with(
            "request: the body of /shop.v1.Gateway/PlaceOrder is not a valid protobuf message"
        ),
        "{}",
        err.message()
    );
    let (_, metrics) = app.http_get("/metrics").await;
    assert!(
        metrics.contains("method=\"/shop.v1.Gateway/PlaceOrder\",code=\"INVALID_ARGUMENT\"} 1"),
        "counted as the caller's error: {metrics}"
    );
    app.stop().await.unwrap();
}

async fn reflect(app: &TestApp, request: MessageRequest) -> Result<MessageResponse, Status> {
    let mut client = ServerReflectionClient::new(app.channel());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(request),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer: ServerReflectionResponse = answers.message().await?.unwrap();
    Ok(answer.message_response.unwrap())
}

#[tokio::test]
async fn reflection_describes_only_the_public_api() {
    let config = gateway::Config::parse_from(["gateway", "--orders-url", "http://127.0.0.1:1"]);
    let app = TestApp::spawn(config, gateway::run).await;
    let Ok(MessageResponse::ListServicesResponse(list)) =
        reflect(&app, MessageRequest::ListServices(String::new())).await
    else {
        panic!("not a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["shop.v1.Gateway"]);
    let found = reflect(
        &app,
        MessageRequest::FileContainingSymbol("shop.v1.Gateway".into()),
    )
    .await;
    assert!(
        matches!(found, Ok(MessageResponse::FileDescriptorResponse(_))),
        "{found:?}"
    );
    // The internal APIs are not described at all, even when asked for by name.
    for internal in ["shop.v1.Payments", "lab.v1.Faults", "lab.v1.Audit"] {
        let answer = reflect(&app, MessageRequest::FileContainingSymbol(internal.into())).await;
        assert_eq!(
            answer.map(|_| ()).unwrap_err().code(),
            Code::NotFound,
            "{internal}"
        );
    }
    app.stop().await.unwrap();
}

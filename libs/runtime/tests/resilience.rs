//! Every resilience pattern through real tonic servers on 127.0.0.1:0, built the way the
//! services build them (`ServiceHost` + a profile): the code the client sees is the
//! deliberate one — circuit open UNAVAILABLE, bulkhead full and shed RESOURCE_EXHAUSTED,
//! deadline DEADLINE_EXCEEDED — never UNKNOWN; and a deadline shrinks across three hops.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use lab_proto::shop::v1 as shop;
use lab_proto::shop::v1::gateway_server::{Gateway, GatewayServer};
use lab_proto::shop::v1::orders_client::OrdersClient;
use lab_proto::shop::v1::orders_server::{Orders, OrdersServer};
use lab_proto::shop::v1::payments_client::PaymentsClient;
use lab_proto::shop::v1::payments_server::{Payments, PaymentsServer};
use lab_resilience::profiles::Named;
use lab_runtime::client::HopService;
use lab_runtime::{Bound, ServiceHost, Shutdown};
use tonic::{Code, Request, Response, Status};

fn profile(yaml: &str) -> Named {
    Named {
        name: "test".into(),
        profile: lab_resilience::Profile::parse(yaml).expect("test profile"),
    }
}

/// A payments stand-in: answers after `delay` with `fail` (or OK), counts calls and
/// remembers the `grpc-timeout` it received (ms; 0 = none).
#[derive(Clone, Default)]
struct FakePayments {
    delay: Duration,
    fail: Option<Code>,
    calls: Arc<AtomicUsize>,
    last_timeout_ms: Arc<AtomicU64>,
}

#[tonic::async_trait]
impl Payments for FakePayments {
    async fn charge(
        &self,
        r: Request<shop::ChargeRequest>,
    ) -> Result<Response<shop::ChargeResponse>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let timeout =
            lab_runtime::deadline::remaining(r.metadata()).map_or(0, |d| d.as_millis() as u64);
        self.last_timeout_ms.store(timeout, Ordering::SeqCst);
        tokio::time::sleep(self.delay).await;
        match self.fail {
            Some(code) => Err(Status::new(code, "fake failure")),
            None => Ok(Response::new(shop::ChargeResponse {
                charge_id: "c1".into(),
                replayed: false,
            })),
        }
    }
    async fn refund(
        &self,
        _: Request<shop::RefundRequest>,
    ) -> Result<Response<shop::RefundResponse>, Status> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_charge(
        &self,
        _: Request<shop::GetChargeRequest>,
    ) -> Result<Response<shop::ChargeRecord>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

/// Serves `add(host)` as `service` with `named` on 127.0.0.1:0; returns its URL.
async fn serve(
    service: &'static str,
    named: Named,
    add: impl FnOnce(&mut ServiceHost),
) -> (String, Shutdown) {
    let bound = Bound::ephemeral().await.unwrap();
    let url = format!("http://{}", bound.grpc_addr().unwrap());
    let mut host = ServiceHost::new(service, named);
    add(&mut host);
    let shutdown = Shutdown::new();
    tokio::spawn(host.serve(bound, shutdown.clone()));
    (url, shutdown)
}

/// A payments client through the profile's stack for the `payments` hop, and its host's
/// `/state` reader.
fn payments_client(named: Named, url: &str) -> (PaymentsClient<HopService>, ServiceHost) {
    let mut host = ServiceHost::new("orders", named);
    let svc = host.client("payments", "--payments-url", url).unwrap();
    (PaymentsClient::new(svc), host)
}

fn charge() -> shop::ChargeRequest {
    shop::ChargeRequest {
        order_id: "o1".into(),
        amount: Some(shop::Money {
            currency: "USD".into(),
            minor_units: 100,
        }),
        idempotency_key: "k1".into(),
    }
}

#[tokio::test]
async fn open_circuit_is_unavailable_and_sends_nothing() {
    let yaml = "resilience:\n  client:\n    breaker: { consecutive_failures: 2, open_ms: 60000 }\n";
    let fake = FakePayments {
        fail: Some(Code::Unavailable),
        ..Default::default()
    };
    let calls = fake.calls.clone();
    let (url, _stop) = serve("payments", profile(yaml), |h| {
        h.add_service(PaymentsServer::new(fake));
    })
    .await;
    let (mut client, host) = payments_client(profile(yaml), &url);
    for _ in 0..2 {
        let err = client.charge(charge()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
    let err = client.charge(charge()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(
        err.message().contains("circuit breaker"),
        "{}",
        err.message()
    );
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "the open circuit sent nothing"
    );
    let state = host.state().snapshot();
    assert_eq!(
        state["hops"]["payments"]["breaker"]["state"], "open",
        "{state}"
    );
}

#[tokio::test]
async fn full_bulkhead_is_resource_exhausted() {
    let yaml = "resilience:\n  client:\n    bulkhead: { max_concurrent: 1, max_wait_ms: 0 }\n";
    let fake = FakePayments {
        delay: Duration::from_millis(300),
        ..Default::default()
    };
    let (url, _stop) = serve("payments", profile(yaml), |h| {
        h.add_service(PaymentsServer::new(fake));
    })
    .await;
    let (client, _host) = payments_client(profile(yaml), &url);
    let (mut first, mut second) = (client.clone(), client.clone());
    let (a, b) = tokio::join!(first.charge(charge()), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        second.charge(charge()).await
    });
    assert!(a.is_ok(), "{a:?}");
    let err = b.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("bulkhead"), "{}", err.message());
}

#[tokio::test]
async fn shed_request_is_resource_exhausted_with_pushback() {
    let yaml = "resilience:\n  services:\n    payments:\n      shed: { max_in_flight: 1, pushback_ms: 250 }\n";
    let fake = FakePayments {
        delay: Duration::from_millis(300),
        ..Default::default()
    };
    let (url, _stop) = serve("payments", profile(yaml), |h| {
        h.add_service(PaymentsServer::new(fake));
    })
    .await;
    let channel = lab_runtime::client::lazy_channel("test", &url).unwrap();
    let client = PaymentsClient::new(channel);
    let (mut first, mut second) = (client.clone(), client.clone());
    let (a, b) = tokio::join!(first.charge(charge()), async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        second.charge(charge()).await
    });
    assert!(a.is_ok(), "{a:?}");
    let err = b.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert_eq!(
        err.metadata()
            .get("grpc-retry-pushback-ms")
            .map(|v| v.to_str().unwrap()),
        Some("250")
    );
}

#[tokio::test]
async fn deadline_is_deadline_exceeded_not_cancelled() {
    let yaml = "resilience:\n  client:\n    deadline: { propagate: true }\n  server:\n    deadline: { enforce: true }\n";
    let fake = FakePayments {
        delay: Duration::from_millis(500),
        ..Default::default()
    };
    let (url, _stop) = serve("payments", profile(yaml), |h| {
        h.add_service(PaymentsServer::new(fake.clone()));
    })
    .await;
    // Through our client stack: DEADLINE_EXCEEDED, not tonic's CANCELLED.
    let (mut client, _host) = payments_client(profile(yaml), &url);
    let mut req = Request::new(charge());
    req.set_timeout(Duration::from_millis(100));
    let err = client.charge(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");

    // A deadline that has already passed: refused before anything is sent.
    let mut req = Request::new(charge());
    req.set_timeout(Duration::ZERO);
    let before = fake.calls.load(Ordering::SeqCst);
    let err = client.charge(req).await.unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        before,
        "expired work is never sent"
    );
}

/// gateway -> orders -> payments, each a real server whose client stack propagates deadlines.
struct HopGateway(OrdersClient<HopService>);
struct HopOrders(PaymentsClient<HopService>);

#[tonic::async_trait]
impl Gateway for HopGateway {
    async fn place_order(
        &self,
        r: Request<shop::PlaceOrderRequest>,
    ) -> Result<Response<shop::PlaceOrderResponse>, Status> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        let r = r.into_inner();
        self.0
            .clone()
            .create_order(shop::CreateOrderRequest {
                idempotency_key: r.idempotency_key,
                customer_id: r.customer_id,
                items: r.items,
            })
            .await?;
        Ok(Response::new(shop::PlaceOrderResponse::default()))
    }
    async fn get_order(
        &self,
        _: Request<shop::GetOrderRequest>,
    ) -> Result<Response<shop::Order>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tonic::async_trait]
impl Orders for HopOrders {
    async fn create_order(
        &self,
        _: Request<shop::CreateOrderRequest>,
    ) -> Result<Response<shop::CreateOrderResponse>, Status> {
        tokio::time::sleep(Duration::from_millis(30)).await;
        self.0.clone().charge(charge()).await?;
        Ok(Response::new(shop::CreateOrderResponse::default()))
    }
    async fn get_order(
        &self,
        _: Request<shop::GetOrderRequest>,
    ) -> Result<Response<shop::Order>, Status> {
        Err(Status::unimplemented("fake"))
    }
}

#[tokio::test]
async fn a_300ms_deadline_reaches_payments_shrunk_across_three_hops() {
    let yaml = "resilience:\n  client:\n    deadline: { propagate: true }\n  server:\n    deadline: { enforce: true }\n";
    let fake = FakePayments::default();
    let seen = fake.last_timeout_ms.clone();
    let (payments_url, _s1) = serve("payments", profile(yaml), |h| {
        h.add_service(PaymentsServer::new(fake));
    })
    .await;
    let (orders_url, _s2) = serve("orders", profile(yaml), |h| {
        let payments = h
            .client("payments", "--payments-url", &payments_url)
            .unwrap();
        h.add_service(OrdersServer::new(HopOrders(PaymentsClient::new(payments))));
    })
    .await;
    let (gateway_url, _s3) = serve("gateway", profile(yaml), |h| {
        let orders = h.client("orders", "--orders-url", &orders_url).unwrap();
        h.add_service(GatewayServer::new(HopGateway(OrdersClient::new(orders))));
    })
    .await;
    let mut client = lab_proto::shop::v1::gateway_client::GatewayClient::new(
        lab_runtime::client::lazy_channel("test", &gateway_url).unwrap(),
    );
    let mut req = Request::new(shop::PlaceOrderRequest::default());
    req.set_timeout(Duration::from_millis(300));
    client.place_order(req).await.expect("fits in the deadline");
    let ms = seen.load(Ordering::SeqCst);
    assert!(ms > 0, "payments received a deadline");
    assert!(
        ms <= 300 - 60,
        "two hops of 30 ms were subtracted: payments saw {ms} ms"
    );
}

//! Load shedding: the cap on requests in flight, the error and its pushback, and places
//! given back when a request completes or is dropped.

use std::task::Poll;
use std::time::Duration;

use lab_resilience::shed::{Shed, ShedConfig, ShedMetrics, Shedder};
use prometheus_client::registry::Registry;
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Req = http::Request<()>;
type Res = http::Response<()>;

fn request() -> Req {
    http::Request::new(())
}

fn ok() -> Res {
    http::Response::new(())
}

fn nothing_called(handle: &mut mock::Handle<Req, Res>) -> bool {
    !matches!(handle.poll_request(), Poll::Ready(Some(_)))
}

fn config(max_in_flight: u32, pushback_ms: Option<u64>) -> ShedConfig {
    ShedConfig {
        max_in_flight,
        pushback_ms,
    }
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_cap_are_refused_at_once() {
    let mut registry = Registry::default();
    let metrics = ShedMetrics::register(&mut registry);
    let shedder = Shedder::new(&config(2, Some(250)), &metrics);
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let svc = shedder.layer().layer(inner);

    // Each request on a fresh clone, driven by `oneshot`: what tonic (hyper-util) does.
    let a = tokio::spawn(svc.clone().oneshot(request()));
    let b = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond_a) = handle.next_request().await.unwrap();
    let (_, respond_b) = handle.next_request().await.unwrap();
    assert_eq!(shedder.in_flight(), 2);

    let start = tokio::time::Instant::now();
    let err = svc.clone().oneshot(request()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO, "no queueing");
    let shed = err.downcast_ref::<Shed>().expect("Shed");
    assert_eq!(shed.max_in_flight, 2);
    assert_eq!(shed.pushback, Some(Duration::from_millis(250)));
    assert!(nothing_called(&mut handle), "shed before any work");

    let status = lab_resilience::status::to_status(err.as_ref());
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "250"
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("resilience_shed_total 1"), "{text}");
    assert!(text.contains("resilience_in_flight 2"), "{text}");

    respond_a.send_response(ok());
    respond_b.send_response(ok());
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    let snapshot = shedder.snapshot();
    assert_eq!(snapshot["in_flight"], 0);
    assert_eq!(snapshot["shed"], 1);
    assert_eq!(snapshot["max_in_flight"], 2);
    assert_eq!(snapshot["pushback_ms"], 250);
}

#[tokio::test(start_paused = true)]
async fn no_pushback_unless_configured() {
    let shedder = Shedder::new(&config(1, None), &ShedMetrics::default());
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let svc = shedder.layer().layer(inner);
    let _a = tokio::spawn(svc.clone().oneshot(request()));
    let _held = handle.next_request().await.unwrap();
    let err = svc.oneshot(request()).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Shed>().unwrap().pushback, None);
    let status = lab_resilience::status::to_status(err.as_ref());
    assert!(status.metadata().get("grpc-retry-pushback-ms").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_completed_request_gives_its_place_back() {
    let metrics = ShedMetrics::default();
    let shedder = Shedder::new(&config(1, None), &metrics);
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let svc = shedder.layer().layer(inner);

    for _ in 0..3 {
        let call = tokio::spawn(svc.clone().oneshot(request()));
        let (_, respond) = handle.next_request().await.unwrap();
        assert_eq!(shedder.in_flight(), 1);
        respond.send_response(ok());
        call.await.unwrap().unwrap();
        assert_eq!(shedder.in_flight(), 0);
    }
    assert_eq!(shedder.snapshot()["shed"], 0);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_request_gives_its_place_back() {
    let mut registry = Registry::default();
    let metrics = ShedMetrics::register(&mut registry);
    let shedder = Shedder::new(&config(1, None), &metrics);
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let svc = shedder.layer().layer(inner);

    let a = tokio::spawn(svc.clone().oneshot(request()));
    let _held = handle.next_request().await.unwrap();
    assert!(svc.clone().oneshot(request()).await.is_err());
    // The caller went away (RST_STREAM): hyper drops the response future.
    a.abort();
    let _ = a.await;
    assert_eq!(shedder.in_flight(), 0);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(text.contains("resilience_in_flight 0"), "{text}");

    let b = tokio::spawn(svc.oneshot(request()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(ok());
    b.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn every_layer_of_one_shedder_shares_the_cap() {
    let shedder = Shedder::new(&config(1, None), &ShedMetrics::default());
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let first = shedder.layer().layer(inner.clone());
    let second = shedder.layer().layer(inner);
    let a = tokio::spawn(first.oneshot(request()));
    let (_, respond) = handle.next_request().await.unwrap();
    let err = second.oneshot(request()).await.unwrap_err();
    assert!(err.is::<Shed>(), "{err}");
    respond.send_response(ok());
    a.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn errors_of_the_inner_service_pass_through() {
    let shedder = Shedder::new(&config(1, None), &ShedMetrics::default());
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let svc = shedder.layer().layer(inner);
    let a = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(tonic::Status::internal("boom"));
    let err = a.await.unwrap().unwrap_err();
    assert_eq!(
        err.downcast_ref::<tonic::Status>().unwrap().message(),
        "boom"
    );
    assert_eq!(shedder.in_flight(), 0);
    assert_eq!(shedder.snapshot()["shed"], 0);
}

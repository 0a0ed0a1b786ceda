//! The bulkhead: the bound on calls in flight, the exact bounded wait (paused clock), and
//! places given back when a call completes or is dropped.

use std::task::Poll;
use std::time::Duration;

use lab_resilience::bulkhead::{Bulkhead, BulkheadConfig, BulkheadFull, BulkheadMetrics};
use prometheus_client::registry::Registry;
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Req = http::Request<()>;
type Res = http::Response<()>;

fn bulkhead(
    max_concurrent: u32,
    max_wait_ms: u64,
) -> (
    Bulkhead,
    lab_resilience::bulkhead::BulkheadService<mock::Mock<Req, Res>>,
    mock::Handle<Req, Res>,
) {
    let config = BulkheadConfig {
        max_concurrent,
        max_wait_ms,
    };
    let bulkhead = Bulkhead::new("payments", &config, &BulkheadMetrics::default());
    let (inner, handle) = mock::pair::<Req, Res>();
    let svc = bulkhead.layer().layer(inner);
    (bulkhead, svc, handle)
}

fn request() -> Req {
    http::Request::new(())
}

fn ok() -> Res {
    http::Response::new(())
}

fn nothing_called(handle: &mut mock::Handle<Req, Res>) -> bool {
    !matches!(handle.poll_request(), Poll::Ready(Some(_)))
}

#[tokio::test(start_paused = true)]
async fn at_most_max_concurrent_calls_are_in_flight() {
    let (bulkhead, svc, mut handle) = bulkhead(2, 0);
    let a = tokio::spawn(svc.clone().oneshot(request()));
    let b = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond_a) = handle.next_request().await.unwrap();
    let (_, respond_b) = handle.next_request().await.unwrap();
    assert_eq!(bulkhead.in_use(), 2);

    let err = svc.clone().oneshot(request()).await.unwrap_err();
    let full = err.downcast_ref::<BulkheadFull>().expect("BulkheadFull");
    assert_eq!(
        (full.hop.as_str(), full.max_concurrent, full.waited_ms),
        ("payments", 2, 0)
    );
    assert!(
        nothing_called(&mut handle),
        "the third call never reached the downstream"
    );
    assert_eq!(
        lab_resilience::status::to_status(err.as_ref()).code(),
        tonic::Code::ResourceExhausted
    );

    respond_a.send_response(ok());
    a.await.unwrap().unwrap();
    assert_eq!(
        bulkhead.in_use(),
        1,
        "a completed call gives its place back"
    );
    let c = tokio::spawn(svc.oneshot(request()));
    let (_, respond_c) = handle.next_request().await.unwrap();
    respond_b.send_response(ok());
    respond_c.send_response(ok());
    b.await.unwrap().unwrap();
    c.await.unwrap().unwrap();
    assert_eq!(bulkhead.in_use(), 0);
    assert_eq!(bulkhead.snapshot()["rejections"], 1);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_is_refused_exactly_after_max_wait() {
    let (bulkhead, svc, mut handle) = bulkhead(1, 100);
    let a = tokio::spawn(svc.clone().oneshot(request()));
    let (_, _respond_a) = handle.next_request().await.unwrap();

    let start = Instant::now();
    let b = tokio::spawn(svc.oneshot(request()));
    sleep(Duration::from_millis(99)).await;
    assert!(!b.is_finished(), "still waiting at 99 ms");
    assert_eq!(bulkhead.waiting(), 1);

    let err = b.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(100));
    let full = err.downcast_ref::<BulkheadFull>().expect("BulkheadFull");
    assert_eq!(full.waited_ms, 100);
    assert!(nothing_called(&mut handle));
    assert_eq!(bulkhead.waiting(), 0);
    assert_eq!(bulkhead.in_use(), 1);
    a.abort();
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_is_admitted_when_a_place_frees_in_time() {
    let (bulkhead, svc, mut handle) = bulkhead(1, 100);
    let a = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond_a) = handle.next_request().await.unwrap();

    let start = Instant::now();
    let b = tokio::spawn(svc.oneshot(request()));
    sleep(Duration::from_millis(99)).await;
    respond_a.send_response(ok());
    a.await.unwrap().unwrap();

    let (_, respond_b) = handle.next_request().await.unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(99),
        "admitted as soon as A finished"
    );
    assert_eq!(bulkhead.in_use(), 1);
    // Long past the wait bound: an admitted call is no longer timed by the bulkhead.
    sleep(Duration::from_millis(500)).await;
    respond_b.send_response(ok());
    b.await.unwrap().unwrap();
    assert_eq!(bulkhead.in_use(), 0);
    assert_eq!(bulkhead.snapshot()["rejections"], 0);
}

#[tokio::test(start_paused = true)]
async fn waiting_calls_are_admitted_in_order() {
    let (_bulkhead, svc, mut handle) = bulkhead(1, 1000);
    let a = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond_a) = handle.next_request().await.unwrap();
    let mut b_req = request();
    b_req.headers_mut().insert("x-call", "b".parse().unwrap());
    let b = tokio::spawn(svc.clone().oneshot(b_req));
    sleep(Duration::from_millis(10)).await;
    let mut c_req = request();
    c_req.headers_mut().insert("x-call", "c".parse().unwrap());
    let c = tokio::spawn(svc.oneshot(c_req));
    sleep(Duration::from_millis(10)).await;

    respond_a.send_response(ok());
    let (first, respond) = handle.next_request().await.unwrap();
    assert_eq!(
        first.headers()["x-call"],
        "b",
        "the oldest waiter goes first"
    );
    respond.send_response(ok());
    let (second, respond) = handle.next_request().await.unwrap();
    assert_eq!(second.headers()["x-call"], "c");
    respond.send_response(ok());
    for call in [a, b, c] {
        call.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_dropped_call_gives_its_place_back() {
    let (bulkhead, svc, mut handle) = bulkhead(1, 0);
    let a = svc.clone().oneshot(request());
    let a = tokio::spawn(a);
    let (_, _respond_a) = handle.next_request().await.unwrap();
    assert_eq!(bulkhead.in_use(), 1);

    // Cancelled (a timeout, a hedge that won, a caller gone): the place is freed at once.
    a.abort();
    let _ = a.await;
    assert_eq!(bulkhead.in_use(), 0);

    let b = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond_b) = handle.next_request().await.unwrap();
    respond_b.send_response(ok());
    b.await.unwrap().unwrap();

    // A call dropped while waiting leaves the queue.
    let (bulkhead, svc, mut handle) = self::bulkhead(1, 1000);
    let a = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond_a) = handle.next_request().await.unwrap();
    let waiting = tokio::spawn(svc.clone().oneshot(request()));
    sleep(Duration::from_millis(10)).await;
    assert_eq!(bulkhead.waiting(), 1);
    waiting.abort();
    let _ = waiting.await;
    assert_eq!(bulkhead.waiting(), 0);
    respond_a.send_response(ok());
    a.await.unwrap().unwrap();
    let c = tokio::spawn(svc.oneshot(request()));
    let (_, respond_c) = handle.next_request().await.unwrap();
    respond_c.send_response(ok());
    c.await.unwrap().unwrap();
    assert_eq!(bulkhead.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn metrics_are_labelled_by_hop() {
    let mut registry = Registry::default();
    let metrics = BulkheadMetrics::register(&mut registry);
    let config = BulkheadConfig {
        max_concurrent: 1,
        max_wait_ms: 0,
    };
    let payments = Bulkhead::new("payments", &config, &metrics);
    let inventory = Bulkhead::new("inventory", &config, &metrics);
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let svc = payments.layer().layer(inner.clone());
    let _other = inventory.layer().layer(inner);

    let a = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond_a) = handle.next_request().await.unwrap();
    svc.oneshot(request()).await.unwrap_err();

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("resilience_bulkhead_in_use{hop=\"payments\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("resilience_bulkhead_in_use{hop=\"inventory\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("resilience_bulkhead_rejections_total{hop=\"payments\"} 1"),
        "{text}"
    );
    respond_a.send_response(ok());
    a.await.unwrap().unwrap();

    let snapshot = payments.snapshot();
    assert_eq!(snapshot["hop"], "payments");
    assert_eq!(snapshot["max_concurrent"], 1);
    assert_eq!(snapshot["in_use"], 0);
    assert_eq!(snapshot["rejections"], 1);
}

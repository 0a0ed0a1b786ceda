//! The fault layer as a client sees it: statuses answered instead of the service's, the
//! error fraction of a seeded fault, fail-slow after the service's work, added latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use lab_chaos::spec::{FaultInjectionSpec, parse_documents};
use lab_chaos::{FaultLayer, FaultSet};
use prometheus_client::registry::Registry;
use tokio::time::Instant;
use tonic::body::Body;
use tower::{BoxError, Layer, Service, ServiceExt};

const CHARGE: &str = "/shop.v1.Payments/Charge";

fn spec(rest: &str) -> FaultInjectionSpec {
    let yaml = format!(
        "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata:\n  name: t\nspec:\n  selector: {{ service: payments }}\n{rest}"
    );
    parse_documents(&yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .remove(0)
        .spec
}

fn faults_with(rest: &str, seed: u64) -> FaultSet {
    let faults = FaultSet::new("payments", &mut Registry::default());
    faults
        .apply("f", &spec(rest), Instant::now(), seed)
        .unwrap_or_else(|e| panic!("{e}"));
    faults
}

/// An OK gRPC response, as a handler answers.
fn ok() -> http::Response<Body> {
    let mut res = http::Response::new(Body::empty());
    res.headers_mut()
        .insert("content-type", "application/grpc".parse().unwrap());
    res.headers_mut()
        .insert("grpc-status", "0".parse().unwrap());
    res
}

/// The business service: answers OK after `service_time`, counting its calls.
#[allow(clippy::type_complexity)]
fn backend(
    service_time: Duration,
) -> (
    Arc<AtomicUsize>,
    impl Service<
        http::Request<Body>,
        Response = http::Response<Body>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let svc = tower::service_fn(move |_req: http::Request<Body>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            if !service_time.is_zero() {
                tokio::time::sleep(service_time).await;
            }
            Ok::<_, BoxError>(ok())
        }
    });
    (calls, svc)
}

fn request(path: &str) -> http::Request<Body> {
    http::Request::builder()
        .uri(format!("http://payments{path}"))
        .body(Body::empty())
        .unwrap()
}

/// The gRPC code a client would see.
fn code(res: &http::Response<Body>) -> tonic::Code {
    tonic::Status::from_header_map(res.headers()).map_or(tonic::Code::Unknown, |s| s.code())
}

async fn call<S>(svc: &mut S, path: &str) -> http::Response<Body>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Error: std::fmt::Debug,
{
    svc.ready()
        .await
        .unwrap()
        .call(request(path))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn without_faults_calls_pass_through() {
    let (calls, inner) = backend(Duration::ZERO);
    let faults = FaultSet::new("payments", &mut Registry::default());
    let mut svc = FaultLayer::new(faults, false).layer(inner);
    for _ in 0..10 {
        assert_eq!(code(&call(&mut svc, CHARGE).await), tonic::Code::Ok);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 10);
}

#[tokio::test(start_paused = true)]
async fn outage_refuses_everything_without_calling_the_service() {
    let (calls, inner) = backend(Duration::ZERO);
    let faults = faults_with("  action: outage\n  duration: 30s\n", 0);
    let mut svc = FaultLayer::new(faults.clone(), false).layer(inner);
    for path in [
        CHARGE,
        "/shop.v1.Payments/Refund",
        "/shop.v1.Orders/CreateOrder",
    ] {
        for _ in 0..50 {
            let res = call(&mut svc, path).await;
            let status = tonic::Status::from_header_map(res.headers()).unwrap();
            assert_eq!(status.code(), tonic::Code::Unavailable);
            assert!(status.message().contains("injected outage"), "{status:?}");
            assert_eq!(res.headers()["x-lab-fault"], "f");
        }
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the service was called");
    assert_eq!(faults.injected(lab_chaos::spec::Action::Outage), 150);

    // Health checks and the lab's own services are exempt by default.
    for path in ["/grpc.health.v1.Health/Check", "/lab.v1.Audit/Snapshot"] {
        assert_eq!(code(&call(&mut svc, path).await), tonic::Code::Ok);
    }
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // And the outage ends on time.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(code(&call(&mut svc, CHARGE).await), tonic::Code::Ok);
}

#[tokio::test(start_paused = true)]
async fn faults_apply_only_to_their_methods() {
    let (calls, inner) = backend(Duration::ZERO);
    let faults = faults_with(
        "  action: outage\n  methods: [/shop.v1.Payments/Charge]\n  duration: 30s\n",
        0,
    );
    let mut svc = FaultLayer::new(faults, false).layer(inner);
    assert_eq!(
        code(&call(&mut svc, CHARGE).await),
        tonic::Code::Unavailable
    );
    assert_eq!(
        code(&call(&mut svc, "/shop.v1.Payments/Refund").await),
        tonic::Code::Ok
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

const ERRORS_20: &str =
    "  action: error\n  error: { code: UNAVAILABLE, probability: 0.2 }\n  duration: 60s\n";

/// The codes of `n` calls through a fresh layer over a fresh fault set with `seed`.
async fn error_sequence(rest: &str, seed: u64, n: usize) -> (Vec<tonic::Code>, usize) {
    let (calls, inner) = backend(Duration::ZERO);
    let faults = faults_with(rest, seed);
    let mut svc = FaultLayer::new(faults, false).layer(inner);
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        codes.push(code(&call(&mut svc, CHARGE).await));
    }
    (codes, calls.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn error_fraction_is_within_binomial_bounds_and_replays_by_seed() {
    let n = 2000;
    let (codes, calls) = error_sequence(ERRORS_20, 42, n).await;
    let failed = codes
        .iter()
        .filter(|c| **c == tonic::Code::Unavailable)
        .count();
    let ok = codes.iter().filter(|c| **c == tonic::Code::Ok).count();
    assert_eq!(failed + ok, n, "only OK or UNAVAILABLE expected");
    // n p = 400, sigma = sqrt(n p (1 - p)) = 17.9: within 4 sigma.
    let (mean, sigma) = (400.0, (n as f64 * 0.2 * 0.8).sqrt());
    assert!(
        (failed as f64 - mean).abs() <= 4.0 * sigma,
        "{failed} of {n} failed, expected {mean} +- {}",
        4.0 * sigma
    );
    assert_eq!(calls, ok, "fail-fast must not call the service");

    let (again, _) = error_sequence(ERRORS_20, 42, n).await;
    assert_eq!(codes, again, "the same seed gave another sequence");
    let (other, _) = error_sequence(ERRORS_20, 43, n).await;
    assert_ne!(codes, other, "another seed gave the same sequence");
}

#[tokio::test(start_paused = true)]
async fn error_probability_extremes() {
    let always =
        "  action: error\n  error: { code: RESOURCE_EXHAUSTED, probability: 1 }\n  duration: 60s\n";
    let (codes, calls) = error_sequence(always, 1, 100).await;
    assert!(codes.iter().all(|c| *c == tonic::Code::ResourceExhausted));
    assert_eq!(calls, 0);
    let never =
        "  action: error\n  error: { code: UNAVAILABLE, probability: 0 }\n  duration: 60s\n";
    let (codes, calls) = error_sequence(never, 1, 100).await;
    assert!(codes.iter().all(|c| *c == tonic::Code::Ok));
    assert_eq!(calls, 100);
}

#[tokio::test(start_paused = true)]
async fn fail_slow_runs_the_service_then_fails() {
    let service_time = Duration::from_millis(250);
    let (calls, inner) = backend(service_time);
    let faults = faults_with(
        "  action: error\n  error: { code: UNAVAILABLE, probability: 1, mode: fail-slow }\n  duration: 60s\n",
        0,
    );
    let mut svc = FaultLayer::new(faults, false).layer(inner);
    let started = Instant::now();
    let res = call(&mut svc, CHARGE).await;
    assert_eq!(code(&res), tonic::Code::Unavailable);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "fail-slow must run the service"
    );
    assert_eq!(
        started.elapsed(),
        service_time,
        "answered before the service time"
    );
}

#[tokio::test(start_paused = true)]
async fn fail_slow_answers_its_code_whatever_the_service_answered() {
    // With a tower-test mock, the request is seen by the service before the answer.
    let (mock, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let faults = faults_with(
        "  action: error\n  error: { code: ABORTED, probability: 1, mode: fail-slow }\n  duration: 60s\n",
        0,
    );
    let mut svc = FaultLayer::new(faults, false).layer(mock);
    handle.allow(1);
    let pending = tokio::spawn(async move { call(&mut svc, CHARGE).await });
    let (req, respond) = handle
        .next_request()
        .await
        .expect("the service got the call");
    assert_eq!(req.uri().path(), CHARGE);
    respond.send_response(ok());
    assert_eq!(code(&pending.await.unwrap()), tonic::Code::Aborted);
}

#[tokio::test(start_paused = true)]
async fn outage_never_reaches_a_mock_service() {
    let (mock, mut handle) = tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let faults = faults_with("  action: outage\n  duration: 30s\n", 0);
    let mut svc = FaultLayer::new(faults, false).layer(mock);
    handle.allow(10);
    for _ in 0..5 {
        assert_eq!(
            code(&call(&mut svc, CHARGE).await),
            tonic::Code::Unavailable
        );
    }
    drop(svc);
    assert!(
        handle.next_request().await.is_none(),
        "a request reached the service"
    );
}

const FIXED_100: &str =
    "  action: latency\n  latency: { distribution: fixed, fixedMs: 100 }\n  duration: 60s\n";

#[tokio::test(start_paused = true)]
async fn latency_delays_the_call_before_the_service() {
    let (calls, inner) = backend(Duration::from_millis(10));
    let mut svc = FaultLayer::new(faults_with(FIXED_100, 0), false).layer(inner);
    let started = Instant::now();
    assert_eq!(code(&call(&mut svc, CHARGE).await), tonic::Code::Ok);
    assert_eq!(started.elapsed(), Duration::from_millis(110));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn latency_in_handler_leaves_the_delay_to_the_service() {
    let (_calls, inner) = backend(Duration::from_millis(10));
    let faults = faults_with(FIXED_100, 0);
    let mut svc = FaultLayer::new(faults.clone(), true).layer(inner);
    let started = Instant::now();
    assert_eq!(code(&call(&mut svc, CHARGE).await), tonic::Code::Ok);
    assert_eq!(started.elapsed(), Duration::from_millis(10));
    // ... which draws it itself.
    assert_eq!(
        faults.extra_latency(CHARGE),
        Some(Duration::from_millis(100))
    );
}

#[tokio::test(start_paused = true)]
async fn uniform_latency_through_the_layer_stays_in_range() {
    let (_calls, inner) = backend(Duration::ZERO);
    let faults = faults_with(
        "  action: latency\n  latency: { distribution: uniform, minMs: 20, maxMs: 80 }\n  duration: 60s\n",
        5,
    );
    let mut svc = FaultLayer::new(faults, false).layer(inner);
    let mut seen = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        call(&mut svc, CHARGE).await;
        seen.push(started.elapsed());
    }
    seen.sort();
    assert!(seen[0] >= Duration::from_millis(20), "{:?}", seen[0]);
    assert!(seen[199] <= Duration::from_millis(81), "{:?}", seen[199]);
    assert!(seen[100] > Duration::from_millis(40) && seen[100] < Duration::from_millis(60));
}

//! The retry layer against a tower-test mock, on a paused clock: what is retried, when,
//! how often, and what is counted.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use lab_resilience::BoxError;
use lab_resilience::body::ReplayBody;
use lab_resilience::breaker::CircuitOpen;
use lab_resilience::bulkhead::BulkheadFull;
use lab_resilience::classify::{error_response, response_code};
use lab_resilience::config::CodeName;
use lab_resilience::deadline::Deadline;
use lab_resilience::retry::{
    BackoffConfig, BackoffKind, BudgetConfig, CountLayer, Jitter, RetryBudget, RetryConfig,
    RetryLayer, RetryMetrics,
};
use lab_resilience::shed::Shed;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_test::mock::{self, Handle, SendResponse};

type Req = http::Request<ReplayBody>;
type Res = http::Response<tonic::body::Body>;

const HOP: &str = "payments";
const MS: Duration = Duration::from_millis(1);

fn config(max_attempts: u32, kind: BackoffKind, base_ms: u64) -> RetryConfig {
    RetryConfig {
        max_attempts,
        backoff: BackoffConfig {
            kind,
            base_ms,
            max_ms: 10_000,
            jitter: Jitter::None,
        },
        ..RetryConfig::default()
    }
}

/// CountLayer::requests -> Retry -> CountLayer::attempts -> mock, as in the client stack.
struct Harness {
    svc: tower::util::BoxCloneService<Req, Res, BoxError>,
    handle: Handle<Req, Res>,
    metrics: RetryMetrics,
}

fn harness(config: &RetryConfig, budget: Option<Arc<RetryBudget>>) -> Harness {
    let metrics = RetryMetrics::default();
    let (mock, handle) = mock::pair::<Req, Res>();
    let svc = ServiceBuilder::new()
        .layer(CountLayer::requests(HOP, &metrics))
        .layer(RetryLayer::new(HOP, config, budget, &metrics).with_seed(7))
        .layer(CountLayer::attempts(HOP, &metrics))
        .service(mock);
    Harness {
        svc: tower::util::BoxCloneService::new(svc),
        handle,
        metrics,
    }
}

fn request() -> Req {
    http::Request::builder()
        .method("POST")
        .uri("http://payments/shop.v1.Payments/Charge")
        .body(ReplayBody::new(Bytes::from_static(b"charge")))
        .unwrap()
}

fn ok() -> Res {
    http::Response::new(tonic::body::Body::empty())
}

fn failed(code: Code, message: &str) -> Res {
    error_response(&Status::new(code, message))
}

fn with_pushback(mut res: Res, value: &str) -> Res {
    res.headers_mut()
        .insert("grpc-retry-pushback-ms", value.parse().unwrap());
    res
}

impl Harness {
    fn call(&self, req: Req) -> JoinHandle<Result<Res, BoxError>> {
        tokio::spawn(self.svc.clone().oneshot(req))
    }

    /// The next attempt, and when it arrived (time since `t0`).
    async fn next(&mut self, t0: Instant) -> (Req, SendResponse<Res>, Duration) {
        let (req, send) = next_attempt(&mut self.handle).await;
        (req, send, t0.elapsed())
    }

    /// Whether another attempt arrives within `wait`.
    async fn another_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.handle.next_request())
            .await
            .is_ok()
    }
}

fn message_of(res: &Res) -> String {
    Status::from_header_map(res.headers())
        .map(|s| s.message().to_string())
        .unwrap_or_default()
}

fn previous_attempts(req: &Req) -> Option<String> {
    req.headers()
        .get("grpc-previous-rpc-attempts")
        .map(|v| v.to_str().unwrap().to_string())
}

/// The next attempt the mock receives; one that never comes fails the test.
async fn next_attempt(handle: &mut Handle<Req, Res>) -> (Req, SendResponse<Res>) {
    tokio::time::timeout(Duration::from_secs(60), handle.next_request())
        .await
        .expect("no attempt came")
        .expect("the service is gone")
}

/// The call's result; a call that never ends fails the test (on the paused clock the minute
/// passes as soon as nothing else can happen) instead of hanging it.
async fn finish(call: JoinHandle<Result<Res, BoxError>>) -> Result<Res, BoxError> {
    tokio::time::timeout(Duration::from_secs(60), call)
        .await
        .expect("the call did not end")
        .expect("the call panicked")
}

#[tokio::test(start_paused = true)]
async fn retries_unavailable_up_to_max_attempts_then_returns_the_last_error() {
    let mut h = harness(&config(3, BackoffKind::None, 100), None);
    let t0 = Instant::now();
    let call = h.call(request());
    for n in 1..=3 {
        let (_, send, _) = h.next(t0).await;
        send.send_response(failed(Code::Unavailable, &format!("attempt {n}")));
    }
    let res = finish(call).await.unwrap();
    assert_eq!(response_code(&res), Code::Unavailable);
    assert_eq!(message_of(&res), "attempt 3", "the last answer is returned");
    assert!(!h.another_within(Duration::from_secs(10)).await);
    assert_eq!(h.metrics.retries(HOP), 2);
}

#[tokio::test(start_paused = true)]
async fn returns_the_first_success() {
    let mut h = harness(&config(3, BackoffKind::None, 100), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_response(failed(Code::Unavailable, "down"));
    let (req, send, _) = h.next(t0).await;
    assert_eq!(
        req.body().data(),
        "charge",
        "the retry carries the same message"
    );
    assert_eq!(req.uri().path(), "/shop.v1.Payments/Charge");
    send.send_response(ok());
    assert_eq!(response_code(&finish(call).await.unwrap()), Code::Ok);
    assert!(!h.another_within(Duration::from_secs(10)).await);
}

#[tokio::test(start_paused = true)]
async fn errors_are_retried_by_their_code_and_the_last_one_returned() {
    // A transport error (no status) counts as UNAVAILABLE.
    let mut h = harness(&config(2, BackoffKind::None, 100), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_error(std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "reset",
    ));
    let (_, send, _) = h.next(t0).await;
    send.send_error(Status::unavailable("second"));
    let err = finish(call).await.unwrap_err();
    assert_eq!(err.downcast_ref::<Status>().unwrap().message(), "second");
}

#[tokio::test(start_paused = true)]
async fn invalid_argument_is_not_retried() {
    let mut h = harness(&config(3, BackoffKind::None, 100), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_response(failed(Code::InvalidArgument, "bad card"));
    let res = finish(call).await.unwrap();
    assert_eq!(response_code(&res), Code::InvalidArgument);
    assert!(!h.another_within(Duration::from_secs(10)).await);
    assert_eq!(h.metrics.retries(HOP), 0);
}

#[tokio::test(start_paused = true)]
async fn an_open_circuit_is_never_retried() {
    // CircuitOpen maps to UNAVAILABLE, which is retryable: the breaker's fail-fast must win.
    let mut h = harness(&config(3, BackoffKind::None, 100), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_error(CircuitOpen { hop: HOP.into() });
    let err = finish(call).await.unwrap_err();
    assert!(err.is::<CircuitOpen>(), "{err}");
    assert!(!h.another_within(Duration::from_secs(10)).await);
}

#[tokio::test(start_paused = true)]
async fn our_own_load_refusals_only_when_resource_exhausted_is_listed() {
    let bulkhead_full = || BulkheadFull {
        hop: HOP.into(),
        max_concurrent: 20,
        waited_ms: 0,
    };

    let mut h = harness(&config(3, BackoffKind::None, 100), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_error(bulkhead_full());
    assert!(finish(call).await.unwrap_err().is::<BulkheadFull>());
    assert!(!h.another_within(Duration::from_secs(10)).await);

    let mut listed = config(3, BackoffKind::None, 100);
    listed.retry_on.push(CodeName(Code::ResourceExhausted));
    let mut h = harness(&listed, None);
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_error(bulkhead_full());
    let (_, send, _) = h.next(t0).await;
    send.send_error(Shed {
        max_in_flight: 200,
        pushback: None,
    });
    let (_, send, _) = h.next(t0).await;
    send.send_response(failed(Code::ResourceExhausted, "third"));
    let res = finish(call).await.unwrap();
    assert_eq!(message_of(&res), "third");
}

#[tokio::test(start_paused = true)]
async fn backoff_delays_are_waited() {
    let mut h = harness(&config(4, BackoffKind::Exponential, 100), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let mut arrivals = vec![];
    for _ in 0..4 {
        let (_, send, at) = h.next(t0).await;
        arrivals.push(at);
        send.send_response(failed(Code::Unavailable, "down"));
    }
    finish(call).await.unwrap();
    // 100, then 200, then 400 ms after each failure.
    assert_eq!(arrivals, [0, 100, 300, 700].map(|ms| ms * MS).to_vec());

    let mut h = harness(&config(2, BackoffKind::Fixed, 250), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_response(failed(Code::Unavailable, "down"));
    assert!(
        !h.another_within(249 * MS).await,
        "the 2nd attempt is not sent before base_ms"
    );
    let (_, send, at) = h.next(t0).await;
    assert_eq!(at, 250 * MS);
    send.send_response(ok());
    finish(call).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn full_jitter_delays_stay_within_the_curve() {
    let mut c = config(4, BackoffKind::Exponential, 100);
    c.backoff.jitter = Jitter::Full;
    let mut h = harness(&c, None);
    let mut delays = vec![];
    for _ in 0..10 {
        let call = h.call(request());
        let mut last = Instant::now();
        for n in 0..4 {
            let (_, send) = next_attempt(&mut h.handle).await;
            if n > 0 {
                delays.push((n, last.elapsed()));
            }
            last = Instant::now();
            send.send_response(failed(Code::Unavailable, "down"));
        }
        finish(call).await.unwrap();
    }
    for (n, d) in &delays {
        let cap = 100 * MS * 2u32.pow(n - 1);
        assert!(*d <= cap, "retry {n} waited {d:?} > {cap:?}");
    }
    let distinct: std::collections::HashSet<_> = delays.iter().map(|(_, d)| *d).collect();
    assert!(
        distinct.len() > delays.len() / 2,
        "jitter varies: {delays:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn server_pushback_replaces_the_backoff() {
    let mut h = harness(&config(3, BackoffKind::Fixed, 10), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_response(with_pushback(failed(Code::Unavailable, "busy"), "250"));
    let (_, send, at) = h.next(t0).await;
    assert_eq!(at, 250 * MS, "waits the pushback, not the 10 ms backoff");
    // No pushback this time: the backoff again.
    send.send_error(Status::unavailable("x"));
    let (_, send, at) = h.next(t0).await;
    assert_eq!(at, 260 * MS);
    send.send_response(ok());
    finish(call).await.unwrap();

    let mut listed = config(3, BackoffKind::Fixed, 10);
    listed.retry_on.push(CodeName(Code::ResourceExhausted));
    let mut h = harness(&listed, None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    // A load refusal from our own layers carries its pushback through its status.
    send.send_error(Shed {
        max_in_flight: 1,
        pushback: Some(400 * MS),
    });
    let (_, send, at) = h.next(t0).await;
    assert_eq!(at, 400 * MS, "a Shed error's pushback is honoured");
    send.send_response(ok());
    finish(call).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn negative_pushback_stops_retries() {
    let mut h = harness(&config(3, BackoffKind::None, 100), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_response(with_pushback(failed(Code::Unavailable, "go away"), "-1"));
    let res = finish(call).await.unwrap();
    assert_eq!(message_of(&res), "go away");
    assert!(!h.another_within(Duration::from_secs(10)).await);
}

#[tokio::test(start_paused = true)]
async fn pushback_is_ignored_when_not_honoured() {
    let mut c = config(2, BackoffKind::Fixed, 10);
    c.honor_pushback = false;
    let mut h = harness(&c, None);
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_response(with_pushback(failed(Code::Unavailable, "x"), "-1"));
    let (_, send, at) = h.next(t0).await;
    assert_eq!(at, 10 * MS);
    send.send_response(ok());
    finish(call).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn retries_say_how_many_attempts_came_before() {
    let mut h = harness(&config(3, BackoffKind::None, 100), None);
    let t0 = Instant::now();
    let call = h.call(request());
    let mut seen = vec![];
    for _ in 0..3 {
        let (req, send, _) = h.next(t0).await;
        seen.push(previous_attempts(&req));
        send.send_response(failed(Code::Unavailable, "down"));
    }
    finish(call).await.unwrap();
    assert_eq!(seen, [None, Some("1".into()), Some("2".into())]);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_stops_retries_and_is_counted() {
    // ratio 1, no floor: each first attempt pays for exactly one retry.
    let budget = Arc::new(RetryBudget::new(&BudgetConfig {
        ratio: 1.0,
        min_per_second: 0,
        window_s: 10,
    }));
    let mut h = harness(&config(3, BackoffKind::None, 100), Some(budget));
    let t0 = Instant::now();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_response(failed(Code::Unavailable, "first"));
    let (_, send, _) = h.next(t0).await;
    send.send_response(failed(Code::Unavailable, "second"));
    let res = finish(call).await.unwrap();
    assert_eq!(
        message_of(&res),
        "second",
        "no third attempt: the budget is spent"
    );
    assert!(!h.another_within(Duration::from_secs(10)).await);
    assert_eq!(h.metrics.retries(HOP), 1);
    assert_eq!(h.metrics.budget_exhausted(HOP), 1);

    // A budget with nothing in it never retries.
    let empty = Arc::new(RetryBudget::new(&BudgetConfig {
        ratio: 0.0,
        min_per_second: 0,
        window_s: 1,
    }));
    let mut h = harness(&config(3, BackoffKind::None, 100), Some(empty));
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_response(failed(Code::Unavailable, "down"));
    finish(call).await.unwrap();
    assert_eq!(h.metrics.budget_exhausted(HOP), 1);
    assert_eq!(h.metrics.attempts(HOP), 1);
}

#[tokio::test(start_paused = true)]
async fn the_budget_is_withdrawn_when_the_retry_is_decided() {
    // Two calls fail at once; one deposit each (ratio 0.5 -> a retry costs 2): only one of
    // them may retry, even though neither retry has been sent yet (backoff 1 s).
    let budget = Arc::new(RetryBudget::new(&BudgetConfig {
        ratio: 0.5,
        min_per_second: 0,
        window_s: 10,
    }));
    let mut h = harness(&config(2, BackoffKind::Fixed, 1000), Some(budget));
    let t0 = Instant::now();
    let a = h.call(request());
    let b = h.call(request());
    let (_, send_a, _) = h.next(t0).await;
    let (_, send_b, _) = h.next(t0).await;
    send_a.send_response(failed(Code::Unavailable, "a"));
    send_b.send_response(failed(Code::Unavailable, "b"));
    tokio::task::yield_now().await;
    let (_, send, at) = h.next(t0).await;
    assert_eq!(at, 1000 * MS);
    send.send_response(ok());
    let results = [finish(a).await.unwrap(), finish(b).await.unwrap()];
    assert_eq!(
        results
            .iter()
            .filter(|r| response_code(r) == Code::Ok)
            .count(),
        1
    );
    assert_eq!(h.metrics.retries(HOP), 1);
    assert_eq!(h.metrics.budget_exhausted(HOP), 1);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_too_close_stops_retrying() {
    let mut h = harness(&config(3, BackoffKind::Fixed, 100), None);
    let t0 = Instant::now();
    let mut req = request();
    // Room for one 100 ms backoff plus an attempt, not for two.
    req.extensions_mut().insert(Deadline(t0 + 150 * MS));
    let call = h.call(req);
    let (_, send, _) = h.next(t0).await;
    send.send_response(failed(Code::Unavailable, "first"));
    let (_, send, at) = h.next(t0).await;
    assert_eq!(at, 100 * MS);
    send.send_response(failed(Code::Unavailable, "second"));
    let res = finish(call).await.unwrap();
    assert_eq!(
        message_of(&res),
        "second",
        "50 ms left cannot hold a 100 ms backoff"
    );
    assert!(!h.another_within(Duration::from_secs(10)).await);

    // The floor for an attempt counts too: exactly the backoff left is not enough.
    let mut h = harness(&config(3, BackoffKind::Fixed, 100), None);
    let t0 = Instant::now();
    let mut req = request();
    req.extensions_mut().insert(Deadline(t0 + 100 * MS));
    let call = h.call(req);
    let (_, send, _) = h.next(t0).await;
    send.send_response(failed(Code::Unavailable, "only"));
    assert_eq!(message_of(&finish(call).await.unwrap()), "only");
}

#[tokio::test(start_paused = true)]
async fn counting_layers_give_retry_amplification() {
    let mut h = harness(&config(3, BackoffKind::None, 100), None);
    let t0 = Instant::now();
    // Call 1: fails twice, then OK (3 attempts). Call 2: OK at once (1 attempt).
    let call = h.call(request());
    for _ in 0..2 {
        let (_, send, _) = h.next(t0).await;
        send.send_response(failed(Code::Unavailable, "down"));
    }
    let (_, send, _) = h.next(t0).await;
    send.send_response(ok());
    finish(call).await.unwrap();
    let call = h.call(request());
    let (_, send, _) = h.next(t0).await;
    send.send_response(ok());
    finish(call).await.unwrap();

    assert_eq!(h.metrics.requests(HOP), 2);
    assert_eq!(h.metrics.attempts(HOP), 4);
    assert_eq!(h.metrics.retries(HOP), 2);
    let amplification = h.metrics.attempts(HOP) as f64 / h.metrics.requests(HOP) as f64;
    assert_eq!(amplification, 2.0);
}

#[tokio::test(start_paused = true)]
async fn the_retry_service_is_ready_when_its_inner_service_is() {
    let (mock, mut handle) = mock::pair::<Req, Res>();
    handle.allow(0);
    let mut svc = RetryLayer::new(
        HOP,
        &config(2, BackoffKind::None, 1),
        None,
        &RetryMetrics::default(),
    )
    .layer(mock);
    let waker = futures::task::noop_waker();
    let mut cx = std::task::Context::from_waker(&waker);
    assert!(svc.poll_ready(&mut cx).is_pending());
    handle.allow(1);
    assert!(svc.poll_ready(&mut cx).is_ready());
}

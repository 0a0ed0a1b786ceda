//! The hedge layer on a paused clock: when a copy is sent, which answer wins, what the
//! budget allows, and that losers are cancelled.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lab_resilience::BoxError;
use lab_resilience::body::ReplayBody;
use lab_resilience::classify::{error_response, response_code};
use lab_resilience::hedge::{HedgeConfig, HedgeLayer};
use lab_resilience::retry::{
    BackoffConfig, BackoffKind, BudgetConfig, CountLayer, RetryBudget, RetryConfig, RetryLayer,
    RetryMetrics,
};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_test::mock::{self, Handle, SendResponse};

type Req = http::Request<ReplayBody>;
type Res = http::Response<tonic::body::Body>;

const HOP: &str = "inventory";
const READ: &str = "/shop.v1.Inventory/GetStock";
const WRITE: &str = "/shop.v1.Inventory/Reserve";
const MS: Duration = Duration::from_millis(1);

fn config(max_extra: u32) -> HedgeConfig {
    HedgeConfig {
        delay_ms: 50,
        max_extra,
        methods: vec![READ.into()],
    }
}

fn budget(ratio: f64, min_per_second: u32) -> Arc<RetryBudget> {
    Arc::new(RetryBudget::new(&BudgetConfig {
        ratio,
        min_per_second,
        window_s: 10,
    }))
}

struct Harness {
    svc: tower::util::BoxCloneService<Req, Res, BoxError>,
    handle: Handle<Req, Res>,
    metrics: RetryMetrics,
}

/// CountLayer::requests -> Hedge -> CountLayer::attempts -> mock.
fn harness(config: &HedgeConfig, budget: Option<Arc<RetryBudget>>) -> Harness {
    let metrics = RetryMetrics::default();
    let (mock, handle) = mock::pair::<Req, Res>();
    let svc = ServiceBuilder::new()
        .layer(CountLayer::requests(HOP, &metrics))
        .layer(HedgeLayer::new(HOP, config, budget, &metrics))
        .layer(CountLayer::attempts(HOP, &metrics))
        .service(mock);
    Harness {
        svc: tower::util::BoxCloneService::new(svc),
        handle,
        metrics,
    }
}

impl Harness {
    fn call(&self, path: &str) -> JoinHandle<Result<Res, BoxError>> {
        tokio::spawn(self.svc.clone().oneshot(request(path)))
    }

    async fn next(&mut self, t0: Instant) -> (Req, SendResponse<Res>, Duration) {
        let (req, send) = next_attempt(&mut self.handle).await;
        (req, send, t0.elapsed())
    }

    async fn another_within(&mut self, wait: Duration) -> bool {
        tokio::time::timeout(wait, self.handle.next_request())
            .await
            .is_ok()
    }
}

fn request(path: &str) -> Req {
    http::Request::builder()
        .method("POST")
        .uri(format!("http://inventory{path}"))
        .body(ReplayBody::new(Bytes::from_static(b"sku-1")))
        .unwrap()
}

fn answer(tag: &str) -> Res {
    let mut res = http::Response::new(tonic::body::Body::empty());
    res.headers_mut().insert("x-answer", tag.parse().unwrap());
    res
}

fn tag(res: &Res) -> &str {
    res.headers()
        .get("x-answer")
        .map_or("", |v| v.to_str().unwrap())
}

fn failed(code: Code) -> Res {
    error_response(&Status::new(code, "failed"))
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
async fn a_slow_first_attempt_is_hedged_and_the_fast_hedge_wins() {
    let mut h = harness(&config(1), None);
    let t0 = Instant::now();
    let call = h.call(READ);
    let (first, _slow, at) = h.next(t0).await;
    assert_eq!(at, Duration::ZERO);
    assert!(first.headers().get("grpc-previous-rpc-attempts").is_none());
    let (hedge, send, at) = h.next(t0).await;
    assert_eq!(at, 50 * MS, "the hedge goes out after delay_ms");
    assert_eq!(hedge.headers()["grpc-previous-rpc-attempts"], "1");
    assert_eq!(hedge.uri().path(), READ);
    assert_eq!(hedge.body().data(), "sku-1");
    send.send_response(answer("hedge"));
    let res = finish(call).await.unwrap();
    assert_eq!(tag(&res), "hedge");
    assert_eq!(t0.elapsed(), 50 * MS);
    assert!(
        !h.another_within(Duration::from_secs(10)).await,
        "max_extra 1"
    );
    assert_eq!(h.metrics.hedges(HOP), 1);
    assert_eq!(h.metrics.requests(HOP), 1);
    assert_eq!(h.metrics.attempts(HOP), 2);
}

#[tokio::test(start_paused = true)]
async fn an_answer_before_the_delay_is_not_hedged() {
    let mut h = harness(&config(1), None);
    let t0 = Instant::now();
    let call = h.call(READ);
    let (_, send, _) = h.next(t0).await;
    tokio::time::sleep(49 * MS).await;
    send.send_response(answer("first"));
    assert_eq!(tag(&finish(call).await.unwrap()), "first");
    assert!(!h.another_within(Duration::from_secs(10)).await);
    assert_eq!(h.metrics.hedges(HOP), 0);
}

#[tokio::test(start_paused = true)]
async fn a_method_not_listed_is_never_hedged() {
    let mut h = harness(&config(2), None);
    let t0 = Instant::now();
    let call = h.call(WRITE);
    let (_, send, _) = h.next(t0).await;
    assert!(
        !h.another_within(Duration::from_secs(5)).await,
        "a write is never sent twice"
    );
    send.send_response(answer("first"));
    assert_eq!(tag(&finish(call).await.unwrap()), "first");
    assert_eq!(h.metrics.hedges(HOP), 0);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_prevents_hedging() {
    let mut h = harness(&config(1), Some(budget(0.0, 0)));
    let t0 = Instant::now();
    let call = h.call(READ);
    let (_, send, _) = h.next(t0).await;
    assert!(!h.another_within(Duration::from_secs(1)).await);
    send.send_response(answer("first"));
    assert_eq!(tag(&finish(call).await.unwrap()), "first");
    assert_eq!(h.metrics.hedges(HOP), 0);
    assert_eq!(h.metrics.budget_exhausted(HOP), 1);
}

#[tokio::test(start_paused = true)]
async fn hedges_are_paid_from_first_attempt_deposits() {
    // ratio 1: each call's own deposit pays for one hedge, not two.
    let mut h = harness(&config(2), Some(budget(1.0, 0)));
    let t0 = Instant::now();
    let call = h.call(READ);
    let (_, _first, _) = h.next(t0).await;
    let (_, send, at) = h.next(t0).await;
    assert_eq!(at, 50 * MS);
    assert!(
        !h.another_within(Duration::from_secs(1)).await,
        "no balance for a 2nd hedge"
    );
    send.send_response(answer("hedge"));
    assert_eq!(tag(&finish(call).await.unwrap()), "hedge");
    assert_eq!(h.metrics.hedges(HOP), 1);
    assert_eq!(h.metrics.budget_exhausted(HOP), 1);
}

#[tokio::test(start_paused = true)]
async fn up_to_max_extra_copies_one_delay_apart() {
    let mut h = harness(&config(2), None);
    let t0 = Instant::now();
    let call = h.call(READ);
    let mut held = vec![];
    let mut arrivals = vec![];
    for _ in 0..3 {
        let (req, send, at) = h.next(t0).await;
        arrivals.push((at, req.headers().get("grpc-previous-rpc-attempts").cloned()));
        held.push(send);
    }
    assert_eq!(
        arrivals,
        vec![
            (Duration::ZERO, None),
            (50 * MS, Some("1".parse().unwrap())),
            (100 * MS, Some("2".parse().unwrap())),
        ]
    );
    assert!(!h.another_within(Duration::from_secs(1)).await);
    // Whichever attempt answers first is returned, the first one included.
    held.remove(0).send_response(answer("first"));
    assert_eq!(tag(&finish(call).await.unwrap()), "first");
}

#[tokio::test(start_paused = true)]
async fn a_failure_waits_for_the_other_attempts_and_the_last_failure_is_returned() {
    let mut h = harness(&config(1), None);
    let t0 = Instant::now();
    let call = h.call(READ);
    let (_, first, _) = h.next(t0).await;
    let (_, hedge, _) = h.next(t0).await;
    first.send_response(failed(Code::Unavailable));
    tokio::time::sleep(10 * MS).await;
    assert!(!call.is_finished(), "the hedge is still running");
    hedge.send_response(answer("hedge"));
    assert_eq!(tag(&finish(call).await.unwrap()), "hedge");

    let call = h.call(READ);
    let (_, first, _) = h.next(t0).await;
    let (_, hedge, _) = h.next(t0).await;
    hedge.send_error(Status::unavailable("hedge failed"));
    first.send_response(failed(Code::Internal));
    let res = finish(call).await.unwrap();
    assert_eq!(response_code(&res), Code::Internal, "the last answer");
}

#[tokio::test(start_paused = true)]
async fn a_non_server_failure_is_an_answer() {
    let mut h = harness(&config(1), None);
    let t0 = Instant::now();
    let call = h.call(READ);
    let (_, _first, _) = h.next(t0).await;
    let (_, hedge, _) = h.next(t0).await;
    hedge.send_response(failed(Code::NotFound));
    assert_eq!(response_code(&finish(call).await.unwrap()), Code::NotFound);
}

#[tokio::test(start_paused = true)]
async fn a_fast_failure_is_returned_without_hedging() {
    let mut h = harness(&config(1), None);
    let t0 = Instant::now();
    let call = h.call(READ);
    let (_, first, _) = h.next(t0).await;
    first.send_response(failed(Code::Unavailable));
    assert_eq!(
        response_code(&finish(call).await.unwrap()),
        Code::Unavailable
    );
    assert!(!h.another_within(Duration::from_secs(1)).await);
}

#[tokio::test(start_paused = true)]
async fn losers_are_cancelled() {
    // A service whose first call takes 1 s and later calls 10 ms, and which counts the
    // calls dropped before they finished.
    let calls = Arc::new(AtomicUsize::new(0));
    let cancelled = Arc::new(AtomicUsize::new(0));
    struct OnDrop(Arc<AtomicUsize>, bool);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if !self.1 {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let svc = tower::service_fn({
        let (calls, cancelled) = (calls.clone(), cancelled.clone());
        move |_: Req| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let guard = OnDrop(cancelled.clone(), false);
            async move {
                let mut guard = guard;
                let took = if n == 0 { 1000 * MS } else { 10 * MS };
                tokio::time::sleep(took).await;
                guard.1 = true;
                Ok::<_, BoxError>(answer(if n == 0 { "first" } else { "hedge" }))
            }
        }
    });
    let svc = HedgeLayer::new(HOP, &config(1), None, &RetryMetrics::default()).layer(svc);
    let t0 = Instant::now();
    let res = svc.oneshot(request(READ)).await.unwrap();
    assert_eq!(tag(&res), "hedge");
    assert_eq!(t0.elapsed(), 60 * MS);
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        cancelled.load(Ordering::SeqCst),
        1,
        "the slow first attempt was dropped"
    );
}

#[tokio::test(start_paused = true)]
async fn hedge_and_retry_share_one_budget_and_one_deposit_per_call() {
    // Hedge outside retry, as in the client stack; ratio 1: one extra attempt per call.
    let metrics = RetryMetrics::default();
    let shared = budget(1.0, 0);
    let retry = RetryConfig {
        max_attempts: 3,
        backoff: BackoffConfig {
            kind: BackoffKind::None,
            ..BackoffConfig::default()
        },
        ..RetryConfig::default()
    };
    let (mock, mut handle) = mock::pair::<Req, Res>();
    let svc = ServiceBuilder::new()
        .layer(CountLayer::requests(HOP, &metrics))
        .layer(HedgeLayer::new(
            HOP,
            &config(1),
            Some(shared.clone()),
            &metrics,
        ))
        .layer(RetryLayer::new(HOP, &retry, Some(shared), &metrics))
        .layer(CountLayer::attempts(HOP, &metrics))
        .service(mock);
    let call = tokio::spawn(svc.oneshot(request(READ)));
    let (_, first) = next_attempt(&mut handle).await;
    let (_, hedge) = next_attempt(&mut handle).await; // spends the one deposit
    first.send_response(failed(Code::Unavailable)); // no balance left to retry it
    hedge.send_response(failed(Code::Unavailable)); // nor this one
    assert_eq!(
        response_code(&finish(call).await.unwrap()),
        Code::Unavailable
    );
    // The stack is gone with the call, so the mock's channel is closed: no attempt is left.
    assert!(handle.next_request().await.is_none(), "no retry was sent");
    assert_eq!(metrics.requests(HOP), 1);
    assert_eq!(metrics.attempts(HOP), 2);
    assert_eq!(metrics.hedges(HOP), 1);
    assert_eq!(metrics.retries(HOP), 0);
    assert_eq!(metrics.budget_exhausted(HOP), 2);
}

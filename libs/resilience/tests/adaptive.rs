//! The adaptive concurrency limit on a paused clock, against a mock downstream whose latency
//! the test sets: low steady latency raises the limit to its max, latency well above the
//! baseline lowers it, drops cut it, it never leaves [min, max], and requests over it are
//! refused without reaching the service.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use lab_resilience::adaptive::{
    AdaptiveConfig, AdaptiveLimit, AdaptiveMetrics, AdaptiveService, LimitExceeded,
};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Req = http::Request<()>;
type Res = http::Response<()>;
type Svc = AdaptiveService<mock::Mock<Req, Res>>;

fn request() -> Req {
    http::Request::new(())
}

fn ok() -> Res {
    http::Response::new(())
}

/// A trailers-only gRPC error response, as a handler's `Err(Status)` arrives.
fn status_response(code: tonic::Code) -> Res {
    http::Response::builder()
        .header("grpc-status", (code as i32).to_string())
        .body(())
        .unwrap()
}

fn config(initial: u32, min: u32, max: u32) -> AdaptiveConfig {
    AdaptiveConfig {
        initial_limit: initial,
        min_limit: min,
        max_limit: max,
        window_ms: 100,
        ..AdaptiveConfig::default()
    }
}

fn limiter(config: &AdaptiveConfig) -> (AdaptiveLimit, Svc, mock::Handle<Req, Res>) {
    let limit = AdaptiveLimit::new(config, &AdaptiveMetrics::default());
    let (inner, handle) = mock::pair::<Req, Res>();
    let svc = limit.layer().layer(inner);
    (limit, svc, handle)
}

/// Answers every request OK after the current `latency` (ms).
fn serve(mut handle: mock::Handle<Req, Res>, latency: Arc<AtomicU64>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some((_req, respond)) = handle.next_request().await {
            let ms = latency.load(Ordering::Relaxed);
            tokio::spawn(async move {
                sleep(Duration::from_millis(ms)).await;
                respond.send_response(ok());
            });
        }
    })
}

/// `workers` closed-loop clients for `duration`; a refused client waits 5 ms. Checks after
/// every call that the limit stays within [min, max]; returns the lowest and highest seen.
async fn drive(
    svc: &Svc,
    limit: &AdaptiveLimit,
    config: &AdaptiveConfig,
    workers: usize,
    duration: Duration,
) -> (u32, u32) {
    let until = Instant::now() + duration;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (svc, limit) = (svc.clone(), limit.clone());
        let (min, max) = (config.min_limit, config.max_limit);
        tasks.push(tokio::spawn(async move {
            let (mut lo, mut hi) = (u32::MAX, 0);
            while Instant::now() < until {
                if let Err(e) = svc.clone().oneshot(request()).await {
                    assert!(e.is::<LimitExceeded>(), "{e}");
                    sleep(Duration::from_millis(5)).await;
                }
                let l = limit.limit();
                assert!((min..=max).contains(&l), "limit {l} left [{min}, {max}]");
                (lo, hi) = (lo.min(l), hi.max(l));
            }
            (lo, hi)
        }));
    }
    let mut seen = (u32::MAX, 0);
    for t in tasks {
        let (lo, hi) = t.await.unwrap();
        seen = (seen.0.min(lo), seen.1.max(hi));
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn steady_low_latency_raises_the_limit_to_max() {
    let config = config(10, 4, 50);
    let (limit, svc, handle) = limiter(&config);
    let latency = Arc::new(AtomicU64::new(10));
    serve(handle, latency);

    let (lo, hi) = drive(&svc, &limit, &config, 60, Duration::from_secs(10)).await;
    assert_eq!(lo, 10);
    assert_eq!(hi, 50);
    assert_eq!(limit.limit(), 50, "{}", limit.snapshot());
}

#[tokio::test(start_paused = true)]
async fn latency_well_above_the_baseline_lowers_the_limit() {
    let config = config(20, 4, 50);
    let (limit, svc, handle) = limiter(&config);
    let latency = Arc::new(AtomicU64::new(10));
    serve(handle, latency.clone());

    drive(&svc, &limit, &config, 40, Duration::from_secs(5)).await;
    let before = limit.limit();
    assert_eq!(before, 50, "{}", limit.snapshot());

    latency.store(100, Ordering::Relaxed);
    let (lo, _) = drive(&svc, &limit, &config, 40, Duration::from_millis(1500)).await;
    assert!(
        f64::from(lo) < 0.75 * f64::from(before),
        "10x latency should cut the limit by a quarter at least: {before} -> {lo}; {}",
        limit.snapshot()
    );
    let snapshot = limit.snapshot();
    assert!(
        snapshot["rtt_short_ms"].as_f64().unwrap() >= 99.0,
        "{snapshot}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_limit_never_leaves_its_bounds() {
    let config = AdaptiveConfig {
        smoothing: 1.0,
        ..config(8, 6, 12)
    };
    let (limit, svc, handle) = limiter(&config);
    let latency = Arc::new(AtomicU64::new(5));
    serve(handle, latency.clone());
    // Fast, then very slow, then fast again: every step is checked by `drive`.
    let (_, hi) = drive(&svc, &limit, &config, 30, Duration::from_secs(2)).await;
    assert_eq!(hi, 12);
    latency.store(500, Ordering::Relaxed);
    let (lo, _) = drive(&svc, &limit, &config, 30, Duration::from_secs(3)).await;
    assert_eq!(lo, 6);
    latency.store(5, Ordering::Relaxed);
    drive(&svc, &limit, &config, 30, Duration::from_secs(2)).await;
    assert_eq!(limit.limit(), 12);
}

#[tokio::test(start_paused = true)]
async fn a_lightly_loaded_server_does_not_grow_its_limit() {
    let config = config(20, 4, 50);
    let (limit, svc, handle) = limiter(&config);
    serve(handle, Arc::new(AtomicU64::new(10)));
    // 5 in flight at most: far below half the limit; nothing is learnt about capacity.
    drive(&svc, &limit, &config, 5, Duration::from_secs(5)).await;
    assert_eq!(limit.limit(), 20, "{}", limit.snapshot());
    assert!(limit.snapshot()["windows"].as_u64().unwrap() > 10);
}

#[tokio::test(start_paused = true)]
async fn requests_over_the_limit_are_refused_without_calling() {
    let mut registry = Registry::default();
    let metrics = AdaptiveMetrics::register(&mut registry);
    let config = AdaptiveConfig {
        pushback_ms: Some(100),
        ..config(2, 2, 2)
    };
    let limit = AdaptiveLimit::new(&config, &metrics);
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let svc = limit.layer().layer(inner);

    let a = tokio::spawn(svc.clone().oneshot(request()));
    let b = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond_a) = handle.next_request().await.unwrap();
    let (_, respond_b) = handle.next_request().await.unwrap();
    assert_eq!(limit.in_flight(), 2);

    let err = svc.clone().oneshot(request()).await.unwrap_err();
    let refused = err.downcast_ref::<LimitExceeded>().expect("LimitExceeded");
    assert_eq!(refused.limit, 2);
    assert_eq!(refused.pushback, Some(Duration::from_millis(100)));
    assert!(
        !matches!(handle.poll_request(), Poll::Ready(Some(_))),
        "the service never saw it"
    );
    let status = lab_resilience::status::to_status(err.as_ref());
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "100"
    );

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("resilience_adaptive_rejections_total 1"),
        "{text}"
    );
    assert!(text.contains("resilience_adaptive_limit 2"), "{text}");

    respond_a.send_response(ok());
    respond_b.send_response(ok());
    a.await.unwrap().unwrap();
    b.await.unwrap().unwrap();
    assert_eq!(limit.in_flight(), 0);
    let c = tokio::spawn(svc.oneshot(request()));
    let (_, respond_c) = handle.next_request().await.unwrap();
    respond_c.send_response(ok());
    c.await.unwrap().unwrap();
    assert_eq!(limit.snapshot()["rejections"], 1);
}

#[tokio::test(start_paused = true)]
async fn drops_cut_the_limit_other_failures_do_not() {
    let config = config(20, 4, 50);
    let (limit, svc, mut handle) = limiter(&config);
    let window = Duration::from_millis(config.window_ms);

    // Cancelled at its deadline (what tonic's timer does to a handler): a drop, -10 %.
    let mut timed = request();
    timed
        .headers_mut()
        .insert("grpc-timeout", "100m".parse().unwrap());
    let call = tokio::time::timeout(Duration::from_millis(100), svc.clone().oneshot(timed));
    let held = tokio::spawn(async move { handle.next_request().await.map(|r| (r, handle)) });
    assert!(call.await.is_err());
    let ((_, _respond), mut handle) = held.await.unwrap().unwrap();
    assert_eq!(limit.limit(), 18, "{}", limit.snapshot());
    assert_eq!(limit.in_flight(), 0);

    // Cancelled before its deadline (a hedge's loser, a caller gone): says nothing.
    sleep(window).await;
    let mut early = request();
    early
        .headers_mut()
        .insert("grpc-timeout", "1S".parse().unwrap());
    let call = tokio::time::timeout(Duration::from_millis(10), svc.clone().oneshot(early));
    assert!(call.await.is_err());
    let _ = handle.next_request().await.unwrap();
    assert_eq!(limit.limit(), 18);

    // Errors that are not overload: ignored.
    for code in [tonic::Code::InvalidArgument, tonic::Code::Unavailable] {
        let call = tokio::spawn(svc.clone().oneshot(request()));
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_response(status_response(code));
        call.await.unwrap().unwrap();
    }
    let call = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(tonic::Status::not_found("no such order"));
    call.await.unwrap().unwrap_err();
    assert_eq!(limit.limit(), 18);

    // DEADLINE_EXCEEDED answered, RESOURCE_EXHAUSTED raised further in: drops.
    let call = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(status_response(tonic::Code::DeadlineExceeded));
    call.await.unwrap().unwrap();
    assert_eq!(limit.limit(), 16, "18 × 0.9 = 16.2");

    // At most one decrease per window: a burst of drops is one signal, not a collapse.
    let call = tokio::spawn(svc.clone().oneshot(request()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(tonic::Status::resource_exhausted("payments queue full"));
    call.await.unwrap().unwrap_err();
    assert_eq!(limit.limit(), 16);
    sleep(window).await;
    let call = tokio::spawn(svc.oneshot(request()));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(tonic::Status::resource_exhausted("payments queue full"));
    call.await.unwrap().unwrap_err();
    assert_eq!(limit.limit(), 14, "16.2 × 0.9 = 14.58");
    assert_eq!(limit.snapshot()["drops"], 4);
}

#[tokio::test(start_paused = true)]
async fn drops_never_push_the_limit_below_min() {
    let config = config(5, 4, 50);
    let (limit, svc, mut handle) = limiter(&config);
    for _ in 0..5 {
        let call = tokio::spawn(svc.clone().oneshot(request()));
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_error(tonic::Status::deadline_exceeded("slow"));
        call.await.unwrap().unwrap_err();
        sleep(Duration::from_millis(config.window_ms)).await;
    }
    assert_eq!(limit.limit(), 4);
}

//! Deadlines: `grpc-timeout` parsing, propagation from the incoming call to outgoing ones,
//! server-side enforcement and per-attempt timers — on a paused clock.

use std::task::Poll;
use std::time::Duration;

use lab_resilience::BoxError;
use lab_resilience::deadline::{
    AttemptTimeoutLayer, ClientDeadlineLayer, Deadline, DeadlineConfig, DeadlineExceeded,
    DeadlineMetrics, ServerDeadlineConfig, ServerDeadlineLayer, TimeoutConfig, current,
    parse_grpc_timeout, scope,
};
use tokio::time::{Instant, sleep};
use tower::timeout::error::Elapsed;
use tower::{Layer, Service, ServiceExt, service_fn};
use tower_test::mock;

type Req = http::Request<()>;
type Res = http::Response<()>;

fn request(timeout: Option<&str>) -> Req {
    let mut builder = http::Request::builder().uri("/lab.v1.Audit/Snapshot");
    if let Some(t) = timeout {
        builder = builder.header("grpc-timeout", t);
    }
    builder.body(()).unwrap()
}

fn header(req: &Req) -> Option<&str> {
    req.headers()
        .get("grpc-timeout")
        .map(|v| v.to_str().unwrap())
}

fn client(
    config: DeadlineConfig,
    per_try_ms: Option<u64>,
    metrics: &DeadlineMetrics,
) -> (
    impl Service<Req, Response = Res, Error = BoxError, Future: Send + 'static> + Clone + Send + 'static,
    mock::Handle<Req, Res>,
) {
    let (inner, handle) = mock::pair::<Req, Res>();
    let per_try = per_try_ms.map(|per_try_ms| TimeoutConfig { per_try_ms });
    let svc = ClientDeadlineLayer::new(&config, metrics)
        .layer(AttemptTimeoutLayer::new(per_try.as_ref()).layer(inner));
    (svc, handle)
}

/// No request reached the mock (none waiting, whether or not the service is still alive).
fn nothing_called(handle: &mut mock::Handle<Req, Res>) -> bool {
    !matches!(handle.poll_request(), Poll::Ready(Some(_)))
}

#[test]
fn grpc_timeout_parses_every_unit_and_rejects_junk() {
    let ok = [
        ("3H", Duration::from_secs(3 * 3600)),
        ("2M", Duration::from_secs(120)),
        ("42S", Duration::from_secs(42)),
        ("300m", Duration::from_millis(300)),
        ("0m", Duration::ZERO),
        ("250u", Duration::from_micros(250)),
        ("82n", Duration::from_nanos(82)),
        ("99999999H", Duration::from_secs(99_999_999 * 3600)),
        ("00000007S", Duration::from_secs(7)),
    ];
    for (text, want) in ok {
        assert_eq!(parse_grpc_timeout(text), Some(want), "{text}");
    }
    let junk = [
        "",
        "m",
        "S",
        "10",
        "10x",
        "10s",
        "10ms",
        "123456789m",
        "-1m",
        "+1m",
        "1.5S",
        " 1m",
        "1m ",
        "1 m",
        "１m",
        "0xAm",
        "m10",
    ];
    for text in junk {
        assert_eq!(parse_grpc_timeout(text), None, "{text:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_incoming_deadline_shrinks_by_the_time_spent() {
    let metrics = DeadlineMetrics::default();
    let propagate = DeadlineConfig {
        propagate: true,
        default_ms: None,
    };
    let (downstream, mut handle) = client(propagate, None, &metrics);
    // A handler that works 100 ms, then calls downstream.
    let handler = service_fn(move |_req: Req| {
        let downstream = downstream.clone();
        async move {
            sleep(Duration::from_millis(100)).await;
            downstream.oneshot(request(None)).await
        }
    });
    let server =
        ServerDeadlineLayer::new(&ServerDeadlineConfig::default(), &metrics).layer(handler);

    let call = tokio::spawn(server.oneshot(request(Some("300m"))));
    let (outgoing, respond) = handle.next_request().await.unwrap();
    assert_eq!(
        header(&outgoing),
        Some("200m"),
        "300 ms less the 100 ms spent"
    );
    let deadline = outgoing.extensions().get::<Deadline>().unwrap();
    assert_eq!(deadline.remaining(), Duration::from_millis(200));
    respond.send_response(http::Response::new(()));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_default_applies_without_an_incoming_deadline() {
    let metrics = DeadlineMetrics::default();
    let config = DeadlineConfig {
        propagate: true,
        default_ms: Some(500),
    };
    let (svc, mut handle) = client(config, None, &metrics);
    let call = tokio::spawn(svc.clone().oneshot(request(None)));
    let (outgoing, respond) = handle.next_request().await.unwrap();
    assert_eq!(header(&outgoing), Some("500m"));
    respond.send_response(http::Response::new(()));
    call.await.unwrap().unwrap();

    // An earlier incoming deadline wins over the default…
    let start = Instant::now();
    let call = tokio::spawn(scope(
        Some(start + Duration::from_millis(80)),
        svc.clone().oneshot(request(None)),
    ));
    let (outgoing, respond) = handle.next_request().await.unwrap();
    assert_eq!(header(&outgoing), Some("80m"));
    respond.send_response(http::Response::new(()));
    call.await.unwrap().unwrap();

    // …and so does the caller's own timeout (`Request::set_timeout` sets the header).
    let call = tokio::spawn(svc.oneshot(request(Some("30000u"))));
    let (outgoing, respond) = handle.next_request().await.unwrap();
    assert_eq!(header(&outgoing), Some("30m"));
    respond.send_response(http::Response::new(()));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn without_propagation_the_incoming_deadline_is_ignored() {
    let metrics = DeadlineMetrics::default();
    let incoming = Some(Instant::now() + Duration::from_millis(100));

    let (svc, mut handle) = client(DeadlineConfig::default(), None, &metrics);
    let call = tokio::spawn(scope(incoming, svc.oneshot(request(None))));
    let (outgoing, respond) = handle.next_request().await.unwrap();
    assert_eq!(
        header(&outgoing),
        None,
        "no deadline: passed through untouched"
    );
    assert!(outgoing.extensions().get::<Deadline>().is_none());
    respond.send_response(http::Response::new(()));
    call.await.unwrap().unwrap();

    let propagate = DeadlineConfig {
        propagate: true,
        default_ms: None,
    };
    let (svc, mut handle) = client(propagate, None, &metrics);
    let call = tokio::spawn(scope(incoming, svc.oneshot(request(None))));
    let (outgoing, respond) = handle.next_request().await.unwrap();
    assert_eq!(header(&outgoing), Some("100m"));
    respond.send_response(http::Response::new(()));
    call.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_expired_deadline_refuses_without_calling() {
    let metrics = DeadlineMetrics::default();
    let propagate = DeadlineConfig {
        propagate: true,
        default_ms: None,
    };
    let (svc, mut handle) = client(propagate, Some(1000), &metrics);
    let incoming = Some(Instant::now() + Duration::from_millis(50));
    sleep(Duration::from_millis(60)).await;

    let err = scope(incoming, svc.oneshot(request(None)))
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(
        lab_resilience::status::to_status(err.as_ref()).code(),
        tonic::Code::DeadlineExceeded
    );
    assert!(nothing_called(&mut handle));
    assert_eq!(metrics.client(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_call_ends_at_its_deadline_even_between_attempts() {
    let metrics = DeadlineMetrics::default();
    let config = DeadlineConfig {
        propagate: false,
        default_ms: Some(250),
    };
    // No attempt layer under it: only the call's own timer can end the call.
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let svc = ClientDeadlineLayer::new(&config, &metrics).layer(inner);
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(request(None)));
    let (_outgoing, _respond) = handle.next_request().await.unwrap();
    let err = call.await.unwrap().unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(metrics.client(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_server_refuses_expired_work_before_doing_it() {
    let metrics = DeadlineMetrics::default();
    let enforce = ServerDeadlineConfig { enforce: true };
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let server = ServerDeadlineLayer::new(&enforce, &metrics).layer(inner);

    let err = server
        .clone()
        .oneshot(request(Some("0m")))
        .await
        .unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");

    // Work that waited in a queue in front of this layer, which stamped its arrival.
    let mut queued = request(Some("5S"));
    queued
        .extensions_mut()
        .insert(Deadline(Instant::now() + Duration::from_millis(100)));
    sleep(Duration::from_millis(150)).await;
    let err = server.oneshot(queued).await.unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");

    assert!(nothing_called(&mut handle), "the handler never ran");
    assert_eq!(metrics.server(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_server_answers_deadline_exceeded_when_the_deadline_passes_mid_call() {
    let metrics = DeadlineMetrics::default();
    let enforce = ServerDeadlineConfig { enforce: true };
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let server = ServerDeadlineLayer::new(&enforce, &metrics).layer(inner);

    let start = Instant::now();
    let call = tokio::spawn(server.oneshot(request(Some("100m"))));
    let (_req, _respond) = handle.next_request().await.unwrap(); // never answered
    let err = call.await.unwrap().unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(99),
        "1 ms before the deadline, ahead of tonic's own timer (CANCELLED)"
    );
    assert_eq!(metrics.server(), 1);
}

#[tokio::test(start_paused = true)]
async fn without_enforce_the_server_only_propagates() {
    let metrics = DeadlineMetrics::default();
    let handler = service_fn(|_req: Req| async {
        let seen = current();
        sleep(Duration::from_millis(500)).await;
        Ok::<_, BoxError>((seen, http::Response::new(())))
    });
    let server =
        ServerDeadlineLayer::new(&ServerDeadlineConfig::default(), &metrics).layer(handler);
    let start = Instant::now();
    let (seen, _) = server.oneshot(request(Some("100m"))).await.unwrap();
    assert_eq!(seen, Some(start + Duration::from_millis(100)));
    assert_eq!(metrics.server(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_per_try_timeout_fires_and_sets_the_header() {
    let metrics = DeadlineMetrics::default();
    let (svc, mut handle) = client(DeadlineConfig::default(), Some(50), &metrics);
    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(request(None)));
    let (outgoing, _respond) = handle.next_request().await.unwrap();
    assert_eq!(header(&outgoing), Some("50m"));
    let err = call.await.unwrap().unwrap_err();
    assert!(
        err.is::<Elapsed>(),
        "a per-try timeout, not the call's deadline: {err}"
    );
    assert_eq!(start.elapsed(), Duration::from_millis(50));
    assert_eq!(metrics.client(), 0);
}

#[tokio::test(start_paused = true)]
async fn each_attempt_carries_what_is_left() {
    let metrics = DeadlineMetrics::default();
    let config = DeadlineConfig {
        propagate: false,
        default_ms: Some(300),
    };
    let (inner, mut handle) = mock::pair::<Req, Res>();
    let attempt = AttemptTimeoutLayer::new(Some(&TimeoutConfig { per_try_ms: 200 })).layer(inner);
    // A retry loop between the call's deadline and the attempts, as the retry layer sits.
    let retrying = service_fn(move |req: Req| {
        let attempt = attempt.clone();
        async move {
            let mut last = None;
            for _ in 0..3 {
                let mut again = request(None);
                *again.extensions_mut() = req.extensions().clone();
                match attempt.clone().oneshot(again).await {
                    Ok(res) => return Ok(res),
                    Err(e) => last = Some(e),
                }
            }
            Err::<Res, BoxError>(last.unwrap())
        }
    });
    let svc = ClientDeadlineLayer::new(&config, &metrics).layer(retrying);

    let start = Instant::now();
    let call = tokio::spawn(svc.oneshot(request(None)));
    let (first, _r1) = handle.next_request().await.unwrap();
    assert_eq!(header(&first), Some("200m"), "the per-try timeout");
    let (second, _r2) = handle.next_request().await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(200));
    assert_eq!(header(&second), Some("100m"), "what is left of the 300 ms");
    let err = call.await.unwrap().unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_millis(300));
    assert!(
        nothing_called(&mut handle),
        "no third attempt without time left"
    );
    assert_eq!(metrics.client(), 1, "counted once per call");
}

#[tokio::test]
async fn metrics_are_exported_by_side() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = DeadlineMetrics::register(&mut registry);
    let enforce = ServerDeadlineConfig { enforce: true };
    let (inner, _handle) = mock::pair::<Req, Res>();
    let layer = ServerDeadlineLayer::new(&enforce, &metrics);
    let _ = layer.layer(inner).oneshot(request(Some("0m"))).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("resilience_deadline_exceeded_total{side=\"server\"} 1"),
        "{text}"
    );
    assert_eq!(layer.snapshot()["exceeded"], 1);
    assert_eq!(metrics.snapshot()["server"], 1);
}

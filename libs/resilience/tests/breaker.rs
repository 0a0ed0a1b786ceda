//! The circuit breaker layer against `tower-test` mocks, on a paused clock.

use std::time::Duration;

use futures::FutureExt;
use lab_resilience::BoxError;
use lab_resilience::breaker::{
    Breaker, BreakerConfig, BreakerMetrics, BreakerService, CircuitOpen, OpenBackoff,
};
use tokio::time::advance;
use tonic::Code;
use tower::{Layer, Service, ServiceExt};
use tower_test::mock::{self, Handle, Mock, SendResponse};

type Req = http::Request<()>;
type Res = http::Response<()>;

fn ok() -> Res {
    http::Response::new(())
}

/// A trailers-only error response with gRPC code `code`.
fn status(code: Code) -> Res {
    http::Response::builder()
        .header("grpc-status", (code as i32).to_string())
        .body(())
        .unwrap()
}

fn unavailable() -> Res {
    status(Code::Unavailable)
}

/// Only what each test sets can trip the breaker.
fn config() -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: None,
        failure_rate: None,
        slow_call_rate: None,
        min_calls: 1,
        open_ms: 1_000,
        half_open_probes: 1,
        probe_timeout_ms: 500,
        ..BreakerConfig::default()
    }
}

fn consecutive(n: u32) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: Some(n),
        ..config()
    }
}

struct Harness {
    breaker: Breaker,
    svc: BreakerService<Mock<Req, Res>>,
    handle: Handle<Req, Res>,
}

fn harness(config: BreakerConfig) -> Harness {
    harness_with(config, &BreakerMetrics::default())
}

fn harness_with(config: BreakerConfig, metrics: &BreakerMetrics) -> Harness {
    config
        .validate("test.breaker")
        .expect("test config is valid");
    let breaker = Breaker::new("payments", &config, metrics);
    let (mock, handle) = mock::pair();
    Harness {
        svc: breaker.layer().layer(mock),
        breaker,
        handle,
    }
}

type Pending = std::pin::Pin<Box<dyn Future<Output = Result<Res, BoxError>> + Send>>;

impl Harness {
    /// Starts a call; it reaches the mock only if the breaker lets it through.
    async fn start(&mut self) -> Pending {
        let svc = self.svc.ready().await.expect("the breaker is always ready");
        Box::pin(svc.call(http::Request::new(())))
    }

    /// The call the mock received, if any (without waiting).
    fn received(&mut self) -> Option<SendResponse<Res>> {
        tokio::task::unconstrained(self.handle.next_request())
            .now_or_never()
            .flatten()
            .map(|(_, send)| send)
    }

    /// One call, answered at once with `response` if the breaker lets it through.
    async fn call(&mut self, response: Res) -> Result<Res, BoxError> {
        self.call_taking(response, Duration::ZERO).await
    }

    /// One call that the downstream answers with `response` after `delay`.
    async fn call_taking(&mut self, response: Res, delay: Duration) -> Result<Res, BoxError> {
        let call = self.start().await;
        if let Some(send) = self.received() {
            advance(delay).await;
            send.send_response(response);
        }
        call.await
    }

    /// Asserts that a call is refused with `CircuitOpen` and never reaches the mock.
    async fn assert_refused(&mut self) {
        let err = self
            .call(ok())
            .await
            .expect_err("the breaker should refuse");
        let open = err
            .downcast_ref::<CircuitOpen>()
            .unwrap_or_else(|| panic!("not CircuitOpen: {err}"));
        assert_eq!(open.hop, "payments");
        assert!(
            self.received().is_none(),
            "a refused call reached the inner service"
        );
    }

    /// Asserts that a call reaches the mock, and answers it with `response`.
    async fn assert_passes(&mut self, response: Res) -> Result<Res, BoxError> {
        let call = self.start().await;
        let send = self
            .received()
            .unwrap_or_else(|| panic!("refused in state {}", self.breaker.state_name()));
        send.send_response(response);
        call.await
    }

    fn state(&self) -> &'static str {
        self.breaker.state_name()
    }

    fn snapshot(&self, field: &str) -> serde_json::Value {
        self.breaker.snapshot()[field].clone()
    }

    /// Trips a breaker configured with `consecutive_failures: 1`.
    async fn trip(&mut self) {
        let _ = self.assert_passes(unavailable()).await;
        assert_eq!(self.state(), "open");
    }
}

const MS: Duration = Duration::from_millis(1);

#[tokio::test(start_paused = true)]
async fn trips_on_consecutive_failures() {
    let mut h = harness(consecutive(3));
    for _ in 0..2 {
        let _ = h.assert_passes(unavailable()).await;
    }
    // A success breaks the run.
    h.assert_passes(ok()).await.unwrap();
    for _ in 0..2 {
        let _ = h.assert_passes(unavailable()).await;
    }
    assert_eq!(h.state(), "closed");
    let res = h.assert_passes(unavailable()).await.unwrap();
    assert_eq!(
        lab_resilience::classify::response_code(&res),
        Code::Unavailable,
        "the failing response itself is passed through"
    );
    assert_eq!(h.state(), "open");
    h.assert_refused().await;
}

#[tokio::test(start_paused = true)]
async fn transport_errors_count_as_failures() {
    let mut h = harness(consecutive(2));
    for _ in 0..2 {
        let call = h.start().await;
        h.received().unwrap().send_error("connection refused");
        let err = call.await.unwrap_err();
        assert!(err.to_string().contains("connection refused"), "{err}");
    }
    assert_eq!(h.state(), "open");
}

#[tokio::test(start_paused = true)]
async fn caller_errors_count_as_successes() {
    let mut h = harness(BreakerConfig {
        failure_rate: Some(0.5),
        ..consecutive(2)
    });
    for code in [
        Code::InvalidArgument,
        Code::NotFound,
        Code::FailedPrecondition,
    ] {
        for _ in 0..5 {
            let _ = h.assert_passes(status(code)).await;
        }
    }
    assert_eq!(h.state(), "closed");
    assert_eq!(h.snapshot("failures_in_window"), 0);
    // And they break a run of failures.
    let _ = h.assert_passes(unavailable()).await;
    let _ = h.assert_passes(status(Code::InvalidArgument)).await;
    let _ = h.assert_passes(unavailable()).await;
    assert_eq!(h.state(), "closed");
}

#[tokio::test(start_paused = true)]
async fn rates_do_not_trip_below_min_calls() {
    let mut h = harness(BreakerConfig {
        failure_rate: Some(0.5),
        min_calls: 10,
        ..config()
    });
    for _ in 0..9 {
        let _ = h.assert_passes(unavailable()).await;
    }
    assert_eq!(
        h.state(),
        "closed",
        "9 failures out of 9, but fewer than min_calls"
    );
    let _ = h.assert_passes(unavailable()).await;
    assert_eq!(h.state(), "open");
}

#[tokio::test(start_paused = true)]
async fn trips_on_failure_rate_across_buckets() {
    // 1 s in 4 buckets of 250 ms; 8 calls needed, half of them failing.
    let mut h = harness(BreakerConfig {
        failure_rate: Some(0.5),
        min_calls: 8,
        window_ms: 1_000,
        buckets: 4,
        ..config()
    });
    for _ in 0..3 {
        let _ = h.assert_passes(unavailable()).await;
        h.assert_passes(ok()).await.unwrap();
    }
    advance(250 * MS).await;
    h.assert_passes(ok()).await.unwrap();
    // 7 calls, 3 failed.
    assert_eq!(h.snapshot("calls_in_window"), 7);
    assert_eq!(h.state(), "closed");
    // 8 calls over two buckets, 4 failed: 0.5 >= 0.5.
    let _ = h.assert_passes(unavailable()).await;
    assert_eq!(h.state(), "open");
    assert_eq!(h.snapshot("failures_in_window"), 4);
}

#[tokio::test(start_paused = true)]
async fn old_buckets_age_out_of_the_window() {
    let mut h = harness(BreakerConfig {
        failure_rate: Some(0.5),
        min_calls: 8,
        window_ms: 1_000,
        buckets: 4,
        ..config()
    });
    for _ in 0..6 {
        let _ = h.assert_passes(unavailable()).await;
    }
    assert_eq!(h.snapshot("failures_in_window"), 6);
    // One window later those six are gone...
    advance(1_000 * MS).await;
    assert_eq!(h.snapshot("calls_in_window"), 0);
    // ...so 2 failures in 8 calls (25 %) do not trip it; with the old six it would be 8/14.
    for _ in 0..2 {
        let _ = h.assert_passes(unavailable()).await;
    }
    for _ in 0..6 {
        h.assert_passes(ok()).await.unwrap();
    }
    assert_eq!(h.snapshot("calls_in_window"), 8);
    assert_eq!(h.state(), "closed");
}

#[tokio::test(start_paused = true)]
async fn trips_on_slow_call_rate() {
    let mut h = harness(BreakerConfig {
        slow_call_rate: Some(0.5),
        slow_call_ms: 100,
        min_calls: 4,
        window_ms: 10_000,
        buckets: 10,
        ..config()
    });
    // Fast OK calls and a call of exactly slow_call_ms are not slow.
    h.call_taking(ok(), 100 * MS).await.unwrap();
    h.call_taking(ok(), 10 * MS).await.unwrap();
    assert_eq!(h.snapshot("slow_in_window"), 0);
    // Slow calls across two buckets: successes, but slow.
    h.call_taking(ok(), 150 * MS).await.unwrap();
    advance(1_000 * MS).await;
    assert_eq!(h.state(), "closed", "1 slow call out of 3");
    h.call_taking(ok(), 150 * MS).await.unwrap();
    assert_eq!(h.state(), "open", "2 slow calls out of 4");
    assert_eq!(h.snapshot("slow_in_window"), 2);
    assert_eq!(h.snapshot("failures_in_window"), 0);
}

#[tokio::test(start_paused = true)]
async fn open_refuses_without_calling_the_inner_service() {
    let mut h = harness(consecutive(1));
    h.trip().await;
    for _ in 0..5 {
        h.assert_refused().await;
    }
    let err = h.call(ok()).await.unwrap_err();
    assert!(err.is::<CircuitOpen>());
    assert_eq!(
        lab_resilience::status::to_status(err.as_ref()).code(),
        Code::Unavailable
    );
    // Refused without waiting for the inner service to be ready.
    h.handle.allow(0);
    let mut svc = h.svc.clone();
    let err = svc
        .ready()
        .now_or_never()
        .expect("a refusal does not wait for the inner service")
        .unwrap()
        .call(http::Request::new(()))
        .await
        .unwrap_err();
    assert!(err.is::<CircuitOpen>());
}

#[tokio::test(start_paused = true)]
async fn half_open_after_open_ms_then_probes_close_it() {
    let mut h = harness(BreakerConfig {
        half_open_probes: 2,
        ..consecutive(2)
    });
    for _ in 0..2 {
        let _ = h.assert_passes(unavailable()).await;
    }
    assert_eq!(h.state(), "open");
    advance(999 * MS).await;
    h.assert_refused().await;
    assert_eq!(h.state(), "open");
    advance(MS).await;
    assert_eq!(h.state(), "half_open");

    // Two probe permits; a third call is refused while both are out.
    let first = h.start().await;
    let first_send = h.received().expect("first probe sent");
    let second = h.start().await;
    let second_send = h.received().expect("second probe sent");
    assert_eq!(h.snapshot("probes_in_flight"), 2);
    h.assert_refused().await;

    first_send.send_response(ok());
    first.await.unwrap();
    assert_eq!(h.state(), "half_open", "one probe of two succeeded");
    second_send.send_response(status(Code::NotFound));
    second.await.unwrap();
    assert_eq!(h.state(), "closed", "a caller error is a success");

    // Closing starts afresh: the failure before the trip does not count.
    assert_eq!(h.snapshot("calls_in_window"), 0);
    assert_eq!(h.snapshot("consecutive_failures"), 0);
    let _ = h.assert_passes(unavailable()).await;
    assert_eq!(h.state(), "closed");
    let _ = h.assert_passes(unavailable()).await;
    assert_eq!(h.state(), "open");
}

#[tokio::test(start_paused = true)]
async fn failed_probes_reopen_with_backoff_capped_and_reset_on_close() {
    let mut h = harness(BreakerConfig {
        open_ms: 100,
        open_backoff: Some(OpenBackoff {
            multiplier: 2.0,
            max_ms: 300,
        }),
        ..consecutive(1)
    });
    h.trip().await;
    assert_eq!(h.snapshot("open_ms"), 100);

    // Each failed probe opens it for longer: 200, then 300 (400 capped), then 300 again.
    let mut open_for = 100;
    for expected in [200, 300, 300] {
        advance(open_for * MS).await;
        assert_eq!(h.state(), "half_open");
        let _ = h.assert_passes(unavailable()).await;
        assert_eq!(h.state(), "open");
        assert_eq!(h.snapshot("open_ms"), expected);
        advance((expected - 1) * MS).await;
        h.assert_refused().await;
        advance(MS).await;
        open_for = 0;
    }
    assert_eq!(h.state(), "half_open");
    assert_eq!(h.snapshot("reopen_count"), 3);

    // A successful probe closes it, and the next trip opens it for open_ms again.
    h.assert_passes(ok()).await.unwrap();
    assert_eq!(h.state(), "closed");
    h.trip().await;
    assert_eq!(h.snapshot("open_ms"), 100);
    advance(100 * MS).await;
    assert_eq!(h.state(), "half_open");
}

#[tokio::test(start_paused = true)]
async fn resource_exhausted_fails_a_probe() {
    let mut h = harness(consecutive(1));
    h.trip().await;
    advance(1_000 * MS).await;
    let res = h
        .assert_passes(status(Code::ResourceExhausted))
        .await
        .unwrap();
    assert_eq!(
        lab_resilience::classify::response_code(&res),
        Code::ResourceExhausted
    );
    assert_eq!(h.state(), "open");
}

#[tokio::test(start_paused = true)]
async fn a_slow_probe_fails_when_slowness_trips_the_breaker() {
    let slow_trips = BreakerConfig {
        slow_call_rate: Some(1.0),
        slow_call_ms: 100,
        ..consecutive(1)
    };
    let mut h = harness(slow_trips);
    h.trip().await;
    advance(1_000 * MS).await;
    h.call_taking(ok(), 150 * MS).await.unwrap();
    assert_eq!(h.state(), "open", "slow calls are what trips this breaker");

    // Without slow_call_rate, a slow OK probe is a success.
    let mut h = harness(BreakerConfig {
        slow_call_ms: 100,
        ..consecutive(1)
    });
    h.trip().await;
    advance(1_000 * MS).await;
    h.call_taking(ok(), 150 * MS).await.unwrap();
    assert_eq!(h.state(), "closed");
}

#[tokio::test(start_paused = true)]
async fn invalid_argument_does_not_count() {
    let mut h = harness(consecutive(1));
    for _ in 0..10 {
        let _ = h.assert_passes(status(Code::InvalidArgument)).await;
    }
    assert_eq!(h.state(), "closed");
    h.trip().await;
    advance(1_000 * MS).await;
    let _ = h.assert_passes(status(Code::InvalidArgument)).await;
    assert_eq!(
        h.state(),
        "closed",
        "a probe answered INVALID_ARGUMENT succeeded"
    );
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_probe_expires_and_reopens() {
    let mut h = harness(consecutive(1));
    h.trip().await;
    advance(1_000 * MS).await;
    let hung = h.start().await;
    let hung_send = h.received().expect("probe sent");
    h.assert_refused().await;
    advance(499 * MS).await;
    assert_eq!(h.state(), "half_open");
    advance(MS).await;
    // The permit expired: a failure, not a breaker stuck in HALF_OPEN.
    assert_eq!(h.state(), "open");
    h.assert_refused().await;
    assert_eq!(h.snapshot("reopens"), 1);
    // Opened when the permit expired, for open_ms.
    advance(1_000 * MS).await;
    assert_eq!(h.state(), "half_open");
    h.assert_passes(ok()).await.unwrap();
    assert_eq!(h.state(), "closed");

    // The hung probe's late failure belongs to a HALF_OPEN that is over: ignored.
    hung_send.send_response(unavailable());
    let _ = hung.await;
    assert_eq!(h.state(), "closed");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_probe_gives_its_permit_back() {
    let mut h = harness(consecutive(1));
    h.trip().await;
    advance(1_000 * MS).await;

    // The caller gives up on the probe (its response future is dropped).
    let probe = h.start().await;
    let _send = h.received().expect("probe sent");
    h.assert_refused().await;
    drop(probe);
    assert_eq!(h.snapshot("probes_in_flight"), 0);
    assert_eq!(h.state(), "half_open", "a cancelled probe is not a failure");

    // A service polled ready (holding a permit) but dropped before its call gives it back too.
    let mut clone = h.svc.clone();
    clone.ready().await.unwrap();
    assert_eq!(h.snapshot("probes_in_flight"), 1);
    drop(clone);
    assert_eq!(h.snapshot("probes_in_flight"), 0);

    // So the next call probes, and closes the breaker.
    h.assert_passes(ok()).await.unwrap();
    assert_eq!(h.state(), "closed");
}

#[tokio::test(start_paused = true)]
async fn calls_admitted_before_a_transition_do_not_count_after_it() {
    let mut h = harness(consecutive(2));
    // Two calls sent while CLOSED, still in flight when the breaker trips.
    let old = h.start().await;
    let old_send = h.received().unwrap();
    let older = h.start().await;
    let older_send = h.received().unwrap();
    for _ in 0..2 {
        let _ = h.assert_passes(unavailable()).await;
    }
    assert_eq!(h.state(), "open");
    advance(1_000 * MS).await;
    let probe = h.start().await;
    let probe_send = h.received().expect("probe sent");
    // One old call fails now: it is not a probe and must not reopen the breaker.
    old_send.send_response(unavailable());
    let _ = old.await;
    assert_eq!(h.state(), "half_open");
    probe_send.send_response(ok());
    probe.await.unwrap();
    assert_eq!(h.state(), "closed");
    // The other fails after the close: it belongs to the CLOSED state before the trip, so it
    // does not count towards the new one's consecutive failures.
    older_send.send_response(unavailable());
    let _ = older.await;
    assert_eq!(h.snapshot("consecutive_failures"), 0);
    let _ = h.assert_passes(unavailable()).await;
    assert_eq!(h.state(), "closed", "one failure since the close, not two");
}

#[tokio::test(start_paused = true)]
async fn metrics_and_snapshot_follow_transitions() {
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = BreakerMetrics::register(&mut registry);
    let mut h = harness_with(consecutive(1), &metrics);
    let text = || {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    };
    let value = |text: &str, series: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(series).map(|v| v.trim().to_owned()))
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    const TRIP: &str =
        r#"resilience_breaker_transitions_total{hop="payments",from="closed",to="open"}"#;
    const PROBE: &str =
        r#"resilience_breaker_transitions_total{hop="payments",from="open",to="half_open"}"#;
    const CLOSE: &str =
        r#"resilience_breaker_transitions_total{hop="payments",from="half_open",to="closed"}"#;
    const REOPEN: &str =
        r#"resilience_breaker_transitions_total{hop="payments",from="half_open",to="open"}"#;
    const STATE: &str = r#"resilience_breaker_state{hop="payments"}"#;
    const REJECTED: &str = r#"resilience_breaker_rejections_total{hop="payments"}"#;

    let t = text();
    assert_eq!(value(&t, TRIP), "0");
    assert_eq!(value(&t, STATE), "0");
    assert_eq!(h.snapshot("state"), "closed");

    h.trip().await;
    h.assert_refused().await;
    h.assert_refused().await;
    let t = text();
    assert_eq!(value(&t, TRIP), "1");
    assert_eq!(value(&t, STATE), "1");
    assert_eq!(value(&t, REJECTED), "2");
    let snap = h.breaker.snapshot();
    assert_eq!(snap["hop"], "payments");
    assert_eq!(snap["state"], "open");
    assert_eq!(snap["trips"], 1);
    assert_eq!(snap["open_ms"], 1_000);
    assert_eq!(snap["open_remaining_ms"], 1_000);
    assert_eq!(snap["failures_in_window"], 1);
    assert_eq!(snap["calls_in_window"], 1);

    advance(400 * MS).await;
    assert_eq!(h.snapshot("since_ms"), 400);
    assert_eq!(h.snapshot("open_remaining_ms"), 600);
    advance(600 * MS).await;
    let probe = h.start().await;
    let send = h.received().unwrap();
    let t = text();
    assert_eq!(value(&t, PROBE), "1");
    assert_eq!(value(&t, STATE), "2");
    let snap = h.breaker.snapshot();
    assert_eq!(snap["state"], "half_open");
    assert_eq!(snap["probes_in_flight"], 1);
    assert_eq!(snap["open_remaining_ms"], serde_json::Value::Null);

    send.send_response(unavailable());
    let _ = probe.await;
    assert_eq!(value(&text(), REOPEN), "1");
    advance(1_000 * MS).await;
    h.assert_passes(ok()).await.unwrap();
    let t = text();
    assert_eq!(value(&t, CLOSE), "1");
    assert_eq!(value(&t, PROBE), "2");
    assert_eq!(value(&t, STATE), "0");
    let snap = h.breaker.snapshot();
    assert_eq!(snap["state"], "closed");
    assert_eq!(snap["trips"], 1);
    assert_eq!(snap["reopens"], 1);
    assert_eq!(snap["since_ms"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_calls_are_all_counted() {
    // Never trips (min_calls is out of reach); every outcome lands in the window.
    let breaker = Breaker::new(
        "payments",
        &BreakerConfig {
            failure_rate: Some(0.5),
            min_calls: 1_000_000,
            window_ms: 600_000,
            ..config()
        },
        &BreakerMetrics::default(),
    );
    let inner = tower::service_fn(|req: Req| async move {
        let fail = req.uri().path() == "/fail";
        Ok::<_, BoxError>(if fail { unavailable() } else { ok() })
    });
    let svc = breaker.layer().layer(inner);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                for i in 0..1_000 {
                    let uri = if i % 2 == 0 { "/fail" } else { "/ok" };
                    let req = http::Request::builder().uri(uri).body(()).unwrap();
                    svc.ready().await.unwrap().call(req).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let snap = breaker.snapshot();
    assert_eq!(snap["state"], "closed");
    assert_eq!(snap["calls_in_window"], 8_000);
    assert_eq!(snap["failures_in_window"], 4_000);
}

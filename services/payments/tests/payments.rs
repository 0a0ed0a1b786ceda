//! Payments through a real server on 127.0.0.1:0: ledger, idempotency (in the store and, when
//! the store forgot, in the ledger), voids, bad input, and the capacity model (slots,
//! bounded queue, deadline while queued).

use std::time::{Duration, Instant};

use clap::Parser;
use lab_proto::lab::v1::SnapshotRequest;
use lab_proto::lab::v1::audit_client::AuditClient;
use lab_proto::shop::v1::payments_client::PaymentsClient;
use lab_proto::shop::v1::{ChargeRequest, ChargeResponse, GetChargeRequest, Money, RefundRequest};
use lab_runtime::testing::TestApp;
use tonic::Code;

async fn spawn(dir: &tempfile::TempDir, extra: &[&str]) -> TestApp {
    let mut args = vec!["payments", "--data-dir", dir.path().to_str().unwrap()];
    args.extend_from_slice(extra);
    TestApp::spawn(payments::Config::parse_from(args), payments::run).await
}

fn charge(order: &str, key: &str, minor: i64) -> ChargeRequest {
    ChargeRequest {
        order_id: order.into(),
        amount: Some(Money {
            currency: "USD".into(),
            minor_units: minor,
        }),
        idempotency_key: key.into(),
    }
}

#[tokio::test]
async fn charges_replay_refund_and_audit() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(
        &dir,
        &["--service-time-p50-ms", "1", "--service-time-p95-ms", "2"],
    )
    .await;
    let mut client = PaymentsClient::new(app.channel());
    let first = client
        .charge(charge("o1", "k1", 1234))
        .await
        .unwrap()
        .into_inner();
    assert!(!first.replayed);
    let again = client
        .charge(charge("o1", "k1", 1234))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed, "the same key must replay");
    assert_eq!(again.charge_id, first.charge_id);
    let record = client
        .get_charge(GetChargeRequest {
            charge_id: first.charge_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(record.order_id, "o1");
    assert_eq!(record.amount.unwrap().minor_units, 1234);
    assert!(
        client
            .refund(RefundRequest {
                charge_id: first.charge_id.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .refunded
    );
    assert!(
        !client
            .refund(RefundRequest {
                charge_id: first.charge_id,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .refunded
    );
    let unknown = client
        .refund(RefundRequest {
            charge_id: "nope".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    let audit = AuditClient::new(app.channel())
        .snapshot(SnapshotRequest { include_ids: true })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.counters["charges_total"], 1);
    assert_eq!(audit.counters["orders_charged_more_than_once"], 0);
    let (code, metrics) = app.http_get("/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("payments_charges_total{service=\"payments\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "rpc_server_requests_total{service=\"payments\",method=\"/shop.v1.Payments/Charge\"} 2"
        ),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn without_idempotency_the_same_key_charges_twice() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(
        &dir,
        &[
            "--profile",
            "a-baseline",
            "--service-time-p50-ms",
            "1",
            "--service-time-p95-ms",
            "2",
        ],
    )
    .await;
    let mut client = PaymentsClient::new(app.channel());
    let a = client
        .charge(charge("o1", "k1", 100))
        .await
        .unwrap()
        .into_inner();
    let b = client
        .charge(charge("o1", "k1", 100))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(a.charge_id, b.charge_id);
    let audit = AuditClient::new(app.channel())
        .snapshot(SnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(audit.counters["orders_charged_more_than_once"], 1);
    assert_eq!(audit.counters["duplicate_charges"], 1);
    // Per key (the logical request) too: the audit sees the double charge of "k1".
    assert_eq!(audit.counters["keys_charged_more_than_once"], 1);
    assert_eq!(audit.counters["duplicate_key_charges"], 1);
    assert_eq!(audit.counters["keys_with_unrefunded_duplicates"], 1);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn bad_charges_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&dir, &[]).await;
    let mut client = PaymentsClient::new(app.channel());
    let cases = [
        (charge("o1", "k", -5), "amount.minor_units"),
        (charge("o1", "", 5), "idempotency_key"),
        (charge("", "k", 5), "order_id"),
        (
            ChargeRequest {
                amount: None,
                ..charge("o1", "k", 5)
            },
            "amount",
        ),
        (
            ChargeRequest {
                amount: Some(Money {
                    currency: "dollars".into(),
                    minor_units: 5,
                }),
                ..charge("o1", "k", 5)
            },
            "amount.currency",
        ),
    ];
    for (req, field) in cases {
        let err = client.charge(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert!(
            err.message().starts_with(&format!("{field}: ")),
            "{field}: {}",
            err.message()
        );
    }
    app.stop().await.unwrap();
}

/// Offered more than slots + queue at once, payments refuses the excess with
/// RESOURCE_EXHAUSTED, and the admitted charges' latency grows with their place in the queue.
#[tokio::test]
async fn capacity_refuses_the_excess_and_queueing_adds_latency() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(
        &dir,
        &[
            "--slots",
            "2",
            "--queue",
            "3",
            "--queue-timeout-ms",
            "5000",
            "--service-time-p50-ms",
            "200",
            "--service-time-p95-ms",
            "200",
        ],
    )
    .await;
    let client = PaymentsClient::new(app.channel());
    // Warm the connection so all ten calls arrive together.
    let _ = client
        .clone()
        .get_charge(GetChargeRequest {
            charge_id: "warm".into(),
        })
        .await;
    let calls = (0..10).map(|i| {
        let mut client = client.clone();
        async move {
            let started = Instant::now();
            let res = client
                .charge(charge(&format!("o{i}"), &format!("k{i}"), 100))
                .await;
            (res.map(|_| ()).map_err(|s| s.code()), started.elapsed())
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut ok: Vec<Duration> = results
        .iter()
        .filter(|(r, _)| r.is_ok())
        .map(|(_, d)| *d)
        .collect();
    let refused = results
        .iter()
        .filter(|(r, _)| *r == Err(Code::ResourceExhausted))
        .count();
    assert_eq!(ok.len(), 5, "2 slots + 3 queued are served: {results:?}");
    assert_eq!(
        refused, 5,
        "the rest is refused with RESOURCE_EXHAUSTED: {results:?}"
    );
    ok.sort();
    // Served in three waves of at most two: ~200 ms, ~400 ms, ~600 ms.
    assert!(
        ok[0] >= Duration::from_millis(190) && ok[0] < Duration::from_millis(350),
        "{ok:?}"
    );
    assert!(
        ok[4] >= Duration::from_millis(550),
        "the last queued charge waited two service times: {ok:?}"
    );
    let state = app.state().await;
    assert_eq!(state["capacity"]["slots"], 2);
    app.stop().await.unwrap();
}

/// With the profile's server deadline enforcement (f-full), a charge whose deadline passes
/// while it waits in the queue is refused without work; a charge that was already running
/// completes (counted as wasted when late).
#[tokio::test]
async fn deadline_passing_in_the_queue_does_no_work() {
    let (charges, metrics) = late_charge_behind_a_slow_one("f-full").await;
    assert_eq!(charges, 1, "the late charge did no work");
    assert!(
        metrics
            .contains("payments_rejected_total{service=\"payments\",reason=\"deadline_passed\"} 1"),
        "{metrics}"
    );
}

/// Without enforcement (b-naive-retries), the queued charge keeps its place after its caller
/// has gone, takes the slot when it frees, and is counted as work done after the deadline.
#[tokio::test]
async fn without_deadline_enforcement_a_queued_charge_is_wasted_work() {
    let (charges, metrics) = late_charge_behind_a_slow_one("b-naive-retries").await;
    assert_eq!(charges, 2, "the late charge ran after its caller left");
    assert!(
        metrics.contains("payments_charges_after_deadline_total{service=\"payments\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("reason=\"deadline_passed\""), "{metrics}");
}

/// One 300 ms charge holds the only slot; a second with a 100 ms deadline queues behind
/// it. Returns the ledger's charge count and /metrics once both are done.
async fn late_charge_behind_a_slow_one(profile: &str) -> (i64, String) {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(
        &dir,
        &[
            "--profile",
            profile,
            "--slots",
            "1",
            "--queue",
            "5",
            "--queue-timeout-ms",
            "5000",
            "--service-time-p50-ms",
            "300",
            "--service-time-p95-ms",
            "300",
        ],
    )
    .await;
    let client = PaymentsClient::new(app.channel());
    let running = tokio::spawn({
        let mut client = client.clone();
        async move { client.charge(charge("o1", "k1", 100)).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut late = tonic::Request::new(charge("o2", "k2", 100));
    late.set_timeout(Duration::from_millis(100));
    let err = client.clone().charge(late).await.unwrap_err();
    assert!(
        matches!(err.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{err:?}"
    );
    running.await.unwrap().unwrap();
    // Give the detached task of the late charge time to finish (or notice its deadline).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let audit = AuditClient::new(app.channel())
        .snapshot(SnapshotRequest::default())
        .await
        .unwrap()
        .into_inner();
    let (_, metrics) = app.http_get("/metrics").await;
    app.stop().await.unwrap();
    (audit.counters["charges_total"], metrics)
}

#[tokio::test]
async fn inconsistent_service_times_are_refused_naming_the_flags() {
    let config = payments::Config::parse_from([
        "payments",
        "--service-time-p50-ms",
        "50",
        "--service-time-p95-ms",
        "10",
    ]);
    let err = config.capacity().unwrap_err().to_string();
    assert!(
        err.contains("--service-time-p95-ms") && err.contains("--service-time-p50-ms"),
        "{err}"
    );
    assert!(payments::Config::try_parse_from(["payments", "--slots", "0"]).is_err());
}

const FAST: [&str; 4] = ["--service-time-p50-ms", "1", "--service-time-p95-ms", "2"];

async fn audit(app: &TestApp) -> std::collections::HashMap<String, i64> {
    AuditClient::new(app.channel())
        .snapshot(SnapshotRequest::default())
        .await
        .unwrap()
        .into_inner()
        .counters
}

fn void(order: &str) -> RefundRequest {
    RefundRequest {
        order_id: order.into(),
        ..Default::default()
    }
}

/// Voiding an order refunds its charges and refuses every later charge of it, including one
/// for an order voided before any charge arrived (a charge still in flight when orders gave
/// the order up).
#[tokio::test]
async fn a_voided_order_is_refunded_and_refuses_later_charges() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&dir, &FAST).await;
    let mut client = PaymentsClient::new(app.channel());
    client.charge(charge("o1", "k1", 100)).await.unwrap();
    let voided = client.refund(void("o1")).await.unwrap().into_inner();
    assert!(voided.refunded);
    assert_eq!(voided.charges_refunded, 1);
    let again = client.refund(void("o1")).await.unwrap().into_inner();
    assert_eq!((again.refunded, again.charges_refunded), (false, 0));
    let late = client.charge(charge("o1", "k2", 100)).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");
    assert!(late.message().contains("voided"), "{}", late.message());

    // Voided before any charge: the charge that arrives later is refused too.
    let nothing = client.refund(void("o2")).await.unwrap().into_inner();
    assert_eq!(nothing.charges_refunded, 0);
    let late = client.charge(charge("o2", "k3", 100)).await.unwrap_err();
    assert_eq!(late.code(), Code::FailedPrecondition, "{late:?}");

    for bad in [
        RefundRequest::default(),
        RefundRequest {
            charge_id: "c".into(),
            order_id: "o".into(),
        },
    ] {
        let err = client.refund(bad).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("exactly one"), "{}", err.message());
    }
    let counters = audit(&app).await;
    assert_eq!(counters["charges_total"], 1, "{counters:?}");
    assert_eq!(counters["unrefunded_charges"], 0, "{counters:?}");
    assert_eq!(counters["voided_orders"], 2, "{counters:?}");
    let (_, metrics) = app.http_get("/metrics").await;
    assert!(
        metrics.contains("payments_rejected_total{service=\"payments\",reason=\"voided\"} 2"),
        "{metrics}"
    );
    app.stop().await.unwrap();
}

/// A key is charged at most once: a restart empties the in-memory idempotency store, and
/// the ledger's unique key still answers the retry with the first charge. Another order or
/// amount under the same key is refused, naming what differs.
#[tokio::test]
async fn a_key_is_charged_once_even_after_the_store_forgot_it() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&dir, &FAST).await;
    let first = PaymentsClient::new(app.channel())
        .charge(charge("o1", "k1", 100))
        .await
        .unwrap()
        .into_inner();
    app.stop().await.unwrap();

    let app = spawn(&dir, &FAST).await;
    let mut client = PaymentsClient::new(app.channel());
    let again = client
        .charge(charge("o1", "k1", 100))
        .await
        .unwrap()
        .into_inner();
    assert!(again.replayed, "answered from the ledger");
    assert_eq!(again.charge_id, first.charge_id);
    // And from the store now.
    assert!(
        client
            .charge(charge("o1", "k1", 100))
            .await
            .unwrap()
            .into_inner()
            .replayed
    );

    let other = client.charge(charge("o2", "k1", 100)).await.unwrap_err();
    assert_eq!(other.code(), Code::FailedPrecondition, "{other:?}");
    assert_eq!(
        other.message(),
        "idempotency_key: \"k1\" was first used with order_id \"o1\" (this request: \"o2\")"
    );
    let dearer = client.charge(charge("o1", "k1", 999)).await.unwrap_err();
    assert_eq!(dearer.code(), Code::FailedPrecondition, "{dearer:?}");
    assert!(
        dearer
            .message()
            .contains("amount \"100 USD\" (this request: \"999 USD\")"),
        "{}",
        dearer.message()
    );
    let counters = audit(&app).await;
    assert_eq!(counters["charges_total"], 1, "{counters:?}");
    assert_eq!(counters["keys_charged_more_than_once"], 0, "{counters:?}");

    // Once refunded, the key's charge is neither replayed as standing nor made again:
    // from the store, and from the ledger after the store forgot.
    client
        .refund(RefundRequest {
            charge_id: first.charge_id.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let refused = |err: tonic::Status| {
        assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
        assert!(err.message().contains("was refunded"), "{}", err.message());
    };
    refused(client.charge(charge("o1", "k1", 100)).await.unwrap_err());
    app.stop().await.unwrap();
    let app = spawn(&dir, &FAST).await;
    let mut client = PaymentsClient::new(app.channel());
    refused(client.charge(charge("o1", "k1", 100)).await.unwrap_err());
    assert_eq!(audit(&app).await["charges_total"], 1);
    app.stop().await.unwrap();
}

/// Retries of a key while its charge is being processed wait for it and get its answer:
/// one charge, one slot's worth of work.
#[tokio::test]
async fn concurrent_charges_of_one_key_wait_for_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(
        &dir,
        &[
            "--service-time-p50-ms",
            "200",
            "--service-time-p95-ms",
            "200",
        ],
    )
    .await;
    let client = PaymentsClient::new(app.channel());
    let calls = (0..10).map(|_| {
        let mut client = client.clone();
        async move {
            client
                .charge(charge("o1", "k1", 100))
                .await
                .map(|r| r.into_inner())
        }
    });
    let answers: Vec<ChargeResponse> = futures::future::join_all(calls)
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(answers.iter().all(|a| a.charge_id == answers[0].charge_id));
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1);
    assert_eq!(audit(&app).await["charges_total"], 1);
    app.stop().await.unwrap();
}

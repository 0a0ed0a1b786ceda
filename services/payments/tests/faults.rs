//! Faults through payments' admin port, seen from a client: a brownout lowers throughput,
//! injected latency holds the capacity slot, an outage refuses every charge, and the admin
//! port refuses calls without the right token.

use std::time::{Duration, Instant};

use clap::Parser;
use lab_proto::lab::v1::faults_client::FaultsClient;
use lab_proto::lab::v1::{ApplyFaultRequest, ClearFaultRequest, Fault};
use lab_proto::shop::v1::payments_client::PaymentsClient;
use lab_proto::shop::v1::{ChargeRequest, Money};
use lab_runtime::testing::TestApp;
use tonic::Code;

async fn spawn(dir: &tempfile::TempDir, extra: &[&str]) -> TestApp {
    let mut args = vec![
        "payments",
        "--data-dir",
        dir.path().to_str().unwrap(),
        "--profile",
        "a-baseline",
    ];
    args.extend_from_slice(extra);
    TestApp::spawn(payments::Config::parse_from(args), payments::run).await
}

fn fault(yaml: &str) -> Fault {
    let docs = lab_chaos::spec::parse_documents(yaml).expect("valid FaultInjection");
    let doc = &docs[0];
    doc.spec.validate().expect("valid spec");
    doc.spec.to_fault(&doc.metadata.name, None)
}

fn charge(i: usize) -> ChargeRequest {
    ChargeRequest {
        order_id: format!("o{i}"),
        amount: Some(Money {
            currency: "USD".into(),
            minor_units: 100,
        }),
        idempotency_key: format!("k{i}-{}", uuid::Uuid::new_v4()),
    }
}

/// Time for `n` concurrent charges to complete (all must succeed).
async fn burst(app: &TestApp, n: usize) -> Duration {
    let client = PaymentsClient::new(app.channel());
    let started = Instant::now();
    let calls = (0..n).map(|i| {
        let mut client = client.clone();
        async move { client.charge(charge(i)).await }
    });
    for r in futures::future::join_all(calls).await {
        r.expect("charge");
    }
    started.elapsed()
}

const FIXED_100MS: [&str; 10] = [
    "--slots",
    "10",
    "--queue",
    "100",
    "--queue-timeout-ms",
    "5000",
    "--service-time-p50-ms",
    "100",
    "--service-time-p95-ms",
    "100",
];

#[tokio::test]
async fn brownout_lowers_throughput_until_it_expires() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = FIXED_100MS.to_vec();
    args.push("--insecure-admin");
    let app = spawn(&dir, &args).await;
    burst(&app, 10).await; // warm the connection and the database
    let normal = burst(&app, 10).await;
    let mut admin = FaultsClient::new(app.admin_channel());
    admin
        .apply(ApplyFaultRequest {
            fault: Some(fault(
                "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: brown}\nspec:\n  selector: {service: payments}\n  action: brownout\n  brownout: {capacityFactor: 0.1}\n  duration: 3s\n",
            )),
        })
        .await
        .unwrap();
    let browned = burst(&app, 10).await;
    // 10 charges of 100 ms: one wave normally; with 10 % of the slots left, ten waves.
    assert!(
        browned >= Duration::from_millis(900) && browned >= normal * 3,
        "brownout: {browned:?} for 10 charges vs {normal:?} normally"
    );
    admin
        .clear(ClearFaultRequest {
            name: "brown".into(),
        })
        .await
        .unwrap();
    let after = burst(&app, 10).await;
    assert!(
        after < browned / 2,
        "capacity is back after the fault: {after:?}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn latency_holds_the_slot_and_outage_refuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(
        &dir,
        &[
            "--slots",
            "1",
            "--queue",
            "10",
            "--service-time-p50-ms",
            "0",
            "--service-time-p95-ms",
            "0",
            "--insecure-admin",
        ],
    )
    .await;
    let mut admin = FaultsClient::new(app.admin_channel());
    admin
        .apply(ApplyFaultRequest {
            fault: Some(fault(
                "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: slow}\nspec:\n  selector: {service: payments}\n  action: latency\n  latency: {distribution: fixed, fixedMs: 100}\n  duration: 10s\n",
            )),
        })
        .await
        .unwrap();
    // One slot: the second charge waits for the first one's injected 100 ms.
    let took = burst(&app, 2).await;
    assert!(
        took >= Duration::from_millis(190),
        "the latency held the slot: {took:?}"
    );
    admin
        .apply(ApplyFaultRequest {
            fault: Some(fault(
                "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: down}\nspec:\n  selector: {service: payments}\n  action: outage\n  duration: 10s\n",
            )),
        })
        .await
        .unwrap();
    let mut client = PaymentsClient::new(app.channel());
    for i in 0..5 {
        let err = client.charge(charge(i)).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    }
    let state = app.state().await;
    assert!(state["faults"].to_string().contains("down"), "{state}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn the_admin_port_wants_the_configured_token() {
    let dir = tempfile::tempdir().unwrap();
    // From a file, not argv (where any user of the machine could read it).
    let token_file = dir.path().join("admin-token");
    std::fs::write(&token_file, "s3cret\n").unwrap();
    let app = spawn(&dir, &["--admin-token-file", token_file.to_str().unwrap()]).await;
    let request = || ApplyFaultRequest {
        fault: Some(fault(
            "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: down}\nspec:\n  selector: {service: payments}\n  action: outage\n  duration: 10s\n",
        )),
    };
    let mut admin = FaultsClient::new(app.admin_channel());
    let err = admin.apply(request()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "missing token: {err:?}");
    let mut wrong = tonic::Request::new(request());
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer nope".parse().unwrap());
    assert_eq!(
        admin.apply(wrong).await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let mut right = tonic::Request::new(request());
    right
        .metadata_mut()
        .insert("authorization", "Bearer s3cret".parse().unwrap());
    admin
        .apply(right)
        .await
        .expect("the right token is accepted");
    app.stop().await.unwrap();

    // No token and no --insecure-admin: every call is refused.
    let dir = tempfile::tempdir().unwrap();
    let app = spawn(&dir, &[]).await;
    let err = FaultsClient::new(app.admin_channel())
        .apply(request())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated);
    app.stop().await.unwrap();
}

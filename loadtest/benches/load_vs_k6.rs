//! `frlab load` against k6's constant-arrival-rate executor, side by side in one run, on the
//! same gateway endpoint of one local stack (release builds).
//!
//! `cargo bench -p frlab --bench load_vs_k6` (or `make bench`; needs `make tools` for k6 and
//! `cargo build --release --workspace --bins` for the services).
//!
//! Both tools call `grpc.health.v1.Health/Check` on the gateway (loadtest/k6/health-check.js
//! and `frlab load --call health`): the server answers it in microseconds, so what caps the
//! rate is the generator, not the five-service chain (which a PlaceOrder run would measure
//! instead, and which saturates first on this machine). Steps:
//! 1. k6 is asked for far more than it can deliver (K6_ASKED/s for RUN); what it reaches is
//!    the iterations it completed per second, and what it skipped is `dropped_iterations`.
//! 2. `frlab load` is asked for GOAL x that rate for RUN, open loop: it sustains it when it
//!    issued every request on time (lag p99 under 10 ms, nothing dropped at the in-flight
//!    cap) and nearly all (>= 99 %) were answered OK.
//! 3. `frlab load` is asked for higher multiples until it no longer sustains the rate, to
//!    show its own ceiling on this machine (bounded: at most CEILING_STEPS runs).
//!
//! Printed: one row per run (asked, reached, OK, dropped, lag p99, generator CPU) and the
//! ratio of frlab's highest sustained rate to k6's reached rate.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use frlab::load::{Call, LoadConfig, LoadReport, SATURATED_LAG_P99_MS, Schedule};
use frlab::stack::{LocalStack, StackOptions};

const RUN: Duration = Duration::from_secs(10);
const K6_ASKED: u32 = 20_000;
const K6_VUS: u32 = 200;
const K6_MAX_VUS: u32 = 1_000;
const GOAL: f64 = 5.0;
const CEILING_STEPS: [f64; 3] = [8.0, 12.0, 16.0];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn k6() -> PathBuf {
    let local = root().join(".tools/bin/k6");
    if local.exists() {
        local
    } else {
        PathBuf::from("k6")
    }
}

struct K6Result {
    reached: f64,
    dropped: f64,
    ok_share: f64,
}

fn run_k6(target: &str, dir: &Path) -> K6Result {
    let summary = dir.join("k6-summary.json");
    let out = Command::new(k6())
        .args(["run", "--quiet", "--no-usage-report", "--summary-export"])
        .arg(&summary)
        .args(["-e", &format!("TARGET={target}")])
        .args(["-e", &format!("RATE={K6_ASKED}")])
        .args(["-e", &format!("DURATION={}s", RUN.as_secs())])
        .args(["-e", &format!("VUS={K6_VUS}")])
        .args(["-e", &format!("MAX_VUS={K6_MAX_VUS}")])
        // Asked for more than it can do on purpose: dropped iterations are the point here.
        .args(["-e", "DROPPED=1000000000"])
        .arg(root().join("loadtest/k6/health-check.js"))
        .output()
        .unwrap_or_else(|e| panic!("k6 could not start ({e}): run `make tools`"));
    let summary: serde_json::Value = match std::fs::read(&summary) {
        Ok(bytes) => serde_json::from_slice(&bytes).expect("k6 summary JSON"),
        Err(e) => panic!(
            "k6 wrote no summary ({e}); exit {:?}\n{}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        ),
    };
    let m = |name: &str, field: &str| summary["metrics"][name][field].as_f64().unwrap_or(0.0);
    let passes = m("checks", "passes");
    let fails = m("checks", "fails");
    K6Result {
        reached: m("iterations", "count") / RUN.as_secs_f64(),
        dropped: m("dropped_iterations", "count"),
        ok_share: if passes + fails > 0.0 {
            passes / (passes + fails)
        } else {
            0.0
        },
    }
}

async fn run_frlab(gateway: &str, rate: f64, duration: Duration) -> LoadReport {
    let mut config = LoadConfig::new(gateway, Schedule::Constant { rate }, duration);
    config.call = Call::Health;
    frlab::load::run(config, |_| {})
        .await
        .expect("frlab load runs")
}

fn sustained(r: &LoadReport) -> bool {
    r.dropped == 0 && r.lag_ms.p99 <= SATURATED_LAG_P99_MS && r.success_rate() >= 0.99
}

fn row(tool: &str, asked: f64, reached: f64, ok: f64, dropped: f64, lag_p99: &str, cpu: &str) {
    println!(
        "| {tool:<12} | {asked:>9.0} | {reached:>9.0} | {:>6.2} % | {dropped:>9.0} | {lag_p99:>9} | {cpu:>8} |",
        ok * 100.0
    );
}

fn frlab_row(r: &LoadReport, asked: f64) {
    let sent = (r.issued - r.dropped) as f64 / r.duration_s;
    row(
        "frlab load",
        asked,
        sent,
        r.success_rate(),
        r.dropped as f64,
        &format!("{:.2} ms", r.lag_ms.p99),
        &format!("{:.1} s", r.generator_cpu_s),
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = StackOptions::new(dir.path().join("data"));
        opts.ephemeral_ports = true;
        opts.log_dir = Some(dir.path().join("logs"));
        let stack = LocalStack::start(opts)
            .await
            .expect("stack starts (cargo build --release --workspace --bins first)");
        let gateway = stack.gateway_url();
        let target = gateway.trim_start_matches("http://").to_string();
        // Warm the gateway and the generator's connection.
        run_frlab(&gateway, 200.0, Duration::from_secs(1)).await;

        println!(
            "grpc.health.v1.Health/Check on the gateway, {} s per run, {} cores",
            RUN.as_secs(),
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        println!(
            "| tool         |  asked/s  | reached/s |   OK     |  dropped  |  lag p99  |   CPU    |"
        );
        println!(
            "|--------------|-----------|-----------|----------|-----------|-----------|----------|"
        );
        let k6_dir = dir.path().to_path_buf();
        let k6 = tokio::task::spawn_blocking(move || run_k6(&target, &k6_dir))
            .await
            .unwrap();
        row(
            "k6",
            f64::from(K6_ASKED),
            k6.reached,
            k6.ok_share,
            k6.dropped,
            "n/a",
            "n/a",
        );

        let goal_rate = (k6.reached * GOAL).round().max(1.0);
        let at_goal = run_frlab(&gateway, goal_rate, RUN).await;
        frlab_row(&at_goal, goal_rate);
        let mut best = sustained(&at_goal).then_some(goal_rate);
        if best.is_some() {
            for multiple in CEILING_STEPS {
                let rate = (k6.reached * multiple).round();
                let report = run_frlab(&gateway, rate, RUN).await;
                frlab_row(&report, rate);
                if !sustained(&report) {
                    break;
                }
                best = Some(rate);
            }
        }
        println!();
        println!(
            "k6 reached {:.0}/s (asked {K6_ASKED}/s, {:.0} iterations dropped)",
            k6.reached, k6.dropped
        );
        match best {
            Some(rate) => println!(
                "frlab load sustained {rate:.0}/s = {:.1}x k6 (goal {GOAL}x: met)",
                rate / k6.reached
            ),
            None => println!(
                "frlab load did NOT sustain {goal_rate:.0}/s = {GOAL}x k6 (goal not met): \
                 dropped {}, lag p99 {:.2} ms, OK {:.2} %",
                at_goal.dropped,
                at_goal.lag_ms.p99,
                at_goal.success_rate() * 100.0
            ),
        }
        stack.stop().await.expect("stack stops cleanly");
    });
}

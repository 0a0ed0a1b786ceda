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
//! 3. If it does, higher multiples (ABOVE_GOAL) until it no longer does; if it does not,
//!    lower ones (BELOW_GOAL) until it does: frlab's ceiling on this machine, bounded in runs.
//!
//! On a machine with two or more cores the generators and the services get a core each
//! (this process and k6 on CPU 1, every service process on CPU 0, by sched_setaffinity and
//! `taskset`), so that each generator is measured on one core of its own and neither
//! starves the gateway; with one core nothing is pinned and the printout says so.
//!
//! Printed: one row per run (asked, reached, OK, dropped, lag p99, generator CPU and CPU
//! per request — k6's from the child's rusage), the ratio of frlab's highest sustained rate
//! to k6's reached rate, and the ratio of their CPU per request. On a small machine the
//! generator and the gateway share the cores: the CPU per request is the part that is the
//! generator's alone.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use frlab::load::{Call, LoadConfig, LoadReport, SATURATED_LAG_P99_MS, Schedule};
use frlab::stack::{LocalStack, StackOptions};
use tools::{root, tool};

#[path = "../tests/tools/mod.rs"]
mod tools;

const RUN: Duration = Duration::from_secs(10);
const K6_ASKED: u32 = 20_000;
const K6_VUS: u32 = 200;
const K6_MAX_VUS: u32 = 1_000;
const GOAL: f64 = 5.0;
const ABOVE_GOAL: [f64; 3] = [8.0, 12.0, 16.0];
const BELOW_GOAL: [f64; 5] = [4.0, 3.0, 2.5, 2.0, 1.5];

struct K6Result {
    reached: f64,
    dropped: f64,
    ok_share: f64,
    cpu_s: f64,
    calls: f64,
}

/// Pins this process to `cpu` before any thread or child exists: the runtime's threads and
/// k6 inherit it.
fn pin_self(cpu: usize) -> bool {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET write inside it; sched_setaffinity
    // reads it for the calling thread (pid 0), the only thread at this point.
    #[allow(unsafe_code)]
    unsafe {
        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
        libc::CPU_ZERO(&mut set);
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// Pins every thread of a running process to `cpu` (util-linux `taskset`).
fn pin_process(pid: u32, cpu: usize) -> bool {
    Command::new("taskset")
        .args(["-a", "-p", "-c", &cpu.to_string(), &pid.to_string()])
        .output()
        .is_ok_and(|out| out.status.success())
}

/// CPU (user + system) of every waited-for child process so far.
fn children_cpu_s() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_CHILDREN is a valid selector.
    #[allow(unsafe_code)]
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_CHILDREN, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn run_k6(target: &str, dir: &Path) -> K6Result {
    let summary = dir.join("k6-summary.json");
    let cpu_before = children_cpu_s();
    let out = Command::new(tool("k6"))
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
    let cpu_s = children_cpu_s() - cpu_before;
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
        cpu_s,
        calls: m("iterations", "count"),
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

/// One printed row; `cpu_s` over `calls` gives the CPU per call.
#[allow(clippy::too_many_arguments)]
fn row(
    tool: &str,
    asked: f64,
    reached: f64,
    ok: f64,
    dropped: f64,
    lag_p99: &str,
    cpu_s: f64,
    calls: f64,
) {
    println!(
        "| {tool:<12} | {asked:>9.0} | {reached:>9.0} | {:>6.2} % | {dropped:>9.0} | {lag_p99:>9} | {cpu_s:>6.1} s | {:>11.1} |",
        ok * 100.0,
        per_call_us(cpu_s, calls)
    );
}

fn per_call_us(cpu_s: f64, calls: f64) -> f64 {
    if calls > 0.0 {
        cpu_s * 1e6 / calls
    } else {
        f64::NAN
    }
}

/// Calls frlab load made and saw answered (or time out).
fn frlab_calls(r: &LoadReport) -> f64 {
    (r.succeeded + r.failed) as f64
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
        r.generator_cpu_s,
        frlab_calls(r),
    );
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = cores >= 2 && pin_self(1);
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
        let placement = if pinned {
            let services: Vec<String> =
                stack.endpoints().iter().map(|e| e.service.clone()).collect();
            for service in &services {
                let pid = stack.pid(service).expect("service pid");
                assert!(pin_process(pid, 0), "taskset could not pin {service} to CPU 0");
            }
            "services on CPU 0; frlab load and k6 on CPU 1, one at a time"
        } else {
            "nothing pinned (one core, or sched_setaffinity refused)"
        };
        let gateway = stack.gateway_url();
        let target = gateway.trim_start_matches("http://").to_string();
        // Warm the gateway and the generator's connection.
        run_frlab(&gateway, 200.0, Duration::from_secs(1)).await;

        println!(
            "grpc.health.v1.Health/Check on the gateway, {} s per run, {cores} cores: {placement}",
            RUN.as_secs(),
        );
        println!(
            "| tool         |  asked/s  | reached/s |   OK     |  dropped  |  lag p99  |   CPU    | µs CPU/call |"
        );
        println!(
            "|--------------|-----------|-----------|----------|-----------|-----------|----------|-------------|"
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
            k6.cpu_s,
            k6.calls,
        );

        let goal_rate = (k6.reached * GOAL).round().max(1.0);
        let at_goal = run_frlab(&gateway, goal_rate, RUN).await;
        frlab_row(&at_goal, goal_rate);
        let mut best = sustained(&at_goal).then(|| (goal_rate, at_goal.clone()));
        if best.is_some() {
            for multiple in ABOVE_GOAL {
                let rate = (k6.reached * multiple).round();
                let report = run_frlab(&gateway, rate, RUN).await;
                frlab_row(&report, rate);
                if !sustained(&report) {
                    break;
                }
                best = Some((rate, report));
            }
        } else {
            for multiple in BELOW_GOAL {
                let rate = (k6.reached * multiple).round();
                let report = run_frlab(&gateway, rate, RUN).await;
                frlab_row(&report, rate);
                if sustained(&report) {
                    best = Some((rate, report));
                    break;
                }
            }
        }
        println!();
        println!(
            "k6 reached {:.0}/s (asked {K6_ASKED}/s, {:.0} iterations dropped)",
            k6.reached, k6.dropped
        );
        let k6_per_call = per_call_us(k6.cpu_s, k6.calls);
        match &best {
            Some((rate, report)) => {
                let ratio = rate / k6.reached;
                println!(
                    "frlab load sustained {rate:.0}/s = {ratio:.2}x k6 (goal {GOAL}x: {})",
                    if ratio >= GOAL { "met" } else { "NOT met" }
                );
                let frlab_per_call = per_call_us(report.generator_cpu_s, frlab_calls(report));
                println!(
                    "CPU per call: k6 {k6_per_call:.1} µs, frlab load {frlab_per_call:.1} µs \
                     (k6 / frlab = {:.2})",
                    k6_per_call / frlab_per_call
                );
            }
            None => println!(
                "frlab load sustained none of the rates tried (goal {GOAL}x: NOT met); at \
                 {goal_rate:.0}/s: dropped {}, lag p99 {:.2} ms, OK {:.2} %",
                at_goal.dropped,
                at_goal.lag_ms.p99,
                at_goal.success_rate() * 100.0
            ),
        }
        stack.stop().await.expect("stack stops cleanly");
    });
}

//! End to end against the real service binaries, found like `frlab` finds them
//! (`$FRLAB_BIN_DIR`, else `target/<profile>/`): build them first with
//! `cargo build --workspace` (`cargo test --workspace` does). Every stack runs on
//! ephemeral ports with its data in a temporary directory, so tests run in parallel.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use frlab::observe::grpc as client;
use frlab::stack::{LocalStack, SERVICES, StackOptions, find_binary};
use lab_proto::shop::v1::gateway_client::GatewayClient;
use lab_proto::shop::v1::{LineItem, Order, OrderStatus, PlaceOrderRequest};
use tokio::io::{AsyncBufReadExt, BufReader};

fn options(dir: &Path) -> StackOptions {
    let mut opts = StackOptions::new(dir.join("data"));
    opts.ephemeral_ports = true;
    opts.log_dir = Some(dir.join("logs"));
    opts.ready_timeout = Duration::from_secs(60);
    opts
}

/// True while the process exists and is not a zombie.
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) STATE ...": comm may contain anything, so look after the last ')'.
    let state = stat.rsplit_once(')').map(|(_, rest)| rest.trim_start());
    !matches!(state.and_then(|s| s.chars().next()), Some('Z' | 'X') | None)
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

async fn assert_all_gone(pids: &[u32]) {
    for _ in 0..150 {
        if pids.iter().all(|p| !alive(*p)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left: Vec<_> = pids.iter().filter(|p| alive(**p)).collect();
    panic!("processes still running after 15 s: {left:?}");
}

fn pids(stack: &LocalStack) -> Vec<u32> {
    SERVICES
        .iter()
        .map(|s| stack.pid(s).unwrap_or_else(|| panic!("{s} has no pid")))
        .collect()
}

/// Places an order, retrying with a fresh key on transport errors for up to 10 s (a
/// restarted callee may take a moment before the caller's channel reconnects).
async fn confirmed_order(gateway_url: &str) -> Order {
    let mut gateway = GatewayClient::new(client::channel(gateway_url).unwrap());
    let mut last = String::new();
    for _ in 0..20 {
        let request = PlaceOrderRequest {
            idempotency_key: uuid::Uuid::new_v4().to_string(),
            customer_id: "test-customer".into(),
            items: vec![LineItem {
                product_id: "sku-2".into(),
                quantity: 1,
            }],
        };
        match client::place_order(&mut gateway, request, Duration::from_secs(5)).await {
            Ok(placed) if placed.order.status == OrderStatus::Confirmed as i32 => {
                return placed.order;
            }
            Ok(placed) => last = format!("{:?}", placed.order),
            Err(status) => last = client::describe_status(&status),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("no CONFIRMED order within 10 s; last answer: {last}");
}

#[tokio::test]
async fn missing_binaries_fail_before_anything_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.bin_dir = Some(dir.path().join("nowhere"));
    let err = LocalStack::start(opts)
        .await
        .err()
        .expect("start must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("`inventory` not found"), "{msg}");
    assert!(msg.contains("cargo build --workspace"), "{msg}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing may start or be created"
    );
}

#[tokio::test]
async fn kill_restart_and_stop_leave_nothing_running() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = LocalStack::start(options(dir.path())).await.unwrap();
    let first = pids(&stack);
    assert!(first.iter().all(|p| alive(*p)));
    assert!(stack.gateway_url().starts_with("http://127.0.0.1:"));

    let before = stack.endpoint("payments").unwrap().clone();
    let old_pid = stack.pid("payments").unwrap();
    stack.kill("payments").await.unwrap();
    assert!(!alive(old_pid), "payments survived SIGKILL");
    assert_eq!(stack.pid("payments"), None);
    assert!(
        stack.kill("payments").await.is_err(),
        "killing twice is an error"
    );

    stack.restart("payments").await.unwrap();
    let new_pid = stack.pid("payments").unwrap();
    assert_ne!(new_pid, old_pid);
    assert_eq!(
        stack.endpoint("payments"),
        Some(&before),
        "same ports after restart"
    );
    let log = std::fs::read_to_string(stack.log_path("payments").unwrap()).unwrap();
    assert!(
        log.contains("frlab: restarting payments"),
        "restart appends to the log"
    );

    let mut all = pids(&stack);
    all.push(old_pid);
    stack.stop().await.unwrap();
    assert_all_gone(&all).await;
}

#[tokio::test]
async fn a_service_that_fails_to_start_is_named_with_its_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(dir.path());
    opts.extra_args
        .insert("payments".into(), vec!["--no-such-flag".into()]);
    let err = LocalStack::start(opts)
        .await
        .err()
        .expect("start must fail");
    let msg = format!("{err:#}");
    assert!(msg.contains("payments exited before it was ready"), "{msg}");
    assert!(
        msg.contains("--no-such-flag"),
        "the log tail is quoted: {msg}"
    );
}

#[tokio::test]
async fn a_crash_while_up_is_reported_by_exited() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = LocalStack::start(options(dir.path())).await.unwrap();
    let pid = stack.pid("inventory").unwrap();
    let sent = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let exited = tokio::time::timeout(Duration::from_secs(10), stack.exited())
        .await
        .expect("exited() did not notice the crash");
    assert_eq!(exited.service, "inventory");
    assert!(exited.status.contains("SIGKILL"), "{}", exited.status);
    assert_eq!(stack.pid("inventory"), None);
    let stopped = stack.stop_each().await;
    let inventory = stopped.iter().find(|o| o.service == "inventory").unwrap();
    assert!(inventory.status.is_none(), "{inventory}");
    assert!(stopped.iter().all(|o| o.is_clean()), "{stopped:?}");
}

#[tokio::test]
async fn dropping_the_stack_kills_every_service() {
    let dir = tempfile::tempdir().unwrap();
    let stack = LocalStack::start(options(dir.path())).await.unwrap();
    let pids = pids(&stack);
    drop(stack);
    assert_all_gone(&pids).await;
}

#[tokio::test]
async fn places_a_confirmed_order_and_recovers_from_a_payments_crash() {
    let dir = tempfile::tempdir().unwrap();
    let mut stack = LocalStack::start(options(dir.path())).await.unwrap();
    let order = confirmed_order(&stack.gateway_url()).await;
    assert!(!order.order_id.is_empty());
    assert!(
        order.total.as_ref().is_some_and(|t| t.minor_units > 0),
        "{order:?}"
    );

    stack.kill("payments").await.unwrap();
    stack.restart("payments").await.unwrap();
    confirmed_order(&stack.gateway_url()).await;

    let all = pids(&stack);
    stack.stop().await.unwrap();
    assert_all_gone(&all).await;
}

/// Starts `frlab up` on ephemeral ports and waits until it says it is running.
async fn frlab_up(data_dir: &Path) -> tokio::process::Child {
    // find_binary fails with the right hint if the services are not built.
    let bin_dir = find_binary("gateway", None).unwrap();
    let mut frlab = tokio::process::Command::new(env!("CARGO_BIN_EXE_frlab"))
        .args([
            "up",
            "--base-port",
            "0",
            "--console",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .arg("--bin-dir")
        .arg(bin_dir.parent().unwrap())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(frlab.stdout.take().unwrap()).lines();
    let mut seen = String::new();
    let running = tokio::time::timeout(Duration::from_secs(90), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("ctrl-c to stop") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(
        running,
        Ok(true),
        "frlab up did not come up; stdout:\n{seen}"
    );
    assert!(
        seen.contains("gateway") && seen.contains("/metrics"),
        "{seen}"
    );
    // frlab up serves the console too (in its own process: no sixth child).
    assert!(seen.contains(frlab::console::READY_PREFIX), "{seen}");
    // Keep draining stdout so frlab never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    frlab
}

#[tokio::test]
async fn killed_frlab_leaves_no_orphans() {
    let dir = tempfile::tempdir().unwrap();
    let mut frlab = frlab_up(dir.path()).await;
    let kids = children_of(frlab.id().unwrap());
    assert_eq!(kids.len(), SERVICES.len(), "children: {kids:?}");
    frlab.start_kill().unwrap();
    frlab.wait().await.unwrap();
    // PR_SET_PDEATHSIG: every service gets SIGTERM when frlab dies.
    assert_all_gone(&kids).await;
}

#[tokio::test]
async fn frlab_up_stops_every_service_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut frlab = frlab_up(dir.path()).await;
    let pid = frlab.id().unwrap();
    let kids = children_of(pid);
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = tokio::time::timeout(Duration::from_secs(60), frlab.wait())
        .await
        .expect("frlab up did not exit after SIGTERM")
        .unwrap();
    assert!(status.success(), "frlab up exited with {status}");
    assert_all_gone(&kids).await;
}

#[tokio::test]
async fn run_sample_confirms_an_order_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = find_binary("gateway", None).unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_frlab"))
        .arg("run-sample")
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--bin-dir")
        .arg(bin_dir.parent().unwrap())
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    assert!(stdout.contains("CONFIRMED"), "{stdout}");
    assert!(stdout.contains("audit counters"), "{stdout}");
    assert!(stdout.contains("sample run OK"), "{stdout}");
}

//! `frlab console` against a real local stack (five processes, profile d-breakers with the
//! breaker open time scaled to 3 s): its JSON API, its server-sent events, and the page
//! itself in headless Chromium (loadtest/tests/console/e2e.mjs, screenshots in
//! target/console-e2e/).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use frlab::stack::{LocalStack, StackOptions};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The stack with d-breakers scaled so a breaker stays open 3 s, its stack file, and a
/// `frlab console` process on 127.0.0.1:0 reading it.
struct Running {
    stack: LocalStack,
    console: Child,
    addr: String,
    _dir: tempfile::TempDir,
}

async fn start() -> Running {
    let dir = tempfile::tempdir().unwrap();
    let (name, yaml) = frlab::experiment::scaled_profile_yaml("d-breakers", 0.1).unwrap();
    let profile = dir.path().join(format!("{name}.yaml"));
    std::fs::write(&profile, yaml).unwrap();
    let mut opts = StackOptions::new(dir.path().join("data"));
    opts.ephemeral_ports = true;
    // The services are built next to frlab (the test binary itself may live elsewhere,
    // e.g. under CARGO_BUILD_BUILD_DIR).
    opts.bin_dir = Path::new(env!("CARGO_BIN_EXE_frlab"))
        .parent()
        .map(Path::to_path_buf);
    opts.profile = Some(profile.display().to_string());
    opts.log_dir = Some(dir.path().join("logs"));
    let stack = LocalStack::start(opts).await.expect("stack starts");
    let stack_file = dir.path().join("stack.json");
    std::fs::write(
        &stack_file,
        serde_json::to_string(stack.endpoints()).unwrap(),
    )
    .unwrap();
    let mut console = Command::new(env!("CARGO_BIN_EXE_frlab"))
        .args(["console", "--listen", "127.0.0.1:0", "--stack"])
        .arg(&stack_file)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run frlab console");
    let mut lines = BufReader::new(console.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix(frlab::console::READY_PREFIX) {
                return url.to_string();
            }
        }
        panic!("frlab console exited before it listened");
    })
    .await
    .expect("frlab console did not print its address within 30 s");
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Running {
        stack,
        console,
        addr: url.trim_start_matches("http://").to_string(),
        _dir: dir,
    }
}

impl Running {
    async fn stop(mut self) {
        self.console.start_kill().unwrap();
        self.console.wait().await.unwrap();
        self.stack.stop().await.unwrap();
    }
}

/// One HTTP/1.1 request with `Connection: close`; (status, body).
async fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = body.unwrap_or("");
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: \
         application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_string(&mut raw))
        .await
        .expect("answer within 20 s")
        .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let code = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (code, body.to_string())
}

async fn json_call(addr: &str, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let text = body.map(|b| b.to_string());
    let (code, answer) = request(addr, method, path, text.as_deref()).await;
    let value = serde_json::from_str(&answer)
        .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {answer}"));
    (code, value)
}

async fn snapshot(addr: &str) -> Value {
    let (code, s) = json_call(addr, "GET", "/api/snapshot", None).await;
    assert_eq!(code, 200, "{s}");
    s
}

fn edge<'a>(s: &'a Value, from: &str, to: &str) -> &'a Value {
    s["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["from"] == from && e["to"] == to)
        .unwrap_or_else(|| panic!("no edge {from}->{to} in {s}"))
}

/// The `to` states of the logged transitions of orders→payments, oldest first.
fn payments_transitions(s: &Value) -> Vec<String> {
    s["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["service"] == "orders" && t["hop"] == "payments")
        .map(|t| t["to"].as_str().unwrap().to_string())
        .collect()
}

/// Polls the snapshot until `check` holds (up to `secs`), returning it.
async fn wait_for(addr: &str, secs: u64, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let s = snapshot(addr).await;
        if check(&s) {
            return s;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("{what}: not within {secs} s; last snapshot: {s:#}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test]
async fn console_api_against_a_local_stack() {
    let running = start().await;
    let addr = running.addr.clone();

    // The page and its assets are served from the binary.
    let (code, page) = request(&addr, "GET", "/", None).await;
    assert_eq!(code, 200);
    assert!(page.contains(r#"<script src="/app.js">"#), "{page}");
    for asset in ["/app.js", "/style.css"] {
        let (code, body) = request(&addr, "GET", asset, None).await;
        assert!(code == 200 && body.len() > 1000, "{asset}: {code}");
    }

    // The snapshot: five services up, the four client hops with their breakers.
    let s = snapshot(&addr).await;
    let services = s["services"].as_array().unwrap();
    assert_eq!(services.len(), 5, "{s}");
    assert!(services.iter().all(|x| x["up"] == true), "{s}");
    assert_eq!(s["edges"].as_array().unwrap().len(), 4, "{s}");
    assert_eq!(edge(&s, "orders", "payments")["breaker"]["state"], "closed");
    assert_eq!(edge(&s, "orders", "payments")["breaker"]["open_ms"], 3000);
    assert_eq!(edge(&s, "gateway", "orders")["breaker"]["state"], "closed");

    // One order, with the hops it took.
    let (code, o) = json_call(&addr, "POST", "/api/order", None).await;
    assert_eq!(code, 200, "{o}");
    assert_eq!(
        (o["outcome"].as_str(), o["ok"].as_bool()),
        (Some("CONFIRMED"), Some(true)),
        "{o}"
    );
    assert_eq!(o["attempts"], 1, "{o}");
    assert_eq!(o["overlapped"], false, "{o}");
    let hops: Vec<String> = o["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            format!(
                "{}->{}",
                h["from"].as_str().unwrap(),
                h["to"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        hops.starts_with(&[
            "gateway->orders".into(),
            "orders->inventory".into(),
            "orders->payments".into()
        ]),
        "{hops:?}"
    );
    let s = wait_for(&addr, 10, "the gateway's counters show the order", |s| {
        s["totals"]["requests"].as_f64() >= Some(1.0)
    })
    .await;
    assert_eq!(s["console"]["log"][0]["seq"], o["seq"], "{s}");

    // Bad input: 400 naming the field and the value.
    let bad = [
        (
            "/api/burst",
            json!({"count": 5000, "rate": 10}),
            "count",
            json!(5000),
        ),
        (
            "/api/burst",
            json!({"count": 10, "rate": 0}),
            "rate",
            json!(0),
        ),
        ("/api/load/start", json!({"rate": 900}), "rate", json!(900)),
        (
            "/api/load/start",
            json!({"rate": "fast"}),
            "rate",
            json!("fast"),
        ),
        (
            "/api/faults",
            json!({"service": "orders", "kind": "outage", "duration_s": 5}),
            "service",
            json!("orders"),
        ),
        (
            "/api/faults",
            json!({"service": "payments", "kind": "meteor", "duration_s": 5}),
            "kind",
            json!("meteor"),
        ),
        (
            "/api/faults",
            json!({"service": "payments", "kind": "error", "duration_s": 5, "probability": 2}),
            "probability",
            json!(2),
        ),
        ("/api/order", json!({"count": 1}), "count", json!(1)),
    ];
    for (path, body, field, value) in bad {
        let (code, e) = json_call(&addr, "POST", path, Some(body.clone())).await;
        assert_eq!(code, 400, "{path} {body}: {e}");
        assert_eq!(
            (&e["field"], &e["value"]),
            (&json!(field), &value),
            "{path} {body}: {e}"
        );
        assert!(e["error"].as_str().unwrap().contains(field), "{e}");
    }
    let (code, _) = request(&addr, "POST", "/api/burst", Some("{not json")).await;
    assert_eq!(code, 400);

    // A payments outage through the admin API: orders fail, the breaker opens.
    let (code, f) = json_call(
        &addr,
        "POST",
        "/api/faults",
        Some(json!({"service": "payments", "kind": "outage", "duration_s": 120})),
    )
    .await;
    assert_eq!(code, 200, "{f}");
    assert_eq!(f["name"], "console-payments-outage");
    let (_, o) = json_call(&addr, "POST", "/api/order", None).await;
    assert_eq!(
        (o["ok"].as_bool(), o["code"].as_str()),
        (Some(false), Some("UNAVAILABLE")),
        "{o}"
    );
    let (code, b) = json_call(
        &addr,
        "POST",
        "/api/burst",
        Some(json!({"count": 20, "rate": 50})),
    )
    .await;
    assert_eq!(code, 202, "{b}");
    let s = wait_for(&addr, 30, "orders->payments breaker OPEN", |s| {
        edge(s, "orders", "payments")["breaker"]["state"] == "open"
    })
    .await;
    let fault_on_payments = s["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "payments")
        .unwrap()["faults"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(fault_on_payments, 1, "{s}");
    assert!(
        payments_transitions(&s).contains(&"open".to_string()),
        "{s}"
    );
    assert!(s["totals"]["trips"].as_f64() >= Some(1.0), "{s}");

    // Clear it; with a light load the breaker probes and closes.
    let (code, c) = json_call(&addr, "DELETE", "/api/faults", None).await;
    assert_eq!(code, 200, "{c}");
    assert_eq!(c["cleared"]["payments"], 1, "{c}");
    let (code, l) = json_call(&addr, "POST", "/api/load/start", Some(json!({"rate": 5}))).await;
    assert_eq!((code, &l["running"]), (200, &json!(true)), "{l}");
    let s = wait_for(&addr, 60, "orders->payments OPEN, HALF-OPEN, CLOSED", |s| {
        let t = payments_transitions(s);
        let Some(open) = t.iter().rposition(|x| x == "open") else {
            return false;
        };
        let half = t[open..]
            .iter()
            .position(|x| x == "half_open")
            .map(|i| i + open);
        half.is_some_and(|h| t[h..].iter().any(|x| x == "closed"))
            && edge(s, "orders", "payments")["breaker"]["state"] == "closed"
    })
    .await;
    assert!(edge(&s, "orders", "payments")["transitions"]["probes"].as_f64() >= Some(1.0));
    // The log shows an order once it is answered: give the load's orders after the breaker
    // closed time to come back before stopping it (on a busy machine they may not have yet).
    wait_for(&addr, 15, "a load order confirmed in the log", |s| {
        s["console"]["log"].as_array().is_some_and(|log| {
            log.iter()
                .any(|o| o["origin"] == "load" && o["outcome"] == "CONFIRMED")
        })
    })
    .await;
    let (code, l) = json_call(&addr, "POST", "/api/load/stop", None).await;
    assert_eq!((code, &l["was_running"]), (200, &json!(true)), "{l}");
    let s = wait_for(&addr, 10, "the load shown stopped", |s| {
        s["console"]["load"].is_null()
    })
    .await;
    let log = s["console"]["log"].as_array().unwrap();
    assert!(log.len() >= 22 && log.len() <= 50, "{}", log.len());
    assert!(
        log.iter()
            .any(|o| o["origin"] == "burst" && o["code"] == "UNAVAILABLE")
    );
    assert!(
        log.iter()
            .any(|o| o["origin"] == "load" && o["outcome"] == "CONFIRMED")
    );

    // Server-sent events: a snapshot arrives without asking.
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = vec![0u8; 64 * 1024];
    let event = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "the event stream ended: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            if let Some(i) = seen.find("event: snapshot\ndata: ")
                && let Some(line) = seen[i..].lines().nth(1)
                && seen[i..].contains("\n\n")
            {
                return line.trim_start_matches("data: ").to_string();
            }
        }
    })
    .await
    .expect("a snapshot event within 10 s");
    let pushed: Value = serde_json::from_str(&event).unwrap();
    assert_eq!(pushed["services"].as_array().unwrap().len(), 5);
    running.stop().await;
}

/// Finds node, Debian's chromium and playwright-core, or fails saying how to get them.
fn browser_tools() -> PathBuf {
    let root = workspace_root();
    let missing = |what: &str| -> ! {
        panic!("{what} is missing: run `make tools` (scripts/install-tools.sh) to install it")
    };
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        missing("node");
    }
    if !Path::new("/usr/bin/chromium").exists() && std::env::var_os("CHROMIUM").is_none() {
        missing("chromium (/usr/bin/chromium)");
    }
    if !root.join(".tools/node_modules/playwright-core").is_dir() {
        missing("playwright-core (.tools/node_modules)");
    }
    root
}

#[tokio::test]
async fn console_e2e_in_chromium() {
    let root = browser_tools();
    let out = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
        .join("console-e2e");
    let _ = std::fs::remove_dir_all(&out);
    let running = start().await;
    let script = root.join("loadtest/tests/console/e2e.mjs");
    let run = Command::new("node")
        .arg(&script)
        .arg(format!("http://{}", running.addr))
        .arg(&out)
        .current_dir(&root)
        .kill_on_drop(true)
        .output();
    let result = tokio::time::timeout(Duration::from_secs(240), run)
        .await
        .expect("the browser test did not finish within 240 s")
        .expect("run node");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    running.stop().await;
    assert!(
        result.status.success(),
        "console e2e failed ({}); screenshots in {}\n{stdout}\n{stderr}",
        result.status,
        out.display()
    );
    assert!(stdout.contains("console e2e: OK"), "{stdout}");
    for shot in [
        "01-healthy.png",
        "02-breaker-open.png",
        "03-half-open.png",
        "04-closed.png",
    ] {
        let size = std::fs::metadata(out.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(size > 10_000, "{shot}: {size} bytes");
    }
}

//! The chart's observability files (`helm/frlab/files/`) against real tools and services:
//!
//! - `promtool check rules` and `promtool test rules` on the rules and their unit tests;
//!   `promtool check config` on a copy of the scrape config whose Kubernetes discovery is
//!   swapped for static targets (Debian's Prometheus has no Kubernetes discovery);
//! - the Grafana dashboard parsed; every PromQL expression of it and of the rules names only
//!   metrics (and matcher labels) the five services expose on a live `/metrics`;
//! - a real Prometheus server scraping a local stack (the real service binaries: build
//!   them first, `cargo build --workspace`) during a short load: its request total equals
//!   the load generator's own count, and the rules load and evaluate.
//!
//! `promtool` and `prometheus` come from Debian's `prometheus` package (`make tools`); a
//! missing tool fails the tests with that advice.

#[path = "prometheus/promql.rs"]
mod promql;
mod tools;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use frlab::load::{self, LoadConfig, Schedule};
use frlab::stack::{LocalStack, StackOptions};
use serde_json::{Value, json};
use tools::{root, tool};

const SERVICES: [&str; 5] = [
    "gateway",
    "orders",
    "payments",
    "inventory",
    "notifications",
];
const PLACE_ORDER: &str =
    r#"rpc_server_requests_total{service="gateway",method="/shop.v1.Gateway/PlaceOrder"}"#;

fn files_dir() -> PathBuf {
    root().join("helm/frlab/files")
}

/// Runs `cmd`, panicking with its output unless it succeeds; returns stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    stdout
}

fn read_yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn rules() -> Value {
    read_yaml(&files_dir().join("prometheus/rules.yaml"))
}

fn dashboard() -> Value {
    let path = files_dir().join("grafana/frlab-dashboard.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every rule of rules.yaml, as (group, rule) JSON objects.
fn rule_list(rules: &Value) -> Vec<(String, Value)> {
    let groups = rules["groups"]
        .as_array()
        .expect("rules.yaml: `groups` list");
    groups
        .iter()
        .flat_map(|g| {
            let name = g["name"].as_str().unwrap_or("?").to_string();
            g["rules"]
                .as_array()
                .expect("every group has `rules`")
                .iter()
                .map(move |r| (name.clone(), r.clone()))
        })
        .collect()
}

/// Every panel of the dashboard, rows' nested panels included.
fn panels(dash: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// The prometheus.yml of the chart with its Kubernetes discovery replaced by static
/// targets carrying the labels pod discovery would give (`__meta_kubernetes_*`), so the
/// chart's own relabelling decides what is kept. Each target: (address, service, port name,
/// part-of label). Rule files point at the chart's rules.yaml.
fn static_config(targets: &[(String, &str, &str, &str)], scrape_interval: &str) -> Value {
    let mut cfg = read_yaml(&files_dir().join("prometheus/prometheus.yml"));
    assert_eq!(
        cfg["rule_files"],
        json!(["/etc/prometheus/rules/rules.yaml"]),
        "the chart mounts rules.yaml at /etc/prometheus/rules/"
    );
    cfg["rule_files"] = json!([files_dir().join("prometheus/rules.yaml")]);
    cfg["global"]["scrape_interval"] = json!(scrape_interval);
    cfg["global"]["scrape_timeout"] = json!(scrape_interval);
    cfg["global"]["evaluation_interval"] = json!(scrape_interval);
    let jobs = cfg["scrape_configs"]
        .as_array_mut()
        .expect("scrape_configs");
    let job = jobs
        .iter_mut()
        .find(|j| j["job_name"] == "frlab")
        .expect("a scrape job named frlab");
    let sd = job
        .as_object_mut()
        .unwrap()
        .remove("kubernetes_sd_configs")
        .expect("the frlab job discovers pods with kubernetes_sd_configs");
    assert_eq!(sd[0]["role"], "pod", "{sd}");
    assert_eq!(sd[0]["namespaces"]["own_namespace"], true, "{sd}");
    let statics: Vec<Value> = targets
        .iter()
        .enumerate()
        .map(|(i, (addr, service, port, part_of))| {
            json!({
                "targets": [addr],
                "labels": {
                    "__meta_kubernetes_namespace": "frlab-test",
                    "__meta_kubernetes_pod_name": format!("{service}-{i}"),
                    "__meta_kubernetes_pod_phase": "Running",
                    "__meta_kubernetes_pod_container_port_name": port,
                    "__meta_kubernetes_pod_label_app_kubernetes_io_name": service,
                    "__meta_kubernetes_pod_label_app_kubernetes_io_part_of": part_of,
                }
            })
        })
        .collect();
    job["static_configs"] = Value::Array(statics);
    cfg
}

fn write_config(dir: &Path, cfg: &Value) -> PathBuf {
    let path = dir.join("prometheus.yml");
    // JSON is YAML: Prometheus reads it as is.
    std::fs::write(&path, serde_json::to_string_pretty(cfg).unwrap()).unwrap();
    path
}

#[test]
fn promtool_checks_the_rules_and_runs_their_unit_tests() {
    let promtool = tool("promtool");
    let dir = files_dir().join("prometheus");
    let checked = run_ok(
        Command::new(&promtool)
            .args(["check", "rules", "rules.yaml"])
            .current_dir(&dir),
    );
    assert!(checked.contains("SUCCESS"), "{checked}");
    let tested = run_ok(
        Command::new(&promtool)
            .args(["test", "rules", "rules-test.yaml"])
            .current_dir(&dir),
    );
    assert!(tested.contains("SUCCESS"), "{tested}");

    // Every rule is exercised by a unit test.
    let tests = read_yaml(&dir.join("rules-test.yaml"));
    let mut tested_names = BTreeSet::new();
    for t in tests["tests"].as_array().expect("tests") {
        for e in t["promql_expr_test"].as_array().into_iter().flatten() {
            for s in promql::selectors(e["expr"].as_str().unwrap()).unwrap() {
                tested_names.insert(s.name);
            }
        }
        for a in t["alert_rule_test"].as_array().into_iter().flatten() {
            if !a["exp_alerts"].as_array().is_none_or(Vec::is_empty) {
                tested_names.insert(a["alertname"].as_str().unwrap().to_string());
            }
        }
    }
    let untested: Vec<String> = rule_list(&rules())
        .iter()
        .filter_map(|(_, r)| {
            let name = r["record"].as_str().or(r["alert"].as_str()).unwrap();
            (!tested_names.contains(name)).then(|| name.to_string())
        })
        .collect();
    assert!(
        untested.is_empty(),
        "rules without a unit test (or alerts never shown firing): {untested:?}"
    );
}

/// The amplification rules measure the hops `frlab` measures (frlab::measure::HOPS): the
/// caller's client counter and the callee's server counter over the hop's methods.
#[test]
fn amplification_rules_follow_the_hops_frlab_measures() {
    let rules = rule_list(&rules());
    let amplification: BTreeMap<String, String> = rules
        .iter()
        .filter(|(_, r)| r["record"] == "frlab:amplification:ratio_rate1m")
        .map(|(_, r)| {
            (
                r["labels"]["hop"].as_str().expect("hop label").to_string(),
                r["expr"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let hops: Vec<&str> = frlab::measure::HOPS.iter().map(|h| h.name).collect();
    assert_eq!(
        amplification
            .keys()
            .map(String::as_str)
            .collect::<BTreeSet<_>>(),
        hops.iter().copied().collect::<BTreeSet<_>>()
    );
    for hop in frlab::measure::HOPS {
        let expr = &amplification[hop.name];
        let client = format!(
            r#"resilience_client_requests_total{{service="{}",hop="{}"}}"#,
            hop.caller, hop.name
        );
        assert!(
            expr.contains(&client),
            "{}: wants {client}: {expr}",
            hop.name
        );
        assert!(
            expr.contains(&format!(
                r#"rpc_server_requests_total{{service="{}""#,
                hop.name
            )),
            "{}: {expr}",
            hop.name
        );
        for method in hop.methods {
            let short = method.rsplit('/').next().unwrap();
            assert!(
                expr.contains(short),
                "{}: {method} missing: {expr}",
                hop.name
            );
        }
    }
}

#[test]
fn promtool_checks_the_scrape_config_with_static_targets() {
    let promtool = tool("promtool");
    let dir = tempfile::tempdir().unwrap();
    let targets: Vec<(String, &str, &str, &str)> = SERVICES
        .iter()
        .enumerate()
        .map(|(i, s)| (format!("127.0.0.1:{}", 18081 + i), *s, "http", "frlab"))
        .collect();
    let path = write_config(dir.path(), &static_config(&targets, "5s"));
    let out = run_ok(Command::new(promtool).args(["check", "config"]).arg(&path));
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn dashboard_parses_and_shows_what_the_issue_asks_for() {
    let dash = dashboard();
    assert!(
        dash["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion {}",
        dash["schemaVersion"]
    );
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let panels = panels(&dash);
    let mut exprs = Vec::new();
    for p in &panels {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or("?");
        assert_eq!(
            p["datasource"]["uid"], "prometheus",
            "panel {title:?}: datasource uid"
        );
        let targets = p["targets"]
            .as_array()
            .unwrap_or_else(|| panic!("{title:?}: targets"));
        assert!(!targets.is_empty(), "{title:?} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "prometheus", "{title:?}");
            exprs.push(
                t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{title:?}: expr")),
            );
        }
    }
    let all = exprs.join("\n");
    for wanted in [
        "frlab:success_rate:ratio_rate1m",
        "frlab:place_order_latency_seconds:p95_rate1m",
        "frlab:amplification:ratio_rate1m",
        "resilience_breaker_state",
        "frlab:chaos_injected:rate1m",
        "frlab:retries:rate1m",
        "frlab:rejections:rate1m",
    ] {
        assert!(all.contains(wanted), "no panel queries {wanted}");
    }
    // Panels do not overlap on the grid.
    let mut cells = BTreeSet::new();
    for p in &panels {
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{}: wider than the grid", p["title"]);
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(
                    cells.insert((cx, cy)),
                    "{} overlaps another panel",
                    p["title"]
                );
            }
        }
    }
}

/// Every PromQL expression of the rules and the dashboard, with where it comes from.
fn all_expressions() -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = rule_list(&rules())
        .into_iter()
        .map(|(group, r)| {
            let name = r["record"].as_str().or(r["alert"].as_str()).unwrap_or("?");
            (
                format!("rules.yaml {group}/{name}"),
                r["expr"]
                    .as_str()
                    .expect("every rule has an expr")
                    .to_string(),
            )
        })
        .collect();
    let dash = dashboard();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                out.push((format!("dashboard panel {:?}", p["title"]), e.to_string()));
            }
        }
    }
    out
}

fn stack_options(dir: &Path, profile: &str) -> StackOptions {
    let mut opts = StackOptions::new(dir.join("data"));
    opts.ephemeral_ports = true;
    opts.profile = Some(profile.into());
    opts.log_dir = Some(dir.join("logs"));
    opts.ready_timeout = Duration::from_secs(60);
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_rules_and_dashboard_is_exposed_by_the_services() {
    let recorded: BTreeSet<String> = rule_list(&rules())
        .iter()
        .filter_map(|(_, r)| r["record"].as_str().map(str::to_string))
        .collect();
    let exprs = all_expressions();
    assert!(exprs.len() > 20, "{} expressions", exprs.len());

    let dir = tempfile::tempdir().unwrap();
    // g-adaptive turns every mechanism on. prometheus-client writes nothing (not even
    // `# TYPE`) for a labelled family without series, so the test makes the lazily
    // created ones appear: calls with a 20 ms deadline (the chain takes about 50 ms) run
    // out of it (resilience_deadline_exceeded_total), then payments with one slot and no
    // queue refuses part of a burst (payments_rejected_total, retries, breaker rejections).
    let mut opts = stack_options(dir.path(), "g-adaptive");
    opts.extra_args.insert(
        "payments".into(),
        ["--slots", "1", "--queue", "0"].map(String::from).to_vec(),
    );
    let stack = LocalStack::start(opts)
        .await
        .expect("stack starts (build the services first: cargo build --workspace)");
    let mut hurried = LoadConfig::new(
        stack.gateway_url(),
        Schedule::Constant { rate: 10.0 },
        Duration::from_millis(500),
    );
    hurried.deadline = Duration::from_millis(20);
    hurried.key_prefix = "hurried".into();
    let hurried = load::run(hurried, |_| {}).await.expect("load runs");
    let mut burst = LoadConfig::new(
        stack.gateway_url(),
        Schedule::Constant { rate: 40.0 },
        Duration::from_secs(1),
    );
    burst.deadline = Duration::from_secs(5);
    let report = load::run(burst, |_| {}).await.expect("load runs");
    eprintln!(
        "--- burst\n{}\n--- hurried\n{}",
        report.summary(),
        hurried.summary()
    );
    let mut exposed = promql::Exposition::default();
    for service in SERVICES {
        let ep = stack.endpoint(service).expect("endpoint");
        let (code, body) = lab_runtime::client::http_get(ep.http, "/metrics")
            .await
            .expect("GET /metrics");
        assert_eq!(code, 200, "{service} /metrics: {body}");
        exposed
            .add(&body)
            .unwrap_or_else(|e| panic!("{service} /metrics: {e}"));
    }
    stack.stop().await.expect("stack stops");
    assert!(report.succeeded > 0, "no order went through: {report:?}");

    let mut unknown = Vec::new();
    let mut bad_labels = Vec::new();
    let mut checked = BTreeSet::new();
    for (origin, expr) in &exprs {
        let selectors = promql::selectors(expr).unwrap_or_else(|e| panic!("{origin}: {e}\n{expr}"));
        assert!(!selectors.is_empty(), "{origin}: no metric in {expr}");
        for s in selectors {
            if s.name.contains(':') {
                if !recorded.contains(&s.name) {
                    unknown.push(format!(
                        "{origin}: recording rule {} is not defined",
                        s.name
                    ));
                }
                continue;
            }
            match exposed.series.get(&s.name) {
                None => unknown.push(format!("{origin}: {}", s.name)),
                Some(labels) => {
                    checked.insert(s.name.clone());
                    // Label names can only be checked where samples exist.
                    if !labels.is_empty() {
                        for l in &s.labels {
                            if !labels.contains(l) {
                                bad_labels.push(format!(
                                    "{origin}: {} has no label `{l}` (it has {labels:?})",
                                    s.name
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "metrics no service exposes:\n{}",
        unknown.join("\n")
    );
    assert!(bad_labels.is_empty(), "{}", bad_labels.join("\n"));
    eprintln!(
        "{} metric names checked against live /metrics: {checked:?}",
        checked.len()
    );
}

// ---------------------------------------------------------------------------------------
// A real Prometheus server
// ---------------------------------------------------------------------------------------

/// The Prometheus process of a test: killed when dropped, also when the test panics.
struct PrometheusGuard {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl PrometheusGuard {
    fn start(config: &Path, data: &Path, log: PathBuf) -> PrometheusGuard {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("prometheus starts");
        PrometheusGuard { child, addr, log }
    }

    /// Waits for `/-/ready`; fails at once if the process exits (a bad config, a taken port).
    fn wait_ready(&mut self, timeout: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("prometheus exited ({status}):\n{}", self.log());
            }
            if matches!(self.get("/-/ready"), Ok((200, _))) {
                return;
            }
            assert!(
                start.elapsed() < timeout,
                "prometheus not ready after {timeout:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET `path` (HTTP/1.0, so the body is never chunked): status and body.
    fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        let mut s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: {}\r\n\r\n", self.addr)?;
        let mut raw = String::new();
        s.read_to_string(&mut raw)?;
        let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Ok((code, body.to_string()))
    }

    /// An API call that must answer `status: success`; returns `data`.
    fn api(&self, path: &str) -> Value {
        let (code, body) = self
            .get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} ({code}): {e}: {body}"));
        assert_eq!(v["status"], "success", "GET {path} ({code}): {body}");
        v["data"].clone()
    }

    /// An instant query's vector result.
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(promql)));
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// The single value of an instant query, `None` when the result is empty.
    fn scalar(&self, promql: &str) -> Option<f64> {
        let result = self.query(promql);
        assert!(
            result.len() <= 1,
            "{promql}: more than one series: {result:?}"
        );
        result.first().map(|s| {
            s["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{promql}: bad value {s}"))
        })
    }

    /// Polls `ready` every 250 ms until it gives a value or `timeout` passes.
    fn wait_for<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = ready() {
                return v;
            }
            assert!(
                start.elapsed() < timeout,
                "timed out after {timeout:?} waiting for {what}; prometheus log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for PrometheusGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Percent-encodes a query parameter.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_prometheus_counts_what_the_load_generator_sent() {
    let test_start = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let stack = LocalStack::start(stack_options(dir.path(), "f-full"))
        .await
        .expect("stack starts (build the services first: cargo build --workspace)");

    // The five services as pod discovery would show them, plus two the chart's
    // relabelling must drop: a pod of another app and a port not named `http`.
    let mut targets: Vec<(String, &str, &str, &str)> = SERVICES
        .iter()
        .map(|s| {
            let ep = stack.endpoint(s).expect("endpoint");
            (ep.http.to_string(), *s, "http", "frlab")
        })
        .collect();
    let gateway = stack.endpoint("gateway").unwrap();
    targets.push((gateway.http.to_string(), "gateway", "http", "someone-else"));
    targets.push((gateway.grpc.to_string(), "gateway", "grpc", "frlab"));
    let config = write_config(dir.path(), &static_config(&targets, "1s"));
    let data = dir.path().join("tsdb");
    std::fs::create_dir_all(&data).unwrap();
    let mut prom = PrometheusGuard::start(&config, &data, dir.path().join("prometheus.log"));

    prom.wait_ready(Duration::from_secs(30));
    // Every kept target scraped and up before the load starts.
    let kept = prom.wait_for("five targets up", Duration::from_secs(20), || {
        let t = prom.api("/api/v1/targets");
        let active = t["activeTargets"].as_array().cloned().unwrap_or_default();
        (active.len() == 5 && active.iter().all(|a| a["health"] == "up")).then_some(t)
    });
    let mut seen: Vec<(String, String)> = kept["activeTargets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let l = &a["labels"];
            assert_eq!(l["job"], "frlab", "{a}");
            assert_eq!(l["namespace"], "frlab-test", "{a}");
            (
                l["service"].as_str().unwrap().to_string(),
                l["pod"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    seen.sort();
    let mut want: Vec<(String, String)> = SERVICES
        .iter()
        .enumerate()
        .map(|(i, s)| (s.to_string(), format!("{s}-{i}")))
        .collect();
    want.sort();
    assert_eq!(seen, want);
    assert_eq!(
        kept["droppedTargets"].as_array().map(Vec::len),
        Some(2),
        "relabelling drops the other app's pod and the grpc port: {}",
        kept["droppedTargets"]
    );

    // A short, bounded open-loop load: 20 rps for 5 s.
    let mut cfg = LoadConfig::new(
        stack.gateway_url(),
        Schedule::Constant { rate: 20.0 },
        Duration::from_secs(5),
    );
    cfg.deadline = Duration::from_secs(5);
    let report = load::run(cfg, |_| {}).await.expect("load runs");
    let load_end = unix_now();
    eprintln!("--- load\n{}", report.summary());
    assert_eq!(report.issued, 100, "{report:?}");

    // Two scrapes of every target after the load ended.
    prom.wait_for(
        "two scrapes after the load",
        Duration::from_secs(20),
        || {
            let oldest = prom.scalar(r#"min(timestamp(up{job="frlab"}))"#)?;
            (oldest >= load_end + 1.0).then_some(())
        },
    );
    let requests = prom
        .scalar(&format!("sum({PLACE_ORDER})"))
        .expect("gateway PlaceOrder requests scraped");
    let ok = prom
        .scalar(
            r#"sum(rpc_server_responses_total{service="gateway",method="/shop.v1.Gateway/PlaceOrder",code="OK"})"#,
        )
        .unwrap_or(0.0);
    let (_, direct) = lab_runtime::client::http_get(gateway.http, "/metrics")
        .await
        .expect("gateway /metrics");
    let direct_samples = frlab::observe::prometheus::parse_prometheus(&direct).unwrap();
    let direct_requests = frlab::observe::prometheus::sum(
        &direct_samples,
        "rpc_server_requests_total",
        &[("method", "/shop.v1.Gateway/PlaceOrder")],
    );
    eprintln!(
        "prometheus: {requests} PlaceOrder requests, {ok} OK; load generator: {} attempts, \
         {} succeeded; gateway /metrics now: {direct_requests}",
        report.attempts, report.succeeded
    );
    assert_eq!(
        requests, report.attempts as f64,
        "Prometheus's gateway PlaceOrder total vs the load generator's attempts"
    );
    assert_eq!(
        requests, direct_requests,
        "Prometheus vs the gateway's /metrics"
    );
    assert!(
        ok >= report.succeeded as f64 && ok <= requests,
        "OK answers {ok}: at least the {} successes the generator saw, at most {requests}",
        report.succeeded
    );

    // The chart's rules loaded and evaluate without error.
    let groups = prom.wait_for("every rule evaluated", Duration::from_secs(20), || {
        let g = prom.api("/api/v1/rules");
        let rules: Vec<Value> = g["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let evaluated = !rules.is_empty()
            && rules.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        evaluated.then_some(rules)
    });
    let expected_rules = rule_list(&rules()).len();
    assert_eq!(groups.len(), expected_rules, "rules loaded");
    let unhealthy: Vec<String> = groups
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
        .collect();
    assert!(unhealthy.is_empty(), "rules with errors: {unhealthy:?}");
    // The recording rules computed from the scraped load.
    let rate = prom.wait_for("frlab:requests:rate1m", Duration::from_secs(20), || {
        prom.scalar("frlab:requests:rate1m").filter(|r| *r > 0.0)
    });
    let success = prom
        .scalar("frlab:success_rate:ratio_rate1m")
        .expect("a success rate was recorded");
    eprintln!("recorded: {rate:.2} requests/s, success rate {success:.3}");
    assert!(
        success.is_finite() && success > 0.0,
        "success rate {success}"
    );

    drop(prom);
    stack.stop().await.expect("stack stops");
    eprintln!("took {:?}", test_start.elapsed());
}

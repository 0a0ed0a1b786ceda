//! Shared by the chart tests: the workspace root, the tools of `.tools/bin` (a missing one
//! fails the test, naming `make tools`), helm with its homes in a temporary directory, and
//! the rendered manifests as JSON values.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root (this crate is `libs/values`).
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

pub fn chart() -> PathBuf {
    root().join("helm/frlab")
}

/// Every `helm/profiles/*.yaml`, sorted, as (name, path).
pub fn profiles() -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = std::fs::read_dir(root().join("helm/profiles"))
        .expect("helm/profiles")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    assert!(
        out.len() >= 7,
        "helm/profiles holds the seven profiles: {out:?}"
    );
    out
}

/// A tool from `.tools/bin` (else PATH); panics with what to run when it is missing.
pub fn tool(name: &str) -> PathBuf {
    let local = root().join(".tools/bin").join(name);
    if local.is_file() {
        return local;
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "`{name}` is not in .tools/bin nor on PATH: run `make tools` (scripts/install-tools.sh)"
    );
}

/// Runs a command, panicking with its output when it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn helm_home() -> &'static Path {
    static HOME: OnceLock<tempfile::TempDir> = OnceLock::new();
    HOME.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// `helm` with its cache, config and data homes in a temporary directory.
pub fn helm() -> Command {
    let home = helm_home();
    let mut cmd = Command::new(tool("helm"));
    cmd.env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(root());
    cmd
}

/// The Kubernetes versions the chart is checked against: the newest, the oldest with
/// native gRPC probes on by default (GA in 1.27), and the chart's minimum (Chart.yaml), the
/// local cluster's 1.20.
pub const KUBE_VERSIONS: [&str; 3] = ["1.33.0", "1.27.0", "1.20.2"];

/// The oldest Kubernetes whose schemas `kubernetes-validate` bundles (1.25). Older renders
/// are validated by a real 1.20 API server instead (tests/local_cluster.rs).
pub fn validator_knows(kube_version: &str) -> bool {
    let minor: u32 = kube_version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("a 1.x.y version");
    minor >= 25
}

/// `helm template frlab helm/frlab --kube-version V ARGS...`, which must succeed.
pub fn template(kube_version: &str, args: &[&str]) -> String {
    let mut cmd = helm();
    cmd.args(["template", "frlab"])
        .arg(chart())
        .args(["--namespace", "lab", "--kube-version", kube_version])
        .args(args);
    run_ok(&mut cmd)
}

/// The same, expected to fail; returns stderr.
pub fn template_err(args: &[&str]) -> String {
    let mut cmd = helm();
    cmd.args(["template", "frlab"])
        .arg(chart())
        .args(["--kube-version", KUBE_VERSIONS[0]])
        .args(args);
    let out = run(&mut cmd);
    assert!(
        !out.status.success(),
        "helm template {args:?} should have failed, rendered:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The documents of a multi-document YAML stream (empty ones dropped).
pub fn docs(yaml: &str) -> Vec<serde_json::Value> {
    serde_saphyr::from_multiple::<serde_json::Value>(yaml)
        .unwrap_or_else(|e| panic!("rendered output is not YAML: {e}"))
        .into_iter()
        .filter(|d| !d.is_null())
        .collect()
}

/// The objects of `kind` in rendered docs.
pub fn of_kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> Vec<&'a serde_json::Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one object of `kind` named `name`.
pub fn object<'a>(docs: &'a [serde_json::Value], kind: &str, name: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in the rendered chart"))
}

/// The five lab services.
pub const SERVICES: [&str; 5] = [
    "gateway",
    "orders",
    "payments",
    "inventory",
    "notifications",
];

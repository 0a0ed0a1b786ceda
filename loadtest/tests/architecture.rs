//! The one-way import rule of ARCHITECTURE.md, checked on the workspace's manifests
//! (`cargo metadata --no-deps`, offline): proto at the bottom, libs above it, services and
//! frlab on top; no service depends on another service; kube and k8s-openapi only in
//! services/chaos-controller; nothing depends on frlab, and frlab starts services only in
//! its tests. A crate cannot `use` another without depending on it, so the manifests are
//! where an import shows first.

use std::process::Command;

use serde_json::Value;

/// Where a workspace crate sits, from its directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Proto,
    Lib,
    Service,
    Frlab,
}

/// One dependency of a workspace crate: its name, its kind (`normal`, `dev`, `build`) and
/// the workspace crate it is, if it is one.
struct Dep {
    name: String,
    kind: String,
    local: Option<(String, Layer)>,
}

struct Krate {
    name: String,
    layer: Layer,
    deps: Vec<Dep>,
}

/// Crates only services/chaos-controller may depend on: they take minutes to build.
const KUBE: [&str; 2] = ["kube", "k8s-openapi"];
const CONTROLLER: &str = "chaos-controller";

fn layer_of(manifest_path: &str) -> Option<Layer> {
    let dir = manifest_path.strip_suffix("/Cargo.toml")?;
    if dir.ends_with("/libs/proto") {
        Some(Layer::Proto)
    } else if dir.contains("/libs/") {
        Some(Layer::Lib)
    } else if dir.contains("/services/") {
        Some(Layer::Service)
    } else if dir.ends_with("/loadtest") {
        Some(Layer::Frlab)
    } else {
        None
    }
}

/// The workspace crates and their dependencies, from `cargo metadata --no-deps` JSON.
fn crates(metadata: &Value) -> Vec<Krate> {
    let packages = metadata["packages"].as_array().expect("packages");
    let local: Vec<(String, Layer)> = packages
        .iter()
        .map(|p| {
            let path = p["manifest_path"].as_str().unwrap_or_default();
            let layer = layer_of(path).unwrap_or_else(|| panic!("{path}: which layer is it?"));
            (p["name"].as_str().unwrap_or_default().to_string(), layer)
        })
        .collect();
    packages
        .iter()
        .zip(&local)
        .map(|(p, (name, layer))| Krate {
            name: name.clone(),
            layer: *layer,
            deps: p["dependencies"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let dep = d["name"].as_str().unwrap_or_default().to_string();
                    Dep {
                        local: d["path"]
                            .is_string()
                            .then(|| local.iter().find(|(n, _)| *n == dep).cloned())
                            .flatten(),
                        kind: d["kind"].as_str().unwrap_or("normal").to_string(),
                        name: dep,
                    }
                })
                .collect(),
        })
        .collect()
}

/// Every way the workspace breaks the rule, one line each.
fn violations(crates: &[Krate]) -> Vec<String> {
    let mut found = Vec::new();
    for k in crates {
        for d in &k.deps {
            let what = format!(
                "{} ({:?}) depends on {} ({})",
                k.name, k.layer, d.name, d.kind
            );
            let kube = KUBE.contains(&d.name.as_str()) || d.name.starts_with("kube-");
            if kube && k.name != CONTROLLER {
                found.push(format!("{what}: kube crates belong to {CONTROLLER} alone"));
            }
            let Some((_, layer)) = &d.local else {
                continue;
            };
            let broken = match (k.layer, layer) {
                (_, Layer::Frlab) => Some("nothing depends on frlab"),
                (Layer::Service, Layer::Service) => {
                    Some("services talk over gRPC, never through each other's crates")
                }
                (Layer::Proto, _) => {
                    Some("lab-proto is the bottom: it depends on no crate of ours")
                }
                (Layer::Lib, Layer::Service) => Some("libs sit below the services"),
                (Layer::Frlab, Layer::Service) if d.kind != "dev" => {
                    Some("frlab starts services as processes; only its tests link them")
                }
                _ => None,
            };
            if let Some(rule) = broken {
                found.push(format!("{what}: {rule}"));
            }
        }
    }
    found
}

fn workspace_metadata() -> Value {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON")
}

#[test]
fn imports_run_one_way() {
    let crates = crates(&workspace_metadata());
    let names: Vec<&str> = crates.iter().map(|k| k.name.as_str()).collect();
    for expected in ["lab-proto", "lab-chaos", "gateway", CONTROLLER, "frlab"] {
        assert!(
            names.contains(&expected),
            "{expected} not found in {names:?}"
        );
    }
    let found = violations(&crates);
    assert!(
        found.is_empty(),
        "the import rule is broken:\n{}",
        found.join("\n")
    );
}

/// The check itself fails on each kind of breach (a synthetic workspace).
#[test]
fn each_breach_is_reported() {
    let metadata = serde_json::json!({"packages": [
        {"name": "lab-proto", "manifest_path": "/w/libs/proto/Cargo.toml",
         "dependencies": [{"name": "lab-chaos", "kind": null, "path": "/w/libs/chaos"}]},
        {"name": "lab-chaos", "manifest_path": "/w/libs/chaos/Cargo.toml",
         "dependencies": [{"name": "kube", "kind": null},
                          {"name": "orders", "kind": "dev", "path": "/w/services/orders"}]},
        {"name": "gateway", "manifest_path": "/w/services/gateway/Cargo.toml",
         "dependencies": [{"name": "orders", "kind": null, "path": "/w/services/orders"},
                          {"name": "frlab", "kind": "dev", "path": "/w/loadtest"}]},
        {"name": "orders", "manifest_path": "/w/services/orders/Cargo.toml",
         "dependencies": [{"name": "k8s-openapi", "kind": null}]},
        {"name": CONTROLLER, "manifest_path": "/w/services/chaos-controller/Cargo.toml",
         "dependencies": [{"name": "kube", "kind": null}, {"name": "k8s-openapi", "kind": null}]},
        {"name": "frlab", "manifest_path": "/w/loadtest/Cargo.toml",
         "dependencies": [{"name": "payments", "kind": null, "path": "/w/services/payments"},
                          {"name": "orders", "kind": "dev", "path": "/w/services/orders"}]},
        {"name": "payments", "manifest_path": "/w/services/payments/Cargo.toml",
         "dependencies": []},
    ]});
    let found = violations(&crates(&metadata));
    let expect = [
        "lab-proto (Proto) depends on lab-chaos",
        "lab-chaos (Lib) depends on kube",
        "lab-chaos (Lib) depends on orders (dev)",
        "gateway (Service) depends on orders (normal)",
        "gateway (Service) depends on frlab (dev)",
        "orders (Service) depends on k8s-openapi",
        "frlab (Frlab) depends on payments (normal)",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "{e} not reported: {found:#?}"
        );
    }
    assert_eq!(found.len(), expect.len(), "{found:#?}");
}

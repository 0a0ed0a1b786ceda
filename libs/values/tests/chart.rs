//! The chart's offline checks, with the tools of `.tools/bin` (`make tools`): helm lint
//! --strict; helm template for the defaults, every profile and the local cluster's values at
//! Kubernetes 1.33, 1.27 and 1.20 (the capabilities pick the PodDisruptionBudget API and the
//! probe kind); the schema enforced by helm; yamllint on values and rendered output;
//! kubernetes-validate --strict on rendered output (1.25+: its oldest schemas); the
//! FaultInjection manifests against the CRD's own schema; what matters in the rendered
//! objects; and that the Dockerfile and k8s/local/image.py ship the same binaries.

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use common::{SERVICES, docs, helm, object, of_kind, run, run_ok, template, template_err, tool};
use lab_resilience::config::Profile;
use serde_json::{Value, json};

/// (label, extra helm args) of every values set the chart must render: the defaults,
/// every optional part on, the local cluster's values, and each profile as `make deploy`
/// passes it.
fn value_sets() -> Vec<(String, Vec<String>)> {
    let mut sets = vec![
        ("defaults".to_string(), vec![]),
        (
            "everything-on".to_string(),
            ["console.enabled=true", "loadtest.enabled=true"]
                .iter()
                .flat_map(|s| ["--set".to_string(), s.to_string()])
                .collect(),
        ),
        (
            "everything-off".to_string(),
            [
                "postgres.enabled=false",
                "redis.enabled=false",
                "prometheus.enabled=false",
                "grafana.enabled=false",
                "jaeger.enabled=false",
                "chaosController.enabled=false",
                "networkPolicy.enabled=false",
            ]
            .iter()
            .flat_map(|s| ["--set".to_string(), s.to_string()])
            .collect(),
        ),
        (
            "local-cluster".to_string(),
            vec!["-f".into(), "k8s/local/values.yaml".into()],
        ),
    ];
    for (name, path) in common::profiles() {
        sets.push((
            name.clone(),
            vec![
                "-f".into(),
                path.display().to_string(),
                "--set".into(),
                format!("profileName={name}"),
            ],
        ));
    }
    sets
}

fn args(set: &[String]) -> Vec<&str> {
    set.iter().map(String::as_str).collect()
}

/// Lint also executes NOTES.txt, so a broken note fails here.
#[test]
fn helm_lint_strict_passes_for_the_defaults_and_every_profile() {
    for (label, set) in value_sets() {
        for kube in common::KUBE_VERSIONS {
            let mut cmd = helm();
            cmd.args(["lint", "--strict"])
                .arg(common::chart())
                .args(["--kube-version", kube])
                .args(args(&set));
            let out = run_ok(&mut cmd);
            assert!(out.contains("0 chart(s) failed"), "{label} @ {kube}: {out}");
        }
    }
}

#[test]
fn rendered_output_passes_yamllint_and_kubernetes_validate_strict() {
    let dir = tempfile::tempdir().unwrap();
    for kube in common::KUBE_VERSIONS {
        let mut files = Vec::new();
        for (label, set) in value_sets() {
            let rendered = template(kube, &args(&set));
            assert!(
                docs(&rendered).len() > 10,
                "{label} @ {kube} renders the lab"
            );
            let file = dir.path().join(format!("{label}-{kube}.yaml"));
            std::fs::write(&file, rendered).unwrap();
            files.push(file);
        }
        // The CRD too (helm installs it from crds/).
        files.push(common::chart().join("crds/faultinjection.yaml"));
        run_ok(
            Command::new(tool("yamllint"))
                .current_dir(common::root())
                .args(["--strict", "-c", ".yamllint", "-f", "parsable"])
                .args(&files),
        );
        if !common::validator_knows(kube) {
            continue;
        }
        // kubernetes-validate takes about 1.5 s a file: the profiles render the same objects
        // but for the profile ConfigMap's data and the checksum, so one profile stands for
        // them (yamllint above saw them all).
        let validated: Vec<_> = files
            .iter()
            .filter(|f| {
                let name = f.file_name().unwrap().to_string_lossy();
                name.starts_with("every")
                    || name.starts_with("defaults")
                    || name.starts_with("local-cluster")
                    || name.starts_with("g-adaptive")
                    || name.ends_with("faultinjection.yaml")
            })
            .collect();
        assert_eq!(validated.len(), 6, "{validated:?}");
        let mut cmd = Command::new(tool("kubernetes-validate"));
        cmd.args(["--strict", "--kubernetes-version", kube])
            .args(&validated);
        let out = run(&mut cmd);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && !text.contains("ERROR"),
            "kubernetes-validate --strict @ {kube}:\n{text}"
        );
        assert!(
            text.contains("passed for resource deployment/frlab-gateway"),
            "{text}"
        );
    }
}

#[test]
fn values_and_profile_files_pass_yamllint() {
    let root = common::root();
    let mut cmd = Command::new(tool("yamllint"));
    cmd.current_dir(&root)
        .args(["--strict", "-c", ".yamllint", "-f", "parsable"])
        .args([
            "helm/frlab/values.yaml",
            "helm/frlab/Chart.yaml",
            "helm/profiles",
            "k8s/chaos",
            "k8s/kind.yaml",
            "k8s/local/values.yaml",
            ".yamllint",
        ]);
    run_ok(&mut cmd);
}

#[test]
fn helm_enforces_the_schema_and_refuses_unknown_keys() {
    let err = template_err(&["--set", "replicaz=2"]);
    assert!(err.contains("replicaz"), "{err}");
    let err = template_err(&["--set", "services.shipping.replicas=1"]);
    assert!(err.contains("shipping"), "{err}");
    let err = template_err(&["--set", "services.gateway.replicas=0"]);
    assert!(err.contains("replicas"), "{err}");
    let err = template_err(&["--set", "resilience.client.retyr.max_attempts=2"]);
    assert!(err.contains("retyr"), "{err}");
    let err = template_err(&["--set", "resilience.hops.shipping.retry.max_attempts=2"]);
    assert!(err.contains("shipping"), "{err}");
    let err = template_err(&["--set", "resilience.client.retry.retry_on[0]=UNAVAIL"]);
    assert!(err.contains("retry_on"), "{err}");
    // A built-in name is required when no profile is given in the values.
    let err = template_err(&["--set", "profileName=z-magic"]);
    assert!(
        err.contains("z-magic") && err.contains("a-baseline"),
        "{err}"
    );
}

/// A container's ports as (name, number).
fn container_ports(container: &Value) -> Vec<(String, u64)> {
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["containerPort"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Every pod spec of the rendered objects: (kind/name, pod spec).
fn pod_specs(docs: &[Value]) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for d in docs {
        let id = format!("{}/{}", d["kind"].as_str().unwrap(), d["metadata"]["name"]);
        match d["kind"].as_str() {
            Some("Deployment" | "StatefulSet" | "Job") => {
                out.push((id, &d["spec"]["template"]["spec"]))
            }
            Some("Pod") => out.push((id, &d["spec"])),
            _ => {}
        }
    }
    out
}

#[test]
fn every_workload_runs_restricted_as_non_root_with_resources() {
    let rendered = docs(&template(
        common::KUBE_VERSIONS[0],
        &[
            "--set",
            "console.enabled=true",
            "--set",
            "loadtest.enabled=true",
        ],
    ));
    let specs = pod_specs(&rendered);
    assert!(specs.len() >= 12, "{}", specs.len());
    for (id, spec) in specs {
        let pod = &spec["securityContext"];
        assert_eq!(pod["runAsNonRoot"], json!(true), "{id}");
        assert!(pod["runAsUser"].as_u64().unwrap() > 0, "{id}");
        assert_eq!(pod["seccompProfile"]["type"], "RuntimeDefault", "{id}");
        for c in spec["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], json!(false), "{id}");
            assert_eq!(sc["readOnlyRootFilesystem"], json!(true), "{id}");
            assert_eq!(sc["runAsNonRoot"], json!(true), "{id}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{id}");
            assert!(c["resources"]["requests"]["memory"].is_string(), "{id}");
            assert!(c["resources"]["limits"]["memory"].is_string(), "{id}");
        }
    }
}

#[test]
fn the_five_services_have_grpc_probes_named_ports_labels_and_wiring() {
    let rendered = docs(&template(common::KUBE_VERSIONS[0], &[]));
    for svc in SERVICES {
        let name = format!("frlab-{svc}");
        let d = object(&rendered, "Deployment", &name);
        let labels = &d["spec"]["template"]["metadata"]["labels"];
        // chaos-controller selects pods by app.kubernetes.io/name = the service.
        assert_eq!(labels["app.kubernetes.io/name"], svc, "{name}");
        assert_eq!(labels["app.kubernetes.io/part-of"], "frlab", "{name}");
        assert_eq!(labels["app.kubernetes.io/instance"], "frlab", "{name}");
        for key in [
            "app.kubernetes.io/component",
            "app.kubernetes.io/version",
            "app.kubernetes.io/managed-by",
            "helm.sh/chart",
        ] {
            assert!(labels[key].is_string(), "{name} lacks {key}");
            assert!(
                d["metadata"]["labels"][key].is_string(),
                "{name} lacks {key}"
            );
        }
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["command"],
            json!([format!("/usr/local/bin/{svc}")]),
            "{name}"
        );
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            assert_eq!(c[probe]["grpc"]["port"], json!(50051), "{name} {probe}");
            assert!(c[probe]["httpGet"].is_null() && c[probe]["exec"].is_null());
        }
        let ports = container_ports(c);
        assert_eq!(
            ports,
            vec![
                ("grpc".into(), 50051),
                ("http".into(), 8081),
                ("admin".into(), 50061)
            ],
            "{name}"
        );
        let env: Vec<&Value> = c["env"].as_array().unwrap().iter().collect();
        let get = |k: &str| env.iter().find(|e| e["name"] == k).copied();
        assert_eq!(get("FRLAB_LISTEN").unwrap()["value"], "0.0.0.0:50051");
        assert_eq!(get("FRLAB_ADMIN_LISTEN").unwrap()["value"], "0.0.0.0:50061");
        assert_eq!(
            get("FRLAB_ADMIN_TOKEN").unwrap()["valueFrom"]["secretKeyRef"]["name"],
            "frlab-admin-token"
        );
        assert_eq!(get("FRLAB_DATA_DIR").unwrap()["value"], "/var/lib/frlab");
        assert_eq!(
            get("OTEL_EXPORTER_OTLP_ENDPOINT").unwrap()["value"],
            "http://frlab-jaeger:4317"
        );
        assert_eq!(
            get("FRLAB_DATABASE_URL").is_some(),
            svc != "gateway",
            "{name}"
        );
        // Every downstream URL names a Service the chart renders, on its grpc port.
        for e in &env {
            let value = e["value"].as_str().unwrap_or("");
            if let Some(host) = value
                .strip_prefix("http://frlab-")
                .and_then(|v| v.strip_suffix(":50051"))
            {
                let s = object(&rendered, "Service", &format!("frlab-{host}"));
                assert!(
                    s["spec"]["ports"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "grpc" && p["port"] == 50051)
                );
            }
        }
        // FRLAB_DATA_DIR is writable on a read-only root: an emptyDir.
        let volumes = d["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
        assert!(
            volumes
                .iter()
                .any(|v| v["name"] == "data" && v["emptyDir"].is_object())
        );
        let s = object(&rendered, "Service", &name);
        assert_eq!(s["spec"]["selector"]["app.kubernetes.io/name"], svc);
    }
    let gateway = object(&rendered, "Deployment", "frlab-gateway");
    let env = gateway["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap();
    assert!(env.iter().any(|e| e["name"] == "GATEWAY_ORDERS_URL" && e["value"] == "http://frlab-orders:50051"));
}

fn checksum(rendered: &[Value], svc: &str) -> String {
    object(rendered, "Deployment", &format!("frlab-{svc}"))["spec"]["template"]["metadata"]["annotations"]
        ["checksum/config"]
        .as_str()
        .expect("checksum/config annotation")
        .to_string()
}

#[test]
fn the_profile_reaches_the_services_and_switching_it_rolls_the_pods() {
    let kube = common::KUBE_VERSIONS[0];
    let mut sums = BTreeSet::new();
    for (name, path) in common::profiles() {
        let set = [
            "-f",
            path.to_str().unwrap(),
            "--set",
            &format!("profileName={name}"),
        ]
        .map(String::from);
        let rendered = docs(&template(kube, &args(&set)));
        // The rendered file is the profile the services would read from helm/profiles.
        let cm = object(&rendered, "ConfigMap", "frlab-profile");
        let file = cm["data"][format!("{name}.yaml")]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no {name}.yaml in the profile ConfigMap"));
        let expected = Profile::load(&path).unwrap();
        assert_eq!(Profile::parse(file).unwrap(), expected, "{name}");
        let d = object(&rendered, "Deployment", "frlab-payments");
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        let profile = c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == "FRLAB_PROFILE")
            .unwrap();
        assert_eq!(profile["value"], format!("/etc/frlab/profile/{name}.yaml"));
        // Same checksum on every service; one per profile.
        let sum = checksum(&rendered, "gateway");
        for svc in SERVICES {
            assert_eq!(checksum(&rendered, svc), sum, "{name} {svc}");
        }
        // Rendering again gives the same checksum (nothing random in it).
        let again = docs(&template(kube, &args(&set)));
        assert_eq!(checksum(&again, "orders"), sum, "{name}");
        sums.insert(sum);
    }
    assert_eq!(
        sums.len(),
        common::profiles().len(),
        "each profile has its own checksum"
    );
    // No profile given: the built-in f-full by name, no file.
    let rendered = docs(&template(kube, &[]));
    let c = &object(&rendered, "Deployment", "frlab-orders")["spec"]["template"]["spec"]["containers"]
        [0];
    let profile = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "FRLAB_PROFILE")
        .unwrap();
    assert_eq!(profile["value"], "f-full");
    assert!(!sums.contains(&checksum(&rendered, "orders")));
}

fn pdbs(rendered: &[Value]) -> BTreeSet<String> {
    of_kind(rendered, "PodDisruptionBudget")
        .iter()
        .map(|p| {
            p["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
fn a_pdb_exactly_where_replicas_exceed_one() {
    let kube = common::KUBE_VERSIONS[0];
    let defaults = docs(&template(kube, &[]));
    assert_eq!(pdbs(&defaults), BTreeSet::from(["gateway".to_string()]));
    let more = docs(&template(
        kube,
        &[
            "--set",
            "services.payments.replicas=3",
            "--set",
            "services.gateway.replicas=1",
        ],
    ));
    assert_eq!(pdbs(&more), BTreeSet::from(["payments".to_string()]));
    assert_eq!(
        object(&more, "Deployment", "frlab-payments")["spec"]["replicas"],
        3
    );
    for pdb in of_kind(&more, "PodDisruptionBudget") {
        assert_eq!(pdb["spec"]["minAvailable"], 1);
    }
}

#[test]
fn only_the_controller_and_the_console_reach_the_admin_port() {
    for console in [false, true] {
        let rendered = docs(&template(
            common::KUBE_VERSIONS[0],
            &["--set", &format!("console.enabled={console}")],
        ));
        let policies = of_kind(&rendered, "NetworkPolicy");
        assert_eq!(policies.len(), 1);
        let np = policies[0];
        assert_eq!(
            np["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"],
            "service"
        );
        // The policy selects exactly the five services' pods.
        for svc in SERVICES {
            let labels = &object(&rendered, "Deployment", &format!("frlab-{svc}"))["spec"]["template"]
                ["metadata"]["labels"];
            for (k, v) in np["spec"]["podSelector"]["matchLabels"]
                .as_object()
                .unwrap()
            {
                assert_eq!(&labels[k], v, "{svc} {k}");
            }
        }
        let rules = np["spec"]["ingress"].as_array().unwrap();
        for rule in rules {
            let ports: Vec<&str> = rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["port"].as_str().unwrap())
                .collect();
            if ports.contains(&"admin") {
                assert_eq!(ports, ["admin"], "the admin rule opens nothing else");
                let from: BTreeSet<&str> = rule["from"]
                    .as_array()
                    .expect("the admin rule has sources")
                    .iter()
                    .map(|f| {
                        f["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
                            .as_str()
                            .unwrap()
                    })
                    .collect();
                let mut expected = BTreeSet::from(["chaos-controller"]);
                if console {
                    expected.insert("console");
                }
                assert_eq!(from, expected);
            } else {
                assert!(rule["from"].is_null(), "grpc/http are open to the cluster");
                assert_eq!(ports, ["grpc", "http"]);
            }
        }
        assert!(rules.iter().any(|r| r["ports"][0]["port"] == "admin"));
        // The controller's own pod carries the label the rule admits.
        let ctrl = object(&rendered, "Deployment", "frlab-chaos-controller");
        assert_eq!(
            ctrl["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"],
            "chaos-controller"
        );
    }
}

#[test]
fn rbac_is_least_privilege_and_namespaced() {
    let rendered = docs(&template(common::KUBE_VERSIONS[0], &[]));
    assert!(
        of_kind(&rendered, "ClusterRole").is_empty()
            && of_kind(&rendered, "ClusterRoleBinding").is_empty()
    );
    let role = object(&rendered, "Role", "frlab-chaos-controller");
    for rule in role["rules"].as_array().unwrap() {
        let verbs: BTreeSet<&str> = rule["verbs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            !verbs.contains("*") && !verbs.contains("delete") && !verbs.contains("create"),
            "{rule}"
        );
        if rule["resources"] == json!(["pods"]) {
            assert_eq!(verbs, BTreeSet::from(["get", "list", "watch"]));
        }
    }
    let ctrl = object(&rendered, "Deployment", "frlab-chaos-controller");
    let spec = &ctrl["spec"]["template"]["spec"];
    assert_eq!(spec["serviceAccountName"], "frlab-chaos-controller");
    assert_eq!(spec["containers"][0]["args"][0], "--namespace=lab");
    // Only the two pods that talk to the API server mount a token.
    for (id, spec) in pod_specs(&rendered) {
        let mounts = spec["automountServiceAccountToken"] == json!(true);
        let expected = id.ends_with("chaos-controller\"") || id.ends_with("prometheus\"");
        assert_eq!(mounts, expected, "{id}");
    }
}

#[test]
fn console_stack_test_hook_and_load_job() {
    let rendered = docs(&template(
        common::KUBE_VERSIONS[0],
        &[
            "--set",
            "console.enabled=true",
            "--set",
            "loadtest.enabled=true",
            "--set",
            "loadtest.rate=75",
            "--set",
            "loadtest.clientRetries=3",
        ],
    ));
    let stack: Value = serde_json::from_str(
        object(&rendered, "ConfigMap", "frlab-console")["data"]["stack.json"]
            .as_str()
            .unwrap(),
    )
    .expect("stack.json is JSON");
    let entries = stack.as_array().unwrap();
    assert_eq!(entries.len(), 5);
    for e in entries {
        let svc = e["service"].as_str().unwrap();
        assert!(SERVICES.contains(&svc));
        assert_eq!(e["grpc"], format!("frlab-{svc}:50051"));
        assert_eq!(e["http"], format!("frlab-{svc}:8081"));
        assert_eq!(e["admin"], format!("frlab-{svc}:50061"));
        object(&rendered, "Service", &format!("frlab-{svc}"));
    }
    let console = object(&rendered, "Deployment", "frlab-console");
    let c = &console["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        c["args"],
        json!([
            "console",
            "--listen=0.0.0.0:8080",
            "--stack=/etc/frlab/stack.json"
        ])
    );

    let hook = object(&rendered, "Pod", "frlab-test-order");
    assert_eq!(hook["metadata"]["annotations"]["helm.sh/hook"], "test");
    // Kept after a pass: `helm test --logs` reads the pod.
    assert_eq!(
        hook["metadata"]["annotations"]["helm.sh/hook-delete-policy"],
        "before-hook-creation"
    );
    assert_eq!(hook["spec"]["containers"][0]["args"][0], "order");
    assert_eq!(
        hook["spec"]["containers"][0]["args"][1],
        "--gateway=http://frlab-gateway:50051"
    );

    let job = object(&rendered, "Job", "frlab-load");
    let args = &job["spec"]["template"]["spec"]["containers"][0]["args"];
    assert_eq!(args[0], "load");
    assert!(
        args.as_array().unwrap().contains(&json!("--rate=75")),
        "{args}"
    );
    assert!(
        args.as_array()
            .unwrap()
            .contains(&json!("--client-retries=3")),
        "{args}"
    );
    // The release itself does not run the load.
    assert!(of_kind(&docs(&template(common::KUBE_VERSIONS[0], &[])), "Job").is_empty());
}

/// The CRD's openAPIV3Schema as a JSON schema that refuses unknown fields, as the API
/// server does for `kubectl apply` (field validation Strict, the default since 1.27).
fn strict_crd_schema() -> Value {
    let crd: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(common::root().join("k8s/crds/faultinjection.yaml")).unwrap(),
    )
    .unwrap();
    let mut schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone();
    fn close(v: &mut Value) {
        match v {
            Value::Object(map) => {
                if map.contains_key("properties")
                    && !map.contains_key("additionalProperties")
                    && !map.contains_key("x-kubernetes-preserve-unknown-fields")
                {
                    map.insert("additionalProperties".into(), json!(false));
                }
                for (k, child) in map.iter_mut() {
                    if k != "metadata" {
                        close(child);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(close),
            _ => {}
        }
    }
    close(&mut schema);
    // The fields the API server adds to every CRD's schema by itself.
    let props = schema["properties"]
        .as_object_mut()
        .expect("root properties");
    props.insert(
        "apiVersion".into(),
        json!({ "const": "lab.frlab.dev/v1alpha1" }),
    );
    props.insert("kind".into(), json!({ "const": "FaultInjection" }));
    props.insert(
        "metadata".into(),
        json!({ "type": "object", "required": ["name"], "properties": { "name": { "type": "string" } } }),
    );
    schema["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
    schema
}

#[test]
fn faultinjection_manifests_match_the_crd_schema_and_the_chart_ships_that_crd() {
    let root = common::root();
    assert_eq!(
        std::fs::read_to_string(root.join("k8s/crds/faultinjection.yaml")).unwrap(),
        std::fs::read_to_string(root.join("helm/frlab/crds/faultinjection.yaml")).unwrap(),
        "helm/frlab/crds/ is a copy of k8s/crds/faultinjection.yaml: run `make crds`"
    );
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("faultinjection.schema.json");
    std::fs::write(&schema, strict_crd_schema().to_string()).unwrap();
    let mut manifests: Vec<_> = std::fs::read_dir(root.join("k8s/chaos"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    manifests.sort();
    assert!(manifests.len() >= 6, "{manifests:?}");
    for m in &manifests {
        let doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(m).unwrap()).unwrap();
        assert_eq!(doc["kind"], "FaultInjection", "{}", m.display());
    }
    let check = |files: &[std::path::PathBuf]| {
        let mut cmd = Command::new(tool("check-jsonschema"));
        cmd.arg("--schemafile").arg(&schema).args(files);
        run(&mut cmd)
    };
    let out = check(&manifests);
    assert!(
        out.status.success(),
        "k8s/chaos against the CRD schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The check can fail: a misspelled field and a bad enum value are caught.
    let text = std::fs::read_to_string(&manifests[0]).unwrap();
    for (from, to) in [
        ("spec:\n", "spec:\n  selectr: {}\n"),
        ("action: ", "action: explode-"),
    ] {
        assert!(text.contains(from));
        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, text.replacen(from, to, 1)).unwrap();
        assert!(
            !check(&[bad]).status.success(),
            "{to:?} should fail the schema"
        );
    }
}

#[test]
fn the_image_ships_every_binary_the_chart_runs_as_user_65532() {
    let root = common::root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let shipped = dockerfile_binaries();
    assert!(dockerfile.contains("\nUSER 65532:65532\n"));
    assert!(dockerfile.contains("cargo build --release --locked --workspace --bins"));
    // Every binary of the workspace but the schema generators.
    let meta: Value = serde_json::from_str(&run_ok(
        Command::new(env!("CARGO")).current_dir(&root).args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ]),
    ))
    .unwrap();
    let bins: BTreeSet<String> = meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .filter(|t| t["kind"].as_array().unwrap().contains(&json!("bin")))
        .map(|t| t["name"].as_str().unwrap().to_string())
        .filter(|n| !n.ends_with("gen"))
        .collect();
    assert_eq!(
        bins, shipped,
        "the Dockerfile copies every workspace binary"
    );
    let rendered = docs(&template(
        common::KUBE_VERSIONS[0],
        &[
            "--set",
            "console.enabled=true",
            "--set",
            "loadtest.enabled=true",
        ],
    ));
    for (id, spec) in pod_specs(&rendered) {
        for c in spec["containers"].as_array().unwrap() {
            if c["image"] == "frlab:dev" {
                let cmd = c["command"][0]
                    .as_str()
                    .unwrap_or_else(|| panic!("{id} has a command"));
                let bin = cmd.strip_prefix("/usr/local/bin/").unwrap();
                assert!(
                    shipped.contains(bin),
                    "{id} runs {bin}, which the image lacks"
                );
                assert_eq!(spec["securityContext"]["runAsUser"], 65532, "{id}");
            }
        }
    }
}

/// A container's probe actions, as (probe, action) with the action's JSON.
fn probe_actions(container: &Value) -> Vec<(&'static str, Value)> {
    ["startupProbe", "readinessProbe", "livenessProbe"]
        .into_iter()
        .map(|p| {
            let mut action = container[p].clone();
            for k in ["periodSeconds", "failureThreshold", "timeoutSeconds"] {
                action.as_object_mut().unwrap().remove(k);
            }
            (p, action)
        })
        .collect()
}

#[test]
fn probes_and_the_pdb_api_follow_the_cluster_version() {
    // Native gRPC probes from 1.24 (on by default; GA in 1.27), an exec of the image's
    // health-probe before; PodDisruptionBudget policy/v1 from 1.21, policy/v1beta1 before.
    for (kube, native, pdb) in [
        ("1.20.2", false, "policy/v1beta1"),
        ("1.21.0", false, "policy/v1"),
        ("1.23.17", false, "policy/v1"),
        ("1.24.0", true, "policy/v1"),
        ("1.33.0", true, "policy/v1"),
    ] {
        let rendered = docs(&template(kube, &[]));
        for svc in SERVICES {
            let d = object(&rendered, "Deployment", &format!("frlab-{svc}"));
            for (probe, action) in probe_actions(&d["spec"]["template"]["spec"]["containers"][0]) {
                let expected = if native {
                    json!({ "grpc": { "port": 50051 } })
                } else {
                    json!({ "exec": { "command": ["/usr/local/bin/health-probe", "50051"] } })
                };
                assert_eq!(action, expected, "{svc} {probe} @ {kube}");
            }
        }
        let pdbs = of_kind(&rendered, "PodDisruptionBudget");
        assert_eq!(pdbs.len(), 1, "@ {kube}");
        assert_eq!(pdbs[0]["apiVersion"], pdb, "@ {kube}");
    }
}

#[test]
fn host_network_puts_each_service_on_its_own_ports_of_127_0_0_1() {
    let rendered = docs(&template("1.20.2", &["-f", "k8s/local/values.yaml"]));
    let ports = |svc: &str| -> (u64, u64, u64) {
        let i = SERVICES.iter().position(|s| *s == svc).unwrap() as u64;
        (21051 + i, 21081 + i, 21061 + i)
    };
    let mut seen = BTreeSet::new();
    for svc in SERVICES {
        let d = object(&rendered, "Deployment", &format!("frlab-{svc}"));
        let (grpc, http, admin) = ports(svc);
        for p in [grpc, http, admin] {
            assert!(seen.insert(p), "port {p} twice");
        }
        assert_eq!(d["spec"]["replicas"], 1, "{svc}");
        assert_eq!(d["spec"]["strategy"]["type"], "Recreate", "{svc}");
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["hostNetwork"], json!(true), "{svc}");
        let c = &spec["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Never", "{svc}");
        let env = c["env"].as_array().unwrap();
        let get = |k: &str| {
            env.iter()
                .find(|e| e["name"] == k)
                .map(|e| e["value"].as_str().unwrap().to_string())
        };
        assert_eq!(get("FRLAB_LISTEN").unwrap(), format!("127.0.0.1:{grpc}"));
        assert_eq!(
            get("FRLAB_HTTP_LISTEN").unwrap(),
            format!("127.0.0.1:{http}")
        );
        assert_eq!(
            get("FRLAB_ADMIN_LISTEN").unwrap(),
            format!("127.0.0.1:{admin}")
        );
        // No Postgres, Redis or Jaeger: SQLite in the emptyDir, keys in memory.
        for absent in [
            "FRLAB_DATABASE_URL",
            "FRLAB_REDIS_URL",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ] {
            assert!(get(absent).is_none(), "{svc} {absent}");
        }
        // Calls go to 127.0.0.1 and the callee's own gRPC port.
        for e in env
            .iter()
            .filter(|e| e["name"].as_str().unwrap().ends_with("_URL"))
        {
            let var = e["name"].as_str().unwrap();
            let target = SERVICES
                .iter()
                .find(|t| var.contains(&t.to_uppercase()) && !var.starts_with(&t.to_uppercase()))
                .unwrap_or_else(|| panic!("{var} names no service"));
            assert_eq!(
                e["value"],
                format!("http://127.0.0.1:{}", ports(target).0),
                "{svc} {var}"
            );
        }
        // The chaos-controller finds the admin port by its name; probes ask the gRPC port.
        let named = container_ports(c);
        assert_eq!(
            named,
            [
                ("grpc".into(), grpc),
                ("http".into(), http),
                ("admin".into(), admin)
            ]
        );
        for (probe, action) in probe_actions(c) {
            assert_eq!(
                action,
                json!({ "exec": { "command": ["/usr/local/bin/health-probe", grpc.to_string()] } }),
                "{svc} {probe}"
            );
        }
    }
    assert!(of_kind(&rendered, "PodDisruptionBudget").is_empty());
    // None of the bundled servers (their images cannot be pulled there).
    for part in ["postgres", "redis", "prometheus", "grafana", "jaeger"] {
        let name = format!("frlab-{part}");
        assert!(
            !rendered
                .iter()
                .any(|d| d["metadata"]["name"] == name.as_str()),
            "{name}"
        );
    }
    // chaos-controller reaches the API server at the values' address, on the node's network.
    let ctrl = object(&rendered, "Deployment", "frlab-chaos-controller");
    let spec = &ctrl["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], json!(true));
    let env = spec["containers"][0]["env"].as_array().unwrap();
    for (k, v) in [
        ("KUBERNETES_SERVICE_HOST", "127.0.0.1"),
        ("KUBERNETES_SERVICE_PORT", "16443"),
    ] {
        assert!(
            env.iter().any(|e| e["name"] == k && e["value"] == v),
            "{k}: {env:?}"
        );
    }
    // helm test and the load Job call the gateway on its host port.
    let rendered = docs(&template(
        "1.20.2",
        &[
            "-f",
            "k8s/local/values.yaml",
            "--set",
            "loadtest.enabled=true",
            "--set",
            "console.enabled=true",
        ],
    ));
    let hook = object(&rendered, "Pod", "frlab-test-order");
    assert_eq!(hook["spec"]["hostNetwork"], json!(true));
    assert_eq!(
        hook["spec"]["containers"][0]["args"][1],
        "--gateway=http://127.0.0.1:21051"
    );
    let job = object(&rendered, "Job", "frlab-load");
    assert_eq!(job["spec"]["template"]["spec"]["hostNetwork"], json!(true));
    assert!(
        job["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .unwrap()
            .contains(&json!("--gateway=http://127.0.0.1:21051"))
    );
    let stack: Value = serde_json::from_str(
        object(&rendered, "ConfigMap", "frlab-console")["data"]["stack.json"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        stack[0],
        json!({ "service": "gateway", "grpc": "127.0.0.1:21051", "http": "127.0.0.1:21081", "admin": "127.0.0.1:21061" })
    );
    // Without hostNetwork nothing of it shows.
    let plain = docs(&template("1.20.2", &[]));
    for (id, spec) in pod_specs(&plain) {
        assert!(spec["hostNetwork"].is_null(), "{id}");
    }
}

#[test]
fn host_network_refuses_what_cannot_share_one_node() {
    let local = ["-f", "k8s/local/values.yaml"];
    for (set, expected) in [
        (
            "services.orders.replicas=2",
            "services.orders.replicas is 2",
        ),
        (
            "hostNetwork.ports.orders.http=21081",
            "hostNetwork.ports.orders.http: port 21081 is also hostNetwork.ports.gateway.http",
        ),
        ("redis.enabled=true", "redis.enabled must be false"),
        (
            "prometheus.enabled=true",
            "prometheus.enabled must be false",
        ),
    ] {
        let mut args = local.to_vec();
        args.extend(["--set", set]);
        let err = template_err(&args);
        assert!(err.contains(expected), "{set}: {err}");
    }
}

/// The binaries the Dockerfile's `for bin in ...` copy loop ships.
fn dockerfile_binaries() -> BTreeSet<String> {
    let dockerfile = std::fs::read_to_string(common::root().join("Dockerfile")).unwrap();
    let line = dockerfile
        .lines()
        .find(|l| l.trim_start().starts_with("&& for bin in "))
        .expect("the Dockerfile's `for bin in ...` copy loop");
    line.trim_start()
        .trim_start_matches("&& for bin in ")
        .split(';')
        .next()
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn the_image_without_docker_ships_what_the_dockerfile_ships_and_what_they_need() {
    let root = common::root();
    let script = root.join("k8s/local/image.py");
    let listed: BTreeSet<String> = run_ok(Command::new("python3").arg(&script).arg("list"))
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        listed,
        dockerfile_binaries(),
        "k8s/local/image.py and the Dockerfile ship the same binaries"
    );

    // Assemble from stand-ins: a glibc-dynamic program under each binary's name.
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = dir.path().join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    for name in &listed {
        std::fs::copy("/usr/bin/true", bin_dir.join(name)).unwrap();
    }
    let out = dir.path().join("frlab.tar");
    let args = |out: &std::path::Path| {
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg("build")
            .arg("--bin-dir")
            .arg(&bin_dir)
            .arg("--out")
            .arg(out)
            .args(["--tag", "frlab:test"]);
        cmd
    };
    run_ok(&mut args(&out));
    let unpacked = dir.path().join("archive");
    std::fs::create_dir(&unpacked).unwrap();
    run_ok(
        Command::new("tar")
            .arg("-xf")
            .arg(&out)
            .arg("-C")
            .arg(&unpacked),
    );
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(unpacked.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest[0]["RepoTags"], json!(["frlab:test"]));
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(unpacked.join(manifest[0]["Config"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(config["config"]["User"], "65532:65532");
    assert_eq!(
        config["config"]["Entrypoint"],
        json!(["/usr/local/bin/frlab"])
    );
    let layer = unpacked.join(manifest[0]["Layers"][0].as_str().unwrap());
    let listing = run_ok(Command::new("tar").arg("-tvf").arg(&layer));
    let paths: BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    for name in &listed {
        assert!(
            paths.contains(format!("usr/local/bin/{name}").as_str()),
            "{name}:\n{listing}"
        );
    }
    // What a glibc-dynamic binary needs at run time, as distroless/cc has it.
    for needed in [
        "lib64/ld-linux-x86-64.so.2",
        "lib/x86_64-linux-gnu/libc.so.6",
        "etc/ssl/certs/ca-certificates.crt",
        "etc/passwd",
        "tmp/",
    ] {
        assert!(paths.contains(needed), "{needed}:\n{listing}");
    }
    let passwd = run_ok(
        Command::new("tar")
            .arg("-xOf")
            .arg(&layer)
            .arg("etc/passwd"),
    );
    assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    // The same files give the same archive, byte for byte.
    let again = dir.path().join("again.tar");
    run_ok(&mut args(&again));
    assert!(
        std::fs::read(&out).unwrap() == std::fs::read(&again).unwrap(),
        "not reproducible"
    );
    // A missing binary is named.
    std::fs::remove_file(bin_dir.join("payments")).unwrap();
    let failed = run(&mut args(&dir.path().join("x.tar")));
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("payments is missing"));
}

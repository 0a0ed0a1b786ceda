//! The CRD: the committed YAML is what the type generates, and its schema is one that
//! Kubernetes accepts (structural: no `$ref`, no `anyOf`/`oneOf`/`allOf`, a type everywhere).

use std::path::PathBuf;

use chaos_controller::crd::{self, CRD_PATH, CRD_REGENERATE};
use chaos_controller::{FaultInjection, FaultInjectionStatus, Phase};
use kube::Resource;
use serde_json::{Value, json};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_committed_crd_is_the_one_the_type_generates() {
    let path = workspace_root().join(CRD_PATH);
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{CRD_PATH}: {e}; generate it with `{CRD_REGENERATE}`"));
    let generated = crd::crd_yaml();
    assert!(
        committed == generated,
        "{CRD_PATH} differs from what the FaultInjection type generates; regenerate it with \
         `{CRD_REGENERATE}` (from the workspace root) and commit the result"
    );
}

#[test]
fn the_crd_names_and_columns() {
    let crd = serde_json::to_value(crd::crd()).unwrap();
    assert_eq!(crd["metadata"]["name"], "faultinjections.lab.frlab.dev");
    assert_eq!(crd["spec"]["group"], "lab.frlab.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "FaultInjection");
    assert_eq!(crd["spec"]["names"]["shortNames"], json!(["fi"]));
    let version = &crd["spec"]["versions"][0];
    assert_eq!(version["name"], "v1alpha1");
    assert_eq!(version["subresources"]["status"], json!({}));
    let columns: Vec<&str> = version["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        columns,
        ["Service", "Action", "Duration", "Phase", "Expiry", "Age"]
    );
}

/// Walks a schema and returns every violation of Kubernetes' structural-schema rules that
/// the API server would reject.
fn structural_violations(schema: &Value, path: &str, out: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        out.push(format!("{path}: not an object"));
        return;
    };
    for banned in [
        "$ref",
        "$schema",
        "$defs",
        "definitions",
        "anyOf",
        "oneOf",
        "allOf",
        "not",
    ] {
        if obj.contains_key(banned) {
            out.push(format!("{path}: has {banned}"));
        }
    }
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&json!(true));
    match obj.get("type") {
        Some(Value::String(_)) => {}
        None if preserve || int_or_string => {}
        other => out.push(format!("{path}: type must be one string, got {other:?}")),
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        out.push(format!(
            "{path}: properties and additionalProperties together"
        ));
    }
    if obj.get("uniqueItems") == Some(&json!(true)) {
        out.push(format!("{path}: uniqueItems"));
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            structural_violations(sub, &format!("{path}.{name}"), out);
        }
    }
    if let Some(items) = obj.get("items") {
        structural_violations(items, &format!("{path}[]"), out);
    }
    if let Some(extra) = obj.get("additionalProperties").filter(|v| v.is_object()) {
        structural_violations(extra, &format!("{path}{{}}"), out);
    }
}

fn schema() -> Value {
    let crd = serde_json::to_value(crd::crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

#[test]
fn the_schema_is_structural() {
    let mut violations = Vec::new();
    structural_violations(&schema(), "", &mut violations);
    assert!(violations.is_empty(), "{violations:#?}");
}

#[test]
fn the_flattened_spec_appears_in_the_schema_as_the_document_has_it() {
    let schema = schema();
    let spec = &schema["properties"]["spec"];
    let mut fields: Vec<&str> = spec["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "action", "brownout", "duration", "error", "latency", "lockHold", "methods", "mode",
            "seed", "selector", "value"
        ]
    );
    let mut required: Vec<&str> = spec["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    required.sort_unstable();
    assert_eq!(required, ["action", "duration", "selector"]);
    assert_eq!(
        spec["properties"]["mode"]["enum"],
        json!(["all", "one", "fixed-percent"])
    );
    assert_eq!(
        spec["properties"]["selector"]["properties"]["labels"]["additionalProperties"]["type"],
        "string"
    );
    let status = &schema["properties"]["status"]["properties"];
    assert_eq!(
        status["phase"]["enum"],
        json!(["Pending", "Active", "Expired", "Failed"])
    );
    assert_eq!(status["expiryTime"]["format"], "date-time");
}

#[test]
fn the_same_yaml_is_a_local_document_and_a_custom_resource() {
    let yaml = r#"
apiVersion: lab.frlab.dev/v1alpha1
kind: FaultInjection
metadata:
  name: payment-errors
spec:
  selector: { service: payments, labels: { track: stable } }
  mode: fixed-percent
  value: 50
  action: error
  error: { code: UNAVAILABLE, probability: 0.2, mode: fail-fast }
  duration: 60s
  seed: 42
"#;
    let local = lab_chaos::spec::parse_documents(yaml).unwrap().remove(0);
    let cr: FaultInjection = serde_saphyr::from_str(yaml).unwrap();
    assert_eq!(cr.spec.spec, local.spec);
    assert_eq!(cr.metadata.name.as_deref(), Some("payment-errors"));
    assert_eq!(
        FaultInjection::api_version(&()),
        lab_chaos::spec::API_VERSION
    );
    assert_eq!(FaultInjection::kind(&()), lab_chaos::spec::KIND);

    // And back: the spec serializes flat, as the document had it.
    let json = serde_json::to_value(&cr).unwrap();
    assert_eq!(json["spec"], serde_json::to_value(&local.spec).unwrap());
}

#[test]
fn a_status_serializes_every_key_so_a_merge_patch_removes_stale_ones() {
    let status = FaultInjectionStatus {
        phase: Phase::Expired,
        ..FaultInjectionStatus::default()
    };
    assert_eq!(
        serde_json::to_value(&status).unwrap(),
        json!({
            "phase": "Expired",
            "injectedPods": [],
            "startTime": null,
            "expiryTime": null,
            "lastError": null,
            "observedGeneration": null,
        })
    );
}

#[test]
fn every_fault_manifest_in_k8s_chaos_is_a_valid_custom_resource() {
    let dir = workspace_root().join("k8s/chaos");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return; // no manifests in this checkout
    };
    let mut checked = 0;
    for entry in entries {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let yaml = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<FaultInjection> = serde_saphyr::from_multiple(&yaml)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for fi in docs {
            fi.spec
                .spec
                .validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    assert!(checked > 0, "no FaultInjection found in {}", dir.display());
}

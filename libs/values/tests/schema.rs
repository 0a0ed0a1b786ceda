//! values.schema.json is generated from `Values` and committed; values.yaml and every
//! profile (merged as Helm merges them) are `Values`; unknown keys are refused.

mod common;

use lab_resilience::config::Profile;
use lab_values::{Values, coalesce, schema_json};

fn yaml_to_json(text: &str) -> serde_json::Value {
    serde_saphyr::from_str(text).expect("valid YAML")
}

fn defaults() -> serde_json::Value {
    yaml_to_json(&std::fs::read_to_string(common::chart().join("values.yaml")).unwrap())
}

#[test]
fn committed_schema_is_the_generated_one() {
    let path = common::chart().join("values.schema.json");
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make chart-schema`", path.display()));
    assert!(
        committed == schema_json(),
        "helm/frlab/values.schema.json is not what lab_values::Values generates: run `make chart-schema`"
    );
}

#[test]
fn values_yaml_is_values() {
    let text = std::fs::read_to_string(common::chart().join("values.yaml")).unwrap();
    let values = Values::parse(&text).unwrap_or_else(|e| panic!("values.yaml: {e}"));
    assert_eq!(
        values.resilience,
        Some(Profile::default()),
        "values.yaml carries an empty resilience (the services' built-in f-full)"
    );
    assert_eq!(values.profile_name, "");
    for (name, svc) in values.services.iter() {
        for target in svc.calls.values() {
            let target = serde_json::to_value(target).unwrap();
            assert_ne!(target, serde_json::json!(name), "{name} calls itself");
        }
    }
}

#[test]
fn every_profile_merged_onto_the_defaults_is_values_and_the_services_profile() {
    for (name, path) in common::profiles() {
        let text = std::fs::read_to_string(&path).unwrap();
        let mut merged = defaults();
        coalesce(&mut merged, yaml_to_json(&text));
        let values = Values::from_json(merged).unwrap_or_else(|e| panic!("{name}: {e}"));
        // The chart hands `.Values.resilience` to the services: it must be the profile
        // the services themselves read from the file.
        let expected = Profile::parse(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(values.resilience, Some(expected), "{name}");
    }
}

#[test]
fn unknown_keys_are_refused_naming_them() {
    let text = std::fs::read_to_string(common::chart().join("values.yaml")).unwrap();
    for (extra, key) in [
        ("replicaz: 2\n", "replicaz"),
        ("services:\n  shipping: {}\n", "shipping"),
        ("resilience:\n  client:\n    retyr: {}\n", "retyr"),
    ] {
        let mut merged = yaml_to_json(&text);
        coalesce(&mut merged, yaml_to_json(extra));
        let err = Values::from_json(merged).expect_err(extra).to_string();
        assert!(err.contains(key), "{extra:?}: {err}");
    }
    // A value the services would refuse is refused here too, naming the key.
    let mut merged = yaml_to_json(&text);
    coalesce(
        &mut merged,
        yaml_to_json("resilience:\n  hops:\n    shipping: {}\n"),
    );
    let err = Values::from_json(merged).unwrap_err().to_string();
    assert!(err.contains("resilience.hops.shipping"), "{err}");
}

//! FaultInjection documents: parsing, validation messages that name the field, and the wire
//! form of the admin API.

use std::time::Duration;

use lab_chaos::spec::{
    API_VERSION, Action, Distribution, ErrorMode, FaultInjection, FaultInjectionSpec,
    LatencyParams, SpecError, format_duration, from_fault, parse_documents, parse_duration,
};

fn doc(name: &str, service: &str, rest: &str) -> String {
    format!(
        "apiVersion: lab.frlab.dev/v1alpha1\nkind: FaultInjection\nmetadata:\n  name: {name}\nspec:\n  selector: {{ service: {service} }}\n{rest}"
    )
}

fn one(yaml: &str) -> FaultInjection {
    let mut docs = parse_documents(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!(docs.len(), 1);
    docs.remove(0)
}

fn refused(yaml: &str) -> SpecError {
    match parse_documents(yaml) {
        Ok(docs) => panic!("accepted {docs:?}\n{yaml}"),
        Err(e) => e,
    }
}

/// The error names `field` (and the whole message contains `text`).
#[track_caller]
fn assert_names(err: &SpecError, field: &str, text: &str) {
    assert_eq!(err.field(), Some(field), "{err}");
    let message = err.to_string();
    assert!(message.contains(&format!("{field}: ")), "{message}");
    assert!(message.contains(text), "{message}");
}

const ERRORS: &str =
    "  action: error\n  error: { code: UNAVAILABLE, probability: 0.2 }\n  duration: 60s\n";

#[test]
fn the_module_example_parses() {
    let yaml = r"
apiVersion: lab.frlab.dev/v1alpha1
kind: FaultInjection
metadata:
  name: payment-errors
spec:
  selector: { service: payments }
  mode: all
  action: error
  error: { code: UNAVAILABLE, probability: 0.2, mode: fail-fast }
  duration: 60s
  seed: 42
";
    let doc = one(yaml);
    assert_eq!(doc.metadata.name, "payment-errors");
    assert_eq!(doc.spec.action, Action::Error);
    let error = doc.spec.error.as_ref().expect("error params");
    assert_eq!(error.code, "UNAVAILABLE");
    assert_eq!(error.probability, 0.2);
    assert_eq!(error.mode, ErrorMode::FailFast);
    assert_eq!(doc.spec.duration(), Duration::from_secs(60));
    assert_eq!(doc.spec.seed, 42);
}

#[test]
fn unknown_action_is_refused_naming_the_field_and_line() {
    let err = refused(&doc("a", "payments", "  action: explode\n  duration: 5s\n"));
    let message = err.to_string();
    assert!(message.starts_with("action: "), "{message}");
    assert!(message.contains("explode"), "{message}");
    assert!(message.contains("line 7"), "{message}");
}

#[test]
fn unknown_fields_are_refused_naming_the_field_and_line() {
    let err = refused(&doc(
        "a",
        "payments",
        "  action: outage\n  duration: 5s\n  bogus: 1\n",
    ));
    let message = err.to_string();
    assert!(message.contains("unknown field `bogus`"), "{message}");
    assert!(message.contains("line 9"), "{message}");

    let err = refused(&doc(
        "a",
        "payments",
        "  action: error\n  error: { code: UNAVAILABLE, probability: 0.2, colour: red }\n  duration: 5s\n",
    ));
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");

    // Top level and metadata are strict too.
    let yaml = doc("a", "payments", "  action: outage\n  duration: 5s\n") + "status: {}\n";
    assert!(refused(&yaml).to_string().contains("`status`"));
    let yaml = doc("a", "payments", "  action: outage\n  duration: 5s\n")
        .replace("  name: a\n", "  name: a\n  uid: x\n");
    assert!(refused(&yaml).to_string().contains("`uid`"));
}

#[test]
fn probability_above_one_names_the_field_and_value() {
    let err = refused(&doc(
        "a",
        "payments",
        "  action: error\n  error: { code: UNAVAILABLE, probability: 1.5 }\n  duration: 60s\n",
    ));
    assert_names(
        &err,
        "spec.error.probability",
        "spec.error.probability: must be between 0 and 1, got 1.5",
    );
    // Which document, too.
    assert!(err.to_string().starts_with("document 1 (a): "), "{err}");
}

#[test]
fn negative_duration_names_the_field_and_the_format() {
    let err = refused(&doc(
        "a",
        "payments",
        "  action: outage\n  duration: \"-5s\"\n",
    ));
    assert_names(
        &err,
        "spec.duration",
        r#"spec.duration: "-5s" is not a duration (a number and ms, s, m or h, e.g. 30s)"#,
    );
    for bad in ["5", "5 s", "s", "1.s", ".5s", "5d", "0s", ""] {
        let mut spec = one(&doc("a", "payments", ERRORS)).spec;
        spec.duration = bad.to_string();
        assert_eq!(
            spec.validate().unwrap_err().field(),
            Some("spec.duration"),
            "{bad:?}"
        );
    }
}

#[test]
fn unknown_code_and_ok_are_refused() {
    let err = refused(&doc(
        "a",
        "payments",
        "  action: error\n  error: { code: NOPE, probability: 0.2 }\n  duration: 60s\n",
    ));
    assert_names(&err, "spec.error.code", "unknown gRPC code \"NOPE\"");
    assert!(err.to_string().contains("UNAVAILABLE"), "{err}");
    let err = refused(&doc(
        "a",
        "payments",
        "  action: error\n  error: { code: OK, probability: 0.2 }\n  duration: 60s\n",
    ));
    assert_names(&err, "spec.error.code", "not OK");
}

#[test]
fn unknown_service_is_refused() {
    let err = refused(&doc("a", "billing", ERRORS));
    assert_names(&err, "spec.selector.service", "unknown service \"billing\"");
}

#[test]
fn brownout_only_on_payments_and_lock_hold_only_on_inventory() {
    let brownout = "  action: brownout\n  brownout: { capacityFactor: 0.2 }\n  duration: 10s\n";
    one(&doc("b", "payments", brownout));
    let err = refused(&doc("b", "inventory", brownout));
    assert_names(
        &err,
        "spec.selector.service",
        "brownout applies only to payments",
    );

    let lock = "  action: lock-hold\n  lockHold: { holdMs: 2000 }\n  duration: 30s\n";
    one(&doc("l", "inventory", lock));
    let err = refused(&doc("l", "payments", lock));
    assert_names(
        &err,
        "spec.selector.service",
        "lock-hold applies only to inventory",
    );

    let err = refused(&doc(
        "b",
        "payments",
        "  action: brownout\n  brownout: { capacityFactor: 1.5 }\n  duration: 10s\n",
    ));
    assert_names(&err, "spec.brownout.capacityFactor", "got 1.5");
}

#[test]
fn the_action_needs_its_parameters_and_only_those() {
    let err = refused(&doc("a", "payments", "  action: error\n  duration: 60s\n"));
    assert_names(
        &err,
        "spec.error",
        "spec.error: required when action is error",
    );
    let err = refused(&doc(
        "a",
        "payments",
        "  action: outage\n  error: { code: UNAVAILABLE, probability: 0.2 }\n  duration: 60s\n",
    ));
    assert_names(&err, "spec.error", "not used when action is outage");
    let err = refused(&doc(
        "a",
        "payments",
        "  action: latency\n  duration: 60s\n",
    ));
    assert_names(&err, "spec.latency", "required when action is latency");
}

#[test]
fn fixed_percent_needs_a_value_from_1_to_100() {
    let err = refused(&doc(
        "a",
        "payments",
        "  mode: fixed-percent\n  action: outage\n  duration: 60s\n",
    ));
    assert_names(&err, "spec.value", "required with mode fixed-percent");
    let err = refused(&doc(
        "a",
        "payments",
        "  mode: fixed-percent\n  value: 0\n  action: outage\n  duration: 60s\n",
    ));
    assert_names(&err, "spec.value", "between 1 and 100, got 0");
    let err = refused(&doc(
        "a",
        "payments",
        "  mode: fixed-percent\n  value: 101\n  action: outage\n  duration: 60s\n",
    ));
    assert_names(&err, "spec.value", "got 101");
    one(&doc(
        "a",
        "payments",
        "  mode: fixed-percent\n  value: 50\n  action: outage\n  duration: 60s\n",
    ));
}

#[test]
fn latency_parameters_must_fit_the_distribution() {
    let latency = |params: &str| {
        doc(
            "l",
            "payments",
            &format!("  action: latency\n  latency: {{ {params} }}\n  duration: 60s\n"),
        )
    };
    one(&latency("distribution: fixed, fixedMs: 100"));
    one(&latency("distribution: uniform, minMs: 10, maxMs: 20"));
    one(&latency("distribution: lognormal, p50Ms: 50, p95Ms: 400"));
    one(&latency("distribution: pareto, scaleMs: 20, shape: 1.5"));
    let cases = [
        (
            "distribution: lognormal, p50Ms: 100, p95Ms: 50",
            "spec.latency.p95Ms",
            "must be at least p50Ms (100), got 50",
        ),
        (
            "distribution: lognormal, p50Ms: 0, p95Ms: 50",
            "spec.latency.p50Ms",
            "greater than 0",
        ),
        (
            "distribution: uniform, minMs: 30, maxMs: 20",
            "spec.latency.maxMs",
            "at least minMs (30), got 20",
        ),
        (
            "distribution: pareto, scaleMs: 20, shape: 0",
            "spec.latency.shape",
            "greater than 0, got 0",
        ),
        (
            "distribution: pareto, scaleMs: 20, shape: -1",
            "spec.latency.shape",
            "got -1",
        ),
        (
            "distribution: fixed",
            "spec.latency.fixedMs",
            "required with distribution fixed",
        ),
        (
            "distribution: fixed, fixedMs: 5, maxMs: 9",
            "spec.latency.maxMs",
            "not used with distribution fixed",
        ),
        (
            "distribution: fixed, fixedMs: 600000",
            "spec.latency.fixedMs",
            "at most 60000",
        ),
        (
            "distribution: fixed, fixedMs: 5, probability: 2",
            "spec.latency.probability",
            "got 2",
        ),
    ];
    for (params, field, text) in cases {
        let err = refused(&latency(params));
        assert_names(&err, field, text);
    }
}

#[test]
fn methods_must_be_grpc_paths() {
    let with_methods = |methods: &str| {
        doc(
            "m",
            "payments",
            &format!("  action: outage\n  methods: [{methods}]\n  duration: 60s\n"),
        )
    };
    one(&with_methods(
        "/shop.v1.Payments/Charge, /shop.v1.Payments/*",
    ));
    for (bad, index) in [
        ("Charge", 0),
        ("/shop.v1.Payments/Charge, shop.v1.Payments/Charge", 1),
        ("/Payments/Charge", 0),
        ("/shop.v1.Payments/", 0),
        ("/shop.v1.Payments/Charge/x", 0),
    ] {
        let err = refused(&with_methods(bad));
        assert_names(
            &err,
            &format!("spec.methods[{index}]"),
            "is not a method path",
        );
    }
}

#[test]
fn envelope_is_checked() {
    let yaml = doc("a", "payments", ERRORS).replace(API_VERSION, "lab.frlab.dev/v2");
    assert_names(
        &refused(&yaml),
        "apiVersion",
        "expected lab.frlab.dev/v1alpha1",
    );
    let yaml = doc("a", "payments", ERRORS).replace("kind: FaultInjection", "kind: PodChaos");
    assert_names(&refused(&yaml), "kind", "got \"PodChaos\"");
    let yaml = doc("a b", "payments", ERRORS);
    assert_eq!(refused(&yaml).field(), Some("metadata.name"));
}

#[test]
fn multi_document_files_parse_all_or_nothing() {
    let yaml = format!(
        "{}---\n# an empty document is skipped\n---\n{}---\n{}",
        doc("payment-errors", "payments", ERRORS),
        doc(
            "inventory-lock",
            "inventory",
            "  action: lock-hold\n  lockHold: { holdMs: 2000, probability: 0.5 }\n  duration: 30s\n  seed: 7\n",
        ),
        doc(
            "payment-slow",
            "payments",
            "  action: latency\n  latency: { distribution: pareto, scaleMs: 20, shape: 1.2 }\n  methods: [/shop.v1.Payments/Charge]\n  duration: 2m\n",
        ),
    );
    let docs = parse_documents(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<_> = docs.iter().map(|d| d.metadata.name.as_str()).collect();
    assert_eq!(names, ["payment-errors", "inventory-lock", "payment-slow"]);
    assert_eq!(docs[1].spec.action, Action::LockHold);
    assert_eq!(
        docs[1].spec.lock_hold.as_ref().map(|l| l.hold_ms),
        Some(2000)
    );
    assert_eq!(docs[2].spec.duration(), Duration::from_secs(120));

    // One bad document refuses the file, and the error says which one.
    let bad = yaml.replace("holdMs: 2000", "holdMs: 0");
    let err = refused(&bad);
    assert!(
        matches!(err, SpecError::InDocument { index: 2, .. }),
        "{err:?}"
    );
    assert_names(
        &err,
        "spec.lockHold.holdMs",
        "document 2 (inventory-lock): ",
    );

    // A syntax error deep in the stream points at its line in the file.
    let bad = yaml.replace("shape: 1.2", "shape: 1.2, tail: long");
    let err = refused(&bad);
    let message = err.to_string();
    assert!(message.contains("unknown field `tail`"), "{message}");
    let line = bad.lines().position(|l| l.contains("tail: long")).unwrap() + 1;
    assert!(message.contains(&format!("line {line}")), "{message}");

    // Names are unique within a file.
    let twice = format!(
        "{}---\n{}",
        doc("x", "payments", ERRORS),
        doc("x", "payments", ERRORS)
    );
    assert_names(
        &refused(&twice),
        "metadata.name",
        "already the name of document 1",
    );

    assert!(parse_documents("").is_err());
}

#[test]
fn durations_parse_and_format() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
    assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    for bad in ["-5s", "5", "s", "5 s", "5sec", "1e3s", "1..2s"] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
    assert_eq!(format_duration(Duration::from_secs(30)), "30s");
    assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    assert_eq!(format_duration(Duration::from_secs(7200)), "2h");
    assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
}

fn specs() -> Vec<FaultInjectionSpec> {
    let yaml = [
        doc("e", "payments", "  action: error\n  error: { code: UNAVAILABLE, probability: 0.2, mode: fail-slow }\n  methods: [/shop.v1.Payments/Charge]\n  duration: 60s\n  seed: 9\n"),
        doc("l", "payments", "  mode: fixed-percent\n  value: 50\n  action: latency\n  latency: { distribution: lognormal, p50Ms: 50, p95Ms: 400, probability: 0.5 }\n  duration: 1500ms\n"),
        doc("b", "payments", "  action: brownout\n  brownout: { capacityFactor: 0.2 }\n  duration: 10s\n"),
        doc("o", "orders", "  selector: { service: orders, labels: { app: orders } }\n  action: outage\n  duration: 2m\n").replace("  selector: { service: orders }\n", ""),
        doc("h", "inventory", "  action: lock-hold\n  lockHold: { holdMs: 2000 }\n  duration: 30s\n"),
    ]
    .join("---\n");
    parse_documents(&yaml)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|d| d.spec)
        .collect()
}

#[test]
fn wire_form_round_trips_every_action() {
    for spec in specs() {
        let fault = spec.to_fault("f1", None);
        assert_eq!(fault.name, "f1");
        assert_eq!(fault.kind, spec.action.as_str());
        assert_eq!(fault.seed, spec.seed);
        assert_eq!(fault.start_at_ms, 0);
        assert_eq!(
            fault.duration_ms,
            i64::try_from(spec.duration().as_millis()).unwrap()
        );
        let params: serde_json::Value = serde_json::from_str(&fault.params_json).unwrap();
        for absent in ["action", "duration", "seed"] {
            assert!(params.get(absent).is_none(), "{absent} in {params}");
        }
        let mut back = from_fault(&fault).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back.name, "f1");
        assert_eq!(back.start_at_ms, None);
        // The duration comes back as the same time, in its largest exact unit (60s -> 1m).
        assert_eq!(back.spec.duration(), spec.duration());
        back.spec.duration = spec.duration.clone();
        assert_eq!(back.spec, spec, "{}", fault.params_json);
    }
}

#[test]
fn wire_params_json_is_the_spec_without_action_duration_and_seed() {
    let spec = &specs()[0];
    let fault = spec.to_fault("payment-errors", Some(1234));
    assert_eq!(fault.seed, 1234, "the override wins");
    assert_eq!(fault.kind, "error");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&fault.params_json).unwrap(),
        serde_json::json!({
            "selector": {"service": "payments"},
            "mode": "all",
            "error": {"code": "UNAVAILABLE", "probability": 0.2, "mode": "fail-slow"},
            "methods": ["/shop.v1.Payments/Charge"],
        })
    );
    assert_eq!(specs()[4].to_fault("x", None).kind, "lock-hold");
}

#[test]
fn from_fault_refuses_bad_wire_faults_naming_the_field() {
    let good = specs()[0].to_fault("f", None);

    let mut f = good.clone();
    f.kind = "explode".into();
    assert_names(
        &from_fault(&f).unwrap_err(),
        "kind",
        "unknown action \"explode\"",
    );

    let mut f = good.clone();
    f.kind = "lock_hold".into();
    f.params_json = specs()[4].to_fault("x", None).params_json;
    assert_eq!(from_fault(&f).unwrap().spec.action, Action::LockHold);

    let mut f = good.clone();
    f.params_json = f
        .params_json
        .replace("\"mode\":\"all\"", "\"mode\":\"all\",\"colour\":1");
    let message = from_fault(&f).unwrap_err().to_string();
    assert!(message.starts_with("params_json: "), "{message}");
    assert!(message.contains("unknown field `colour`"), "{message}");

    let mut f = good.clone();
    f.duration_ms = -5;
    assert_names(&from_fault(&f).unwrap_err(), "duration_ms", "got -5");

    let mut f = good.clone();
    f.start_at_ms = -1;
    assert_eq!(from_fault(&f).unwrap_err().field(), Some("start_at_ms"));

    let mut f = good.clone();
    f.name = String::new();
    assert_names(&from_fault(&f).unwrap_err(), "name", "required");

    let mut f = good;
    f.params_json = f.params_json.replace("0.2", "1.5");
    assert_names(
        &from_fault(&f).unwrap_err(),
        "spec.error.probability",
        "got 1.5",
    );
}

#[test]
fn specs_built_in_code_validate_the_same_way() {
    let spec = FaultInjectionSpec {
        selector: lab_chaos::spec::Selector {
            service: "payments".into(),
            labels: Default::default(),
        },
        mode: Default::default(),
        value: None,
        action: Action::Latency,
        error: None,
        latency: Some(LatencyParams {
            distribution: Distribution::Uniform,
            fixed_ms: None,
            min_ms: Some(10),
            max_ms: Some(20),
            p50_ms: None,
            p95_ms: None,
            scale_ms: None,
            shape: None,
            probability: 1.0,
        }),
        brownout: None,
        lock_hold: None,
        methods: vec![],
        duration: "30s".into(),
        seed: 1,
    };
    spec.validate().unwrap();
    let doc = FaultInjection::new("slow", spec);
    doc.validate().unwrap();
    let schema = serde_json::to_value(schemars::schema_for!(FaultInjection)).unwrap();
    assert!(schema.to_string().contains("capacityFactor"));
}

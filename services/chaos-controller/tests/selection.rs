//! Pod selection, pod addresses and the pod → FaultInjection mapping of the pod watch.

mod common;

use std::sync::Arc;

use chaos_controller::Phase;
use chaos_controller::pods::{self, admin_address, pod_key, quota};
use chaos_controller::reconcile::injections_for_pod;
use common::*;
use serde_json::json;

fn spec(mode: &str, value: Option<u32>) -> lab_chaos::spec::FaultInjectionSpec {
    let mut spec = payment_errors_spec();
    spec["mode"] = json!(mode);
    if let Some(v) = value {
        spec["value"] = json!(v);
    }
    serde_json::from_value(spec).unwrap()
}

#[test]
fn quotas_per_mode() {
    assert_eq!(quota(&spec("all", None), 7), 7);
    assert_eq!(quota(&spec("one", None), 7), 1);
    assert_eq!(quota(&spec("one", None), 0), 0);
    assert_eq!(quota(&spec("fixed-percent", Some(50)), 3), 2, "rounded up");
    assert_eq!(quota(&spec("fixed-percent", Some(10)), 3), 1);
    assert_eq!(quota(&spec("fixed-percent", Some(100)), 3), 3);
    assert_eq!(quota(&spec("fixed-percent", Some(50)), 0), 0);
}

#[test]
fn the_admin_port_comes_from_the_port_named_admin_else_the_flag() {
    let mut p = pod("payments-a", "10.0.0.1", true, 0);
    assert_eq!(
        admin_address(&p, 50061).unwrap().to_string(),
        "10.0.0.1:7061"
    );
    p.spec.as_mut().unwrap().containers[0].ports = None;
    assert_eq!(
        admin_address(&p, 50061).unwrap().to_string(),
        "10.0.0.1:50061"
    );
    p.status.as_mut().unwrap().pod_ip = Some("fd00::7".into());
    assert_eq!(
        admin_address(&p, 50061).unwrap().to_string(),
        "[fd00::7]:50061"
    );
    p.status.as_mut().unwrap().pod_ip = None;
    assert!(
        admin_address(&p, 50061).is_none(),
        "no IP yet: not callable"
    );
}

#[test]
fn a_pod_key_changes_when_the_pod_is_replaced_or_its_container_restarts() {
    let a = pod("payments-a", "10.0.0.1", true, 0);
    assert_eq!(pod_key(&a), "payments-a/uid-payments-a/0");
    assert_ne!(
        pod_key(&a),
        pod_key(&pod("payments-a", "10.0.0.1", true, 1))
    );
    let mut replaced = a.clone();
    replaced.metadata.uid = Some("other".into());
    assert_ne!(pod_key(&a), pod_key(&replaced));
}

#[test]
fn selection_fills_the_quota_around_the_pods_that_keep_the_fault() {
    let s = spec("fixed-percent", Some(50));
    let listed = [
        pod("payments-a", "10.0.0.1", true, 0),
        pod("payments-b", "10.0.0.2", true, 0),
        pod("payments-c", "10.0.0.3", true, 0),
        pod("payments-d", "10.0.0.4", true, 0),
    ];
    // c holds the fault; gone pods are dropped; one more is needed: the first by name.
    let injected = [key("payments-c", 0), key("payments-x", 0)];
    let selection = pods::select(&s, &listed, &injected, 50061);
    assert_eq!(selection.kept, [key("payments-c", 0)]);
    assert_eq!(selection.selected, 4);
    let chosen: Vec<(usize, &str)> = selection
        .to_inject
        .iter()
        .map(|(rank, t)| (*rank, t.name.as_str()))
        .collect();
    assert_eq!(chosen, [(0, "payments-a")]);
}

#[test]
fn a_pod_event_maps_to_the_unfinished_injections_of_its_service_and_namespace() {
    let active = fault_injection("active", payment_errors_spec());
    let mut expired = fault_injection("expired", payment_errors_spec());
    let mut status = active_status(&[]);
    status.phase = Phase::Expired;
    expired.status = Some(status);
    let mut other_service = payment_errors_spec();
    other_service["selector"]["service"] = json!("inventory");
    let inventory = fault_injection("inventory", other_service);
    let mut elsewhere = fault_injection("elsewhere", payment_errors_spec());
    elsewhere.metadata.namespace = Some("other".into());
    let all: Vec<_> = [active, expired, inventory, elsewhere]
        .into_iter()
        .map(Arc::new)
        .collect();

    let refs = injections_for_pod(&pod("payments-a", "10.0.0.1", true, 0), &all);
    let names: Vec<&str> = refs.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["active"]);
    assert_eq!(refs[0].namespace.as_deref(), Some(NAMESPACE));

    let mut unlabelled = pod("payments-a", "10.0.0.1", true, 0);
    unlabelled.metadata.labels = None;
    assert!(injections_for_pod(&unlabelled, &all).is_empty());
}

//! The reconciler against a mocked API server: create, expiry, pod restart, unreachable
//! pod, delete, invalid spec.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chaos_controller::reconcile::{BACKOFF_BASE, RESYNC};
use chaos_controller::{FaultInjection, Phase, reconcile};
use common::*;
use kube::runtime::controller::Action;
use serde_json::json;

fn applied_to(calls: &[Call]) -> Vec<&str> {
    calls
        .iter()
        .filter_map(|c| match c {
            Call::Apply { pod, .. } => Some(pod.as_str()),
            Call::Clear { .. } => None,
        })
        .collect()
}

#[tokio::test]
async fn a_new_fault_injection_first_gets_the_finalizer() {
    let mut h = Harness::new();
    let mut fi = fault_injection("payment-errors", payment_errors_spec());
    fi.metadata.finalizers = None;

    let (action, ()) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server.expect_finalizer_added(&fi).await;
    });

    assert_eq!(action.unwrap(), Action::await_change());
    assert!(
        h.pods.take_calls().is_empty(),
        "no pod is touched before the finalizer is in place"
    );
    h.finish().await;
}

#[tokio::test]
async fn create_applies_the_fault_to_the_selected_pods_and_requeues_at_expiry() {
    let mut h = Harness::new();
    let fi = fault_injection("payment-errors", payment_errors_spec());
    let pods = [
        pod("payments-b", "10.0.0.2", true, 0),
        pod("payments-a", "10.0.0.1", true, 0),
        pod("payments-c", "10.0.0.3", false, 0), // not Ready
        pod_with("payments-d", "10.0.0.4", true, 0, "canary"), // extra label does not match
    ];

    let (action, (pending, active)) =
        tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
            let pending = h.server.expect_status_patch(&fi).await;
            h.server
                .expect_list_pods("app.kubernetes.io/name=payments", &pods)
                .await;
            let active = h.server.expect_status_patch(&fi).await;
            (pending, active)
        });

    // The window is written before any pod is called.
    assert_eq!(pending.phase, Phase::Pending);
    assert_eq!(pending.start_time.as_deref(), Some("2026-11-27T12:00:00Z"));
    assert_eq!(pending.expiry_time.as_deref(), Some("2026-11-27T12:00:45Z"));
    assert!(pending.injected_pods.is_empty());
    assert_eq!(pending.observed_generation, Some(1));

    assert_eq!(active.phase, Phase::Active);
    assert_eq!(
        active.injected_pods,
        [key("payments-a", 0), key("payments-b", 0)]
    );
    assert_eq!(active.last_error, None);
    assert_eq!(active.expiry_time, pending.expiry_time);

    let calls = h.pods.take_calls();
    assert_eq!(applied_to(&calls), ["payments-a", "payments-b"]);
    let Call::Apply {
        address,
        token,
        fault,
        ..
    } = &calls[0]
    else {
        unreachable!()
    };
    assert_eq!(address, "10.0.0.1:7061", "the container port named admin");
    assert_eq!(token.as_deref(), Some(TOKEN));
    assert_eq!(fault.name, "payment-errors");
    assert_eq!(fault.kind, "error");
    assert_eq!(fault.duration_ms, 45_000);
    assert_eq!(fault.start_at_ms, 0);
    assert_eq!(
        fault.seed, 42,
        "the first pod by name draws the spec's seed"
    );
    let params: serde_json::Value = serde_json::from_str(&fault.params_json).unwrap();
    assert_eq!(params["error"]["code"], "UNAVAILABLE");
    let Call::Apply { fault, .. } = &calls[1] else {
        unreachable!()
    };
    assert_eq!(fault.seed, 43, "each further pod its own seed");

    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(45)));
    h.finish().await;
}

#[tokio::test]
async fn an_active_fault_with_nothing_changed_writes_nothing_and_waits_for_the_expiry() {
    let mut h = Harness::new();
    let mut fi = fault_injection("payment-errors", payment_errors_spec());
    fi.status = Some(active_status(&[&key("payments-a", 0)]));
    h.clock.set(at(40));

    let (action, ()) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server
            .expect_list_pods(
                "app.kubernetes.io/name=payments",
                &[pod("payments-a", "10.0.0.1", true, 0)],
            )
            .await;
    });

    assert!(h.pods.take_calls().is_empty());
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(5)));
    h.finish().await;
}

#[tokio::test]
async fn a_long_fault_is_looked_at_again_every_resync_interval() {
    let mut h = Harness::new();
    let mut spec = payment_errors_spec();
    spec["duration"] = json!("10m");
    let fi = fault_injection("long", spec);
    let pods = [pod("payments-a", "10.0.0.1", true, 0)];

    let (action, ()) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server.expect_status_patch(&fi).await;
        h.server
            .expect_list_pods("app.kubernetes.io/name=payments", &pods)
            .await;
        h.server.expect_status_patch(&fi).await;
    });

    assert_eq!(action.unwrap(), Action::requeue(RESYNC));
    h.finish().await;
}

#[tokio::test]
async fn mode_one_picks_the_first_pod_by_name_and_fixed_percent_rounds_up() {
    for (mode, value, expected) in [
        ("one", None, vec!["payments-a"]),
        ("fixed-percent", Some(50), vec!["payments-a", "payments-b"]),
        ("fixed-percent", Some(1), vec!["payments-a"]),
    ] {
        let mut h = Harness::new();
        let mut spec = payment_errors_spec();
        spec["mode"] = json!(mode);
        if let Some(v) = value {
            spec["value"] = json!(v);
        }
        let fi = fault_injection("payment-errors", spec);
        let pods = [
            pod("payments-c", "10.0.0.3", true, 0),
            pod("payments-a", "10.0.0.1", true, 0),
            pod("payments-b", "10.0.0.2", true, 0),
        ];
        let (action, active) =
            tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
                h.server.expect_status_patch(&fi).await;
                h.server
                    .expect_list_pods("app.kubernetes.io/name=payments", &pods)
                    .await;
                h.server.expect_status_patch(&fi).await
            });
        action.unwrap();
        assert_eq!(
            applied_to(&h.pods.take_calls()),
            expected,
            "mode {mode} {value:?}"
        );
        assert_eq!(active.injected_pods.len(), expected.len());
        h.finish().await;
    }
}

#[tokio::test]
async fn at_expiry_the_fault_is_cleared_and_the_phase_is_expired() {
    let mut h = Harness::new();
    let mut fi = fault_injection("payment-errors", payment_errors_spec());
    fi.status = Some(active_status(&[
        &key("payments-a", 0),
        &key("payments-b", 0),
    ]));
    h.clock.set(at(45));
    let pods = [
        pod("payments-a", "10.0.0.1", true, 0),
        pod("payments-b", "10.0.0.2", true, 0),
        pod("payments-c", "10.0.0.3", true, 0), // never injected: left alone
    ];

    let (action, expired) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server
            .expect_list_pods("app.kubernetes.io/name=payments", &pods)
            .await;
        h.server.expect_status_patch(&fi).await
    });

    assert_eq!(
        action.unwrap(),
        Action::await_change(),
        "nothing more to do"
    );
    assert_eq!(expired.phase, Phase::Expired);
    assert!(expired.injected_pods.is_empty());
    assert_eq!(expired.last_error, None);
    assert_eq!(expired.expiry_time.as_deref(), Some("2026-11-27T12:00:45Z"));
    assert_eq!(
        h.pods.take_calls(),
        [
            Call::Clear {
                pod: "payments-a".into(),
                name: "payment-errors".into()
            },
            Call::Clear {
                pod: "payments-b".into(),
                name: "payment-errors".into()
            },
        ]
    );

    // An expired FaultInjection is left alone: no API call, no pod call, no requeue.
    fi.status = Some(expired);
    h.clock.set(at(600));
    let action = reconcile(Arc::new(fi), h.ctx.clone()).await;
    assert_eq!(action.unwrap(), Action::await_change());
    assert!(h.pods.take_calls().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn a_restarted_or_replaced_pod_gets_the_fault_again_for_the_time_left() {
    let mut h = Harness::new();
    let mut fi = fault_injection("payment-errors", payment_errors_spec());
    fi.status = Some(active_status(&[
        &key("payments-a", 0),
        &key("payments-b", 0),
    ]));
    h.clock.set(at(15));
    let pods = [
        pod("payments-a", "10.0.0.1", true, 1), // its container restarted: the fault is gone
        // payments-b was replaced by payments-e (new name, new uid, new IP)
        pod("payments-e", "10.0.0.5", true, 0),
    ];

    let (action, status) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server
            .expect_list_pods("app.kubernetes.io/name=payments", &pods)
            .await;
        h.server.expect_status_patch(&fi).await
    });

    let calls = h.pods.take_calls();
    assert_eq!(applied_to(&calls), ["payments-a", "payments-e"]);
    for call in &calls {
        let Call::Apply { fault, .. } = call else {
            unreachable!()
        };
        assert_eq!(
            fault.duration_ms, 30_000,
            "the remaining 30 s of the 45 s window"
        );
    }
    assert_eq!(status.phase, Phase::Active);
    assert_eq!(
        status.injected_pods,
        [key("payments-a", 1), key("payments-e", 0)]
    );
    assert_eq!(
        status.start_time.as_deref(),
        Some("2026-11-27T12:00:00Z"),
        "same window"
    );
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(30)));
    h.finish().await;
}

#[tokio::test]
async fn a_replacement_pod_in_mode_one_keeps_exactly_one_pod_faulted() {
    let mut h = Harness::new();
    let mut spec = payment_errors_spec();
    spec["mode"] = json!("one");
    let mut fi = fault_injection("payment-errors", spec);
    fi.status = Some(active_status(&[&key("payments-b", 0)]));
    h.clock.set(at(10));
    // payments-b still holds the fault; a new payments-a sorts first but is not needed.
    let pods = [
        pod("payments-a", "10.0.0.1", true, 0),
        pod("payments-b", "10.0.0.2", true, 0),
    ];

    let (action, ()) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server
            .expect_list_pods("app.kubernetes.io/name=payments", &pods)
            .await;
    });

    assert!(
        h.pods.take_calls().is_empty(),
        "the injected pod still counts"
    );
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(35)));
    h.finish().await;
}

#[tokio::test]
async fn an_unreachable_pod_is_reported_the_others_keep_the_fault_and_it_is_retried() {
    let mut h = Harness::new();
    let fi = fault_injection("payment-errors", payment_errors_spec());
    let pods = [
        pod("payments-a", "10.0.0.1", true, 0),
        pod("payments-b", "10.0.0.2", true, 0),
    ];
    h.pods.set_unreachable("payments-b", true);

    let (action, active) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server.expect_status_patch(&fi).await;
        h.server
            .expect_list_pods("app.kubernetes.io/name=payments", &pods)
            .await;
        h.server.expect_status_patch(&fi).await
    });

    assert_eq!(
        applied_to(&h.pods.take_calls()),
        ["payments-a", "payments-b"]
    );
    assert_eq!(active.phase, Phase::Active);
    assert_eq!(active.injected_pods, [key("payments-a", 0)]);
    let error = active.last_error.clone().expect("lastError names the pod");
    assert!(
        error.contains("payments-b") && error.contains("10.0.0.2:7061"),
        "{error}"
    );
    assert_eq!(action.unwrap(), Action::requeue(BACKOFF_BASE));

    // Still unreachable: only payments-b is tried again, and the backoff doubles.
    let mut fi = fi;
    fi.status = Some(active.clone());
    h.clock.set(at(2));
    let (action, ()) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server
            .expect_list_pods("app.kubernetes.io/name=payments", &pods)
            .await;
    });
    assert_eq!(applied_to(&h.pods.take_calls()), ["payments-b"]);
    assert_eq!(action.unwrap(), Action::requeue(BACKOFF_BASE * 2));

    // Reachable again: it gets the rest of the window and the error is cleared.
    h.pods.set_unreachable("payments-b", false);
    h.clock.set(at(6));
    let (action, healed) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server
            .expect_list_pods("app.kubernetes.io/name=payments", &pods)
            .await;
        h.server.expect_status_patch(&fi).await
    });
    let calls = h.pods.take_calls();
    assert_eq!(applied_to(&calls), ["payments-b"]);
    let Call::Apply { fault, .. } = &calls[0] else {
        unreachable!()
    };
    assert_eq!(fault.duration_ms, 39_000);
    assert_eq!(
        healed.injected_pods,
        [key("payments-a", 0), key("payments-b", 0)]
    );
    assert_eq!(healed.last_error, None);
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(39)));
    h.finish().await;
}

#[tokio::test]
async fn no_matching_pod_is_reported_and_retried() {
    let mut h = Harness::new();
    let fi = fault_injection("payment-errors", payment_errors_spec());

    let (action, active) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server.expect_status_patch(&fi).await;
        h.server
            .expect_list_pods("app.kubernetes.io/name=payments", &[])
            .await;
        h.server.expect_status_patch(&fi).await
    });

    assert_eq!(active.phase, Phase::Active);
    let error = active.last_error.unwrap();
    assert!(
        error.contains("app.kubernetes.io/name=payments,track=stable"),
        "{error}"
    );
    assert_eq!(action.unwrap(), Action::requeue(BACKOFF_BASE));
    h.finish().await;
}

fn deleting(mut fi: FaultInjection) -> FaultInjection {
    fi.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(20)));
    fi
}

#[tokio::test]
async fn delete_clears_the_fault_on_the_pods_then_removes_the_finalizer() {
    let mut h = Harness::new();
    let mut fi = fault_injection("payment-errors", payment_errors_spec());
    fi.status = Some(active_status(&[
        &key("payments-a", 0),
        &key("payments-b", 0),
    ]));
    let fi = deleting(fi);
    h.clock.set(at(20));
    let pods = [
        pod("payments-a", "10.0.0.1", true, 0),
        pod("payments-b", "10.0.0.2", true, 0),
    ];

    let (action, ()) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        // Every lab pod of the namespace: the spec may name another service than the one
        // the status describes.
        h.server
            .expect_list_pods("app.kubernetes.io/name", &pods)
            .await;
        h.server.expect_finalizer_removed(&fi).await;
    });

    assert_eq!(action.unwrap(), Action::await_change());
    assert_eq!(
        h.pods.take_calls(),
        [
            Call::Clear {
                pod: "payments-a".into(),
                name: "payment-errors".into()
            },
            Call::Clear {
                pod: "payments-b".into(),
                name: "payment-errors".into()
            },
        ]
    );
    h.finish().await;
}

#[tokio::test]
async fn delete_keeps_the_finalizer_while_a_pod_holding_the_fault_is_unreachable() {
    let mut h = Harness::new();
    let mut fi = fault_injection("payment-errors", payment_errors_spec());
    fi.status = Some(active_status(&[
        &key("payments-a", 0),
        &key("payments-b", 0),
    ]));
    let fi = deleting(fi);
    h.clock.set(at(20));
    h.pods.set_unreachable("payments-b", true);
    let pods = [
        pod("payments-a", "10.0.0.1", true, 0),
        pod("payments-b", "10.0.0.2", true, 0),
    ];

    let (result, ()) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server
            .expect_list_pods("app.kubernetes.io/name", &pods)
            .await;
    });

    let error = result.expect_err("the cleanup must fail").to_string();
    assert!(error.contains("payments-b"), "{error}");
    assert_eq!(h.pods.take_calls().len(), 2);

    // Once the window has ended the pod has dropped the fault by itself: the delete goes on.
    h.clock.set(at(45));
    let (action, ()) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server.expect_finalizer_removed(&fi).await;
    });
    assert_eq!(action.unwrap(), Action::await_change());
    assert!(h.pods.take_calls().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn delete_of_an_expired_fault_only_removes_the_finalizer() {
    let mut h = Harness::new();
    let mut fi = fault_injection("payment-errors", payment_errors_spec());
    let mut status = active_status(&[]);
    status.phase = Phase::Expired;
    fi.status = Some(status);
    let fi = deleting(fi);

    let (action, ()) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server.expect_finalizer_removed(&fi).await;
    });

    assert_eq!(action.unwrap(), Action::await_change());
    assert!(h.pods.take_calls().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn an_invalid_spec_fails_with_the_field_named() {
    let mut h = Harness::new();
    let mut spec = payment_errors_spec();
    spec["error"]["probability"] = json!(1.5);
    let fi = fault_injection("bad", spec);

    let (action, failed) = tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
        h.server.expect_status_patch(&fi).await
    });

    assert_eq!(action.unwrap(), Action::await_change());
    assert_eq!(failed.phase, Phase::Failed);
    let error = failed.last_error.unwrap();
    assert!(error.contains("spec.error.probability"), "{error}");
    assert!(h.pods.take_calls().is_empty());
    h.finish().await;
}

#[tokio::test]
async fn an_edited_spec_clears_the_previous_pods_and_starts_a_new_window() {
    let mut h = Harness::new();
    let mut spec = payment_errors_spec();
    spec["error"]["probability"] = json!(0.5);
    let mut fi = fault_injection("payment-errors", spec);
    fi.metadata.generation = Some(2);
    fi.status = Some(active_status(&[&key("payments-a", 0)]));
    h.clock.set(at(30));
    let pods = [pod("payments-a", "10.0.0.1", true, 0)];

    let (action, (pending, active)) =
        tokio::join!(reconcile(Arc::new(fi.clone()), h.ctx.clone()), async {
            h.server
                .expect_list_pods("app.kubernetes.io/name", &pods)
                .await;
            let pending = h.server.expect_status_patch(&fi).await;
            h.server
                .expect_list_pods("app.kubernetes.io/name=payments", &pods)
                .await;
            let active = h.server.expect_status_patch(&fi).await;
            (pending, active)
        });

    let calls = h.pods.take_calls();
    assert_eq!(calls.len(), 2);
    assert!(matches!(&calls[0], Call::Clear { pod, .. } if pod == "payments-a"));
    let Call::Apply { fault, .. } = &calls[1] else {
        panic!("expected the new fault, got {calls:?}")
    };
    assert!(fault.params_json.contains("0.5"));
    assert_eq!(fault.duration_ms, 45_000, "a whole new window");
    assert_eq!(pending.start_time.as_deref(), Some("2026-11-27T12:00:30Z"));
    assert_eq!(pending.observed_generation, Some(2));
    assert_eq!(active.injected_pods, [key("payments-a", 0)]);
    assert_eq!(action.unwrap(), Action::requeue(Duration::from_secs(45)));
    h.finish().await;
}

//! Capacity and the metastability sweep against real processes: the calibration finds the
//! knee of a stack whose capacity is known (2 slots of a fixed 50 ms: 40 charges/s) and
//! names payments as what binds; a 2 x 2 sweep of a few seconds per cell classifies every
//! cell and writes its table, record and phase map; a fresh stack starts with nothing of
//! the one before.

use std::time::Duration;

use frlab::experiment::sweep::{SweepPlan, Trigger, run_sweep};
use frlab::experiment::{Backend, CalibrateConfig, PaymentsModel, calibrate};
use frlab::measure::knee::Binding;
use frlab::report::sweep::{SWEEP_JSON, SWEEP_MD, phase_map_name, rebuild_sweep};

/// 2 slots, always 50 ms: exactly 40 charges per second; a queue of 40 for up to 2 s.
fn known_capacity() -> PaymentsModel {
    PaymentsModel {
        slots: 2,
        queue: 40,
        queue_timeout_ms: 2000,
        service_p50_ms: 50,
        service_p95_ms: 50,
    }
}

#[tokio::test]
async fn calibration_finds_a_known_knee_and_names_payments() {
    let config = CalibrateConfig {
        payments: known_capacity(),
        step: Duration::from_millis(2500),
        ..CalibrateConfig::default()
    };
    assert_eq!(config.payments.capacity_rps(), 40.0);
    let mut lines = Vec::new();
    let c = calibrate(&config, &Backend::default(), |l| lines.push(l.to_string()))
        .await
        .expect("calibration runs");
    let knee = c.knee_rps.unwrap_or_else(|| panic!("a knee: {c:#?}"));
    assert!(
        (32.0..=42.0).contains(&knee),
        "the knee of a 40/s payments is near 40/s, got {knee}:\n{}",
        c.markdown("#")
    );
    assert!(
        matches!(c.binding, Binding::Payments { .. }),
        "payments binds, not {:?}",
        c.binding
    );
    assert_eq!(c.unusable(), None);
    assert_eq!(lines.len(), c.steps.len(), "one progress line per step");
    // Above the knee a step failed, and it says why.
    let failed = c
        .steps
        .iter()
        .find(|s| s.rate > knee)
        .expect("a step above");
    assert!(failed.failure(c.slo_p99_ms).is_some());
    let md = c.markdown("#");
    assert!(
        md.contains(&format!("**Knee: {knee:.1} requests/s**")),
        "{md}"
    );
}

#[tokio::test]
async fn a_two_by_two_sweep_classifies_every_cell_and_writes_its_map() {
    let dir = tempfile::tempdir().unwrap();
    let plan = SweepPlan {
        profiles: vec!["b-naive-retries".into()],
        loads: vec![0.3, 0.8],
        trigger: Trigger::Brownout,
        cuts: vec![0.8],
        durations: vec![Duration::from_secs(1), Duration::from_secs(2)],
        warmup: Duration::from_millis(500),
        pre: Duration::from_secs(2),
        observe: Duration::from_secs(6),
        hold: Duration::from_secs(3),
        deadline: Duration::from_secs(2),
        time_scale: 0.1,
        payments: known_capacity(),
        seed: 7,
    };
    let sweep = run_sweep(&plan, 40.0, None, &Backend::default(), dir.path(), "test")
        .await
        .expect("sweep runs");
    assert!(sweep.finished);
    assert_eq!(sweep.cells.len(), 4);
    for c in &sweep.cells {
        assert!(c.error.is_none(), "{c:?}");
        let t = c.trial.as_ref().unwrap();
        assert!(t.outcome.is_some(), "every cell is classified: {t:?}");
        assert!(t.violations.is_empty(), "{:?}", t.violations);
    }
    // At 0.8 of capacity a cut to 20 % must dip: not every cell is stable.
    assert!(
        sweep
            .cells
            .iter()
            .any(|c| c.outcome().is_some_and(|o| o.class() != "stable")),
        "{:#?}",
        sweep.cells.iter().map(|c| c.outcome()).collect::<Vec<_>>()
    );
    for file in [SWEEP_JSON, SWEEP_MD, &phase_map_name("b-naive-retries")] {
        assert!(dir.path().join(file).is_file(), "{file} written");
    }
    let md = std::fs::read_to_string(dir.path().join(SWEEP_MD)).unwrap();
    assert!(md.contains("**Status: FINISHED** (4 cells)"), "{md}");
    assert!(md.contains("## Findings"), "{md}");
    let before = md.clone();
    std::fs::remove_file(dir.path().join(SWEEP_MD)).unwrap();
    rebuild_sweep(dir.path()).expect("rebuild");
    assert_eq!(
        std::fs::read_to_string(dir.path().join(SWEEP_MD)).unwrap(),
        before
    );
}

/// One PlaceOrder with `key` through `gateway`; the order it returns.
async fn order(gateway: &str, key: &str) -> lab_proto::shop::v1::Order {
    use lab_proto::shop::v1::gateway_client::GatewayClient;
    use lab_proto::shop::v1::{LineItem, PlaceOrderRequest};
    let mut client = GatewayClient::new(frlab::observe::grpc::channel(gateway).unwrap());
    let request = PlaceOrderRequest {
        idempotency_key: key.into(),
        customer_id: "c-1".into(),
        items: vec![LineItem {
            product_id: "sku-1".into(),
            quantity: 1,
        }],
    };
    frlab::observe::grpc::place_order(&mut client, request, Duration::from_secs(5))
        .await
        .expect("an order")
        .order
}

async fn orders_total(stack: &frlab::stack::LocalStack) -> i64 {
    let orders = stack.endpoint("orders").unwrap().grpc_url();
    let audit = frlab::observe::grpc::audit_snapshot(&orders, Duration::from_secs(5), false)
        .await
        .unwrap();
    audit.counters.get("orders_total").copied().unwrap_or(0)
}

#[tokio::test]
async fn a_fresh_stack_starts_with_nothing_of_the_last_one() {
    use frlab::experiment::fresh::FreshStack;
    use lab_proto::shop::v1::OrderStatus;
    let yaml = lab_resilience::profiles::resolve("f-full")
        .unwrap()
        .profile
        .to_values_yaml()
        .unwrap();
    let payments = known_capacity();
    let backend = Backend::default();
    let fresh = || FreshStack {
        backend: &backend,
        profile: "f-full",
        profile_yaml: &yaml,
        payments: &payments,
        seed: 1,
    };
    let first = fresh().start().await.unwrap();
    let placed = order(&first.stack.gateway_url(), "k-1").await;
    assert_eq!(placed.status, OrderStatus::Confirmed as i32, "{placed:?}");
    assert_eq!(orders_total(&first.stack).await, 1);
    first.finish(Ok(())).await.unwrap();

    let second = fresh().start().await.unwrap();
    assert_eq!(
        orders_total(&second.stack).await,
        0,
        "no order of the last stack"
    );
    // The same key is a new request here: nothing of the last stack's keys remains.
    let again = order(&second.stack.gateway_url(), "k-1").await;
    assert_eq!(again.status, OrderStatus::Confirmed as i32);
    assert_ne!(again.order_id, placed.order_id);
    second.finish(Ok(())).await.unwrap();
}
